"""The embedded store: one SQLite database (WAL) owned by one thread.

Every read and write goes through `await store.run(fn)`, which runs `fn(conn)` in the store's thread.
The thread takes every job that is waiting, runs each in its own savepoint and commits them together:
group commit, so that many small durable writes (one per accepted event) cost one fsync between them.
A job that raises is rolled back alone and its caller gets the exception; the others still commit.

Durability has two levels. By default a commit is fsynced before `run` returns (`synchronous=FULL`): what
the daemon acknowledges (an event, a contact's change) survives a power cut. The pipeline's own bookkeeping
(plans, delivery states) passes `durable=False`: committed before `run` returns, so it survives the process
being killed, but fsynced only with the next durable commit or checkpoint. A power cut can then at worst
repeat a send, never lose an event; and a burst of deliveries does not cost one fsync per group.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import structlog

from .errors import StoreError
from .events import Event

log = structlog.get_logger(__name__)

T = TypeVar("T")

# The most hand-overs (the jobs of one event-loop iteration each) one transaction takes: bounds the latency a
# job can add to the ones behind it.
MAX_GROUP = 512

EVENTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,   -- the idempotency key
    type        TEXT NOT NULL,
    body        TEXT NOT NULL,          -- Event.to_json()
    source      TEXT NOT NULL,          -- mqtt | http | internal
    received_at TEXT NOT NULL,
    planned     INTEGER NOT NULL DEFAULT 0  -- 1 once its deliveries are in the outbox
);
CREATE INDEX IF NOT EXISTS events_unplanned ON events(seq) WHERE planned = 0;
"""


