"""Retention (`store.retention_days`): a background task that deletes the history older than the limit.

What is history: a *finished* event (planned, and none of its deliveries pending) with its delivery records, sent,
failed and suppressed alike (test notices are such events), and a delivery record whose event is no longer in the
store (removed by hand, say), unless it is pending. Each is deleted once it is older than the limit: an event by
when it was received, a delivery record without its event by when it was created. Nothing else is pruned: an
unplanned event, an event with a pending delivery, dead letters (deleted as soon as the broker has their
republication) and contacts stay.

The task makes a pass shortly after start, then one an hour. A pass walks the old events oldest first (index
`events_received`) in batches of at most `batch_rows` rows deleted, each batch its own `store.run` without an
fsync of its own (`durable=False`): intake's commits go between the batches, so an event waits at most for one
batch, never for a whole pass, however much there is to delete. After each batch the pass rests as long as the
batch took, so it never has more than half of the store's thread. A batch checks and deletes in one transaction,
so a delivery put back to pending meanwhile (`dispatcher retry`) keeps its event.

Space: SQLite does not shrink its file when rows are deleted. Their pages go on the file's free list and later
writes reuse them, so under a steady load the file stops growing once retention deletes about as much as arrives.
A store created by this release has `auto_vacuum=INCREMENTAL` (`store.py`): when a pass leaves more than a
quarter of the file free (after a burst has aged out, or a shorter limit), it gives those pages back to the file
system, `RELEASE_PAGES` per transaction. A store created before keeps its size; docs/deploy.md shows how to
convert it. On PostgreSQL, autovacuum makes the deleted rows' space reusable; giving it back to the file system
takes a `VACUUM FULL`, which locks the tables: the database's admin decides, retention never does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import TypeVar

import structlog

from .engines import Connection
from .store import Store, utc_text

log = structlog.get_logger(__name__)

_T = TypeVar("_T")

DAY_S = 86400.0
# The first pass waits until start-up (resuming pending deliveries, the intake's backlog) is behind it.
FIRST_PASS_DELAY_S = 60.0
PASS_INTERVAL_S = 3600.0
# Rows deleted per transaction: 2-3 ms of the store's thread (measured), the most an event waits for retention.
BATCH_ROWS = 500
# Free pages given back to the file system per transaction (1 MiB of 4 KiB pages, about 2 ms).
RELEASE_PAGES = 256
# Free pages are given back once they exceed this share of the file: a steady load frees far less per pass.
RELEASE_WHEN_FREE_SHARE = 0.25
_AUTO_VACUUM_INCREMENTAL = 2


@dataclass(frozen=True, slots=True)
class EventsBatch:
    """What a batch of the events' walk deleted, and where the walk goes on: the (received_at, seq) of the last
    event it saw, or None once nothing older than the limit is left to see."""

    events: int
    deliveries: int
    after: tuple[str, int] | None


@dataclass(frozen=True, slots=True)
class OrphansBatch:
    """What a batch of the delivery records' walk deleted, and the id it goes on after (None: the walk is done)."""

    deliveries: int
    after: int | None


@dataclass(slots=True)
class PassCounts:
    """What a pass deleted and gave back."""

    events: int = 0
    deliveries: int = 0
    batches: int = 0
    released_bytes: int = 0


