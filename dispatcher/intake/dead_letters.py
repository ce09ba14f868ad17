"""Dead letters: messages the intake refused, kept in the store until the broker has taken their republication.

A refused message is written to the store in the same transaction as the good events of its batch, and the
whole batch is acknowledged after that commit. Republishing it on `<dead_letter_topic>` is the job of
`DeadLetterPublisher`, a task of its own: the intake never waits for a broker's answer while it holds messages,
so it can never wait for an answer that its own read pause keeps it from reading. A row is deleted once the
broker has acknowledged its republication (QoS 1); a connection lost before that republishes it on the next
(at least once).
"""

from __future__ import annotations

import asyncio
import functools
import json
from base64 import b64encode
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from ..config import BusConfig
from ..engines import Connection, is_store_failure
from ..events import MAX_PAYLOAD_BYTES, Event
from ..store import Store, insert_events
from ..untrusted_json import quote
from .bus_client import BusClient, PublishRefused

log = structlog.get_logger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS dead_letters (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    topic       TEXT NOT NULL,
    reason      TEXT NOT NULL,      -- events.REASONS
    message     TEXT NOT NULL,      -- what is wrong, for people
    payload     BLOB NOT NULL,      -- the message as received, republished unchanged
    received_at TEXT NOT NULL
);
"""

# Republications awaiting the broker's PUBACK at once.
PUBLISH_WINDOW = 100
# A message far over the size limit is republished cut to this, so that its dead letter (base64-wrapped on MQTT
# 3.1.1: 4/3 of it) stays within what a broker configured for our events takes (config/mosquitto.conf: 1 MiB).
REPUBLISHED_MAX_BYTES = 2 * MAX_PAYLOAD_BYTES


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A refused message: where it came from, why it was refused, and its bytes."""

    topic: str
    reason: str
    message: str
    payload: bytes
    received_at: str = ""


def record_batch(
    conn: Connection, events: Sequence[tuple[Event, DeadLetter]], letters: Sequence[DeadLetter]
) -> tuple[list[Event], list[bool], list[DeadLetter]]:
    """Insert a batch's events and dead letters in the caller's transaction.

    `events` pairs each event with the dead letter it becomes if it cannot be stored (a value the database refuses);
    returns the events stored, for each whether it is new, and every dead letter written (refused ones first).
    """
    written = list(letters)
    # All at once first, since a statement per event is a round trip each on PostgreSQL; in a savepoint, so that a
    # refused value leaves nothing of the attempt (it may span several statements) before the events go one by one.
    conn.execute("SAVEPOINT record_batch")
    try:
        fresh = insert_events(conn, [event for event, _ in events], "mqtt")
    except Exception as err:
        if is_store_failure(err):
            raise  # the store itself (disk full, locked): the whole batch stays unacknowledged and comes again
        conn.execute("ROLLBACK TO record_batch")
        conn.execute("RELEASE record_batch")
        stored, fresh = _one_by_one(conn, events, written)
    else:
        conn.execute("RELEASE record_batch")
        stored = [event for event, _ in events]
    now = datetime.now(UTC).isoformat()
    conn.executemany(
        "INSERT INTO dead_letters (topic, reason, message, payload, received_at) VALUES (?, ?, ?, ?, ?)",
        [(dead.topic, dead.reason, dead.message, dead.payload, dead.received_at or now) for dead in written],
    )
    return stored, fresh, written


def _one_by_one(
    conn: Connection, events: Sequence[tuple[Event, DeadLetter]], written: list[DeadLetter]
) -> tuple[list[Event], list[bool]]:
    """Insert the events one at a time: one whose values the database refuses becomes a dead letter (appended to
    `written`); the events stored, and for each whether it is new."""
    stored: list[Event] = []
    fresh: list[bool] = []
    for event, if_unstorable in events:
        try:
            fresh.append(insert_events(conn, [event], "mqtt")[0])
            stored.append(event)
        except Exception as err:
            if is_store_failure(err):
                raise  # the store itself (disk full, locked): the whole batch stays unacknowledged and comes again
            # This event's values: it alone becomes a dead letter.
            written.append(
                DeadLetter(
                    if_unstorable.topic,
                    "unreadable",
                    f"could not be stored: {type(err).__name__}: {quote(str(err), 120)}",
                    if_unstorable.payload,
                )
            )
    return stored, fresh


