"""The HTTP server: the API behind a bearer token, and the open health and metrics endpoints.

`build_app` mounts every route module; what they share (the `DISPATCHER` app key, `json_error`, the body readers)
is in `base`, which imports none of them. Every route answers what it cannot read with its own 4xx;
`answer_unexpected` is the last line of defence behind them.
"""

from __future__ import annotations

import hmac
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from aiohttp import web

from ..untrusted_json import quote
from . import contacts_api, cpanel, deliveries_api, events_api, health, ingest_api, retry_api, silences_api, whmcs
from .base import DISPATCHER, json_error

if TYPE_CHECKING:
    from ..app import Dispatcher

log = structlog.get_logger(__name__)

# Everything under these prefixes needs the bearer token (SPEC §7).
PROTECTED_PREFIXES = ("/api/", "/json-api/", "/includes/")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Protected routes that check the token themselves, because their callers cannot always send a header: WHM's Post
# to URL puts it in the form (ingest_api). `require_token` lets them through to that check.
OWN_TOKEN_CHECK: frozenset[Handler] = frozenset({ingest_api.post_cpanel})


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
    """Refuse protected routes without `Authorization: Bearer <http.token>`; compare in constant time. Routes in
    `OWN_TOKEN_CHECK` check the token themselves."""
    if request.path.startswith(PROTECTED_PREFIXES) and request.match_info.handler not in OWN_TOKEN_CHECK:
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
    ingest_api.setup(app)
    silences_api.setup(app)
    setup_contact_routes(app)
    return app


def setup_contact_routes(app: web.Application) -> None:
    """Mount the contact routes on `app`: the native REST API (`/api/v1/accounts/…`, `/api/v1/clients…`,
    `/api/v1/contacts/…`) and the cPanel and WHMCS dialects (`/json-api/cpanel`, `/includes/api.php`)."""
    contacts_api.setup(app)
    cpanel.setup(app)
    whmcs.setup(app)
