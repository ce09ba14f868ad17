"""The store: one database, SQLite (WAL, the embedded default) or PostgreSQL, owned by one thread.

Every read and write goes through `await store.run(fn)`, which runs `fn(conn)` in the store's thread.
The thread takes every job that is waiting, runs each in its own savepoint and commits them together:
group commit, so that many small durable writes (one per accepted event) cost one fsync between them.
A job that raises is rolled back alone and its caller gets the exception; the others still commit.

Durability has two levels. By default a commit is fsynced before `run` returns (`synchronous=FULL`): what
the daemon acknowledges (an event, a contact's change) survives a power cut. The pipeline's own bookkeeping
(plans, delivery states) passes `durable=False`: committed before `run` returns, so it survives the process
being killed, but fsynced only with the next durable commit or checkpoint. A power cut can then at worst
repeat a send, never lose an event; and a burst of deliveries does not cost one fsync per group.

The engine (`engines/`) follows from where the store is: a path is an SQLite file, a `postgresql://` URL a
PostgreSQL database. Everything below holds on both; what differs (connections, DDL, durability, the schema
version, the instance lock) is the engine's. On PostgreSQL, `durable=False` is `synchronous_commit = off` for that
transaction, and there is no instance lock: any number of instances share the database (`cluster/`), each showing
its presence with a session advisory lock the store's connection holds (`hold_presence`, taken again on a new
connection). A PostgreSQL connection that is lost (the server restarted) is opened again for the next group; the
jobs of the group that found it lost fail with a StoreError, as any failed commit does.

One SQLite file serves one daemon (SPEC §8a). The daemon opens its store with `exclusive=True`, which first takes an
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
import queue
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import structlog

from .cluster.membership import SCHEMA as INSTANCES_SCHEMA
from .engines import Connection, Engine, database_errors, engine_for, is_url
from .engines.base import StoreInUse
from .errors import StoreError
from .events import Event
from .migrations import check_known, upgrade

__all__ = [
    "EVENTS_SCHEMA",
    "MAX_GROUP",
    "Store",
    "StoreInUse",
    "StoreNotCreated",
    "insert_events",
    "store_exists",
    "utc_text",
]

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
    planned     INTEGER NOT NULL DEFAULT 0, -- 1 once its deliveries are in the outbox
    claimed_by  INTEGER                 -- the instance planning it (cluster/claims.py)
);
CREATE INDEX IF NOT EXISTS events_unplanned ON events(seq) WHERE planned = 0;
CREATE INDEX IF NOT EXISTS events_received ON events(received_at);  -- retention's walk, oldest first
"""


