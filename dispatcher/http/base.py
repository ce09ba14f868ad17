"""What every route module shares: the app key that finds the running daemon, the JSON error answer, and the
readers of bodies from outside.

Handlers get the running `Dispatcher` as `request.app[DISPATCHER]`. Bodies are read with `read_json` (the shared
`untrusted_json` decoder) and `read_form`, which raise only `UnreadableBody` (or aiohttp's own 4xx, such as 413
for a body over `client_max_size`): every route answers what it cannot read with its own 4xx.

This module imports no route module, so the route modules import it and `server` imports them: no cycle.
"""

from __future__ import annotations

import codecs
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..untrusted_json import UntrustedJsonError, decode, quote

if TYPE_CHECKING:
    from ..app import Dispatcher

DISPATCHER: web.AppKey[Dispatcher] = web.AppKey("dispatcher")

# The charsets a form body may declare (by codec name). Others are refused: a codec such as `unicode_escape`
# turns `\ud800` in the body into a lone surrogate, and an unknown name is a LookupError inside aiohttp.
FORM_CHARSETS = frozenset({"utf-8", "ascii", "iso8859-1"})


class UnreadableBody(ValueError):
    """The request body cannot be read as what the route takes; the message says why, quoting at most a little."""


def json_error(status: int, error: str, details: list[str] | None = None) -> web.Response:
    """The API's error answer: `{"error": …, "details": [...]}`."""
    return web.json_response({"error": error, "details": details or []}, status=status)


async def read_json(request: web.Request, *, what: str = "body") -> Any:
    """The body as one JSON value, decoded by `untrusted_json.decode` whatever the Content-Type says.

    Raises `UnreadableBody` for an empty body and for anything the decoder refuses (not UTF-8, not JSON,
    NaN/Infinity or a number out of range, an integer of more than 100 digits, nesting deeper than 32, a lone
    surrogate); a body over the app's `client_max_size` raises aiohttp's `HTTPRequestEntityTooLarge` (413).
    """
    raw = await request.read()
    if not raw.strip():
        raise UnreadableBody(f"{what} is empty: a JSON value is expected")
    try:
        return decode(raw, what=what)
    except UntrustedJsonError as err:
        raise UnreadableBody(str(err)) from None


async def read_form(request: web.Request) -> dict[str, str]:
    """The form fields of a POST (`application/x-www-form-urlencoded` or `multipart/form-data`), the last of a
    repeated name winning as in PHP; `{}` for another Content-Type or no body.

    Raises `UnreadableBody` for a charset other than UTF-8, ASCII or Latin-1, a body the form or multipart
    parser cannot read (invalid UTF-8, broken multipart framing, an unknown part charset: whatever it raises),
    and a file upload; a body over `client_max_size` raises aiohttp's `HTTPRequestEntityTooLarge` (413). The
    values are not otherwise checked: a multipart part may still carry a NUL or, through its own charset, a lone
    surrogate, so callers check the strings before using them.
    """
    if request.content_type == "application/x-www-form-urlencoded" and request.charset is not None:
        try:
            codec = codecs.lookup(request.charset).name
        except LookupError:
            codec = None
        if codec not in FORM_CHARSETS:
            raise UnreadableBody(f"the form's charset {quote(request.charset)} is not accepted: send UTF-8")
    try:
        form = await request.post()
    except web.HTTPException:
        raise
    except Exception as err:  # aiohttp's form and multipart parsers document no exception set for hostile bodies
        raise UnreadableBody(f"the body is not a readable form ({type(err).__name__}: {quote(str(err), 80)})") from None
    fields: dict[str, str] = {}
    for key in form:
        value = form.getall(key)[-1]
        if not isinstance(value, str):
            raise UnreadableBody(f"{quote(key)}: a file upload is not a parameter")
        fields[key] = value
    return fields
