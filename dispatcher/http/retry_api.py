"""`POST /api/v1/deliveries/retry` (SPEC §8a): put failed deliveries back to pending now → `{"retried": N}`.

The body selects what to retry: `{"delivery_id": 12}`, `{"event_id": "…"}` (both: that delivery, if it is that
event's), `{"status": "failed"}` (every failed delivery; allowed beside the others, where it changes nothing). At
least one of them is required, so that an empty body never retries everything. The daemon's scheduler is woken
at once, so the deliveries are attempted right after the answer.
"""

from __future__ import annotations

import time
from typing import Any

import structlog
from aiohttp import web

from ..errors import StoreError
from ..outbox import retry_failed
from ..untrusted_json import UntrustedJsonError, decode, quote
from .base import DISPATCHER, json_error

log = structlog.get_logger(__name__)

FIELDS = ("delivery_id", "event_id", "status")


def read_selection(body: Any) -> tuple[dict[str, Any], list[str]]:
    """The selection in a decoded body, as keyword arguments of `retry_failed`, and what is wrong with it."""
    if not isinstance(body, dict):
        return {}, ["the body must be a JSON object"]
    problems = [f"{quote(key)}: unknown field (known: {', '.join(FIELDS)})" for key in body if key not in FIELDS]
    delivery_id = body.get("delivery_id")
    if "delivery_id" in body and (type(delivery_id) is not int or delivery_id < 1):
        problems.append("delivery_id: must be a positive whole number")
    event_id = body.get("event_id")
    if "event_id" in body and (not isinstance(event_id, str) or not event_id):
        problems.append("event_id: must be a non-empty string")
    if "status" in body and body["status"] != "failed":
        problems.append('status: only "failed" deliveries can be retried')
    if not any(key in body for key in FIELDS):
        problems.append('give delivery_id, event_id or "status": "failed" (every failed delivery)')
    return {"delivery_id": delivery_id, "event_id": event_id}, problems


async def post_retry(request: web.Request) -> web.Response:
    """200 `{"retried": N}` (N may be 0: nothing failed matched); 400 `{"error", "details"}` for a bad body; 503
    if the store could not be written."""
    dispatcher = request.app[DISPATCHER]
    try:
        body = decode(await request.read(), what="body")
    except UntrustedJsonError as err:
        return json_error(400, str(err))
    selection, problems = read_selection(body)
    if problems:
        return json_error(400, "bad request", problems)
    now = time.time()
    try:
        retried = await dispatcher.store.run(lambda conn: retry_failed(conn, **selection, now=now))
    except StoreError as err:
        log.error("deliveries_not_retried", error=str(err))
        return json_error(503, "the deliveries could not be put back; try again", [str(err)])
    if retried:
        dispatcher.deliveries_put_back()
    log.info(
        "deliveries_retried",
        retried=retried,
        delivery_id=selection["delivery_id"],
        event_id=quote(selection["event_id"], 120) if selection["event_id"] else None,
    )
    return web.json_response({"retried": retried})


def setup(app: web.Application) -> None:
    app.router.add_post("/api/v1/deliveries/retry", post_retry)