@dataclass
class _Job:
    fn: Callable[[sqlite3.Connection], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    durable: bool


# A job's outcome: the job, whether it succeeded, and its result or exception.
JobOutcome = tuple[_Job, bool, Any]

_STOP = object()


class Store:
    """The SQLite store. Open it, `run` functions against it, close it."""

    def __init__(self, path: Path | str, schemas: Sequence[str] = (), *, readonly: bool = False) -> None:
        self.path = Path(path)
        self._schemas = [EVENTS_SCHEMA, *schemas]
        # Read-only: for commands that look at a running daemon's store (`routes`, `test`) and must not write to it.
        self.readonly = readonly
        # The thread takes lists of jobs: `run` collects the jobs of one event-loop iteration and hands them
        # over together, since every hand-over wakes the thread and passes the GIL back and forth.
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._collected: list[_Job] = []
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self.is_open = False

    async def open(self) -> None:
        """Create the database file and its tables if needed and start the store's thread."""
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        loop = asyncio.get_running_loop()

        def started(error: BaseException | None) -> None:
            if not ready.done():
                if error:
                    ready.set_exception(error)
                else:
                    ready.set_result(None)

        self._thread = threading.Thread(
            target=self._serve,
            args=(lambda e: loop.call_soon_threadsafe(started, e),),
            name="dispatcher-store",
            daemon=True,
        )
        self._thread.start()
        await ready
        self.is_open = True
        log.info("store_opened", path=str(self.path))

    async def close(self) -> None:
        """Finish the jobs already submitted, then close the database."""
        if self._thread is None:
            return
        self.is_open = False
        self._hand_over()  # jobs collected in this loop iteration go before the stop
        self._jobs.put(_STOP)
        await asyncio.to_thread(self._thread.join)
        self._thread = None
        log.info("store_closed", path=str(self.path))

    async def run(self, fn: Callable[[sqlite3.Connection], T], *, durable: bool = True) -> T:
        """Run `fn(conn)` in the store's thread, inside a transaction that is committed before this returns.

        `durable=False`: the commit need not be fsynced yet (see the module's docstring).
        """
        if self._thread is None:
            raise StoreError("the store is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if not self._collected:
            loop.call_soon(self._hand_over)
        self._collected.append(_Job(fn, loop, future, durable))
        return await future

    def _hand_over(self) -> None:
        if self._collected:
            jobs, self._collected = self._collected, []
            self._jobs.put(jobs)

    # -- events -------------------------------------------------------------------------------------------------

    async def add_events(self, events: Sequence[Event], source: str) -> list[bool]:
        """Record events durably; for each, True if it is new, False if its id was already recorded."""
        return await self.run(lambda conn: insert_events(conn, events, source))

    # -- the thread ---------------------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self.readonly:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # fail here, not at the first query
            return conn
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so group commit is explicit.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk (WAL fsynced) before the event is acknowledged, even across a power cut.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        for schema in self._schemas:
            conn.executescript(schema)
        return conn

    def _serve(self, started: Callable[[BaseException | None], None]) -> None:
        try:
            self._conn = self._connect()
        except (sqlite3.Error, OSError) as err:
            started(StoreError(f"cannot open the store at {self.path}: {err}"))
            return
        started(None)
        conn = self._conn
        self._synchronous = "FULL"
        stopping = False
        while not stopping:
            handed = [self._jobs.get()]
            while len(handed) < MAX_GROUP:
                try:
                    handed.append(self._jobs.get_nowait())
                except queue.Empty:
                    break
            if _STOP in handed:
                stopping = True
            batch = [job for jobs in handed if jobs is not _STOP for job in jobs]
            if batch:
                self._run_group(conn, batch)
        conn.close()

    def _run_group(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        synchronous = "FULL" if any(job.durable for job in batch) else "NORMAL"
        if synchronous != self._synchronous and not self.readonly:
            conn.execute(f"PRAGMA synchronous={synchronous}")
            self._synchronous = synchronous
        # Optimistically all in one transaction. Jobs are functions of the connection alone, so when one
        # raises, the group is rolled back and each job runs again in a transaction of its own: only the
        # failing one fails. (A savepoint per job would do the same at two statements per job, always.)
        outcomes = self._in_one_transaction(conn, batch)
        if outcomes is None:
            outcomes = [outcome for job in batch for outcome in self._in_one_transaction(conn, [job], alone=True) or ()]
        # One wake-up per event loop for the whole group, not one per job: waking a loop is a syscall.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for job, ok, value in outcomes:
            by_loop.setdefault(job.loop, []).append((job.future, ok, value))
        for loop, settled in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle_all, settled)
            except RuntimeError:  # that loop is closed: nobody waits for these any more
                pass

    def _in_one_transaction(
        self, conn: sqlite3.Connection, jobs: list[_Job], *, alone: bool = False
    ) -> list[JobOutcome] | None:
        """Run `jobs` in one transaction. None if one of them raised (rolled back), unless `alone` (one job),
        whose exception is then its outcome. A failed commit fails them all: nothing of it is durable."""
        results: list[JobOutcome] = []
        try:
            conn.execute("BEGIN" if self.readonly else "BEGIN IMMEDIATE")
            for job in jobs:
                try:
                    results.append((job, True, job.fn(conn)))
                except Exception as err:
                    conn.execute("ROLLBACK")
                    return [(job, False, _as_store_error(err))] if alone else None
            conn.execute("COMMIT")
        except sqlite3.Error as err:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            log.error("store_commit_failed", error=str(err), jobs=len(jobs))
            failure = StoreError(f"store write failed: {err}")
            return [(job, False, failure) for job in jobs]
        return results


def _as_store_error(err: Exception) -> Exception:
    """A job's SQLite error (disk full, a constraint) as the StoreError callers handle; other errors as they are."""
    if isinstance(err, sqlite3.Error):
        wrapped = StoreError(f"store error: {err}")
        wrapped.__cause__ = err
        return wrapped
    return err


def _settle_all(settled: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in settled:
        if future.cancelled():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


def insert_events(conn: sqlite3.Connection, events: Iterable[Event], source: str) -> list[bool]:
    """INSERT events, ignoring ids already recorded; True for each one that is new."""
    fresh = []
    for event in events:
        cursor = conn.execute(
            "INSERT OR IGNORE INTO events (id, type, body, source, received_at) VALUES (?, ?, ?, ?, ?)",
            (event.id, event.type, event.to_json(), source, event.received_at.isoformat()),
        )
        fresh.append(cursor.rowcount == 1)
    return fresh
