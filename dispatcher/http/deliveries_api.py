"""`GET /api/v1/deliveries` (the delivery records) and `POST /api/v1/test` (the Contact Manager's Test link)."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from ..contacts.model import account_name_problem
from ..errors import DispatcherError
from ..outbox import STATUSES, list_deliveries
from ..probe import send_test_notice
from ..untrusted_json import quote
from .base import DISPATCHER, UnreadableBody, json_error, read_json

MAX_LIMIT = 1000
# The longest `recipient` or `channel` of a test request: far above any contact or channel name.
MAX_NAME_CHARS = 200
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


async def get_deliveries(request: web.Request) -> web.Response:
    """Delivery records, newest first, filtered by `event_id` and `status`, at most `limit` (default 100)."""
    dispatcher = request.app[DISPATCHER]
    status = request.query.get("status") or None
    problems = []
    if status is not None and status not in STATUSES:
        problems.append(f"status: must be one of {', '.join(STATUSES)}")
    limit_text = request.query.get("limit", "100")
    # isascii: "²".isdigit() is true, and int() refuses it.
    limit = int(limit_text) if limit_text.isascii() and limit_text.isdigit() and len(limit_text) < 10 else -1
    if not 1 <= limit <= MAX_LIMIT:
        problems.append(f"limit: must be a whole number from 1 to {MAX_LIMIT}")
    if problems:
        return json_error(400, "bad query", problems)
    event_id = request.query.get("event_id") or None
    rows = await dispatcher.store.run(lambda conn: list_deliveries(conn, event_id=event_id, status=status, limit=limit))
    return web.json_response({"deliveries": rows})


async def post_test(request: web.Request) -> web.Response:
    """Send a test notice now: `{"recipient": "root" | "account:bob", "channel": "email"}` → the outcome per address.

    200 when every address took it, 502 when one did not; 400 for a body that is not such an object (unreadable
    JSON, wrong types, names too long or with control characters, a malformed account name, an unknown channel),
    404 for a system contact that does not exist or a recipient without an address on the channel. Quoted names
    are cut short.
    """
    dispatcher = request.app[DISPATCHER]
    try:
        body = await read_json(request)
    except UnreadableBody as err:
        return json_error(400, str(err))
    if not isinstance(body, dict):
        return json_error(400, "body must be a JSON object")
    problems = [problem for key in ("recipient", "channel") if (problem := _name_problem(key, body.get(key)))]
    if problems:
        return json_error(400, "bad request", problems)
    spec, channel_name = body["recipient"], body["channel"]
    if spec.startswith("account:"):
        problem = account_name_problem(spec.removeprefix("account:"))
        if problem:
            return json_error(400, "bad request", [f"recipient: {problem}"])
    elif spec not in dispatcher.config.contacts:
        known = ", ".join(dispatcher.config.contacts) or "none"
        return json_error(404, f"no system contact named {quote(spec)} (known: {known})")
    channels = dispatcher.pipeline.channels
    if channel_name not in channels:
        return json_error(400, f"unknown channel {quote(channel_name)} (available: {', '.join(channels)})")
    try:
        recipient = await dispatcher.test_recipient(spec)
        outcomes = await send_test_notice(
            config=dispatcher.config,
            renderer=dispatcher.pipeline.renderer,
            channels=channels,
            recipient=recipient,
            channel_name=channel_name,
            store=dispatcher.store,
        )
    except DispatcherError as err:
        return json_error(404 if "no " in str(err) else 400, str(err))
    ok = all(outcome["status"] == "sent" for outcome in outcomes)
    return web.json_response({"ok": ok, "results": outcomes}, status=200 if ok else 502)


def _name_problem(key: str, value: Any) -> str | None:
    """Why `value` cannot be the test request's `recipient` or `channel`, or None."""
    if not isinstance(value, str) or not value:
        return f"{key}: required string"
    if len(value) > MAX_NAME_CHARS:
        return f"{key}: longer than {MAX_NAME_CHARS} characters"
    if _CONTROL_RE.search(value):
        return f"{key}: {quote(value)} contains a control character"
    return None


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/deliveries", get_deliveries)
    app.router.add_post("/api/v1/test", post_test)