def prune_events(conn: Connection, cutoff: str, after: tuple[str, int], limit: int) -> EventsBatch:
    """Delete finished events received before `cutoff` (UTC text, as the store writes it), with their delivery
    records, walking from just after `after` (received_at, seq) oldest first; at most `limit` rows in all.

    Whole events only, in set-based statements; an event with more records than a batch holds has them taken
    `limit` at a time, and goes with the last of them.
    """
    rows = conn.execute(
        "SELECT received_at, seq, id, planned FROM events WHERE received_at < ? AND (received_at, seq) > (?, ?)"
        " ORDER BY received_at, seq LIMIT ?",
        (cutoff, *after, limit),
    ).fetchall()
    planned = [event_id for _, _, event_id, is_planned in rows if is_planned]
    busy: set[str] = set()
    records: dict[str, int] = {}
    if planned:
        marks = _marks(planned)
        pending = conn.execute(
            f"SELECT DISTINCT event_id FROM deliveries WHERE status = 'pending' AND event_id IN ({marks})", planned
        )
        busy = {event_id for (event_id,) in pending}
        counted = conn.execute(
            f"SELECT event_id, count(*) FROM deliveries WHERE event_id IN ({marks}) GROUP BY event_id", planned
        )
        records = dict(counted)
    budget, deliveries = limit, 0
    event_ids: list[str] = []
    seqs: list[int] = []
    done = len(rows) < limit  # nothing older after these
    for received_at, seq, event_id, is_planned in rows:
        if is_planned and event_id not in busy:
            size = records.get(event_id, 0) + 1
            if size > budget:
                if event_ids:
                    done = False  # the next batch starts at this event
                    break
                # Alone more than a batch: some of its records now, the event with the last of them.
                part = conn.execute("SELECT id FROM deliveries WHERE event_id = ? LIMIT ?", (event_id, budget))
                ids = [delivery_id for (delivery_id,) in part]
                _delete_deliveries(conn, ids)
                return EventsBatch(0, len(ids), after)
            event_ids.append(event_id)
            seqs.append(seq)
            deliveries += size - 1
            budget -= size
        after = (received_at, seq)
    if event_ids:
        marks = _marks(event_ids)
        conn.execute(
            "DELETE FROM delivery_retries WHERE delivery_id IN"
            f" (SELECT id FROM deliveries WHERE event_id IN ({marks}))",
            event_ids,
        )
        conn.execute(f"DELETE FROM deliveries WHERE event_id IN ({marks})", event_ids)
        conn.execute(f"DELETE FROM events WHERE seq IN ({_marks(seqs)})", seqs)
    return EventsBatch(len(event_ids), deliveries, None if done else after)


def prune_orphans(conn: Connection, cutoff_s: float, after: int, limit: int) -> OrphansBatch:
    """Delete delivery records created before `cutoff_s` (epoch seconds) whose event is not in the store, unless
    pending, walking `limit` records from just after id `after`; the walk ends at the first newer record."""
    rows = conn.execute(
        "SELECT d.id, d.created_at, d.status, e.seq IS NULL FROM deliveries AS d"
        " LEFT JOIN events AS e ON e.id = d.event_id WHERE d.id > ? ORDER BY d.id LIMIT ?",
        (after, limit),
    ).fetchall()
    doomed: list[int] = []
    for delivery_id, created_at, status, orphan in rows:
        if created_at >= cutoff_s:
            _delete_deliveries(conn, doomed)
            return OrphansBatch(len(doomed), None)
        if orphan and status != "pending":
            doomed.append(delivery_id)
        after = delivery_id
    _delete_deliveries(conn, doomed)
    return OrphansBatch(len(doomed), after if len(rows) == limit else None)


def _delete_deliveries(conn: Connection, ids: Sequence[int]) -> None:
    if ids:
        conn.execute(f"DELETE FROM delivery_retries WHERE delivery_id IN ({_marks(ids)})", ids)
        conn.execute(f"DELETE FROM deliveries WHERE id IN ({_marks(ids)})", ids)


def _marks(values: Sequence[object]) -> str:
    return ",".join("?" * len(values))


@dataclass(frozen=True, slots=True)
class FileSpace:
    """The store file's pages: how many, how many free, their size, and whether free ones can be given back."""

    pages: int
    free_pages: int
    page_size: int
    incremental: bool

    @property
    def worth_releasing(self) -> bool:
        return self.incremental and self.free_pages > self.pages * RELEASE_WHEN_FREE_SHARE


def file_space(conn: Connection) -> FileSpace:
    """The store file's page counts (`PRAGMA page_count`, `freelist_count`, `page_size`, `auto_vacuum`)."""

    def pragma(name: str) -> int:
        return int(conn.execute(f"PRAGMA {name}").fetchone()[0])

    return FileSpace(
        pragma("page_count"),
        pragma("freelist_count"),
        pragma("page_size"),
        pragma("auto_vacuum") == _AUTO_VACUUM_INCREMENTAL,
    )


