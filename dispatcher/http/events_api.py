"""`POST /api/v1/events`: submit an event over HTTP, validated exactly as on the bus."""

from __future__ import annotations

import structlog
from aiohttp import web

from ..errors import StoreError
from ..events import MAX_PAYLOAD_BYTES, InvalidEvent, parse_event
from .base import DISPATCHER, UnreadableBody, json_error, read_json

log = structlog.get_logger(__name__)


async def post_event(request: web.Request) -> web.Response:
    """202 `{"id": …}` once the event is durably recorded; 400 `{"error", "details"}` for anything else sent.

    The body is decoded by the shared untrusted-JSON decoder (`base.read_json`) and then validated by
    `parse_event`, as on the bus: a body over 256 KiB is `too_large`, one the decoder refuses (empty, not UTF-8,
    not JSON, NaN, a 5,000-digit number, nesting deeper than 32, a lone surrogate) is `invalid_json`, and each
    refusal is counted and logged as `event_rejected`. A body over the server's 1 MiB limit is aiohttp's 413.
    """
    dispatcher = request.app[DISPATCHER]
    try:
        body = await request.read()
        if len(body) > MAX_PAYLOAD_BYTES:
            raise InvalidEvent("too_large", f"payload is {len(body)} bytes; the limit is {MAX_PAYLOAD_BYTES}")
        try:
            obj = await read_json(request)
        except UnreadableBody as err:
            raise InvalidEvent("invalid_json", str(err)) from None
        if isinstance(obj, dict) and "type" not in obj:
            raise InvalidEvent("missing_type", "type is required")
        event = parse_event(obj, topic_type=None, default_host=dispatcher.config.hostname)
    except InvalidEvent as err:
        dispatcher.record_rejection("http", err.reason, str(err), topic=None)
        return json_error(400, str(err), err.details)
    try:
        await dispatcher.accept([event], source="http")
    except StoreError as err:
        log.error("event_not_recorded", event_id=event.id, event_type=event.type, error=str(err))
        return json_error(503, "the event could not be recorded; try again", [str(err)])
    return web.json_response({"id": event.id}, status=202)


def setup(app: web.Application) -> None:
    app.router.add_post("/api/v1/events", post_event)
