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

One store file serves one daemon (SPEC §8a). The daemon opens its store with `exclusive=True`, which first takes an
exclusive `flock` on `<db>.lock` beside the database and holds it until `close()`: a second daemon on the same file
fails with `StoreInUse` before it does anything else. SQLite's own locks do not do this: they serialise
transactions, so two daemons would each happily resume the same pending deliveries and send them twice. Read-only
opens (`routes`, `test`, `deliveries`) and commands that change a running daemon's store on purpose (`retry`) take
no instance lock.

The store carries a schema version (`migrations.py`): a writable open creates a new store at the current version,
or migrates an older one, before anything else runs on it; a store from a newer release is refused
(`StoreTooNew`), read-only opens included. New stores are created with `auto_vacuum=INCREMENTAL`, so that
retention (`retention.py`) can give the file's free pages back to the file system after a large prune.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import structlog

from .errors import StoreError
from .events import Event
from .migrations import check_known, upgrade

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
    received_at TEXT NOT NULL,          -- UTC, ISO 8601 (sorts as it reads)
    planned     INTEGER NOT NULL DEFAULT 0  -- 1 once its deliveries are in the outbox
);
CREATE INDEX IF NOT EXISTS events_unplanned ON events(seq) WHERE planned = 0;
CREATE INDEX IF NOT EXISTS events_received ON events(received_at);  -- retention's walk, oldest first
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

# Beside the database: `dispatcher.db` → `dispatcher.db.lock`.
LOCK_SUFFIX = ".lock"


class StoreInUse(StoreError):
    """Another process (or another open Store) holds the store's instance lock: one store serves one instance."""


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
        self._lock_fd: int | None = None
        self.is_open = False
        # Once open: the store's schema version, and the one it had before this open migrated it (None: new store).
        self.schema_version: int | None = None
        self.found_version: int | None = None

    @property
    def lock_path(self) -> Path:
        """The instance lock's file, beside the database."""
        return self.path.with_name(self.path.name + LOCK_SUFFIX)

    async def open(self, *, exclusive: bool = False) -> None:
        """Create the database file and its tables if needed, migrate an older store, start the store's thread.

        `exclusive`: first take the instance lock, held until `close()`; raises `StoreInUse` if another process
        holds it. The daemon opens its store so. Ignored for a read-only store, which is never migrated. Raises
        `StoreTooNew` for a store written by a newer release, `StoreError` if a migration fails.
        """
        if exclusive and not self.readonly:
            self._lock_fd = _lock_instance(self.lock_path, shown=self.path)
        try:
            await self._start_thread()
        except BaseException:
            self._release_lock()
            raise
        self.is_open = True
        log.info(
            "store_opened", path=str(self.path), exclusive=self._lock_fd is not None, schema_version=self.schema_version
        )

    async def _start_thread(self) -> None:
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

    async def close(self) -> None:
        """Finish the jobs already submitted, then close the database."""
        if self._thread is None:
            return
        self.is_open = False
        self._hand_over()  # jobs collected in this loop iteration go before the stop
        self._jobs.put(_STOP)
        await asyncio.to_thread(self._thread.join)
        self._thread = None
        self._release_lock()  # only now: the database is closed, so a successor can start on it
        log.info("store_closed", path=str(self.path))

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = None

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
            try:
                conn.execute("PRAGMA busy_timeout=5000")
                # Fails here, not at the first query, for a file that is not a database or a newer store.
                self.found_version = self.schema_version = check_known(conn, self.path)
            except BaseException:
                conn.close()
                raise
            return conn
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so group commit is explicit.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            # Takes effect only for a new database, and only before its first write (the WAL switch below is one);
            # for an existing store it changes nothing.
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is on disk (WAL fsynced) before the event is acknowledged, even across a power cut.
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=5000")
            began = time.monotonic()
            self.found_version, self.schema_version = upgrade(conn, self._schemas, shown=self.path)
        except BaseException:
            conn.close()
            raise
        if self.found_version is not None and self.found_version != self.schema_version:
            log.info(
                "store_migrated",
                path=str(self.path),
                from_version=self.found_version,
                to_version=self.schema_version,
                duration_s=round(time.monotonic() - began, 3),
            )
        return conn

    def _serve(self, started: Callable[[BaseException | None], None]) -> None:
        try:
            self._conn = self._connect()
        except StoreError as err:  # already one line for the admin (a newer store, a failed migration)
            started(err)
            return
        except Exception as err:
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


def _lock_instance(lock_path: Path, *, shown: Path) -> int:
    """Take the exclusive instance lock on `lock_path` without waiting, write our pid in it, return its descriptor.

    Raises StoreInUse naming the holder's pid (as it wrote it) when another open file holds the lock. The file is
    never removed: removing it while held would let a newcomer lock a fresh file of the same name beside us.
    The descriptor is not inherited by child processes (Python's default), so a sender process cannot keep the
    lock alive after the daemon is gone.
    """
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as err:
        raise StoreError(f"cannot open the store's lock file {lock_path}: {err.strerror or err}") from err
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as err:
        holder = _holder_pid(fd)
        os.close(fd)
        by = f"another dispatcher (pid {holder})" if holder else "another dispatcher"
        raise StoreInUse(f"the store {shown} is in use by {by}; one store serves one instance") from err
    except OSError as err:
        os.close(fd)
        raise StoreError(f"cannot lock the store's lock file {lock_path}: {err.strerror or err}") from err
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    return fd


def _holder_pid(fd: int) -> int | None:
    """The pid the lock's holder wrote, or None (not written yet: it writes just after locking)."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


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
            (event.id, event.type, event.to_json(), source, utc_text(event.received_at)),
        )
        fresh.append(cursor.rowcount == 1)
    return fresh


def utc_text(moment: datetime) -> str:
    """`moment` as the store writes times: UTC, ISO 8601 to the microsecond, so that text order is time order."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")
