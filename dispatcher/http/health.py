"""Open endpoints: `/healthz` (alive), `/readyz` (store open and bus subscribed, or a cluster's standby: another
instance runs the intake), `/metrics` (Prometheus)."""

from __future__ import annotations

from aiohttp import web

from .base import DISPATCHER


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    dispatcher = request.app[DISPATCHER]
    checks = {"store": dispatcher.store.is_open, "bus": dispatcher.intake_ready}
    ready = all(checks.values())
    answer: dict[str, object] = {"ready": ready, "checks": checks}
    if dispatcher.standby:
        answer["intake"] = "standby"  # another instance of the cluster runs it
    return web.json_response(answer, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    dispatcher = request.app[DISPATCHER]
    await dispatcher.refresh_gauges()
    body = dispatcher.metrics.render()
    return web.Response(body=body, headers={"Content-Type": dispatcher.metrics.content_type})


def setup(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
