"""Retention (`store.retention_days`): finished events and their delivery records older than the limit are deleted
in the background, batch by batch, through a real store; the rest is kept, and intake keeps committing meanwhile.

The pruning task takes its time from an injected clock, so records become "old" without waiting.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import sqlite3
import statistics
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from dispatcher import contacts, outbox
from dispatcher.app import Dispatcher
from dispatcher.config import load_config
from dispatcher.events import Event
from dispatcher.intake import dead_letters
from dispatcher.outbox import NewDelivery
from dispatcher.retention import Retention, prune_events
from dispatcher.store import Store, insert_events, utc_text

from .conftest import store_of, wait_until

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
SCHEMAS = [outbox.SCHEMA, contacts.SCHEMA, dead_letters.SCHEMA]


def clock() -> float:
    return NOW.timestamp()


def event(event_id: str, received_at: datetime) -> Event:
    return Event(
        id=event_id,
        type="Backup/Failure",
        occurred_at=received_at,
        host="h.example.com",
        account=None,
        client_id=None,
        data={"error": "disk full"},
        received_at=received_at,
    )


def record(
    conn: sqlite3.Connection, event_id: str, received_at: datetime, statuses: Iterable[str], *, planned: bool = True
) -> list[int]:
    """An event received at `received_at`, planned then (unless not `planned`), with one delivery per status:
    `sent`, `failed`, `suppressed`, `pending`, or `retried` (failed, put back by hand, then sent). The ids."""
    new = event(event_id, received_at)
    insert_events(conn, [new], "mqtt")
    if not planned:
        return []
    return plan(conn, new, statuses, received_at.timestamp())


def orphan(conn: sqlite3.Connection, new: Event, statuses: Iterable[str]) -> None:
    """Deliveries of `new` whose event is then removed from the store (by hand, say)."""
    insert_events(conn, [new], "mqtt")
    plan(conn, new, statuses, new.received_at.timestamp())
    conn.execute("DELETE FROM events WHERE id = ?", (new.id,))


def plan(conn: sqlite3.Connection, new: Event, statuses: Iterable[str], at_s: float) -> list[int]:
    """Deliveries of `new` created at `at_s` and taken to `statuses` (see `record`); marks the event planned."""
    statuses = list(statuses)
    rows = [
        NewDelivery(new, "high", "root", "system", "email", f"r{n}@example.com", f"r{n}@example.com", "pending")
        for n in range(len(statuses))
    ]
    pending = outbox.record_plans(conn, [new.id], rows, at_s)
    for delivery, status in zip(pending, statuses, strict=True):
        if status in ("failed", "retried"):
            outbox.mark_failed(conn, delivery.id, 1, "550 no", at_s, None)
        if status == "retried":
            outbox.retry_failed(conn, delivery_id=delivery.id, now=at_s)
        if status in ("sent", "retried"):
            outbox.mark_sent(conn, delivery.id, 2, at_s)
        if status == "suppressed":
            outbox.mark_suppressed(conn, delivery.id, "muted", at_s)
    return [delivery.id for delivery in pending]


async def open_store(where: Path | str) -> Store:
    """The daemon's tables in a store at `where` (the engine under test's `store_where`, or an SQLite file)."""
    store = Store(where, schemas=SCHEMAS)
    await store.open(exclusive=True)
    return store


def ids(conn: sqlite3.Connection, sql: str) -> set[Any]:
    return {row[0] for row in conn.execute(sql)}


async def test_old_finished_events_and_their_records_go_and_the_rest_stays(store_where: Path | str) -> None:
    """With a 30-day limit, one pass deletes the finished events received before it (sent, failed, suppressed,
    retried by hand, or planned with no delivery at all) with every delivery record and retry note of theirs, and
    an old record whose event is not in the store. It keeps: events of the last 30 days, an old event with a pending
    delivery (all its records), an old event not yet planned, a pending record without an event, dead letters and
    contacts. It logs one `store_pruned` line with the counts."""
    store = await open_store(store_where)
    old, young = NOW - 31 * DAY, NOW - 29 * DAY

    def fill(conn: sqlite3.Connection) -> None:
        # In the order of time, as the daemon writes them.
        record(conn, "old-sent", NOW - 400 * DAY, ["sent", "sent"])
        record(conn, "old-mixed", old, ["failed", "suppressed", "retried"])
        record(conn, "old-nothing", old, [])
        record(conn, "old-pending", old, ["sent", "pending"])
        record(conn, "old-unplanned", old, [], planned=False)
        # Records whose event is not in the store (removed by hand, say).
        orphan(conn, event("orphan-old", old), ["sent"])
        orphan(conn, event("orphan-old-pending", old), ["pending"])
        record(conn, "young-sent", young, ["sent"])
        record(conn, "young-pending", young, ["pending"])
        orphan(conn, event("orphan-young", young), ["sent"])
        conn.execute(
            "INSERT INTO dead_letters (topic, reason, message, payload, received_at) VALUES (?, ?, ?, ?, ?)",
            ("events/X/Y", "invalid_json", "bad", b"{", utc_text(NOW - 90 * DAY)),
        )
        conn.execute("INSERT INTO account_contacts (account, email, updated_at) VALUES ('bob', 'b@example.com', '')")

    await store.run(fill)
    retention = Retention(store, 30, clock=clock)
    with capture_logs() as logs:
        counts = await retention.prune()

    def remaining(conn: sqlite3.Connection) -> tuple[set[str], set[str], int, int, int]:
        return (
            ids(conn, "SELECT id FROM events"),
            ids(conn, "SELECT DISTINCT event_id FROM deliveries"),
            conn.execute("SELECT count(*) FROM delivery_retries").fetchone()[0],
            conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0],
            conn.execute("SELECT count(*) FROM account_contacts").fetchone()[0],
        )

    events, with_records, retry_notes, letters, accounts = await store.run(remaining)
    assert events == {"old-pending", "old-unplanned", "young-sent", "young-pending"}
    assert with_records == {"old-pending", "young-sent", "young-pending", "orphan-old-pending", "orphan-young"}
    assert (retry_notes, letters, accounts) == (0, 1, 1)
    assert (
        await store.run(
            lambda conn: conn.execute("SELECT count(*) FROM deliveries WHERE event_id = 'old-pending'").fetchone()[0]
        )
        == 2
    )
    assert (counts.events, counts.deliveries) == (3, 6)
    pruned = [entry for entry in logs if entry["event"] == "store_pruned"]
    assert len(pruned) == 1
    assert (pruned[0]["events"], pruned[0]["deliveries"]) == (3, 6)
    assert pruned[0]["older_than"] == utc_text(NOW - 30 * DAY)

    # A second pass finds nothing more, and says nothing.
    with capture_logs() as logs:
        again = await retention.prune()
    assert (again.events, again.deliveries) == (0, 0)
    assert not [entry for entry in logs if entry["event"] == "store_pruned"]
    await store.close()


async def test_a_delivery_put_back_to_pending_keeps_its_event(store_where: Path | str) -> None:
    """An old failed delivery put back to pending (`dispatcher retry`) makes its event unfinished again: kept, until
    the retry has ended and the next pass takes it."""
    store = await open_store(store_where)
    delivery_ids = await store.run(lambda conn: record(conn, "e", NOW - 40 * DAY, ["failed"]))
    await store.run(lambda conn: outbox.retry_failed(conn, delivery_id=delivery_ids[0], now=clock()))
    retention = Retention(store, 30, clock=clock)
    assert (await retention.prune()).events == 0
    await store.run(lambda conn: outbox.mark_sent(conn, delivery_ids[0], 2, clock()))
    counts = await retention.prune()
    assert (counts.events, counts.deliveries) == (1, 1)
    assert await store.run(lambda conn: conn.execute("SELECT count(*) FROM delivery_retries").fetchone()[0]) == 0
    await store.close()


async def test_batches_are_bounded_and_the_walk_survives_ties_and_big_events(store_where: Path | str) -> None:
    """Batches of at most `batch_rows` rows: 1,000 old events received in the same microsecond (the walk's cursor
    is (received_at, seq), not the time alone) with 3 records each, and one event with 250 records (more than a
    batch: its records go over several batches, the event with the last), are all deleted; an unfinished one in
    the middle is stepped over, not stuck on."""
    store = await open_store(store_where)
    moment = NOW - 60 * DAY

    def fill(conn: sqlite3.Connection) -> None:
        for n in range(1000):
            record(conn, f"tie-{n:04}", moment, ["sent", "failed", "suppressed"])
            if n == 500:
                record(conn, "stuck", moment, ["pending"])
        record(conn, "big", moment + timedelta(seconds=1), ["sent"] * 250)

    await store.run(fill, durable=False)
    cutoff = utc_text(NOW - 30 * DAY)
    after: tuple[str, int] | None = ("", 0)
    batches, events, deliveries = 0, 0, 0
    while after is not None:
        batch = await store.run(functools.partial(prune_events, cutoff=cutoff, after=after, limit=100))
        assert batch.events + batch.deliveries <= 100
        batches, events, deliveries = batches + 1, events + batch.events, deliveries + batch.deliveries
        after = batch.after
    assert (events, deliveries) == (1001, 3250)
    assert batches >= 43  # 4,251 rows, 100 at a time
    left = await store.run(lambda conn: ids(conn, "SELECT id FROM events"))
    assert left == {"stuck"}
    await store.close()


async def test_no_limit_keeps_everything_and_the_task_runs_on_its_own(store_where: Path | str) -> None:
    """`retention_days: null` (None): `run()` returns at once and a pass deletes nothing. With a limit, `run()`
    makes its first pass after `first_pass_s` and the next ones every `interval_s`, and `stop()` ends it at once."""
    store = await open_store(store_where)
    await store.run(lambda conn: record(conn, "ancient", NOW - 3650 * DAY, ["sent"]))
    keep_all = Retention(store, None, clock=clock, first_pass_s=0)
    await asyncio.wait_for(keep_all.run(), 1)
    assert (await keep_all.prune()).events == 0

    now = [clock()]
    retention = Retention(store, 30, clock=lambda: now[0], first_pass_s=0.05, interval_s=0.05)
    task = asyncio.create_task(retention.run())

    async def no_events() -> bool:
        return await store.run(lambda conn: conn.execute("SELECT count(*) FROM events").fetchone()[0]) == 0

    await wait_until(no_events, timeout_s=5)
    # A later pass takes what became old since: the clock moves on by 31 days.
    await store.run(lambda conn: record(conn, "later", datetime.fromtimestamp(now[0], UTC), ["sent"]))
    assert not await no_events()
    now[0] += 31 * DAY.total_seconds()
    await wait_until(no_events, timeout_s=5)
    retention.stop()
    await asyncio.wait_for(task, 1)
    await store.close()


def checkpoint(db: Path) -> None:
    """Copy the WAL into the database file (and cut the file to its pages), as SQLite does on its own every
    1,000 pages; from a connection of its own, since a checkpoint cannot run inside the store's transactions."""
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0  # not blocked
    conn.close()


