"""How instances sharing a PostgreSQL store wake one another: `LISTEN`/`NOTIFY` on the channel `dispatcher_work`.

An instance that records events (its intake, its HTTP API) or puts deliveries back (`POST /api/v1/deliveries/retry`)
notifies, in a transaction of its own right after (`notify`); every instance listens on a connection of its own
and, on a notification, looks at the store at once instead of at its next sweep (every 2 s, which stays: a
notification lost while a connection was down costs at most that). Its own notifications wake it too, harmlessly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import psycopg
import structlog

from ..engines.postgresql import CONNECT_TIMEOUT_S, shown_url
from .election import KEEPALIVE_SETTINGS

log = structlog.get_logger(__name__)

CHANNEL = "dispatcher_work"
RECONNECT_S = 2.0


def notify(conn: Any) -> None:
    """In a store job (the store's PostgreSQL connection): wake every instance's planner and scheduler once the
    transaction commits."""
    conn.execute(f"NOTIFY {CHANNEL}")


class Listener:
    """Calls `woken()` on every notification, until cancelled; reconnects when its connection is lost."""

    def __init__(self, url: str, woken: Callable[[], None]) -> None:
        self.url = url
        self.shown = shown_url(url)
        self._woken = woken

    async def run(self) -> None:
        failing = False
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, application_name="dispatcher-listen"
                ) as conn:
                    await conn.execute(KEEPALIVE_SETTINGS)
                    await conn.execute(f"LISTEN {CHANNEL}")
                    failing = False
                    self._woken()  # whatever was notified while not listening
                    async for _ in conn.notifies():
                        self._woken()
            except psycopg.Error as err:
                if not failing:
                    log.warning("cluster_listen_failed", store=self.shown, error=str(err), retry_in_s=RECONNECT_S)
                failing = True
            await asyncio.sleep(RECONNECT_S)
