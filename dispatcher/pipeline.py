"""The delivery pipeline: recorded events → planned deliveries (outbox) → channel attempts → records.

    recorded event ──plan──► deliveries rows (pending | suppressed), event marked planned   one transaction
    pending ──ready queue per channel──► attempt (render, Channel.send under a timeout)
        sent       → row sent
        retryable  → row keeps pending with next_attempt_at (backoff with jitter, Retry-After honoured)
        permanent, or out of attempts/time → row failed, and an iContact/SendIMFailed event in the same transaction
        to an address the configuration no longer has → row suppressed, not attempted

Nothing lives only in memory. Events wait in the store until the planner reads them, and retries wait there
until due, so memory holds only the deliveries queued or in flight, and the planner pauses while those pass
`BACKLOG_HIGH`: a burst of a million events costs disk, not RAM. A crash at any point resumes the work (a
send whose success was not yet recorded may be repeated once).

The one thing kept in memory for a while is an outcome the store refused to record (busy, disk full): it is
written again, with backoff, until it lands, and its delivery stays in hand meanwhile, so it is neither attempted
again nor left behind. A sweep every `SWEEP_INTERVAL_S` takes up any pending row whose attempt is due and that
nothing holds (put back by `dispatcher retry`, or left by a bug), without waiting for a restart.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

from .catalog import Catalog
from .channels import Channel, DeliveryError
from .errors import StoreError
from .events import Event
from .outbox import (
    NewDelivery,
    PendingDelivery,
    count_pending,
    load_due,
    load_pending_page,
    load_unplanned,
    mark_failed,
    mark_retry,
    mark_sent,
    mark_suppressed,
    next_due,
    recipient_kind,
    record_plans,
    suppress_removed_targets,
)
from .render import Renderer
from .routing.planner import Plan, plan_event
from .routing.recipients import RecipientSource, system_recipient
from .senders.channel_set import build_channels, channel_concurrency, close_channels
from .senders.local import LocalSender, SendJob
from .senders.pool import SenderPool

if TYPE_CHECKING:
    from .config import Config, DeliveryConfig
    from .metrics import Metrics
    from .store import Store

log = structlog.get_logger(__name__)

SEND_IM_FAILED = "iContact/SendIMFailed"
# How long SIGTERM waits for sends in flight before leaving them pending for the next start.
DRAIN_GRACE_S = 10.0
# Events read per planning round, and the deliveries one round may plan: a round stops taking events once its
# rows reach PLAN_ROWS (an event's plan is never split), so a fan-out to hundreds of addresses does not put a
# whole batch's deliveries (256 x 200 in bench scenario c) in memory at once.
PLAN_BATCH = 256
PLAN_ROWS = 1000
# Deliveries held in memory (queued or in flight): planning pauses above HIGH and resumes below LOW.
BACKLOG_HIGH = 1000
BACKLOG_LOW = 500
# Retries read from the store per query.
RETRY_BATCH = 500
# After the store failed (disk full, I/O error), wait this long before asking it again.
STORE_RETRY_S = 1.0
# An outcome the store refused is written again after this, doubling up to the max, until it lands.
RECORD_RETRY_INITIAL_S = 0.2
RECORD_RETRY_MAX_S = 5.0
# How often the scheduler looks for due pending rows that nothing holds, and recounts the pending gauge (a
# `dispatcher retry` changes the store behind the daemon's back: it is noticed within this).
SWEEP_INTERVAL_S = 2.0
# Why a pending delivery to a system contact's address is dropped after a reload (or a restart) without it.
TARGET_REMOVED = "target removed from the configuration"

Job = tuple[PendingDelivery, Event]


def backoff_delay_s(attempts: int, policy: DeliveryConfig, retry_after_s: float | None, rng: random.Random) -> float:
    """The wait before the next attempt, after `attempts` attempts.

    The far end's wait (Retry-After, X-Ratelimit-Reset) wins, even beyond `backoff_max_s`; otherwise a random
    wait between `backoff_initial_s` and the exponential ceiling `backoff_initial_s * 2^(attempts-1)`, capped at
    `backoff_max_s` (jitter keeps retries from many deliveries from arriving together).
    """
    if retry_after_s is not None:
        return max(0.0, retry_after_s)
    ceiling = min(policy.backoff_max_s, policy.backoff_initial_s * 2 ** max(0, attempts - 1))
    return rng.uniform(policy.backoff_initial_s, max(ceiling, policy.backoff_initial_s))


def system_targets(config: Config) -> frozenset[tuple[str, str, str]]:
    """Every (system contact, channel, address) of `config`: what a delivery to a system contact must still be."""
    return frozenset(
        (name, channel, target)
        for name, contact in config.contacts.items()
        for channel, targets in system_recipient(contact).targets.items()
        for target in targets
    )


def _log_delivery(emit: Callable[..., Any], name: str, delivery: PendingDelivery, attempts: int, **extra: Any) -> None:
    """One log line about a delivery's attempt; the target as the channel shows it (never a token or password)."""
    emit(
        name,
        channel=delivery.channel,
        recipient=delivery.recipient,
        target=delivery.target_label,
        attempt=attempts,
        delivery_id=delivery.id,
        **extra,
    )


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
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.metrics = metrics
        self.config = config
        self.sources = list(sources)
        self.clock = clock
        self.rng = random.Random()
        self.renderer = Renderer(catalog, templates_dir=config.templates.dir, hostname=config.hostname)
        self.channels = build_channels(config)
        self._system_targets = system_targets(config)
        # Where attempts run: sender processes, or this process with `delivery.workers: 0`.
        self.sender: LocalSender | SenderPool = (
            SenderPool(config.delivery.workers, config, catalog)
            if config.delivery.workers
            else LocalSender(config, catalog, self.channels)
        )
        self._plan_wakeup = asyncio.Event()  # set after new events are committed
        self._plan_cursor = 0  # the last event seq the planner has read
        self._ready: dict[str, asyncio.Queue[Job]] = {}
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._slot_sizes: dict[str, int] = {}
        # While running: the task group of run(), and each channel's loop (a channel new at a reload gets one).
        self._tasks: asyncio.TaskGroup | None = None
        self._channel_loops: dict[str, asyncio.Task[None]] = {}
        self._claimed: set[int] = set()  # delivery ids queued or in flight
        self._room = asyncio.Event()  # set while the backlog is below BACKLOG_HIGH (and again below LOW)
        self._room.set()
        self._retry_wakeup = asyncio.Event()
        self._next_retry_at: float | None = 0.0  # "due now": the first pass asks the store
        self._next_sweep_at = 0.0  # loop time of the scheduler's next sweep; 0: at its first pass
        self._in_flight: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._retired_channels: list[Channel] = []

    def _store_run(self, fn: Callable[[Any], Any]) -> Any:
        """The pipeline's bookkeeping in the store: committed, fsynced lazily (see `Store`): after a power cut
        the worst case is a send repeated, never an event lost."""
        return self.store.run(fn, durable=False)

    # -- intake side -------------------------------------------------------------------------------------------

    def events_recorded(self, events: Sequence[Event]) -> None:
        """Called after new events are committed: the planner reads them from the store."""
        self._plan_wakeup.set()

    def apply_config(self, config: Config, sources: Sequence[RecipientSource]) -> None:
        """A reloaded config: new renderer, channels and sources for what is planned and attempted from now on."""
        self.config = config
        self.sources = list(sources)
        self.renderer = Renderer(self.catalog, templates_dir=config.templates.dir, hostname=config.hostname)
        self._retired_channels.extend(self.channels.values())  # closed at stop: sends in flight may still use them
        self.channels = build_channels(config)
        self.sender.apply_config(config, self.channels)
        # Channels whose concurrency changed get slots of the new size; a channel new since the start (a plugin
        # installed meanwhile) gets slots and a loop of its own.
        self._size_slots(self.channels)
        self._start_channel_loops()
        # From here on no attempt goes to a system contact's address the new config dropped (checked before each
        # attempt); what waits in the store for one is recorded suppressed now.
        self._system_targets = system_targets(config)
        if self._tasks is not None:
            self._tasks.create_task(self._suppress_removed_targets(), name="suppress-removed-targets")

    def look_for_pending_now(self) -> None:
        """Deliveries were put back to pending in the store (`POST /api/v1/deliveries/retry`): take them up now,
        not at the next sweep."""
        self._next_sweep_at = 0.0
        self._retry_wakeup.set()

    def _start_channel_loops(self) -> None:
        if self._tasks is None:
            return  # not running yet: run() starts them
        for name in self.channels:
            if name not in self._channel_loops:
                self._channel_loops[name] = self._tasks.create_task(self._channel_loop(name), name=f"channel-{name}")

    def _size_slots(self, names: Iterable[str]) -> None:
        """Attempts in flight per channel: its concurrency times the sender's lookahead. A channel's loop takes
        new slots for its next attempt; attempts in flight give back the ones they hold."""
        for name in names:
            size = channel_concurrency(self.channels[name]) * self.sender.lookahead
            if self._slot_sizes.get(name) != size:
                self._slots[name], self._slot_sizes[name] = asyncio.Semaphore(size), size

    # -- the run -----------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Resume what the store holds, then plan and deliver until `stop()`."""
        self._size_slots(self.channels)
        self.sender.start()
        # Kept in memory from here on, so a scrape of /metrics never waits behind the store's queue.
        self.metrics.pending.set(await self._store_run(count_pending))
        async with asyncio.TaskGroup() as tasks:
            self._tasks = tasks
            self._start_channel_loops()
            await self._suppress_removed_targets()  # the config may have changed while the daemon was stopped
            await self._resume()
            loops = [
                tasks.create_task(self._plan_loop(), name="planner"),
                tasks.create_task(self._retry_loop(), name="retry-scheduler"),
            ]
            await self._stopping.wait()
            for task in [*loops, *self._channel_loops.values()]:
                task.cancel()
            self._tasks, self._channel_loops = None, {}
        await self._drain()

    def stop(self) -> None:
        self._stopping.set()

    async def _resume(self) -> None:
        """Queue the deliveries a previous run left pending (due ones now; the others when due)."""
        after_id, resumed = 0, 0
        now = self.clock()
        while page := await self._store_run(
            lambda conn, after_id=after_id: load_pending_page(conn, after_id, RETRY_BATCH)
        ):
            after_id = page[-1][0].id
            for delivery, event in page:
                if delivery.channel not in self.channels:  # its plugin was uninstalled, or the config dropped it
                    await self._failed(
                        delivery, event, delivery.attempts, f"channel {delivery.channel} is not available"
                    )
                elif delivery.next_attempt_at <= now:
                    await self._room.wait()
                    self._enqueue(delivery, event)
                    resumed += 1
            self._retry_wakeup.set()  # the scheduler finds the ones not yet due
        if resumed:
            log.info("pipeline_resumed", pending_deliveries=resumed)

    async def _suppress_removed_targets(self) -> None:
        """Record as suppressed each pending delivery not in hand whose system contact or address the config no
        longer has; those in hand are checked before their attempt."""
        configured, skip, now = self._system_targets, frozenset(self._claimed), self.clock()
        try:
            gone = await self._store_run(
                lambda conn: suppress_removed_targets(conn, configured, skip, TARGET_REMOVED, now)
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
        if self._in_flight:
            log.info("stopping", step="drain", in_flight=len(self._in_flight))
            _, late = await asyncio.wait(self._in_flight, timeout=DRAIN_GRACE_S)
            for task in late:
                task.cancel()  # left pending in the store; attempted again at the next start
            if late:
                await asyncio.wait(late)
        await self.sender.close()
        if isinstance(self.sender, SenderPool):  # else they were the local sender's, which closed them
            await close_channels([*self.channels.values(), *self._retired_channels])

    # -- planning ----------------------------------------------------------------------------------------------

    async def _plan_loop(self) -> None:
        while True:
            await self._room.wait()
            # Cleared before reading: an event committed after this read sets it again.
            self._plan_wakeup.clear()
            try:
                batch = await self._store_run(lambda conn: load_unplanned(conn, self._plan_cursor, PLAN_BATCH))
            except StoreError:
                log.exception("planner_store_failed", retry_in_s=STORE_RETRY_S)
                await asyncio.sleep(STORE_RETRY_S)
                continue
            if not batch:
                await self._plan_wakeup.wait()
                continue
            taken = await self._plan_batch([event for _, event in batch])
            if taken is None:  # not recorded: the same events are read again
                await asyncio.sleep(STORE_RETRY_S)
            else:
                self._plan_cursor = batch[taken - 1][0]

    async def plan(self, event: Event) -> Plan:
        """The plan for one event under the current config (also what `dispatcher routes` shows)."""
        return await plan_event(
            event, config=self.config, catalog=self.catalog, sources=self.sources, channels=self.channels.keys()
        )

    async def _plan_batch(self, events: list[Event]) -> int | None:
        """Plan the first of `events`, up to about PLAN_ROWS deliveries, and record the plans; how many events
        were taken (planned, or skipped after a planning error), or None if the store could not record them."""
        rows: list[NewDelivery] = []
        planned: list[Event] = []
        taken = 0
        for event in events:
            if len(rows) >= PLAN_ROWS:
                break
            taken += 1
            try:
                plan = await self.plan(event)
            except Exception:
                # It stays unplanned in the store and is planned again at the next start.
                log.exception("event_planning_failed", event_id=event.id, event_type=event.type)
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
        try:
            pending = await self._store_run(lambda conn: record_plans(conn, ids, rows, now))
        except StoreError:
            log.exception("plan_recording_failed", events=len(ids), retry_in_s=STORE_RETRY_S)
            return None
        by_id = {event.id: event for event in planned}
        self.metrics.pending.inc(len(pending))
        for delivery in pending:
            self._enqueue(delivery, by_id[delivery.event_id])
        return taken

    # -- scheduling --------------------------------------------------------------------------------------------

    def _enqueue(self, delivery: PendingDelivery, event: Event) -> None:
        """Hand a due delivery to its channel's workers; it counts against the backlog until it is settled. One
        already in hand is left alone: a delivery is attempted by one task at a time."""
        if delivery.id in self._claimed:
            return
        self._claimed.add(delivery.id)
        if len(self._claimed) >= BACKLOG_HIGH:
            self._room.clear()
        if delivery.channel not in self._slots:
            # No loop for it (a channel this run has never had): the attempt records why it cannot go.
            task = asyncio.create_task(self._attempt(delivery, event), name=f"deliver-{delivery.id}")
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
            return
        self._ready_queue(delivery.channel).put_nowait((delivery, event))

    def _settle(self, delivery: PendingDelivery) -> None:
        """The delivery left memory (sent, failed or waiting in the store for a retry)."""
        self._claimed.discard(delivery.id)
        if len(self._claimed) <= BACKLOG_LOW:
            self._room.set()

    def _ready_queue(self, channel: str) -> asyncio.Queue[Job]:
        if channel not in self._ready:
            self._ready[channel] = asyncio.Queue()
        return self._ready[channel]

    def _retry_at(self, due: float) -> None:
        """A delivery waits in the store until `due`: make sure the scheduler wakes by then."""
        if self._next_retry_at is None or due < self._next_retry_at:
            self._next_retry_at = due
            self._retry_wakeup.set()

    async def _retry_loop(self) -> None:
        """Move pending deliveries that are due and not in hand from the store to the ready queues, then sleep
        until the next one falls due or the next sweep. A sweep, every SWEEP_INTERVAL_S, looks even when nothing
        is known to be due: it takes up rows the store holds pending with no attempt under way (put back by
        `dispatcher retry`, or left by an attempt that crashed), and sets the pending gauge to the store's count."""
        loop = asyncio.get_running_loop()
        while True:
            self._retry_wakeup.clear()
            now = self.clock()
            sweep = loop.time() >= self._next_sweep_at
            if sweep or (self._next_retry_at is not None and self._next_retry_at <= now):
                await self._room.wait()
                now = self.clock()
                # The ids in hand now; one taken in hand while the store reads is skipped by `_enqueue`. The store
                # answers in the order it ran the jobs, so a row read as pending here was not yet recorded by its
                # attempt, which is therefore still in hand when this answer arrives.
                skip = frozenset(self._claimed)

                def look(conn: Any, now: float = now, skip: frozenset[int] = skip, sweep: bool = sweep) -> Any:
                    pending = count_pending(conn) if sweep else 0
                    return load_due(conn, now, skip, RETRY_BATCH), next_due(conn, now), pending

                try:
                    due, next_at, pending = await self._store_run(look)
                except StoreError:
                    log.exception("retry_scheduler_store_failed", retry_in_s=STORE_RETRY_S)
                    self._next_retry_at = now + STORE_RETRY_S
                else:
                    if sweep:
                        self._next_sweep_at = loop.time() + SWEEP_INTERVAL_S
                        self.metrics.pending.set(pending)
                    for delivery, event in due:
                        self._enqueue(delivery, event)
                    self._next_retry_at = now if len(due) >= RETRY_BATCH else next_at  # a full batch: more are due
            wait_s = self._next_sweep_at - loop.time()
            if self._next_retry_at is not None:
                wait_s = min(wait_s, self._next_retry_at - self.clock())
            try:
                await asyncio.wait_for(self._retry_wakeup.wait(), max(0.0, wait_s))
            except TimeoutError:
                pass

    async def _channel_loop(self, name: str) -> None:
        queue = self._ready_queue(name)
        while True:
            delivery, event = await queue.get()
            slots = self._slots[name]  # looked up each time: a reload may have resized them
            await slots.acquire()
            task = asyncio.create_task(self._attempt(delivery, event, slots), name=f"deliver-{delivery.id}")
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    # -- one attempt -------------------------------------------------------------------------------------------

    async def _attempt(self, delivery: PendingDelivery, event: Event, slots: asyncio.Semaphore | None = None) -> None:
        """One attempt; the channel's slot (`slots`) is given back as soon as the far end has answered, so the
        record of the outcome, written next, does not hold up the next send."""
        # Each attempt is a task of its own (its own copy of the context): what is bound here ends with it.
        structlog.contextvars.bind_contextvars(event_id=event.id, event_type=event.type)
        held = slots is not None

        def free_slot() -> None:
            nonlocal held
            if held:
                held = False
                assert slots is not None
                slots.release()

        try:
            await self._attempt_once(delivery, event, free_slot)
        except Exception:  # a bug: the row stays pending, and the next sweep takes it up again
            log.exception("delivery_attempt_crashed", channel=delivery.channel, delivery_id=delivery.id)
            self._settle(delivery)
        finally:
            free_slot()

    async def _attempt_once(self, delivery: PendingDelivery, event: Event, free_slot: Callable[[], None]) -> None:
        attempts = delivery.attempts + 1
        channel = self.channels.get(delivery.channel)
        if channel is None:
            await self._failed(delivery, event, attempts, f"channel {delivery.channel} is not available")
            return
        if (
            delivery.recipient_kind == "system"
            and (delivery.recipient, delivery.channel, delivery.target) not in self._system_targets
        ):
            await self._suppressed(delivery, TARGET_REMOVED)
            return
        job = SendJob(
            event=event,
            channel=delivery.channel,
            target=delivery.target,
            importance=delivery.importance,
            recipient_kind=delivery.recipient_kind,
            recipient=delivery.recipient,
        )
        try:
            await self.sender.send(job)
        except DeliveryError as err:
            free_slot()
            await self._unsent(delivery, event, attempts, err.message, err.retryable, err.retry_after_s)
        except TimeoutError:
            free_slot()
            await self._unsent(delivery, event, attempts, "timed out", True, None)
        except Exception as err:
            free_slot()
            log.exception("delivery_crashed", channel=delivery.channel, delivery_id=delivery.id)
            await self._unsent(delivery, event, attempts, f"unexpected error: {type(err).__name__}", True, None)
        else:
            free_slot()
            await self._sent(delivery, event, attempts)

    async def _record(self, delivery: PendingDelivery, write: Callable[[Any], Any]) -> Any:
        """Write an attempt's outcome and return what `write` returns. When the store refuses it (busy, disk full,
        I/O error), keep it and write it again, with backoff, until it lands: the delivery stays in hand meanwhile,
        so nothing attempts it again, and it never stays pending with its outcome lost. Each write is shielded:
        once the far end has answered, its record is written even if the attempt is being cancelled."""
        delay_s = RECORD_RETRY_INITIAL_S
        while True:
            try:
                return await asyncio.shield(self._store_run(write))
            except StoreError as err:
                log.error(
                    "delivery_record_failed",
                    channel=delivery.channel,
                    delivery_id=delivery.id,
                    error=str(err),
                    retry_in_s=delay_s,
                )
            try:
                await asyncio.sleep(delay_s)
            except asyncio.CancelledError:
                # Stopping with the store still refusing: the row stays pending, attempted again at the next start.
                log.error("delivery_record_abandoned", channel=delivery.channel, delivery_id=delivery.id)
                raise
            delay_s = min(2 * delay_s, RECORD_RETRY_MAX_S)

    async def _sent(self, delivery: PendingDelivery, event: Event, attempts: int) -> None:
        now = self.clock()
        await self._record(delivery, lambda conn: mark_sent(conn, delivery.id, attempts, now))
        self._settle(delivery)
        self.metrics.pending.dec()
        self.metrics.deliveries.labels(delivery.channel, "sent").inc()
        self.metrics.delivery_latency.labels(delivery.channel).observe(max(0.0, now - event.received_at.timestamp()))
        _log_delivery(log.info, "delivery_sent", delivery, attempts)

    async def _unsent(
        self,
        delivery: PendingDelivery,
        event: Event,
        attempts: int,
        error: str,
        retryable: bool,
        retry_after_s: float | None,
    ) -> None:
        now = self.clock()
        policy = self.config.delivery
        if not retryable:
            await self._failed(delivery, event, attempts, error)
            return
        # A delivery put back by hand (`dispatcher retry`) counts its attempts and time from then.
        counted = attempts - delivery.attempts_before_retry
        delay_s = backoff_delay_s(counted, policy, retry_after_s, self.rng)
        max_attempts: int | None = policy.max_attempts  # None: no limit, give_up_after_s decides
        if max_attempts is not None and counted >= max_attempts:
            await self._failed(delivery, event, attempts, f"gave up after {counted} attempts: {error}")
            return
        if now + delay_s - delivery.budget_from > policy.give_up_after_s:
            await self._failed(delivery, event, attempts, f"gave up after {policy.give_up_after_s:g}s: {error}")
            return
        due = now + delay_s
        await self._record(delivery, lambda conn: mark_retry(conn, delivery.id, attempts, error, due, now))
        self.metrics.deliveries.labels(delivery.channel, "retried").inc()
        _log_delivery(log.warning, "delivery_retry", delivery, attempts, error=error, retry_in_s=round(delay_s, 3))
        self._settle(delivery)  # it waits in the store; the scheduler takes it back when due
        self._retry_at(due)

    async def _failed(self, delivery: PendingDelivery, event: Event, attempts: int, error: str) -> None:
        now = self.clock()
        follow_up = None if event.type == SEND_IM_FAILED else self._send_im_failed(delivery, event, attempts, error)
        await self._record(delivery, lambda conn: mark_failed(conn, delivery.id, attempts, error, now, follow_up))
        self._settle(delivery)
        self.metrics.pending.dec()
        self.metrics.deliveries.labels(delivery.channel, "failed").inc()
        _log_delivery(log.error, "delivery_failed", delivery, attempts, error=error)
        if follow_up is not None:
            self.events_recorded([follow_up])

    async def _suppressed(self, delivery: PendingDelivery, reason: str) -> None:
        """Record a pending delivery as suppressed without attempting it (its address left the configuration)."""
        now = self.clock()
        changed = await self._record(delivery, lambda conn: mark_suppressed(conn, delivery.id, reason, now))
        self._settle(delivery)
        if changed:  # else the reload's sweep of the store recorded it first, and counted it
            self.metrics.pending.dec()
            self.metrics.deliveries.labels(delivery.channel, "suppressed").inc()
            _log_delivery(log.info, "delivery_suppressed", delivery, delivery.attempts, reason=reason)

    def _send_im_failed(self, delivery: PendingDelivery, event: Event, attempts: int, error: str) -> Event:
        """The Instant Message Failure notice about a delivery that finally failed (never about itself)."""
        moment = datetime.fromtimestamp(self.clock(), tz=UTC)
        # A delivery that fails again after `dispatcher retry` raises a notice of its own (the id is the key).
        again = f"/retry-{delivery.retries}" if delivery.retries else ""
        return Event(
            id=f"{event.id}/failed-delivery/{delivery.id}{again}",
            type=SEND_IM_FAILED,
            occurred_at=moment,
            host=event.host,
            account=None,  # about the server's ability to notify: for system contacts only
            client_id=None,
            data={
                "channel": delivery.channel,
                "recipient": delivery.recipient,
                "target": delivery.target_label,
                "failed_event_id": event.id,
                "failed_event_type": event.type,
                "attempts": attempts,
                "error": error,
            },
            received_at=moment,
        )
