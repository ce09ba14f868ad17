"""The HTTP server: the API behind a bearer token, and the open health and metrics endpoints."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import structlog
from aiohttp import web

from . import deliveries_api, events_api, health

if TYPE_CHECKING:
    from ..app import Dispatcher

log = structlog.get_logger(__name__)

DISPATCHER: web.AppKey[Dispatcher] = web.AppKey("dispatcher")

# Everything under these prefixes needs the bearer token (SPEC §7).
PROTECTED_PREFIXES = ("/api/", "/json-api/", "/includes/")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_error(status: int, error: str, details: list[str] | None = None) -> web.Response:
    """The API's error answer: `{"error": …, "details": [...]}`."""
    return web.json_response({"error": error, "details": details or []}, status=status)


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
            or not hmac.compare_digest(credentials.strip().encode(), token.reveal().encode())
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
    app = web.Application(middlewares=[require_token], client_max_size=1024 * 1024)
    app[DISPATCHER] = dispatcher
    health.setup(app)
    events_api.setup(app)
    deliveries_api.setup(app)
    for setup in dispatcher.http_route_setups():
        setup(app)
    return app