@dataclass
class _Job:
    fn: Callable[[Any], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    durable: bool


# A job's outcome: the job, whether it succeeded, and its result or exception.
JobOutcome = tuple[_Job, bool, Any]

_STOP = object()


class StoreNotCreated(StoreError):
    """A read-only open found no store: a PostgreSQL database in which no daemon has created its tables yet."""


def store_exists(where: Path | str) -> bool:
    """Whether a store may be at `where` for a command to open: the SQLite file exists; a PostgreSQL database is
    taken to (opening it read-only says whether the daemon has created its tables there)."""
    return is_url(where) or Path(where).exists()


class Store:
    """The store. Open it, `run` functions against it, close it.

    `where`: the SQLite file's path, or a `postgresql://` URL (`StoreConfig.where`).
    """

    def __init__(self, where: Path | str, schemas: Sequence[str] = (), *, readonly: bool = False) -> None:
        self.engine: Engine = engine_for(where)
        # The SQLite file (None on PostgreSQL), and where the store is as logs and messages show it.
        self.path: Path | None = self.engine.path
        self.shown = self.engine.shown
        self._schemas = [EVENTS_SCHEMA, INSTANCES_SCHEMA, *schemas]
        # Read-only: for commands that look at a running daemon's store (`routes`, `test`) and must not write to it.
        self.readonly = readonly
        # The thread takes lists of jobs: `run` collects the jobs of one event-loop iteration and hands them
        # over together, since every hand-over wakes the thread and passes the GIL back and forth.
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._collected: list[_Job] = []
        self._thread: threading.Thread | None = None
        self._conn: Any = None
        self._exclusive = False
        # The instance whose presence the store's connection shows (`hold_presence`), taken again on a new one.
        self._presence: int | None = None
        self.is_open = False
        # Once open: the store's schema version, and the one it had before this open migrated it (None: new store).
        self.schema_version: int | None = None
        self.found_version: int | None = None

    async def open(self, *, exclusive: bool = False) -> None:
        """Create the database (an SQLite file) and its tables if needed, migrate an older store, start the store's
        thread.

        `exclusive`: first take the instance lock, held until `close()`; raises `StoreInUse` if another process
        holds it. The daemon opens its store so. Ignored for a read-only store, which is never migrated. Raises
        `StoreTooNew` for a store written by a newer release, `StoreError` if a migration fails, or if a read-only
        open finds no store (a PostgreSQL database the daemon has not created its tables in).
        """
        self._exclusive = exclusive and not self.readonly
        if self._exclusive:
            self.engine.lock_instance()
        try:
            await self._start_thread()
        except BaseException:
            self.engine.release_instance()
            raise
        self.is_open = True
        log.info(
            "store_opened",
            engine=self.engine.name,
            path=self.shown,
            exclusive=self._exclusive,
            schema_version=self.schema_version,
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
        self.engine.release_instance()  # only now: the database is closed, so a successor can start on it
        log.info("store_closed", path=self.shown)

    async def run(self, fn: Callable[[Any], T], *, durable: bool = True) -> T:
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

    async def hold_presence(self, instance: int) -> None:
        """Show, for as long as the store's connection lives, that `instance` is alive (`engine.hold_presence`: a
        PostgreSQL session advisory lock; nothing on SQLite). A connection opened again takes it again."""
        engine = self.engine

        def hold(conn: Any) -> None:
            self._presence = instance
            engine.hold_presence(conn, instance)

        await self.run(hold, durable=False)

    # -- events -------------------------------------------------------------------------------------------------

    async def add_events(self, events: Sequence[Event], source: str) -> list[bool]:
        """Record events durably; for each, True if it is new, False if its id was already recorded."""
        return await self.run(lambda conn: insert_events(conn, events, source))

    # -- the thread ---------------------------------------------------------------------------------------------

    def _connect(self) -> Any:
        conn = self.engine.connect(readonly=self.readonly, exclusive=self._exclusive)
        try:
            if self.readonly:
                # Fails here, not at the first query, for a file that is not a database or a newer store.
                self.found_version = self.schema_version = check_known(conn, self.shown, engine=self.engine)
                if self.schema_version is None and self.path is None:
                    raise StoreNotCreated(f"no store at {self.shown}: the daemon has not run with this config yet")
                return conn
            began = time.monotonic()
            self.found_version, self.schema_version = upgrade(conn, self._schemas, shown=self.shown, engine=self.engine)
        except BaseException:
            self.engine.close(conn)
            raise
        if self.found_version is not None and self.found_version != self.schema_version:
            log.info(
                "store_migrated",
                path=self.shown,
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
            started(StoreError(f"cannot open the store at {self.shown}: {err}"))
            return
        started(None)
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
                self._run_group(batch)
        if self._conn is not None:
            self.engine.close(self._conn)

    def _usable_connection(self) -> Any:
        """The store's connection, opened again if it was lost (a PostgreSQL server restarted); raises StoreError
        when it cannot be."""
        if self._conn is not None and self.engine.usable(self._conn):
            return self._conn
        if self._conn is not None:
            self.engine.close(self._conn)
            self._conn = None
        try:
            self._conn = self.engine.connect(readonly=self.readonly, exclusive=self._exclusive)
        except StoreError:
            raise
        except Exception as err:
            raise StoreError(f"cannot reach the store at {self.shown}: {err}") from err
        if self._presence is not None:
            self.engine.hold_presence(self._conn, self._presence)
        log.warning("store_reconnected", path=self.shown)
        return self._conn

    def _run_group(self, batch: list[_Job]) -> None:
        # Optimistically all in one transaction. Jobs are functions of the connection alone, so when one
        # raises, the group is rolled back and each job runs again in a transaction of its own: only the
        # failing one fails. (A savepoint per job would do the same at two statements per job, always.)
        outcomes = self._in_one_transaction(batch)
        if outcomes is None:
            outcomes = [outcome for job in batch for outcome in self._in_one_transaction([job], alone=True) or ()]
        # One wake-up per event loop for the whole group, not one per job: waking a loop is a syscall.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for job, ok, value in outcomes:
            by_loop.setdefault(job.loop, []).append((job.future, ok, value))
        for loop, settled in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle_all, settled)
            except RuntimeError:  # that loop is closed: nobody waits for these any more
                pass

    def _in_one_transaction(self, jobs: list[_Job], *, alone: bool = False) -> list[JobOutcome] | None:
        """Run `jobs` in one transaction. None if one of them raised (rolled back), unless `alone` (one job),
        whose exception is then its outcome. A failed commit fails them all: nothing of it is durable."""
        results: list[JobOutcome] = []
        errors = database_errors()
        failures: tuple[type[Exception], ...] = (*errors, StoreError)
        engine = self.engine
        conn = None
        try:
            conn = self._usable_connection()
            engine.begin(conn, readonly=self.readonly, durable=any(job.durable for job in jobs))
            for job in jobs:
                try:
                    results.append((job, True, job.fn(conn)))
                except Exception as err:
                    # The job's frames go: a cursor left in one (a RETURNING not read to its end) would keep its
                    # statement in progress, and SQLite would refuse every later commit while the error lives.
                    traceback.clear_frames(err.__traceback__)
                    engine.rollback(conn)
                    return [(job, False, _as_store_error(err, errors))] if alone else None
            engine.commit(conn)
        except failures as err:
            if conn is not None and engine.usable(conn):
                try:
                    engine.rollback(conn)
                except errors:
                    pass  # lost with the commit: the next group opens the connection again
            log.error("store_commit_failed", error=str(err), jobs=len(jobs))
            failure = err if isinstance(err, StoreError) else StoreError(f"store write failed: {err}")
            return [(job, False, failure) for job in jobs]
        return results


def _as_store_error(err: Exception, errors: tuple[type[Exception], ...]) -> Exception:
    """A job's database error (disk full, a constraint) as the StoreError callers handle; other errors as they are."""
    if isinstance(err, errors):
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


# Events per INSERT of `insert_events`: 5 parameters each, far below both engines' limits on a statement's parameters.
EVENTS_PER_INSERT = 500


def insert_events(conn: Connection, events: Iterable[Event], source: str) -> list[bool]:
    """INSERT events, ignoring ids already recorded; True for each one that is new (an id twice in `events`: its
    first). Many rows to a statement, in order (on PostgreSQL each statement is a round trip); a statement that
    fails inserts none of its rows."""
    events = list(events)
    new_ids: set[str] = set()
    for start in range(0, len(events), EVENTS_PER_INSERT):
        chunk = events[start : start + EVENTS_PER_INSERT]
        values = ", ".join(["(?, ?, ?, ?, ?)"] * len(chunk))
        parameters = [
            value
            for event in chunk
            for value in (event.id, event.type, event.to_json(), source, utc_text(event.received_at))
        ]
        cursor = conn.execute(
            f"INSERT INTO events (id, type, body, source, received_at) VALUES {values} ON CONFLICT DO NOTHING"
            " RETURNING id",
            parameters,
        )
        new_ids.update(event_id for (event_id,) in cursor.fetchall())
    fresh = []
    for event in events:
        fresh.append(event.id in new_ids)
        new_ids.discard(event.id)
    return fresh


def utc_text(moment: datetime) -> str:
    """`moment` as the store writes times: UTC, ISO 8601 to the microsecond, so that text order is time order."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")
