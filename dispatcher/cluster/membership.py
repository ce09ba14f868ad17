"""Who is alive: each daemon's row in `instances`, its heartbeat, and the claims of the instances that stopped.

Work in the store (events to plan, deliveries to attempt, digests to send) is claimed by the instance that takes
it: `claimed_by` is its row's id here. An instance is alive while its heartbeat is fresh (`LEASE_S`) and, on
PostgreSQL, while the store's connection of that instance holds its presence lock (a session advisory lock: the
server drops it the moment the process dies, so a SIGKILLed instance is seen gone at once, not after the lease).
What an instance that is not alive had claimed is free for any other: a claim is a lease that the heartbeat
renews for everything the instance holds at once, one row written every `HEARTBEAT_S` whatever the work in hand.

On SQLite there is one instance per store file (the `<db>.lock`): joining removes every other row, so what a
killed daemon held is free at its next start.

A heartbeat late by more than the lease (a stalled store thread) makes an instance look gone: another may then
take a delivery it is still attempting, which is sent twice. That is the at-least-once of SPEC §8a, never a loss;
each taking over of a claimed delivery is logged (`delivery_taken_over`) and counted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from ..errors import StoreError
from ..waiting import wait_set
from .claims import Claimant

if TYPE_CHECKING:
    from ..config import Config
    from ..engines import Connection
    from ..store import Store

log = structlog.get_logger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    started_at   REAL NOT NULL,
    heartbeat_at REAL NOT NULL,
    config_hash  TEXT NOT NULL,          -- config_hash(): check-config warns when live instances differ
    config_path  TEXT
);
"""

# An instance renews its lease this often; one whose heartbeat is older than LEASE_S is gone. The two leave room
# for a store thread busy with a long group (a planning round), and keep a takeover within SPEC §8a's 30 s.
HEARTBEAT_S = 3.0
LEASE_S = 15.0
# Rows of instances gone longer than this are removed (their claims were free long before).
FORGET_AFTER_S = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Instance:
    """An instance's row, as `check-config` and the logs show it."""

    id: int
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    config_hash: str
    config_path: str | None


def config_hash(config: Config) -> str:
    """What instances sharing a store must agree on, as a short hash: every section but what is each machine's
    own: `http`, `hostname` (and the email sender's default address, `dispatcher@<hostname>`), `store` (the same
    database, perhaps reached with another user or passfile) and `delivery.workers` (sized to the machine's
    cores). Secrets count by their presence only (their `repr` hides them), so the hash tells nothing of them."""
    email = config.channels.email
    if email.from_addr == f"dispatcher@{config.hostname}":
        email = dataclasses.replace(email, from_addr="dispatcher@<hostname>")
    shared = (
        config.bus,
        config.templates,
        dataclasses.replace(config.channels, email=email),
        dataclasses.replace(config.delivery, workers=0),
        config.importance,
        config.contacts,
        config.routes,
        config.digests,
        config.repeats,
    )
    return hashlib.sha256(repr(shared).encode()).hexdigest()[:16]


def register(conn: Connection, *, host: str, pid: int, config_hash: str, config_path: str | None, now: float) -> int:
    """Insert this instance's row; its id."""
    cursor = conn.execute(
        "INSERT INTO instances (host, pid, started_at, heartbeat_at, config_hash, config_path)"
        " VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
        (host, pid, now, now, config_hash, config_path),
    )
    return int(cursor.fetchall()[0][0])


def forget_others(conn: Connection, me: int) -> None:
    """Remove every other instance's row (one instance per store: their claims are free from here)."""
    conn.execute("DELETE FROM instances WHERE id != ?", (me,))


def beat(conn: Connection, me: int, now: float, config_hash: str) -> bool:
    """Renew this instance's lease (and its config hash, after a reload); False if its row was removed (an
    instance that was taken for gone and forgotten: it joins again)."""
    cursor = conn.execute("UPDATE instances SET heartbeat_at = ?, config_hash = ? WHERE id = ?", (now, config_hash, me))
    return cursor.rowcount == 1


def list_instances(conn: Connection) -> list[Instance]:
    rows = conn.execute(
        "SELECT id, host, pid, started_at, heartbeat_at, config_hash, config_path FROM instances ORDER BY id"
    ).fetchall()
    return [Instance(int(r[0]), r[1], int(r[2]), float(r[3]), float(r[4]), r[5], r[6]) for r in rows]


