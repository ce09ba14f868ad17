"""The daemon's watch over the stored silences: the active silences gauge, and old silences pruned.

Silences are made by the API and, behind the daemon's back, by `dispatcher silence` writing the store; they end
by themselves. The planner reads them from the store at each round, so nothing here decides what is sent: this
task only keeps `/metrics` right (`dispatcher_silences_active`, recounted every `REFRESH_S` and at once after the
API changed one) and, hourly, deletes silences that ended longer ago than `store.retention_days`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from ..errors import StoreError
from ..waiting import wait_set
from .silences import count_active, prune_silences

if TYPE_CHECKING:
    from prometheus_client import Gauge

    from ..engines import Connection
    from ..store import Store

log = structlog.get_logger(__name__)

REFRESH_S = 5.0
PRUNE_EVERY_S = 3600.0
DAY_S = 86400.0


class SilenceWatch:
    """`run()` until `stop()`: recount the active silences into `gauge`; prune ended ones past retention."""

    def __init__(
        self,
        store: Store,
        gauge: Gauge,
        retention_days: int | None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.gauge = gauge
        self.retention_days = retention_days
        self.clock = clock
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._next_prune_at = 0.0

    def poke(self) -> None:
        """A silence was made or expired: recount now."""
        self._wakeup.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wakeup.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            self._wakeup.clear()
            await self.refresh()
            await wait_set(self._wakeup, REFRESH_S)

    async def refresh(self) -> None:
        """Recount the active silences (and prune, when due); a store failure is logged and tried again later."""
        now = self.clock()
        prune_before = None
        if self.retention_days is not None and now >= self._next_prune_at:
            prune_before = now - self.retention_days * DAY_S

        def look(conn: Connection) -> tuple[int, int]:
            pruned = prune_silences(conn, prune_before) if prune_before is not None else 0
            return count_active(conn, now), pruned

        try:
            active, pruned = await self.store.run(look, durable=False)
        except StoreError:
            log.exception("silences_not_counted", retry_in_s=REFRESH_S)
            return
        self.gauge.set(active)
        if prune_before is not None:
            self._next_prune_at = now + PRUNE_EVERY_S
        if pruned:
            log.info("silences_pruned", silences=pruned, retention_days=self.retention_days)