def take_unpublished(conn: Connection, limit: int) -> list[tuple[int, DeadLetter]]:
    """The oldest dead letters not yet republished."""
    rows = conn.execute(
        "SELECT seq, topic, reason, message, payload, received_at FROM dead_letters ORDER BY seq LIMIT ?", (limit,)
    ).fetchall()
    return [(row[0], DeadLetter(row[1], row[2], row[3], bytes(row[4]), row[5])) for row in rows]


def delete_published(conn: Connection, seqs: Sequence[int]) -> None:
    conn.executemany("DELETE FROM dead_letters WHERE seq = ?", [(seq,) for seq in seqs])


def count_unpublished(conn: Connection) -> int:
    row = conn.execute("SELECT count(*) FROM dead_letters").fetchone()
    return int(row[0])


class DeadLetterPublisher:
    """Republishes stored dead letters on the dead-letter topic, PUBLISH_WINDOW at a time, while connected.

    When the broker refuses one (an ACL that forbids the topic: mosquitto then also drops the connection), the
    publisher stops republishing until the daemon restarts: every later dead letter would be refused too, each
    costing a reconnect. The refused ones and those that follow are deleted; their reasons are in the log
    (`event_rejected`) and in `/metrics` all the same.
    """

    def __init__(self, bus: BusConfig, store: Store) -> None:
        self.bus = bus
        self._store = store
        self._wake = asyncio.Event()
        self.refused_by_broker: str | None = None

    def wake(self) -> None:
        """New dead letters were committed."""
        self._wake.set()

    async def run(self, client: BusClient) -> None:
        """Publish until cancelled; raises BusError when the connection is lost (the rest waits for the next)."""
        while True:
            self._wake.clear()
            batch = await self._store.run(lambda conn: take_unpublished(conn, PUBLISH_WINDOW), durable=False)
            if not batch:
                await self._wake.wait()
                continue
            if self.refused_by_broker is None:
                await asyncio.gather(*(self._publish(client, letter) for _, letter in batch))
                log.debug("dead_letters_published", count=len(batch), topic=self.bus.dead_letter_topic)
            done_with = [seq for seq, _ in batch]
            await self._store.run(functools.partial(delete_published, seqs=done_with), durable=False)

    async def _publish(self, client: BusClient, letter: DeadLetter) -> None:
        reason = f"{letter.reason}: {letter.message}"
        payload = letter.payload
        if len(payload) > REPUBLISHED_MAX_BYTES:
            payload = payload[:REPUBLISHED_MAX_BYTES]
            reason += f" (republished cut to its first {REPUBLISHED_MAX_BYTES} bytes)"
        try:
            if self.bus.protocol == "5":
                properties = [("reason", reason), ("topic", letter.topic)]
                await client.publish(self.bus.dead_letter_topic, payload, qos=1, user_properties=properties)
            else:
                wrapped = {"reason": reason, "topic": letter.topic, "payload_base64": b64encode(payload).decode()}
                await client.publish(self.bus.dead_letter_topic, json.dumps(wrapped).encode(), qos=1)
        except PublishRefused as err:
            # Set before anything can cancel us (the broker's disconnect follows in the same read).
            if self.refused_by_broker is None:
                self.refused_by_broker = str(err)
                log.error(
                    "dead_letters_refused",
                    topic=self.bus.dead_letter_topic,
                    error=str(err),
                    consequence="dead letters are logged and counted, not republished, until the daemon restarts",
                )