async def test_free_pages_go_back_to_the_file_system_after_a_large_prune(tmp_path: Path) -> None:
    """A new store (auto_vacuum=INCREMENTAL) that pruned most of its rows gives the free pages back: the file
    shrinks to a fraction once checkpointed, and the pass reports the bytes released."""
    store = await open_store(tmp_path / "dispatcher.db")
    db = tmp_path / "dispatcher.db"

    def fill(conn: sqlite3.Connection) -> None:
        for n in range(3000):
            new = dataclasses.replace(event(f"e{n}", NOW - (60 if n < 2700 else 1) * DAY), data={"log": "x" * 2000})
            insert_events(conn, [new], "mqtt")
            plan(conn, new, ["sent"], new.received_at.timestamp())

    await store.run(fill, durable=False)
    checkpoint(db)
    before = db.stat().st_size
    counts = await Retention(store, 30, clock=clock).prune()
    checkpoint(db)
    after = db.stat().st_size
    assert counts.events == 2700
    assert counts.released_bytes > 0.7 * before
    assert after < 0.3 * before, (before, after)
    assert await store.run(lambda conn: conn.execute("PRAGMA integrity_check").fetchone()[0]) == "ok"
    await store.close()


async def test_a_store_without_incremental_vacuum_keeps_its_size(tmp_path: Path) -> None:
    """A store created before auto_vacuum was set (the first release's) is pruned all the same; its free pages stay
    in the file for later writes to reuse, and nothing is reported released."""
    db = tmp_path / "dispatcher.db"
    with sqlite3.connect(db) as conn:  # tables first: auto_vacuum can no longer be switched on by the store
        conn.execute("CREATE TABLE placeholder (x INTEGER)")
    conn.close()
    store = Store(db, schemas=SCHEMAS)
    await store.open()
    await store.run(lambda conn: [record(conn, f"e{n}", NOW - 60 * DAY, ["sent"]) for n in range(500)])
    counts = await Retention(store, 30, clock=clock).prune()
    assert (counts.events, counts.released_bytes) == (500, 0)
    assert await store.run(lambda conn: conn.execute("PRAGMA freelist_count").fetchone()[0]) > 0
    await store.close()


