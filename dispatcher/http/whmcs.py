"""WHMCS compatibility: `/includes/api.php` with `AddContact`, `UpdateContact`, `GetContacts`, `DeleteContact`.

As WHMCS does, every answer is HTTP 200: `{"result": "success", …}` or `{"result": "error", "message": …}`,
with WHMCS's own messages where it has one (seeds 002/003: "Client ID Not Found", "Contact ID Not Found",
"Duplicate Email Address", the ICANN text; "Command Not Found" for an unknown action) and, for malformed
fields, `field: problem` lines joined by "; ". A refused call changes nothing. That holds for whatever is sent:
a body that cannot be read (JSON the untrusted-JSON decoder refuses, a form that is not UTF-8, broken multipart,
a file upload, more than 1 MiB), a parameter holding a NUL or a lone surrogate, an id beyond SQLite's integers
(`clientid=10**30` is "Client ID Not Found") are all `{"result": "error", "message": …}` with HTTP 200, bad
values quoted cut short.

Parameters come from a form body or a JSON object (and the query string), under WHMCS's names:
`clientid` (or `userid`), `contactid`, the contact fields, `permissions` (comma-separated), `subaccount`,
`password2`, and the email preferences either as `email_preferences[domain]=1` (or a JSON object
`email_preferences`) or as the older flat flags `domainemails=1`; given both ways, they must agree.
WHMCS's own authentication parameters (`username`, `password`, `identifier`, `secret`, `accesskey`) and
`responsetype` are ignored: the bearer token guards this route.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from aiohttp import web

from ..contacts import clients
from ..contacts.model import (
    CATEGORIES,
    CLIENT_NOT_FOUND,
    CONTACT_NOT_FOUND,
    CONTACT_TEXT_FIELDS,
    FLAG_OF,
    ContactsError,
    InvalidInput,
    parameter_problems,
    parse_bool,
    parse_id,
    validate_contact_fields,
)
from .base import DISPATCHER, UnreadableBody, read_form, read_json

log = structlog.get_logger(__name__)

COMMAND_NOT_FOUND = "Command Not Found"
DEFAULT_LIMIT = 25  # WHMCS's default page size for list calls
_PREFERENCE_KEY_RE = re.compile(r"email_preferences\[([^\]]*)\]")
_CONTACT_PARAMS = (*CONTACT_TEXT_FIELDS, "email", "country", "subaccount", "password2", "permissions")

Params = Mapping[str, Any]


class BodyRefused(InvalidInput):
    """The body cannot be read. Its message may quote some of what was sent (the decoder quotes a string with a
    lone surrogate, which may be a password), so it goes back to the caller but not into the log."""


def success(**fields: Any) -> web.Response:
    return web.json_response({"result": "success", **fields})


def error(message: str) -> web.Response:
    return web.json_response({"result": "error", "message": message})


async def _parameters(request: web.Request) -> dict[str, Any]:
    """Query string and body merged (the body wins); the last of repeated form values counts, as in PHP.

    Raises `BodyRefused` for a body that cannot be read, and `InvalidInput` for a parameter name or string value
    holding a NUL or a lone surrogate (a form's, a query's, or a JSON body's top-level one).
    """
    params: dict[str, Any] = {key: request.query.getall(key)[-1] for key in request.query}
    if request.method == "POST" and request.can_read_body:
        try:
            if request.content_type == "application/json":
                body = await read_json(request)
                if not isinstance(body, dict):
                    raise InvalidInput(["body: must be a JSON object"])
                params.update(body)
            else:
                params.update(await read_form(request))
        except UnreadableBody as err:
            raise BodyRefused([f"body: {err}"]) from None
        except web.HTTPClientError as err:  # 413: more than the server's client_max_size
            raise BodyRefused([f"body: refused ({err.status} {err.reason})"]) from None
    problems = parameter_problems(params)
    if problems:
        raise InvalidInput(problems)
    return params


def _positive_id(params: Params, names: tuple[str, ...]) -> int | None:
    """The first of `names` given, as an id (`model.parse_id`: 1 … 2**63-1); None if absent or not one."""
    for name in names:
        value = params.get(name)
        if value is None or value == "":
            continue
        return parse_id(value)
    return None


def _email_preferences(params: Params) -> dict[str, Any]:
    """The email preferences given in any of the accepted spellings, by category (values not yet parsed)."""
    prefs: dict[str, Any] = {}
    problems: list[str] = []
    nested = params.get("email_preferences")
    if isinstance(nested, Mapping):
        prefs.update(nested)
    elif nested is not None:
        problems.append("email_preferences: expected email_preferences[category]=1 or an object of categories")
    for key, value in params.items():
        match = _PREFERENCE_KEY_RE.fullmatch(key)
        if match:
            prefs[match[1]] = value
    for category in CATEGORIES:
        flag = FLAG_OF[category]
        if flag not in params:
            continue
        if category in prefs:
            try:
                agree = parse_bool(prefs[category]) == parse_bool(params[flag])
            except ValueError:
                agree = True  # the value's own problem is reported by the validation
            if not agree:
                problems.append(f"{flag}: disagrees with email_preferences[{category}]")
            continue
        prefs[category] = params[flag]
    if problems:
        raise InvalidInput(problems)
    return prefs


def contact_fields(params: Params) -> dict[str, Any]:
    """The validated contact fields of an AddContact/UpdateContact call."""
    raw = {name: params[name] for name in _CONTACT_PARAMS if name in params}
    prefs = _email_preferences(params)
    if prefs:
        raw["email_preferences"] = prefs
    return validate_contact_fields(raw)


# -- actions -----------------------------------------------------------------------------------------------------


async def add_contact(request: web.Request, params: Params) -> web.Response:
    client_id = _positive_id(params, ("clientid", "userid"))
    if client_id is None:
        return error(CLIENT_NOT_FOUND)
    fields = contact_fields(params)
    contact = await clients.add_contact(request.app[DISPATCHER].store, client_id, fields)
    return success(contactid=contact.id)


async def update_contact(request: web.Request, params: Params) -> web.Response:
    contact_id = _positive_id(params, ("contactid",))
    if contact_id is None:
        return error(CONTACT_NOT_FOUND)
    fields = contact_fields(params)
    contact = await clients.update_contact(request.app[DISPATCHER].store, contact_id, fields)
    return success(contactid=contact.id)


async def delete_contact(request: web.Request, params: Params) -> web.Response:
    contact_id = _positive_id(params, ("contactid",))
    if contact_id is None:
        return error(CONTACT_NOT_FOUND)
    contact = await clients.delete_contact(request.app[DISPATCHER].store, contact_id)
    return success(contactid=contact.id)


def _count(params: Params, name: str, default: int, minimum: int) -> int:
    value = params.get(name)
    if value is None or value == "":
        return default
    text = str(value).strip() if isinstance(value, str | int) else ""
    if isinstance(value, bool) or not (text.isascii() and text.isdigit() and len(text) <= 9) or int(text) < minimum:
        raise InvalidInput([f"{name}: expected an integer from {minimum} to 999999999"])
    return int(text)


async def get_contacts(request: web.Request, params: Params) -> web.Response:
    """Contacts matching the filters, `limitstart`/`limitnum` paged, in WHMCS's flat form."""
    offset = _count(params, "limitstart", 0, 0)
    limit = _count(params, "limitnum", DEFAULT_LIMIT, 1)
    filters: dict[str, Any] = {}
    problems: list[str] = []
    if any(params.get(name) not in (None, "") for name in ("clientid", "userid")):
        client_id = _positive_id(params, ("clientid", "userid"))
        if client_id is None:
            problems.append("clientid: expected a client id (a positive integer)")
        filters["client_id"] = client_id
    for name in clients.FILTER_FIELDS:
        value = params.get(name)
        if value is None or value == "":
            continue  # as WHMCS: an empty filter does not filter
        if name == "subaccount":
            try:
                filters[name] = parse_bool(value)
            except ValueError as err:
                problems.append(f"subaccount: {err}")
        elif isinstance(value, str | int) and not isinstance(value, bool):
            filters[name] = str(value).strip()
        else:
            problems.append(f"{name}: expected a string")
    if problems:
        raise InvalidInput(problems)
    total, contacts = await clients.find_contacts(request.app[DISPATCHER].store, filters, offset, limit)
    return success(
        totalresults=total,
        startnumber=offset,
        numreturned=len(contacts),
        contacts={"contact": [contact.whmcs_view() for contact in contacts]},
    )


ACTIONS: Mapping[str, Callable[[web.Request, Params], Awaitable[web.Response]]] = {
    "addcontact": add_contact,
    "updatecontact": update_contact,
    "getcontacts": get_contacts,
    "deletecontact": delete_contact,
}


async def handle(request: web.Request) -> web.Response:
    """Dispatch one API call by its `action` (case-insensitive, as WHMCS)."""
    name = ""
    try:
        params = await _parameters(request)
        name = str(params.get("action", ""))
        action = ACTIONS.get(name.lower())
        if action is None:
            return error(COMMAND_NOT_FOUND)
        return await action(request, params)
    except ContactsError as err:
        logged = ["body: unreadable (the answer says why)"] if isinstance(err, BodyRefused) else err.details
        log.info("whmcs_call_refused", action=name, problems=logged or [str(err)])
        return error("; ".join(err.details) if isinstance(err, InvalidInput) else str(err))


def setup(app: web.Application) -> None:
    app.router.add_route("POST", "/includes/api.php", handle)
    app.router.add_route("GET", "/includes/api.php", handle)
