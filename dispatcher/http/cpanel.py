"""cPanel compatibility: `/json-api/cpanel` with `CustInfo::savecontactinfo` and `CustInfo::displaycontactinfo`.

Answers the `cpanelresult` shape of seed 000 exactly: `apiversion`, `func`, `module`, `event.result`, and `data`,
one item per setting with `name`, `value` (the string, or 1/0), `display_value` (the string, or "on"/"off") and
`descp`. The Pushbullet token is listed with its value masked. A failure is still HTTP 200, with
`event.result` 0, a `reason` saying what is wrong, and nothing changed (SPEC §10).

The account is `username` (as in the seed), else `cpanel_jsonapi_user` (as WHM passes it). Parameters come from
the query string and, for a POST, from a form body too (a body value wins).

Whatever is sent, the answer is this envelope with HTTP 200: a body that cannot be read as a form (invalid UTF-8,
broken multipart, a charset other than UTF-8/ASCII/Latin-1, a file upload, more than 1 MiB), a parameter holding a
NUL or a lone surrogate, or a malformed value is a failure with a `reason`, which quotes bad values cut short. The
`func` and `module` echoed are cut short too, and left empty when they are not valid text.
"""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web
from multidict import MultiDict

from ..contacts import accounts
from ..contacts.model import (
    ACCOUNT_FIELDS,
    AccountContactInfo,
    ContactsError,
    InvalidInput,
    account_name_problem,
    parameter_problems,
    text_problem,
)
from ..untrusted_json import QUOTE_CHARS, quote
from .base import DISPATCHER, read_form

log = structlog.get_logger(__name__)

MODULE = "CustInfo"
FUNCTIONS = ("savecontactinfo", "displaycontactinfo")
_ACCOUNT_KEYS = ("username", "cpanel_jsonapi_user")
_RESERVED_PREFIXES = ("cpanel_jsonapi_", "cpanel_xmlapi_")


def contact_items(info: AccountContactInfo) -> list[dict[str, Any]]:
    """The `data` list: every setting in the seed's order, the token masked."""
    items = []
    for spec in ACCOUNT_FIELDS:
        if spec.kind == "boolean":
            on = info.preferences[spec.name]
            value: Any = 1 if on else 0
            shown = "on" if on else "off"
        else:
            value = info.masked_token() if spec.secret else info.value(spec.name)
            shown = value
        items.append({"name": spec.name, "value": value, "display_value": shown, "descp": spec.descp})
    return items


def cpanel_result(func: str, module: str, data: list[dict[str, Any]], reason: str | None = None) -> web.Response:
    """The `cpanelresult` envelope; `reason` makes it a failure (`event.result` 0), always with HTTP 200."""
    event: dict[str, Any] = {"result": 1} if reason is None else {"result": 0, "reason": reason}
    return web.json_response(
        {"cpanelresult": {"apiversion": 2, "func": func, "event": event, "module": module, "data": data}}
    )


async def _parameters(request: web.Request) -> MultiDict[str]:
    """Query string and form body merged (a body value wins); ValueError saying why the body cannot be read."""
    params: MultiDict[str] = MultiDict(request.query)
    if request.method == "POST" and request.can_read_body:
        if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            try:
                form = await read_form(request)  # UnreadableBody is a ValueError
            except web.HTTPClientError as err:  # 413: more than the server's client_max_size
                raise ValueError(f"the body is refused: {err.status} {err.reason}") from None
            for key, value in form.items():
                params[key] = value
        else:
            raise ValueError("send the parameters in the query string or as a form body")
    return params


def _echo(text: str) -> str:
    """A requested name as the envelope repeats it: cut to about QUOTE_CHARS, empty when it is not valid text."""
    if text_problem(text):
        return ""
    return text if len(text) <= QUOTE_CHARS else text[: QUOTE_CHARS - 1] + "…"


async def handle(request: web.Request) -> web.Response:
    """Dispatch one `/json-api/cpanel` call (GET or POST)."""
    try:
        params = await _parameters(request)
    except ValueError as err:
        # What the form parser says may quote the body (a token among it): the caller hears it, the log does not.
        log.info("cpanel_call_refused", problems=["body: unreadable (the answer says why)"])
        return cpanel_result("", "", [], str(err))
    func = _echo(params.get("cpanel_jsonapi_func", ""))
    module = _echo(params.get("cpanel_jsonapi_module", ""))
    problems = parameter_problems(params)
    if problems:
        details = InvalidInput(problems).details  # at most MAX_PROBLEMS of them
        log.info("cpanel_call_refused", func=func, problems=details)
        return cpanel_result(func, module, [], "; ".join(details))
    version = params.get("cpanel_jsonapi_apiversion", "2")
    if version != "2":
        return cpanel_result(func, module, [], f"cpanel_jsonapi_apiversion {quote(version)} is not supported (only 2)")
    if module != MODULE or func not in FUNCTIONS:
        supported = ", ".join(f"{MODULE}::{name}" for name in FUNCTIONS)
        return cpanel_result(func, module, [], f"unknown function {module}::{func} (supported: {supported})")
    account = next((params[key] for key in _ACCOUNT_KEYS if params.get(key)), None)
    if account is None:
        return cpanel_result(func, module, [], "username is required: the cPanel account to use")
    problem = account_name_problem(account)
    if problem:
        log.info("cpanel_call_refused", func=func, problems=[f"account: {problem}"])
        return cpanel_result(func, module, [], f"account: {problem}")
    dispatcher = request.app[DISPATCHER]
    try:
        if func == "displaycontactinfo":
            info = await accounts.get_contact_info(dispatcher.store, account)
        else:
            fields = {
                key: params.getall(key)[-1]
                for key in params
                if key not in _ACCOUNT_KEYS and not key.startswith(_RESERVED_PREFIXES)
            }
            info = await accounts.update_contact_info(dispatcher, account, fields, ip=request.remote)
    except ContactsError as err:
        log.info("cpanel_call_refused", func=func, account=account, problems=err.details)
        return cpanel_result(func, module, [], "; ".join(err.details) or str(err))
    return cpanel_result(func, module, contact_items(info))


def setup(app: web.Application) -> None:
    app.router.add_route("GET", "/json-api/cpanel", handle)
    app.router.add_route("POST", "/json-api/cpanel", handle)
