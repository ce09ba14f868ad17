"""cPanel compatibility: `/json-api/cpanel` with `CustInfo::savecontactinfo` and `CustInfo::displaycontactinfo`.

Answers the `cpanelresult` shape of seed 000 exactly: `apiversion`, `func`, `module`, `event.result`, and `data`,
one item per setting with `name`, `value` (the string, or 1/0), `display_value` (the string, or "on"/"off") and
`descp`. The Pushbullet token is listed with its value masked. A failure is still HTTP 200, with
`event.result` 0, a `reason` saying what is wrong, and nothing changed (SPEC §10).

The account is `username` (as in the seed), else `cpanel_jsonapi_user` (as WHM passes it). Parameters come from
the query string and, for a POST, from a form body too (a body value wins).
"""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web
from multidict import MultiDict

from ..http.server import DISPATCHER
from . import accounts
from .model import ACCOUNT_FIELDS, AccountContactInfo, ContactsError

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
    params: MultiDict[str] = MultiDict(request.query)
    if request.method == "POST" and request.can_read_body:
        if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.post()
            for key in set(form.keys()):
                value = form.getall(key)[-1]
                if not isinstance(value, str):
                    raise ValueError(f"{key}: a file upload is not a setting")
                params[key] = value
        else:
            raise ValueError("send the parameters in the query string or as a form body")
    return params


async def handle(request: web.Request) -> web.Response:
    """Dispatch one `/json-api/cpanel` call (GET or POST)."""
    try:
        params = await _parameters(request)
    except ValueError as err:
        return cpanel_result("", "", [], str(err))
    func = params.get("cpanel_jsonapi_func", "")
    module = params.get("cpanel_jsonapi_module", "")
    version = params.get("cpanel_jsonapi_apiversion", "2")
    if version != "2":
        return cpanel_result(func, module, [], f"cpanel_jsonapi_apiversion {version!r} is not supported (only 2)")
    if module != MODULE or func not in FUNCTIONS:
        supported = ", ".join(f"{MODULE}::{name}" for name in FUNCTIONS)
        return cpanel_result(func, module, [], f"unknown function {module}::{func} (supported: {supported})")
    account = next((params[key] for key in _ACCOUNT_KEYS if params.get(key)), None)
    if account is None:
        return cpanel_result(func, module, [], "username is required: the cPanel account to use")
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