def live_instances(conn: Connection, now: float, present: set[int] | None) -> list[Instance]:
    """The instances alive at `now`: a heartbeat within LEASE_S and, where the engine can tell (`present`, the
    ids whose presence lock is held; None on SQLite), a connection still open."""
    return [row for row in list_instances(conn) if is_alive(row, now, present)]


def is_alive(row: Instance, now: float, present: set[int] | None) -> bool:
    return row.heartbeat_at >= now - LEASE_S and (present is None or row.id in present)


def leave(conn: Connection, me: int) -> None:
    """A clean stop: this instance's claims go back (what it left pending is anyone's at once), its row goes."""
    for table in ("events", "deliveries", "digests"):
        conn.execute(f"UPDATE {table} SET claimed_by = NULL WHERE claimed_by = ?", (me,))
    conn.execute("DELETE FROM instances WHERE id = ?", (me,))


def forget_gone(conn: Connection, now: float) -> None:
    conn.execute("DELETE FROM instances WHERE heartbeat_at < ?", (now - FORGET_AFTER_S,))


class Membership:
    """This instance in the store: joined at start, its lease renewed every HEARTBEAT_S, left at stop.

    `claimant()` is what the claiming queries are given: this instance's id (`me`), and the instances found gone at
    the last heartbeat, whose claims are free. An instance that joined since is taken as alive: its claims are
    never taken before a heartbeat has seen it gone."""

    def __init__(self, store: Store, config: Config, *, clock: Callable[[], float]) -> None:
        self._store = store
        self.clock = clock
        self.config_hash = config_hash(config)
        self._config_path = str(config.source) if config.source else None
        self.me = 0  # until joined: 0 claims nothing that anyone else could hold
        self.gone: frozenset[int] = frozenset()
        self._stopping = asyncio.Event()
        self._exclusive = store.engine.name == "sqlite"

    def apply_config(self, config: Config) -> None:
        """A reload: the next heartbeat records the new config's hash."""
        self.config_hash = config_hash(config)

    async def join(self) -> None:
        """Insert this instance's row and, on PostgreSQL, take its presence lock on the store's connection."""
        now, host, digest, path, exclusive = (
            self.clock(),
            socket.gethostname(),
            self.config_hash,
            self._config_path,
            self._exclusive,
        )

        def join(conn: Any) -> int:
            me = register(conn, host=host, pid=os.getpid(), config_hash=digest, config_path=path, now=now)
            if exclusive:
                forget_others(conn, me)
            return me

        self.me = await self._store.run(join)
        await self._store.hold_presence(self.me)
        log.info("instance_joined", instance=self.me, engine=self._store.engine.name, config_hash=self.config_hash)
        await self.beat()  # who is gone, before anything is claimed

    def claimant(self) -> Claimant:
        return Claimant(self.me, self.gone)

    async def run(self) -> None:
        """Renew the lease every HEARTBEAT_S until `stop()`, refreshing `gone`."""
        while not self._stopping.is_set():
            await self.beat()
            await wait_set(self._stopping, HEARTBEAT_S)

    async def beat(self) -> None:
        now, me, digest, engine = self.clock(), self.me, self.config_hash, self._store.engine

        def renew(conn: Any) -> tuple[bool, list[Instance], set[int] | None]:
            kept = beat(conn, me, now, digest)
            forget_gone(conn, now)
            return kept, list_instances(conn), engine.present_instances(conn)

        try:
            kept, known, present = await self._store.run(renew, durable=False)
        except StoreError:
            log.exception("instance_heartbeat_failed")
            return
        if not kept:
            log.warning("instance_forgotten", instance=me, action="joining again")
            await self.join()
            return
        gone = frozenset(row.id for row in known if row.id != me and not is_alive(row, now, present))
        for instance in gone - self.gone:
            log.warning("instance_gone", instance=instance, action="its claims are taken over")
        self.gone = gone

    def stop(self) -> None:
        self._stopping.set()

    async def leave(self) -> None:
        """Give back every claim and remove this instance's row (a clean stop)."""
        me = self.me
        try:
            await self._store.run(lambda conn: leave(conn, me))
        except StoreError:
            log.exception("instance_leave_failed", instance=me)  # its claims free themselves when the lease ends
