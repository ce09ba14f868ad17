"""Planning: each recorded event planned once (routing/planner.py), its deliveries recorded and handed on.

    recorded event ──plan──► deliveries rows (pending | suppressed), event marked planned   one transaction

Events wait in the store until a planner claims them (`outbox.claim_unplanned`): instances sharing a store each
plan what they claimed, and the events an instance that is gone had claimed are anyone's. A planner looks when told
(its instance recorded events, or another one did: `cluster/signals.py`) and every `SWEEP_INTERVAL_S` besides.

A round takes events until it has about `PLAN_ROWS`
deliveries (an event's plan is never split), and planning waits while the scheduler holds `BACKLOG_HIGH`
deliveries: the rest waits in the store, so a burst or a fan-out costs no more memory than that.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import structlog

from ..catalog import Catalog
from ..cluster.claims import Claimant
from ..errors import StoreError
from ..events import Event
from ..noise.gate import NoiseGate, Recorded
from ..outbox import NewDelivery, claim_unplanned, recipient_kind
from ..routing.planner import Plan, plan_event
from ..routing.recipients import RecipientSource
from ..waiting import wait_set
from .scheduling import STORE_RETRY_S, SWEEP_INTERVAL_S, Scheduler, StoreRun

if TYPE_CHECKING:
    from ..channels import Channel
    from ..config import Config
    from ..digests.runner import Digests
    from ..metrics import Metrics

log = structlog.get_logger(__name__)

# Events read per planning round, and the deliveries one round may plan: a round stops taking events once its
# rows reach PLAN_ROWS (an event's plan is never split), so a fan-out to hundreds of addresses does not put a
# whole batch's deliveries (256 x 200 in bench scenario c) in memory at once.
PLAN_BATCH = 256
PLAN_ROWS = 1000


class Planner:
    """Plans recorded events under the current config and records the plans; the pending deliveries go to the
    scheduler, except those a digest rule holds back (`digests`, in the same transaction), which go with their
    digest. `run()` until cancelled."""

    def __init__(
        self,
        *,
        store_run: StoreRun,
        catalog: Catalog,
        metrics: Metrics,
        clock: Callable[[], float],
        scheduler: Scheduler,
        config: Config,
        sources: Sequence[RecipientSource],
        channels: Mapping[str, Channel],
        claimant: Callable[[], Claimant],
        digests: Digests | None = None,
    ) -> None:
        self._store_run = store_run
        self._claimant = claimant
        self.catalog = catalog
        self.metrics = metrics
        self.clock = clock
        self.scheduler = scheduler
        self.digests = digests
        self.apply_config(config, sources, channels)
        self._wakeup = asyncio.Event()  # set after new events are committed
        # Seqs of events whose planning raised: passed over, planned again at the next start.
        self._unplannable: set[int] = set()

    def apply_config(self, config: Config, sources: Sequence[RecipientSource], channels: Mapping[str, Channel]) -> None:
        """Plan with these from now on (a reload)."""
        self.config = config
        self.sources = list(sources)
        self.channels = channels
        # Silences, repeat rules and quiet hours, applied as each round's plans are recorded (`noise/gate.py`).
        self.noise = NoiseGate.from_config(config)

    def events_recorded(self, events: Sequence[Event]) -> None:
        """Called after new events are committed: the planner reads them from the store."""
        self._wakeup.set()

    async def run(self) -> None:
        while True:
            await self.scheduler.wait_for_room()
            # Cleared before reading: an event committed after this read sets it again.
            self._wakeup.clear()
            claim = functools.partial(
                claim_unplanned, limit=PLAN_BATCH, claimant=self._claimant(), passed_over=frozenset(self._unplannable)
            )
            try:
                batch = await self._store_run(claim)
            except StoreError:
                log.exception("planner_store_failed", retry_in_s=STORE_RETRY_S)
                await asyncio.sleep(STORE_RETRY_S)
                continue
            if not batch:
                await wait_set(self._wakeup, SWEEP_INTERVAL_S)
                continue
            # What is not recorded (the store failed) or not taken (the round was full) stays claimed, read again.
            if await self._plan_batch(batch) is None:
                await asyncio.sleep(STORE_RETRY_S)

    async def plan(self, event: Event) -> Plan:
        """The plan for one event under the current config (also what `dispatcher routes` shows)."""
        return await plan_event(
            event, config=self.config, catalog=self.catalog, sources=self.sources, channels=self.channels.keys()
        )

    async def _plan_batch(self, events: list[tuple[int, Event]]) -> int | None:
        """Plan the first of `events` (seq, event), up to about PLAN_ROWS deliveries, and record the plans; how many
        events were taken (planned, or passed over after a planning error), or None if the store could not record
        them."""
        rows: list[NewDelivery] = []
        planned: list[Event] = []
        taken = 0
        for seq, event in events:
            if len(rows) >= PLAN_ROWS:
                break
            taken += 1
            try:
                plan = await self.plan(event)
            except Exception:
                # It stays unplanned in the store and is planned again at the next start.
                log.exception("event_planning_failed", event_id=event.id, event_type=event.type)
                self._unplannable.add(seq)
                continue
            planned.append(event)
            importance = plan.importance.label
            for delivery in plan.deliveries:
                rows.append(
                    NewDelivery(
                        event=event,
                        importance=importance,
                        recipient=delivery.recipient.name,
                        recipient_kind=delivery.recipient.kind,
                        channel=delivery.channel,
                        target=delivery.target,
                        target_label=self.channels[delivery.channel].describe_target(delivery.target),
                        status="pending",
                    )
                )
            for skipped in plan.suppressed:
                channel = self.channels.get(skipped.channel) if skipped.channel else None
                label = channel.describe_target(skipped.target) if channel and skipped.target else None
                rows.append(
                    NewDelivery(
                        event=event,
                        importance=importance,
                        recipient=skipped.recipient_name,
                        recipient_kind=recipient_kind(skipped.recipient_name),
                        channel=skipped.channel,
                        target=None,
                        target_label=label,
                        status="suppressed",
                        reason=skipped.reason,
                    )
                )
                self.metrics.deliveries.labels(skipped.channel or "none", "suppressed").inc()
            # At info only when nothing will be sent: otherwise each delivery's own line (sent, retry, failed, with
            # the event's id and type) says what became of the event, and a burst logs half as many lines.
            (log.debug if plan.deliveries else log.info)(
                "event_planned",
                event_id=event.id,
                event_type=event.type,
                importance=importance,
                deliveries=len(plan.deliveries),
                suppressed=len(plan.suppressed),
            )
        now = self.clock()
        ids = [event.id for event in planned]
        by_id = {event.id: event for event in planned}
        digests, noise, me = self.digests, self.noise, self._claimant().me

        def record(conn: Any) -> tuple[Recorded, list[tuple[int, int, float]]]:
            recorded = noise.record(conn, ids, rows, now, claimed_by=me or None)
            # A delivery quiet hours hold back waits for their end on its own: its digest could go sooner.
            due = [delivery for delivery in recorded.pending if delivery.next_attempt_at <= now]
            return recorded, digests.hold(conn, due, by_id, now) if digests is not None else []

        try:
            recorded, held = await self._store_run(record)
        except StoreError:
            log.exception("plan_recording_failed", events=len(ids), retry_in_s=STORE_RETRY_S)
            return None
        self._count_noise(recorded)
        self.metrics.pending.inc(len(recorded.pending))
        in_digests = {delivery_id for delivery_id, _, _ in held}
        for delivery in recorded.pending:
            if delivery.id in in_digests:
                continue
            if delivery.next_attempt_at > now:  # held back (quiet hours): the scheduler takes it up when due
                self.scheduler.retry_at(delivery.next_attempt_at)
            else:
                self.scheduler.enqueue(delivery, by_id[delivery.event_id])
        if digests is not None:
            digests.held(held)
        return taken

    def _count_noise(self, recorded: Recorded) -> None:
        """Count and log what the noise gate suppressed (silences, repeats) and held back (quiet hours)."""
        for item in recorded.suppressed:
            self.metrics.deliveries.labels(item.channel, "suppressed").inc()
            self.metrics.suppressions.labels(item.kind).inc()
            log.info(
                "delivery_suppressed",
                event_id=item.event_id,
                recipient=item.recipient,
                channel=item.channel,
                reason=item.reason,
            )
        for item in recorded.deferred:
            self.metrics.deferrals.labels(item.kind).inc()
            log.info(
                "delivery_deferred",
                event_id=item.event_id,
                recipient=item.recipient,
                channel=item.channel,
                reason=item.reason,
                until=item.until,
            )
