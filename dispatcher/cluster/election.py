"""Which instance of a cluster runs the intake: the one holding the intake lock, a PostgreSQL advisory lock.

Why one intake and not a shared subscription (`$share`): mosquitto hands a shared subscription's share to a member
even while it is offline, and does not give an ended session's in-flight messages to another member (mosquitto
#1747, #2662), so a member that dies takes what it was sent with it until it returns. One intake per cluster with
the cluster's fixed client id and persistent session avoids that: the instance elected after it connects with
the same client id, inherits the session, and the broker sends it everything the dead one had not acknowledged
(events it had stored but not yet acknowledged come again, and are deduplicated by id on insert).

The lock is a session advisory lock on a connection of its own, taken with `pg_try_advisory_lock` every
`TRY_EVERY_S` by each standby. The server drops it the moment the holder's connection ends: a killed process at
once; a machine that vanished once the server's TCP keepalives give up on it (set short on this connection,
`KEEPALIVE_*`). The holder checks its connection every `CHECK_EVERY_S`; when it fails, or takes longer than
`CHECK_TIMEOUT_S`, it stops its intake at once, since another instance may be elected from then on.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import structlog

from ..engines.postgresql import CONNECT_TIMEOUT_S, MIGRATION_LOCK, shown_url

log = structlog.get_logger(__name__)

# The intake lock's key: next to the migrations' ("dispatch" in ASCII, plus one).
INTAKE_LOCK = MIGRATION_LOCK + 1
TRY_EVERY_S = 1.0
CHECK_EVERY_S = 1.0
CHECK_TIMEOUT_S = 5.0
# The server gives up on a silent connection after about IDLE + INTERVAL x COUNT seconds, so that the lock of a
# machine that vanished without closing its connections is free within SPEC §8a's 30 s.
KEEPALIVE_SETTINGS = (
    "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; SET tcp_keepalives_count = 3;"
    " SET tcp_user_timeout = 10000"
)


class IntakeElection:
    """`await elected()` returns once this instance holds the intake lock; `await lost()` returns when it may no
    longer hold it; `resign()` gives it up."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.shown = shown_url(url)
        self._conn: psycopg.AsyncConnection[Any] | None = None
        # Whether the last try found the lock held by another instance: this one is then a standby.
        self.held_elsewhere = False

    async def elected(self) -> None:
        """Wait until this instance holds the intake lock (trying every TRY_EVERY_S; a store that cannot be
        reached is logged and tried again)."""
        failing = False
        while True:
            try:
                if self._conn is None:
                    self._conn = await psycopg.AsyncConnection.connect(
                        self.url,
                        autocommit=True,
                        connect_timeout=CONNECT_TIMEOUT_S,
                        application_name="dispatcher-intake-election",
                    )
                    await self._conn.execute(KEEPALIVE_SETTINGS)
                cursor = await self._conn.execute("SELECT pg_try_advisory_lock(%s)", (INTAKE_LOCK,))
                row = await cursor.fetchone()
                self.held_elsewhere = not (row and row[0])
                if not self.held_elsewhere:
                    return
                failing = False
            except psycopg.Error as err:
                if not failing:
                    log.warning("intake_election_failed", store=self.shown, error=str(err), retry_in_s=TRY_EVERY_S)
                failing = True
                await self.resign()
            await asyncio.sleep(TRY_EVERY_S)

    async def lost(self) -> None:
        """Return when the lock may be lost: its connection failed, or did not answer within CHECK_TIMEOUT_S."""
        assert self._conn is not None
        while True:
            await asyncio.sleep(CHECK_EVERY_S)
            try:
                async with asyncio.timeout(CHECK_TIMEOUT_S):
                    await self._conn.execute("SELECT 1")
            except (psycopg.Error, TimeoutError) as err:
                log.error("intake_lock_lost", store=self.shown, error=str(err) or type(err).__name__)
                return

    async def resign(self) -> None:
        """Give the lock up (closing its connection ends the session, and the lock with it)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close()
            except psycopg.Error:
                pass
