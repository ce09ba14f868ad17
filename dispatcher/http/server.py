"""The HTTP server: the API behind a bearer token, and the open health and metrics endpoints.

Bodies from outside are read with `read_json` (the shared `untrusted_json` decoder) and `read_form`, which raise
only `UnreadableBody` (or aiohttp's own 4xx, such as 413 for a body over `client_max_size`): every route answers
what it cannot read with its own 4xx. `answer_unexpected` is the last line of defence behind them.
"""

from __future__ import annotations

import codecs
import hmac
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from ..untrusted_json import UntrustedJsonError, decode, quote
from . import deliveries_api, events_api, health, retry_api

if TYPE_CHECKING:
    from ..app import Dispatcher

log = structlog.get_logger(__name__)

DISPATCHER: web.AppKey[Dispatcher] = web.AppKey("dispatcher")

# Everything under these prefixes needs the bearer token (SPEC §7).
PROTECTED_PREFIXES = ("/api/", "/json-api/", "/includes/")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

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


@web.middleware
async def answer_unexpected(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The last line of defence: an exception no route expected is logged (`http_request_failed`: its type, its
    message cut short, and the file:line `frames`, never the request's data) and answered `500 {"error", "details"}`.

    aiohttp's own HTTP errors (400 for a malformed request, 413 for a body over `client_max_size`) pass through
    unchanged. Bad input is never meant to get here: every route recognises its own and answers 4xx.
    """
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as err:
        # Not `stack`: structlog's console renderer takes that key for a formatted stack string.
        frames = [
            f"{Path(frame.filename).name}:{frame.lineno} {frame.name}"
            for frame in traceback.extract_tb(err.__traceback__)
        ]
        log.error(
            "http_request_failed",
            method=request.method,
            path=quote(request.path, 120),
            error_type=type(err).__name__,
            error=quote(str(err), 200),
            frames=frames[-8:],
        )
        return json_error(500, "internal error: the request was not completed")


@web.middleware
async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse protected routes without `Authorization: Bearer <http.token>`; compare in constant time."""
    if request.path.startswith(PROTECTED_PREFIXES):
        token = request.app[DISPATCHER].config.http.token
        given = request.headers.get("Authorization", "")
        scheme, _, credentials = given.partition(" ")
        if (
            token is None
            or scheme.lower() != "bearer"
            # surrogateescape: a header byte that is not UTF-8 reaches us as a lone surrogate; it compares unequal.
            or not hmac.compare_digest(
                credentials.strip().encode("utf-8", "surrogateescape"), token.reveal().encode("utf-8")
            )
        ):
            return web.json_response(
                {
                    "error": "missing or wrong bearer token"
                    if token
                    else "the API is disabled: no http.token_file configured"
                },
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="dispatcher"'},
            )
    return await handler(request)


def build_app(dispatcher: Dispatcher) -> web.Application:
    """The aiohttp application with every route of SPEC §7 that is built so far."""
    app = web.Application(middlewares=[answer_unexpected, require_token], client_max_size=1024 * 1024)
    app[DISPATCHER] = dispatcher
    health.setup(app)
    events_api.setup(app)
    deliveries_api.setup(app)
    retry_api.setup(app)
    for setup in dispatcher.http_route_setups():
        setup(app)
    return app