@pytest.mark.slow
async def test_intake_keeps_committing_while_a_large_prune_runs(tmp_path: Path) -> None:
    """50,000 old finished events (each with a delivery record: 100,000 rows) are pruned while an intake commits
    one durable event every 5 ms through the same store. The intake never waits long: its slowest commit stays far
    below a whole pass, and it commits all along the pass instead of after it."""
    store = await open_store(tmp_path / "dispatcher.db")
    old = NOW - 90 * DAY

    def fill(conn: sqlite3.Connection) -> None:
        for n in range(50_000):
            new = event(f"old-{n}", old + timedelta(seconds=n))
            insert_events(conn, [new], "mqtt")
            plan(conn, new, ["sent"], new.received_at.timestamp())

    await store.run(fill, durable=False)
    retention = Retention(store, 30, clock=clock)
    latencies_s: list[float] = []
    done = asyncio.Event()

    async def intake() -> None:
        n = 0
        while not done.is_set():
            began = time.perf_counter()
            await store.add_events([event(f"new-{n}", datetime.now(UTC))], "mqtt")
            latencies_s.append(time.perf_counter() - began)
            n += 1
            await asyncio.sleep(0.005)

    feeder = asyncio.create_task(intake())
    await wait_until(lambda: len(latencies_s) >= 20)  # the intake's latency without a prune, for the figures
    quiet = len(latencies_s)
    began = time.perf_counter()
    counts = await retention.prune()
    pass_s = time.perf_counter() - began
    done.set()
    await feeder
    during = latencies_s[quiet:]
    figures = {
        "pass_s": round(pass_s, 2),
        "rows_per_s": round((counts.events + counts.deliveries) / pass_s),
        "batches": counts.batches,
        "intake_commits_during": len(during),
        "intake_quiet_median_ms": round(statistics.median(latencies_s[:quiet]) * 1000, 1),
        "intake_median_ms": round(statistics.median(during) * 1000, 1),
        "intake_max_ms": round(max(during) * 1000, 1),
    }
    print(f"\nprune figures: {figures}")
    assert (counts.events, counts.deliveries) == (50_000, 50_000)
    assert max(during) < 0.5 and max(during) < pass_s / 4, figures
    assert len(during) >= pass_s / 0.05, figures  # commits all along: at least one per 50 ms of the pass
    await store.close()


