"""The delivery pipeline: recorded events → planned deliveries (outbox) → channel attempts → records.

    recorded event ──plan──► deliveries rows (pending | suppressed), event marked planned   one transaction
    pending ──ready queue per channel──► attempt (render, Channel.send under a timeout)
        sent       → row sent
        retryable  → row keeps pending with next_attempt_at (backoff with jitter, Retry-After honoured)
        permanent, or out of attempts/time → row failed, and an iContact/SendIMFailed event in the same transaction

Nothing lives only in memory. Events wait in the store until the planner reads them, and retries wait there
until due, so memory holds only the deliveries queued or in flight, and the planner pauses while those pass
`BACKLOG_HIGH`: a burst of a million events costs disk, not RAM. A crash at any point resumes the work (a
send whose success was not yet recorded may be repeated once).
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
    load_due_retries,
    load_pending_page,
    load_unplanned,
    mark_failed,
    mark_retry,
    mark_sent,
    next_retry_due,
    record_plans,
)
from .render import Renderer
from .routing.planner import Plan, plan_event
from .routing.recipients import RecipientSource
from .senders import LocalSender, SenderPool, SendJob, build_channels, channel_concurrency, close_channels

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


def recipient_kind(name: str) -> str:
    """`root` → system, `account:bob` → account, `contact:34` → contact (the naming of `Recipient.name`)."""
    kind, sep, _ = name.partition(":")
    return kind if sep else "system"


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
        """Hand a due delivery to its channel's workers; it counts against the backlog until it is settled."""
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
        """Move retries that fall due from the store to the ready queues; sleep until the next one is due."""
        while True:
            self._retry_wakeup.clear()
            now = self.clock()
            if self._next_retry_at is not None and self._next_retry_at <= now:
                await self._room.wait()
                limit = RETRY_BATCH + len(self._claimed)  # claimed retries are due too: skip past them
                try:
                    due = await self._store_run(lambda conn, now=now, limit=limit: load_due_retries(conn, now, limit))
                    fresh = [(delivery, event) for delivery, event in due if delivery.id not in self._claimed]
                    for delivery, event in fresh[:RETRY_BATCH]:
                        self._enqueue(delivery, event)
                    if len(fresh) > RETRY_BATCH:
                        continue  # more are due
                    self._next_retry_at = await self._store_run(lambda conn, now=now: next_retry_due(conn, now))
                except StoreError:
                    log.exception("retry_scheduler_store_failed", retry_in_s=STORE_RETRY_S)
                    self._next_retry_at = now + STORE_RETRY_S
            wait_s = None if self._next_retry_at is None else max(0.0, self._next_retry_at - self.clock())
            try:
                await asyncio.wait_for(self._retry_wakeup.wait(), wait_s)
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
        except Exception:  # e.g. the store failing: the row stays pending for the next start
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

    async def _sent(self, delivery: PendingDelivery, event: Event, attempts: int) -> None:
        now = self.clock()
        # Shielded: once the far end has the message, its record must be written even if we are being stopped.
        await asyncio.shield(self._store_run(lambda conn: mark_sent(conn, delivery.id, attempts, now)))
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
        delay_s = backoff_delay_s(attempts, policy, retry_after_s, self.rng)
        if attempts >= policy.max_attempts:
            await self._failed(delivery, event, attempts, f"gave up after {attempts} attempts: {error}")
            return
        if now + delay_s - delivery.created_at > policy.give_up_after_s:
            await self._failed(delivery, event, attempts, f"gave up after {policy.give_up_after_s:g}s: {error}")
            return
        due = now + delay_s
        await asyncio.shield(self._store_run(lambda conn: mark_retry(conn, delivery.id, attempts, error, due, now)))
        self.metrics.deliveries.labels(delivery.channel, "retried").inc()
        _log_delivery(log.warning, "delivery_retry", delivery, attempts, error=error, retry_in_s=round(delay_s, 3))
        self._settle(delivery)  # it waits in the store; the scheduler takes it back when due
        self._retry_at(due)

    async def _failed(self, delivery: PendingDelivery, event: Event, attempts: int, error: str) -> None:
        now = self.clock()
        follow_up = None if event.type == SEND_IM_FAILED else self._send_im_failed(delivery, event, attempts, error)
        await asyncio.shield(
            self._store_run(lambda conn: mark_failed(conn, delivery.id, attempts, error, now, follow_up))
        )
        self._settle(delivery)
        self.metrics.pending.dec()
        self.metrics.deliveries.labels(delivery.channel, "failed").inc()
        _log_delivery(log.error, "delivery_failed", delivery, attempts, error=error)
        if follow_up is not None:
            self.events_recorded([follow_up])

    def _send_im_failed(self, delivery: PendingDelivery, event: Event, attempts: int, error: str) -> Event:
        """The Instant Message Failure notice about a delivery that finally failed (never about itself)."""
        moment = datetime.fromtimestamp(self.clock(), tz=UTC)
        return Event(
            id=f"{event.id}/failed-delivery/{delivery.id}",
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
