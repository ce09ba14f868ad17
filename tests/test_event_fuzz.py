"""Fuzzing the intake: whatever bytes a publisher sends, parsing either refuses them with a reason or gives an
event that stores and reads back whole; end to end, every hostile message is stored or dead-lettered and the
daemon stays ready."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatcher.events import REASONS, Event, InvalidEvent, parse_event
from dispatcher.store import EVENTS_SCHEMA, insert_events

from .brokers import Mosquitto
from .conftest import connect_store, wait_until

# Text as hostile as JSON can carry: any code point, lone surrogates (which `json.dumps` writes as `\ud800`
# escapes) and control characters included.
ANY_TEXT = st.text(st.one_of(st.characters(codec=None), st.characters(categories=["Cs"])), max_size=12)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**120), max_value=10**120),
    st.floats(allow_nan=True, allow_infinity=True),
    ANY_TEXT,
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(ANY_TEXT, inner, max_size=4)),
    max_leaves=20,
)
FIELD_NAMES = st.sampled_from(["id", "type", "occurred_at", "host", "account", "client_id", "data", "extra"])
TIMES = st.one_of(
    st.datetimes().map(lambda moment: moment.isoformat() + "Z"),
    st.sampled_from(["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+14:00", "2026-02-30T00:00:00Z"]),
)
EVENT_OBJECTS = st.dictionaries(FIELD_NAMES, st.one_of(JSON_VALUES, TIMES), max_size=7)


def nested(depth: int) -> bytes:
    """An event whose JSON nests `depth` arrays and objects deep, the event object itself included."""
    lists = depth - 2
    return b'{"data":{"a":' + b"[" * lists + b"]" * lists + b"}}"


def check_parses_or_refuses(payload: bytes, topic_type: str | None = "Backup/Failure") -> Event | None:
    """Parse as the intake does: an InvalidEvent with a known reason, or an event that SQLite stores and that
    reads back equal. Any other exception fails the test."""
    refusal: InvalidEvent | None = None
    try:
        event = parse_event(payload, topic_type=topic_type, default_host="fuzz.example.com")
    except InvalidEvent as err:
        refusal = err
    if refusal is not None:
        assert refusal.reason in REASONS
        assert len(str(refusal)) < 2000, "an error quotes at most a short piece of the input"
        return None
    conn = sqlite3.connect(":memory:")
    conn.executescript(EVENTS_SCHEMA)
    assert insert_events(conn, [event], "mqtt") == [True]
    (body,) = conn.execute("SELECT body FROM events").fetchone()
    assert Event.from_json(body) == event
    return event


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_refused_with_a_reason_or_stored_whole(payload: bytes) -> None:
    """Any bytes: refused with a reason, or an event that stores and reads back."""
    check_parses_or_refuses(payload)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(EVENT_OBJECTS, st.booleans())
def test_arbitrary_json_objects_are_refused_with_a_reason_or_stored_whole(
    obj: dict[str, Any], ascii_only: bool
) -> None:
    """Event-shaped objects whose fields hold any JSON (surrogates, NaN, huge numbers, odd dates)."""
    text = json.dumps(obj, ensure_ascii=ascii_only, allow_nan=True)
    try:
        payload = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate written raw: not UTF-8, so not something a publisher can send
        payload = text.encode("utf-8", "surrogatepass")
    check_parses_or_refuses(payload)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_valid_events_are_refused_with_a_reason_or_stored_whole(data: st.DataObject) -> None:
    """A valid event with bytes flipped, cut or inserted."""
    payload = bytearray(
        json.dumps(
            {"id": "m-1", "account": "bob", "occurred_at": "2026-11-23T10:00:00Z", "data": {"a": [1, "x"]}}
        ).encode()
    )
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(payload)))
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip" and position < len(payload):
            payload[position] ^= data.draw(st.integers(1, 255))
        elif action == "cut":
            del payload[position:]
        else:
            payload[position:position] = data.draw(st.binary(min_size=1, max_size=8))
    check_parses_or_refuses(bytes(payload))


@pytest.mark.parametrize("depth", [32, 33, 1000, 200_000])
def test_nesting_is_refused_past_32_levels_at_any_depth(depth: int) -> None:
    """Nesting within the limit is an event; past it, however deep, a refusal (never a RecursionError)."""
    event = check_parses_or_refuses(nested(depth))
    assert (event is not None) == (depth <= 32)


def hostile_messages(count: int, seed: int) -> list[tuple[str, bytes]]:
    """`count` messages a hostile publisher might send, reproducibly: valid events, mutated ones, random bytes,
    hostile values, topics that disagree or name no type."""
    rng = random.Random(seed)
    topics = ["events/Backup/Failure", "events/Quota/DiskWarning", "events", "events/Odd", "events/A/B/C"]
    values: list[Any] = ["\ud800", "a\x00b", 10**30, float("nan"), 1e308 * 10, "9999-12-31T23:59:59-01:00", [[[[]]]]]
    messages = []
    for n in range(count):
        kind = rng.randrange(5)
        topic = rng.choice(topics) if kind else "events/Backup/Failure"
        if kind == 0:
            body = json.dumps({"id": f"fuzz-{seed}-{n}", "account": "bob"}).encode()
        elif kind == 1:
            body = bytearray(json.dumps({"id": f"fuzz-{seed}-{n}", "data": {"k": n}}).encode())
            body[rng.randrange(len(body))] = rng.randrange(256)
            body = bytes(body)
        elif kind == 2:
            body = rng.randbytes(rng.randrange(1, 200))
        elif kind == 3:
            field = rng.choice(["id", "host", "account", "client_id", "occurred_at", "data", "type"])
            body = json.dumps({"id": f"fuzz-{seed}-{n}", field: rng.choice(values)}, allow_nan=True).encode()
        else:
            body = nested(rng.choice([10, 40, 5000]))
        messages.append((topic, body))
    return messages


async def metric_total(http: aiohttp.ClientSession, base_url: str, name: str) -> float:
    text = await (await http.get(f"{base_url}/metrics")).text()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + "{"))


async def test_thousands_of_hostile_messages_are_each_stored_or_dead_lettered(
    mosquitto: Mosquitto, make_config: Callable[..., Path], start_daemon: Any, http: aiohttp.ClientSession
) -> None:
    """3,000 generated hostile messages through a real mosquitto: each is stored or dead-lettered (the counts
    add up, every dead letter reaches the dead-letter topic) and the daemon is ready throughout."""
    config = make_config(bus={"protocol": "5"})
    daemon = await start_daemon(config)
    messages = hostile_messages(3000, seed=15)
    dead: list[aiomqtt.Message] = []
    async with aiomqtt.Client(
        "127.0.0.1", mosquitto.port, protocol=aiomqtt.ProtocolVersion.V5, max_inflight_messages=500
    ) as client:
        await client.subscribe("events-dead-letter", qos=1)

        async def collect() -> None:
            async for message in client.messages:
                dead.append(message)

        collector = asyncio.create_task(collect())
        for start in range(0, len(messages), 500):
            await asyncio.gather(*(client.publish(t, b, qos=1) for t, b in messages[start : start + 500]))
            assert (await http.get(f"{daemon.base_url}/readyz")).status == 200

        async def all_counted() -> bool:
            counted = 0.0
            for name in ("received", "duplicate", "rejected"):
                counted += await metric_total(http, daemon.base_url, f"dispatcher_events_{name}_total")
            return counted == len(messages)

        await wait_until(all_counted, timeout_s=60)
        rejected = await metric_total(http, daemon.base_url, "dispatcher_events_rejected_total")
        await wait_until(lambda: len(dead) == rejected, timeout_s=30)
        collector.cancel()
    with connect_store(config) as conn:
        stored = conn.execute("SELECT count(*) FROM events WHERE source = 'mqtt'").fetchone()[0]
    assert stored + rejected <= len(messages) and stored > 0 and rejected > 0
    assert (await http.get(f"{daemon.base_url}/readyz")).status == 200
