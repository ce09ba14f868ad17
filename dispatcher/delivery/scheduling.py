"""Scheduling: the deliveries in hand, and when each is attempted.

A due delivery goes to its channel's ready queue; the channel's loop starts its attempt, a task of its own, once
one of the channel's slots is free. The deliveries queued or in flight count against the backlog, which holds
planning back. A delivery waiting for a retry waits in the store, and is taken back when due. A sweep every
`SWEEP_INTERVAL_S` takes up any pending row whose attempt is due and that nothing holds (put back by
`dispatcher retry`, left by a bug, or claimed by an instance that is gone), without waiting for a restart. Every
delivery taken from the store is claimed for this instance first (`outbox.claim_due`): the first pass, at start,
is the resumption of what a previous run left.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import structlog

from ..cluster.claims import Claimant
from ..errors import StoreError
from ..events import Event
from ..outbox import Claimed, PendingDelivery, claim_due, count_pending, next_due
from ..senders.channel_set import channel_concurrency
from ..waiting import wait_set

if TYPE_CHECKING:
    from ..channels import Channel
    from ..metrics import Metrics

log = structlog.get_logger(__name__)

# How long SIGTERM waits for sends in flight before leaving them pending for the next start.
DRAIN_GRACE_S = 10.0
# Deliveries held in memory (queued or in flight): planning pauses above HIGH and resumes below LOW.
BACKLOG_HIGH = 1000
BACKLOG_LOW = 500
# Retries read from the store per query.
RETRY_BATCH = 500
# After the store failed (disk full, I/O error), wait this long before asking it again.
STORE_RETRY_S = 1.0
# How often the scheduler looks for due pending rows that nothing holds, and recounts the pending gauge (a
# `dispatcher retry` changes the store behind the daemon's back: it is noticed within this).
SWEEP_INTERVAL_S = 2.0

Job = tuple[PendingDelivery, Event]
# The pipeline's bookkeeping in the store (`Pipeline._store_run`): `await store_run(fn)`.
StoreRun = Callable[[Callable[[Any], Any]], Awaitable[Any]]
# One attempt of a delivery (`Attempts.attempt`); it calls the function it is given once the far end has answered.
Attempt = Callable[[PendingDelivery, Event, Callable[[], None]], Awaitable[None]]


class Scheduler:
    """The deliveries in hand: a ready queue and slots per channel, the attempts in flight, and the loop that takes
    pending deliveries back from the store when due."""

    def __init__(
        self,
        *,
        store_run: StoreRun,
        metrics: Metrics,
        clock: Callable[[], float],
        attempt: Attempt,
        lookahead: int,
        claimant: Callable[[], Claimant],
    ) -> None:
        self._store_run = store_run
        self._claimant = claimant
        self.metrics = metrics
        self.clock = clock
        self._attempt_once = attempt
        self._lookahead = lookahead  # the sender's: attempts in flight per channel, as a multiple of its concurrency
        self._ready: dict[str, asyncio.Queue[Job]] = {}
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._slot_sizes: dict[str, int] = {}
        # Attempts per channel from their start until their outcome is recorded: twice the slots, so that a send
        # starts while the records of answered ones are on their way, but what a crash can send twice (started and
        # not recorded) stays bounded, however far the store's commits lag.
        self._unrecorded: dict[str, asyncio.Semaphore] = {}
        # While running: the pipeline's task group, and each channel's loop (a channel new at a reload gets one).
        self._tasks: asyncio.TaskGroup | None = None
        self._channel_loops: dict[str, asyncio.Task[None]] = {}
        self._claimed: set[int] = set()  # delivery ids queued or in flight
        self._room = asyncio.Event()  # set while the backlog is below BACKLOG_HIGH (and again below LOW)
        self._room.set()
        self._retry_wakeup = asyncio.Event()
        self._next_retry_at: float | None = 0.0  # "due now": the first pass asks the store
        self._next_sweep_at = 0.0  # loop time of the scheduler's next sweep; 0: at its first pass
        self._in_flight: set[asyncio.Task[None]] = set()
        self._resumed = False  # the first pass (what a previous run left) is logged

    # -- the deliveries in hand --------------------------------------------------------------------------------

    def in_hand(self) -> frozenset[int]:
        """The ids of the deliveries queued or in flight now."""
        return frozenset(self._claimed)

    async def wait_for_room(self) -> None:
        """Return once the backlog is below BACKLOG_HIGH (once it passed it: below BACKLOG_LOW)."""
        await self._room.wait()

    def enqueue(self, delivery: PendingDelivery, event: Event) -> None:
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

    def settle(self, delivery: PendingDelivery) -> None:
        """The delivery left memory (sent, failed or waiting in the store for a retry)."""
        self._claimed.discard(delivery.id)
        if len(self._claimed) <= BACKLOG_LOW:
            self._room.set()

    def _ready_queue(self, channel: str) -> asyncio.Queue[Job]:
        if channel not in self._ready:
            self._ready[channel] = asyncio.Queue()
        return self._ready[channel]

    # -- the channels ------------------------------------------------------------------------------------------

    def size_slots(self, channels: Mapping[str, Channel]) -> None:
        """Attempts in flight per channel: its concurrency times the sender's lookahead. A channel's loop takes
        new slots for its next attempt; attempts in flight give back the ones they hold."""
        for name, channel in channels.items():
            size = channel_concurrency(channel) * self._lookahead
            if self._slot_sizes.get(name) != size:
                self._slots[name], self._slot_sizes[name] = asyncio.Semaphore(size), size
                self._unrecorded[name] = asyncio.Semaphore(2 * size)

    def start(self, tasks: asyncio.TaskGroup, channels: Iterable[str]) -> None:
        """Run a loop for each of `channels` in `tasks` (the pipeline's run) until `stop()`."""
        self._tasks = tasks
        self.start_channel_loops(channels)

    def start_channel_loops(self, channels: Iterable[str]) -> None:
        """A loop for each of `channels` that has none yet (a channel new at a reload)."""
        if self._tasks is None:
            return  # not running yet: start() starts them
        for name in channels:
            if name not in self._channel_loops:
                self._channel_loops[name] = self._tasks.create_task(self._channel_loop(name), name=f"channel-{name}")

    def stop(self) -> None:
        """Cancel the channels' loops; the attempts in flight go on until `drain()`."""
        for task in self._channel_loops.values():
            task.cancel()
        self._tasks, self._channel_loops = None, {}

    async def _channel_loop(self, name: str) -> None:
        queue = self._ready_queue(name)
        while True:
            delivery, event = await queue.get()
            # Looked up each time: a reload may have resized them.
            slots, unrecorded = self._slots[name], self._unrecorded[name]
            await unrecorded.acquire()
            try:
                await slots.acquire()
            except BaseException:
                unrecorded.release()
                raise
            task = asyncio.create_task(self._attempt(delivery, event, slots, unrecorded), name=f"deliver-{delivery.id}")
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _attempt(
        self,
        delivery: PendingDelivery,
        event: Event,
        slots: asyncio.Semaphore | None = None,
        unrecorded: asyncio.Semaphore | None = None,
    ) -> None:
        """One attempt; the channel's slot (`slots`) is given back as soon as the far end has answered, so the
        record of the outcome, written next, does not hold up the next send; `unrecorded` once that record is
        written."""
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
            self.settle(delivery)
        finally:
            free_slot()
            if unrecorded is not None:
                unrecorded.release()

    async def drain(self) -> None:
        """Wait up to DRAIN_GRACE_S for the attempts in flight; those still running then are cancelled."""
        if self._in_flight:
            log.info("stopping", step="drain", in_flight=len(self._in_flight))
            _, late = await asyncio.wait(self._in_flight, timeout=DRAIN_GRACE_S)
            for task in late:
                task.cancel()  # left pending in the store; attempted again at the next start
            if late:
                await asyncio.wait(late)

    # -- what waits in the store -------------------------------------------------------------------------------

    def retry_at(self, due: float) -> None:
        """A delivery waits in the store until `due`: make sure the scheduler wakes by then."""
        if self._next_retry_at is None or due < self._next_retry_at:
            self._next_retry_at = due
            self._retry_wakeup.set()

    def wake(self) -> None:
        """Look at the store again at the next pass (deliveries not yet due were left there)."""
        self._retry_wakeup.set()

    def look_for_pending_now(self) -> None:
        """Deliveries were put back to pending in the store (`POST /api/v1/deliveries/retry`): take them up now,
        not at the next sweep."""
        self._next_sweep_at = 0.0
        self._retry_wakeup.set()

    def _took(self, claimed: Claimed) -> None:
        """Log what a pass took over from instances that are gone (each may be sent twice: its attempt may have been
        under way), and the resumption at start."""
        events = {delivery.id: event for delivery, event in claimed.deliveries} if claimed.taken_over else {}
        for delivery_id, instance in claimed.taken_over:
            self.metrics.taken_over.inc()
            event = events.get(delivery_id)
            log.warning(
                "delivery_taken_over",
                delivery_id=delivery_id,
                from_instance=instance,
                event_id=event.id if event else None,
                note="its instance is gone; a send it had under way may arrive twice",
            )
        if not self._resumed:
            self._resumed = True
            if claimed.deliveries:
                log.info("pipeline_resumed", pending_deliveries=len(claimed.deliveries))

    async def run_retries(self) -> None:
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
                # The ids in hand now; one taken in hand while the store reads is skipped by `enqueue`. The store
                # answers in the order it ran the jobs, so a row read as pending here was not yet recorded by its
                # attempt, which is therefore still in hand when this answer arrives.
                skip, claimant = frozenset(self._claimed), self._claimant()

                def look(
                    conn: Any,
                    now: float = now,
                    skip: frozenset[int] = skip,
                    sweep: bool = sweep,
                    claimant: Claimant = claimant,
                ) -> Any:
                    pending = count_pending(conn) if sweep else 0
                    return claim_due(conn, now, skip, RETRY_BATCH, claimant), next_due(conn, now), pending

                try:
                    claimed, next_at, pending = await self._store_run(look)
                except StoreError:
                    log.exception("retry_scheduler_store_failed", retry_in_s=STORE_RETRY_S)
                    self._next_retry_at = now + STORE_RETRY_S
                else:
                    if sweep:
                        self._next_sweep_at = loop.time() + SWEEP_INTERVAL_S
                        self.metrics.pending.set(pending)
                    self._took(claimed)
                    due = claimed.deliveries
                    for delivery, event in due:
                        self.enqueue(delivery, event)
                    self._next_retry_at = now if len(due) >= RETRY_BATCH else next_at  # a full batch: more are due
            wait_s = self._next_sweep_at - loop.time()
            if self._next_retry_at is not None:
                wait_s = min(wait_s, self._next_retry_at - self.clock())
            await wait_set(self._retry_wakeup, wait_s)