def release_free_pages(conn: Connection, limit: int) -> tuple[int, int]:
    """Give up to `limit` free pages back to the file system (a store with `auto_vacuum=INCREMENTAL`); return
    (pages given back, free pages left)."""
    before = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
    for _ in range(min(before, limit)):
        # One page per statement: the pragma reports each page it frees as a row without columns, and Python's
        # sqlite3 steps such a statement once.
        conn.execute("PRAGMA incremental_vacuum(1)")
    left = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
    return before - left, left


class Retention:
    """The pruning task of one store: `await run()` until `stop()`; `await prune()` makes one pass now.

    `clock` gives the time in epoch seconds (tests pass their own, to make records old without waiting).
    """

    def __init__(
        self,
        store: Store,
        retention_days: int | None,
        *,
        clock: Callable[[], float] = time.time,
        first_pass_s: float = FIRST_PASS_DELAY_S,
        interval_s: float = PASS_INTERVAL_S,
        batch_rows: int = BATCH_ROWS,
    ) -> None:
        self.store = store
        self.retention_days = retention_days
        self.clock = clock
        self.first_pass_s = first_pass_s
        self.interval_s = interval_s
        self.batch_rows = batch_rows
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """End `run()` after the batch in hand (a pass cut short goes on at the next start)."""
        self._stopping.set()

    async def run(self) -> None:
        """A pass shortly after start, then every `interval_s`, until `stop()`; nothing with no limit set.

        A pass that fails (the store busy, the disk full) is logged and tried again at the next one: housekeeping
        never stops the daemon.
        """
        if self.retention_days is None:
            return
        delay_s = self.first_pass_s
        while not await self._stopped_within(delay_s):
            try:
                await self.prune()
            except Exception:
                log.exception("store_prune_failed")
            delay_s = self.interval_s

    async def _batch(self, job: Callable[[Connection], _T]) -> _T | None:
        """Run one batch, then rest as long as it took (its wait for the store's thread included): retention never
        takes more than half of the store's time, and less when others keep it busy. None once `stop()` is called."""
        if self._stopping.is_set():
            return None
        began = time.monotonic()
        result = await self.store.run(job, durable=False)
        await self._stopped_within(time.monotonic() - began)
        return result

    async def _stopped_within(self, delay_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay_s):
                await self._stopping.wait()
        return self._stopping.is_set()

    async def prune(self) -> PassCounts:
        """One pass: delete what is older than the limit, batch by batch, then give back free pages if they are
        worth it. Logs `store_pruned` when it deleted or gave back anything."""
        counts = PassCounts()
        if self.retention_days is None:
            return counts
        began = time.monotonic()
        cutoff_s = self.clock() - self.retention_days * DAY_S
        cutoff = utc_text(datetime.fromtimestamp(cutoff_s, UTC))
        limit = self.batch_rows

        event_after: tuple[str, int] | None = ("", 0)
        while event_after is not None:
            job = partial(prune_events, cutoff=cutoff, after=event_after, limit=limit)
            batch = await self._batch(job)
            if batch is None:
                break
            counts.events += batch.events
            counts.deliveries += batch.deliveries
            counts.batches += 1
            event_after = batch.after

        orphan_after: int | None = 0
        while orphan_after is not None:
            orphans = await self._batch(partial(prune_orphans, cutoff_s=cutoff_s, after=orphan_after, limit=limit))
            if orphans is None:
                break
            counts.deliveries += orphans.deliveries
            counts.batches += 1
            orphan_after = orphans.after

        space = await self.store.run(file_space, durable=False) if self.store.engine.name == "sqlite" else None
        if space is not None and space.worth_releasing:
            left = space.free_pages
            while left:
                step = await self._batch(partial(release_free_pages, limit=RELEASE_PAGES))
                if step is None or not step[0]:
                    break
                released, left = step
                counts.released_bytes += released * space.page_size

        if counts.events or counts.deliveries or counts.released_bytes:
            log.info(
                "store_pruned",
                events=counts.events,
                deliveries=counts.deliveries,
                released_bytes=counts.released_bytes,
                batches=counts.batches,
                older_than=cutoff,
                duration_s=round(time.monotonic() - began, 3),
            )
        return counts
