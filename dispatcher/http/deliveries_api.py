"""`GET /api/v1/deliveries` (the delivery records) and `POST /api/v1/test` (the Contact Manager's Test link)."""

from __future__ import annotations

import json

from aiohttp import web

from ..errors import DispatcherError
from ..outbox import STATUSES, list_deliveries
from ..probe import send_test_notice
from . import server

MAX_LIMIT = 1000


async def get_deliveries(request: web.Request) -> web.Response:
    """Delivery records, newest first, filtered by `event_id` and `status`, at most `limit` (default 100)."""
    dispatcher = request.app[server.DISPATCHER]
    status = request.query.get("status") or None
    problems = []
    if status is not None and status not in STATUSES:
        problems.append(f"status: must be one of {', '.join(STATUSES)}")
    limit_text = request.query.get("limit", "100")
    limit = int(limit_text) if limit_text.isdigit() else -1
    if not 1 <= limit <= MAX_LIMIT:
        problems.append(f"limit: must be a whole number from 1 to {MAX_LIMIT}")
    if problems:
        return server.json_error(400, "bad query", problems)
    event_id = request.query.get("event_id") or None
    rows = await dispatcher.store.run(lambda conn: list_deliveries(conn, event_id=event_id, status=status, limit=limit))
    return web.json_response({"deliveries": rows})


async def post_test(request: web.Request) -> web.Response:
    """Send a test notice now: `{"recipient": "root" | "account:bob", "channel": "email"}` → the outcome per address."""
    dispatcher = request.app[server.DISPATCHER]
    try:
        body = await request.json()
    except json.JSONDecodeError:
        return server.json_error(400, "body is not valid JSON")
    if not isinstance(body, dict):
        return server.json_error(400, "body must be a JSON object")
    problems = [f"{key}: required string" for key in ("recipient", "channel") if not isinstance(body.get(key), str)]
    if problems:
        return server.json_error(400, "bad request", problems)
    try:
        recipient = await dispatcher.test_recipient(body["recipient"])
        outcomes = await send_test_notice(
            config=dispatcher.config,
            renderer=dispatcher.pipeline.renderer,
            channels=dispatcher.pipeline.channels,
            recipient=recipient,
            channel_name=body["channel"],
        )
    except DispatcherError as err:
        return server.json_error(404 if "no " in str(err) else 400, str(err))
    ok = all(outcome["status"] == "sent" for outcome in outcomes)
    return web.json_response({"ok": ok, "results": outcomes}, status=200 if ok else 502)


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/deliveries", get_deliveries)
    app.router.add_post("/api/v1/test", post_test)