async def test_the_daemon_prunes_with_its_configured_limit(tmp_path: Path, make_config: Callable[..., Path]) -> None:
    """The daemon starts the retention task with `store.retention_days` from its config (here 7): an event
    finished 8 days ago is gone after the first pass, one from 6 days ago stays."""
    config = make_config(store={"retention_days": 7}, delivery={"workers": 0})
    store = await open_store(store_of(config))
    now = datetime.now(UTC)
    await store.run(lambda conn: record(conn, "eight-days", now - 8 * DAY, ["sent"]))
    await store.run(lambda conn: record(conn, "six-days", now - 6 * DAY, ["sent"]))
    await store.close()

    dispatcher = Dispatcher(load_config(config))
    assert dispatcher.retention.retention_days == 7
    dispatcher.retention.first_pass_s = 0.1
    await dispatcher.start()
    task = asyncio.create_task(dispatcher.run())
    try:

        async def left() -> set[str]:
            return set(await dispatcher.store.run(lambda conn: ids(conn, "SELECT id FROM events")))

        deadline = time.monotonic() + 10
        while await left() != {"six-days"}:
            assert time.monotonic() < deadline, await left()
            await asyncio.sleep(0.05)
    finally:
        dispatcher.stop()
        await asyncio.wait_for(task, 30)
