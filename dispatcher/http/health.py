"""Open endpoints: `/healthz` (alive), `/readyz` (store open and bus subscribed), `/metrics` (Prometheus)."""

from __future__ import annotations

from aiohttp import web

from .base import DISPATCHER


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    dispatcher = request.app[DISPATCHER]
    checks = {"store": dispatcher.store.is_open, "bus": dispatcher.bus_connected}
    ready = all(checks.values())
    return web.json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    dispatcher = request.app[DISPATCHER]
    await dispatcher.refresh_gauges()
    body = dispatcher.metrics.render()
    return web.Response(body=body, headers={"Content-Type": dispatcher.metrics.content_type})


def setup(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
