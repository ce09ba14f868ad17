"""The delivery pipeline as the daemon runs it: the stages (planning, scheduling, attempts, outcomes) and the
sender wired together, the config each of them works with, and the run.

At start it resumes what the store holds (pending deliveries, and those to a system contact's address the config
no longer has, recorded suppressed); at a reload it gives each stage the new config; at stop it drains the attempts
in flight and leaves the rest pending in the store for the next start.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import structlog

from ..catalog import Catalog
from ..channels import Channel
from ..cluster.claims import ANYONE, Claimant
from ..digests.runner import Digests
from ..errors import StoreError
from ..events import Event
from ..outbox import count_pending, suppress_removed_targets
from ..render import Renderer
from ..routing.recipients import RecipientSource
from ..senders.channel_set import build_channels, close_channels
from ..senders.local import LocalSender
from ..senders.pool import SenderPool
from .attempts import TARGET_REMOVED, Attempts, system_targets
from .outcomes import Outcomes
from .planning import Planner
from .scheduling import Scheduler

if TYPE_CHECKING:
    from ..config import Config
    from ..metrics import Metrics
    from ..store import Store

log = structlog.get_logger(__name__)


class Pipeline:
    """Plans recorded events and delivers them; `run()` until `stop()`, then drains and leaves the rest pending."""

    def __init__(
        self,
        *,
        store: Store,
        catalog: Catalog,
        metrics: Metrics,
        config: Config,
        sources: Sequence[RecipientSource],
        claimant: Callable[[], Claimant] = lambda: ANYONE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.metrics = metrics
        self.config = config
        self.clock = clock
        self._claimant = claimant
        self.renderer = Renderer(catalog, templates_dir=config.templates.dir, hostname=config.hostname)
        self.channels = build_channels(config)
        # Where attempts run: sender processes, or this process with `delivery.workers: 0`.
        self.sender: LocalSender | SenderPool = (
            SenderPool(config.delivery.workers, config, catalog)
            if config.delivery.workers
            else LocalSender(config, catalog, self.channels)
        )
        # The stages call one another in a ring (scheduler → attempt → outcome → scheduler): the scheduler looks
        # the attempt up when it starts one.
        self.scheduler = Scheduler(
            store_run=self._store_run,
            metrics=metrics,
            clock=clock,
            attempt=lambda delivery, event, free_slot: self.attempts.attempt(delivery, event, free_slot),
            lookahead=self.sender.lookahead,
            claimant=claimant,
        )
        # Deliveries a digest rule holds back: taken from planning, attempted when their digest is due.
        self.digests = Digests(
            store_run=self._store_run,
            metrics=metrics,
            clock=clock,
            sender=self.sender,
            config=config,
            channels=self.channels,
            system_targets=system_targets(config),
            events_recorded=lambda events: self.planner.events_recorded(events),
            claimant=claimant,
        )
        self.planner = Planner(
            store_run=self._store_run,
            catalog=catalog,
            metrics=metrics,
            clock=clock,
            scheduler=self.scheduler,
            config=config,
            sources=sources,
            channels=self.channels,
            digests=self.digests,
            claimant=claimant,
        )
        self.outcomes = Outcomes(
            store_run=self._store_run,
            metrics=metrics,
            clock=clock,
            scheduler=self.scheduler,
            policy=config.delivery,
            events_recorded=self.planner.events_recorded,
        )
        self.attempts = Attempts(
            sender=self.sender, outcomes=self.outcomes, channels=self.channels, system_targets=system_targets(config)
        )
        # While running: the task group of run().
        self._tasks: asyncio.TaskGroup | None = None
        self._stopping = asyncio.Event()
        self._retired_channels: list[Channel] = []

    def _store_run(self, fn: Callable[[Any], Any]) -> Any:
        """The pipeline's bookkeeping in the store: committed, fsynced lazily (see `Store`): after a power cut
        the worst case is a send repeated, never an event lost."""
        return self.store.run(fn, durable=False)

    # -- intake side -------------------------------------------------------------------------------------------

    def events_recorded(self, events: Sequence[Event]) -> None:
        """Called after new events are committed: the planner reads them from the store."""
        self.planner.events_recorded(events)

    def apply_config(self, config: Config, sources: Sequence[RecipientSource]) -> None:
        """A reloaded config: new renderer, channels and sources for what is planned and attempted from now on."""
        self.config = config
        self.renderer = Renderer(self.catalog, templates_dir=config.templates.dir, hostname=config.hostname)
        self._retired_channels.extend(self.channels.values())  # closed at stop: sends in flight may still use them
        self.channels = build_channels(config)
        self.sender.apply_config(config, self.channels)
        self.planner.apply_config(config, sources, self.channels)
        self.outcomes.policy = config.delivery
        # Channels whose concurrency changed get slots of the new size; a channel new since the start (a plugin
        # installed meanwhile) gets slots and a loop of its own.
        self.scheduler.size_slots(self.channels)
        self.scheduler.start_channel_loops(self.channels)
        # From here on no attempt goes to a system contact's address the new config dropped (checked before each
        # attempt); what waits in the store for one is recorded suppressed now.
        self.attempts.apply_config(self.channels, system_targets(config))
        self.digests.apply_config(config, self.channels, system_targets(config))
        if self._tasks is not None:
            self._tasks.create_task(self._suppress_removed_targets(), name="suppress-removed-targets")

    def look_for_pending_now(self) -> None:
        """Deliveries were put back to pending in the store (`POST /api/v1/deliveries/retry`): take them up now,
        not at the next sweep (a digest put back with them, too)."""
        self.scheduler.look_for_pending_now()
        self.digests.look_now()

    # -- the run -----------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Resume what the store holds, then plan and deliver until `stop()`."""
        self.scheduler.size_slots(self.channels)
        self.sender.start()
        # Kept in memory from here on, so a scrape of /metrics never waits behind the store's queue.
        self.metrics.pending.set(await self._store_run(count_pending))
        async with asyncio.TaskGroup() as tasks:
            self._tasks = tasks
            self.scheduler.start(tasks, self.channels)
            await self._suppress_removed_targets()  # the config may have changed while the daemon was stopped
            # What a previous run left pending is claimed and taken up by the scheduler's first pass.
            loops = [
                tasks.create_task(self.planner.run(), name="planner"),
                tasks.create_task(self.scheduler.run_retries(), name="retry-scheduler"),
                tasks.create_task(self.digests.run(), name="digests"),
            ]
            await self._stopping.wait()
            for task in loops:
                task.cancel()
            self.scheduler.stop()
            self._tasks = None
        await self._drain()

    def stop(self) -> None:
        self._stopping.set()

    async def _suppress_removed_targets(self) -> None:
        """Record as suppressed each pending delivery not in hand whose system contact or address the config no
        longer has; those in hand are checked before their attempt."""
        configured, skip, now, claimant = (
            self.attempts.system_targets,
            self.scheduler.in_hand(),
            self.clock(),
            self._claimant(),
        )
        try:
            gone = await self._store_run(
                lambda conn: suppress_removed_targets(conn, configured, skip, TARGET_REMOVED, now, claimant)
            )
        except StoreError:
            # They stay pending, and are suppressed when their next attempt comes up.
            log.exception("suppress_removed_targets_failed")
            return
        for _, channel in gone:
            self.metrics.deliveries.labels(channel, "suppressed").inc()
        self.metrics.pending.dec(len(gone))
        if gone:
            log.info("pending_deliveries_suppressed", deliveries=len(gone), reason=TARGET_REMOVED)

    async def _drain(self) -> None:
        await self.scheduler.drain()
        await self.digests.drain()
        await self.sender.close()
        if isinstance(self.sender, SenderPool):  # else they were the local sender's, which closed them
            await close_channels([*self.channels.values(), *self._retired_channels])
