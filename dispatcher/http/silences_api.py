"""Silences over HTTP (SPEC §8a), behind the bearer token.

- `POST /api/v1/silences` `{"matchers": {"type"?, "account"?, "host"?}, "duration_s" | "ends_at", "comment",
  "created_by"?}` → `201 {"id"}`; a body that is not such an object → `400 {"error", "details"}`.
- `GET /api/v1/silences[?state=active|expired]` → `{"silences": [...]}`, newest first, each with its `state`.
- `GET /api/v1/silences/{id}` → the silence; `404` if there is none.
- `DELETE /api/v1/silences/{id}` expires it now → `200` the silence as it is now (`state: expired`); `404` if there
  is none. Expiring one that is over already changes nothing.

A new or expired silence applies from the daemon's next planning round; the active silences gauge is refreshed
at once.
"""

from __future__ import annotations

import time

import structlog
from aiohttp import web

from ..errors import StoreError
from ..noise.silences import (
    STATES,
    BadSilence,
    add_silence,
    expire_silence,
    get_silence,
    list_silences,
    silence_from_body,
)
from ..untrusted_json import quote
from .base import DISPATCHER, UnreadableBody, json_error, read_json

log = structlog.get_logger(__name__)

MAX_LISTED = 1000


async def post_silence(request: web.Request) -> web.Response:
    """Make a silence: 201 `{"id"}`; 400 for a bad body; 503 if the store could not be written."""
    dispatcher = request.app[DISPATCHER]
    try:
        body = await read_json(request)
    except UnreadableBody as err:
        return json_error(400, str(err))
    try:
        silence = silence_from_body(body, time.time())
    except BadSilence as err:
        return json_error(400, "bad silence", err.problems)
    try:
        await dispatcher.store.run(lambda conn: add_silence(conn, silence))
    except StoreError as err:
        log.error("silence_not_added", error=str(err))
        return json_error(503, "the silence could not be stored; try again", [str(err)])
    dispatcher.silence_watch.poke()
    log.info(
        "silence_added",
        silence_id=silence.id,
        matchers=dict(silence.matchers),
        ends_at=silence.ends_at,
        created_by=silence.created_by,
        source="http",
    )
    return web.json_response({"id": silence.id}, status=201)


async def get_silences(request: web.Request) -> web.Response:
    """Every silence, or those in `state` (active, expired), newest first (at most 1,000)."""
    dispatcher = request.app[DISPATCHER]
    state = request.query.get("state") or None
    if state is not None and state not in STATES:
        return json_error(400, "bad query", [f"state: must be one of {', '.join(STATES)}"])
    now = time.time()
    silences = await dispatcher.store.run(lambda conn: list_silences(conn, now=now, state=state, limit=MAX_LISTED))
    return web.json_response({"silences": [silence.to_json(now) for silence in silences]})


async def get_one(request: web.Request) -> web.Response:
    dispatcher = request.app[DISPATCHER]
    silence_id = request.match_info["silence_id"]
    silence = await dispatcher.store.run(lambda conn: get_silence(conn, silence_id))
    if silence is None:
        return json_error(404, f"no silence {quote(silence_id, 60)}")
    return web.json_response(silence.to_json(time.time()))


async def delete_silence(request: web.Request) -> web.Response:
    """Expire a silence now: 200 with the silence; 404 if there is none; 503 if the store could not be written."""
    dispatcher = request.app[DISPATCHER]
    silence_id = request.match_info["silence_id"]
    now = time.time()
    try:
        silence = await dispatcher.store.run(lambda conn: expire_silence(conn, silence_id, now))
    except StoreError as err:
        log.error("silence_not_expired", error=str(err))
        return json_error(503, "the silence could not be expired; try again", [str(err)])
    if silence is None:
        return json_error(404, f"no silence {quote(silence_id, 60)}")
    dispatcher.silence_watch.poke()
    log.info("silence_expired", silence_id=silence.id, source="http")
    return web.json_response(silence.to_json(now))


def setup(app: web.Application) -> None:
    app.router.add_post("/api/v1/silences", post_silence)
    app.router.add_get("/api/v1/silences", get_silences)
    app.router.add_get("/api/v1/silences/{silence_id}", get_one)
    app.router.add_delete("/api/v1/silences/{silence_id}", delete_silence)
