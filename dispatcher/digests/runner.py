"""The daemon's side of digests: deliveries held back at planning, and each digest sent when due.

At planning (`hold`, in the transaction that records the plan), each pending delivery whose event fits a digest
rule joins its group's digest instead of going to the scheduler. `run()` then waits for the next digest due (the
store says when; a sweep every `SWEEP_INTERVAL_S` also finds digests put back by `dispatcher retry`), takes it
(marked `sending`, with its members still pending) and attempts it through the same sender as any delivery: one
`SendJob` carrying the digest's events, rendered by the sender as one message (a digest of one event is that
event's own message). The outcome is recorded for the digest and every member in one transaction, under the
delivery policy: sent; retried with backoff (the same digest: nothing joins it any more); or failed, with one
`iContact/SendIMFailed` about it. An outcome the store refuses is written again until it lands, as the pipeline
does. At start, a digest a killed daemon left `sending` is attempted again.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

from ..channels import DeliveryError
from ..cluster.claims import Claimant
from ..delivery.attempts import TARGET_REMOVED
from ..delivery.outcomes import SEND_IM_FAILED, backoff_delay_s
from ..delivery.scheduling import DRAIN_GRACE_S, STORE_RETRY_S, StoreRun
from ..errors import StoreError
from ..events import Event
from ..levels import Importance
from ..senders.local import SendJob
from ..waiting import wait_set
from .grouping import find_rule, group_key, group_labels
from .records import (
    DueDigest,
    Joining,
    due_text,
    hold,
    mark_failed,
    mark_retry,
    mark_sent,
    mark_suppressed,
    next_due,
    prune,
    recover,
    take_due,
)
from .render import DigestJob
from .rules import DigestRule

if TYPE_CHECKING:
    from ..channels import Channel
    from ..config import Config, DeliveryConfig
    from ..engines.base import Connection
    from ..metrics import Metrics
    from ..outbox import PendingDelivery
    from ..senders.local import LocalSender
    from ..senders.pool import SenderPool

log = structlog.get_logger(__name__)

# How often the loop asks the store for due digests even when none is known to be due (digests put back by
# `dispatcher retry` from another process).
SWEEP_INTERVAL_S = 2.0
# Digests attempted at once.
MAX_IN_FLIGHT = 16
# An outcome the store refused is written again after this, doubling up to the max, until it lands.
RECORD_RETRY_INITIAL_S = 0.2
RECORD_RETRY_MAX_S = 5.0
# Finished digests are forgotten after the store's retention, in rounds of this many, once an hour.
PRUNE_INTERVAL_S = 3600.0
PRUNE_BATCH = 500
NOTHING_LEFT = "nothing left to send: every event of the digest was suppressed meanwhile"


class Digests:
    """The digests of one daemon: `hold` at planning, `run()` until cancelled, `drain()` at stop."""

    def __init__(
        self,
        *,
        store_run: StoreRun,
        metrics: Metrics,
        clock: Callable[[], float],
        sender: LocalSender | SenderPool,
        config: Config,
        channels: Mapping[str, Channel],
        system_targets: frozenset[tuple[str, str, str]],
        events_recorded: Callable[[Sequence[Event]], None],
        claimant: Callable[[], Claimant],
    ) -> None:
        self._store_run = store_run
        self._claimant = claimant
        self.metrics = metrics
        self.clock = clock
        self.sender = sender
        self.events_recorded = events_recorded
        self.rng = random.Random()
        self.apply_config(config, channels, system_targets)
        self._wakeup = asyncio.Event()
        self._next_due: float | None = 0.0  # "due now": the first pass asks the store
        self._next_sweep_at = 0.0
        self._next_prune_at = 0.0
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._in_flight: set[asyncio.Task[None]] = set()

    def apply_config(
        self, config: Config, channels: Mapping[str, Channel], system_targets: frozenset[tuple[str, str, str]]
    ) -> None:
        """Group with these rules, and attempt under this policy, with these channels, from now on (a reload).
        Digests already waiting keep their groups and times."""
        self.rules: tuple[DigestRule, ...] = config.digests
        self.policy: DeliveryConfig = config.delivery
        self.retention_days: float | None = config.store.retention_days
        self.channels = channels
        self.system_targets = system_targets

    # -- planning ----------------------------------------------------------------------------------------------

    def hold(
        self, conn: Connection, pending: Sequence[PendingDelivery], events: Mapping[str, Event], now: float
    ) -> list[tuple[int, int, float]]:
        """In the transaction that records a plan (the store's thread): put each of the new `pending` deliveries
        whose event (in `events`, by id) fits a rule into its digest. Returns (delivery id, digest id, due at) for
        each one held: the caller does not hand those to the scheduler, and tells `held()` once committed."""
        rules = self.rules
        if not rules:
            return []
        joining: list[Joining] = []
        sizes: dict[str, int] = {}
        for delivery in pending:
            event = events[delivery.event_id]
            found = find_rule(rules, event, Importance.parse(delivery.importance))
            if found is None:
                continue
            index, rule = found
            size = sizes.get(event.id)
            if size is None:
                size = sizes[event.id] = len(event.to_json().encode())
            joining.append(
                Joining(
                    delivery_id=delivery.id,
                    recipient=delivery.recipient,
                    recipient_kind=delivery.recipient_kind,
                    channel=delivery.channel,
                    target=delivery.target,
                    target_label=delivery.target_label,
                    importance=delivery.importance,
                    group_key=group_key(index, rule, event),
                    size_bytes=size,
                    wait_s=rule.wait_s,
                    interval_s=rule.interval_s,
                    not_before=delivery.next_attempt_at,
                )
            )
        return hold(conn, joining, now) if joining else []

    def held(self, held: Sequence[tuple[int, int, float]]) -> None:
        """Deliveries joined digests (committed): make sure the loop wakes when the soonest is due."""
        if not held:
            return
        soonest = min(due for _, _, due in held)
        if self._next_due is None or soonest < self._next_due:
            self._next_due = soonest
            self._wakeup.set()
        for digest_id in sorted({digest_id for _, digest_id, _ in held}):
            log.debug("digest_joined", digest_id=digest_id)

    def look_now(self) -> None:
        """Digests were put back in the store (`POST /api/v1/deliveries/retry`): look at once, not at the sweep."""
        self._next_sweep_at = 0.0
        self._wakeup.set()

    # -- the loop ----------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Send each digest when due, until cancelled; first, take up the ones a killed daemon was sending."""
        loop = asyncio.get_running_loop()
        while True:
            now = self.clock()

            claimant = self._claimant()

            def resume(conn: Connection, now: float = now, claimant: Claimant = claimant) -> int:
                return recover(conn, now, claimant)

            try:
                recovered = await self._store_run(resume)
            except StoreError:
                log.exception("digest_store_failed", retry_in_s=STORE_RETRY_S)
                await asyncio.sleep(STORE_RETRY_S)
                continue
            if recovered:
                log.info("digests_resumed", digests=recovered)
            break
        while True:
            self._wakeup.clear()
            now = self.clock()
            sweep = loop.time() >= self._next_sweep_at
            if sweep or (self._next_due is not None and self._next_due <= now):
                await self._take(loop, sweep)
            if self.retention_days is not None and loop.time() >= self._next_prune_at:
                self._next_prune_at = loop.time() + PRUNE_INTERVAL_S
                await self._prune(self.clock() - self.retention_days * 86400)
            wait_s = self._next_sweep_at - loop.time()
            if self._next_due is not None:
                wait_s = min(wait_s, self._next_due - self.clock())
            await wait_set(self._wakeup, wait_s)

    async def _take(self, loop: asyncio.AbstractEventLoop, sweep: bool) -> None:
        """Take the due digests there are free slots for, and start an attempt of each."""
        await self._slots.acquire()  # at least one free: wait for it, then take as many as are free
        free = 1
        while free < MAX_IN_FLIGHT and not self._slots.locked():
            await self._slots.acquire()
            free += 1
        now, claimant = self.clock(), self._claimant()

        def look(conn: Connection) -> tuple[list[DueDigest], float | None]:
            if sweep:  # what an instance that is gone was sending: attempted again
                recover(conn, now, claimant)
            return take_due(conn, now, free, claimant), next_due(conn)

        try:
            taken, next_at = await self._store_run(look)
        except StoreError:
            log.exception("digest_store_failed", retry_in_s=STORE_RETRY_S)
            for _ in range(free):
                self._slots.release()
            self._next_due = now + STORE_RETRY_S
            return
        for _ in range(free - len(taken)):
            self._slots.release()
        if sweep:
            self._next_sweep_at = loop.time() + SWEEP_INTERVAL_S
        self._next_due = now if len(taken) >= free else next_at
        for digest in taken:
            task = asyncio.create_task(self._attempt(digest), name=f"digest-{digest.id}")
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _prune(self, before: float) -> None:
        try:
            pruned = await self._store_run(lambda conn: prune(conn, before, PRUNE_BATCH))
        except StoreError:
            log.exception("digest_prune_failed")
            return
        if pruned:
            log.info("digests_pruned", digests=pruned)
            if pruned >= PRUNE_BATCH:
                self._next_prune_at = 0.0  # more to do: at the next pass

    async def drain(self) -> None:
        """Wait up to DRAIN_GRACE_S for the digests being attempted; those still running then are cancelled and
        attempted again at the next start."""
        if self._in_flight:
            _, late = await asyncio.wait(self._in_flight, timeout=DRAIN_GRACE_S)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)

    # -- one attempt -------------------------------------------------------------------------------------------

    async def _attempt(self, digest: DueDigest) -> None:
        """Attempt `digest` and record the outcome; the slot it holds is given back at the end."""
        structlog.contextvars.bind_contextvars(digest_id=digest.id)
        try:
            await self._attempt_once(digest)
        except Exception:  # a bug: the digest stays `sending`, and is attempted again at the next start
            log.exception("digest_attempt_crashed", channel=digest.channel, digest_id=digest.id)
        finally:
            self._slots.release()
            self._wakeup.set()

    async def _attempt_once(self, digest: DueDigest) -> None:
        attempts = digest.attempts + 1
        if not digest.members:
            await self._suppressed(digest, NOTHING_LEFT)
            return
        if (
            digest.recipient_kind == "system"
            and (digest.recipient, digest.channel, digest.target) not in self.system_targets
        ):
            await self._suppressed(digest, TARGET_REMOVED)
            return
        if digest.channel not in self.channels:
            await self._failed(digest, attempts, f"channel {digest.channel} is not available")
            return
        events = tuple(member.event for member in digest.members)
        job = SendJob(
            event=events[0],
            channel=digest.channel,
            target=digest.target,
            importance=digest.importance,
            recipient_kind=digest.recipient_kind,
            recipient=digest.recipient,
            digest=DigestJob(digest.id, events, tuple(group_labels(digest.group_key).items()))
            if len(events) > 1
            else None,
        )
        try:
            await self.sender.send(job)
        except DeliveryError as err:
            await self._unsent(digest, attempts, err.message, err.retryable, err.retry_after_s)
        except TimeoutError:
            await self._unsent(digest, attempts, "timed out", True, None)
        except Exception as err:
            log.exception("digest_send_crashed", channel=digest.channel, digest_id=digest.id)
            await self._unsent(digest, attempts, f"unexpected error: {type(err).__name__}", True, None)
        else:
            await self._sent(digest, attempts)

    async def _record(self, digest: DueDigest, write: Callable[[Any], Any]) -> Any:
        """Write an outcome; when the store refuses it, again with backoff until it lands (the digest stays taken
        meanwhile). Shielded: once the far end has answered, its record is written even if the attempt is being
        cancelled."""
        delay_s = RECORD_RETRY_INITIAL_S
        while True:
            try:
                return await asyncio.shield(self._store_run(write))
            except StoreError as err:
                log.error("digest_record_failed", digest_id=digest.id, error=str(err), retry_in_s=delay_s)
            await asyncio.sleep(delay_s)
            delay_s = min(2 * delay_s, RECORD_RETRY_MAX_S)

    def _log(self, emit: Callable[..., Any], name: str, digest: DueDigest, attempts: int, **extra: Any) -> None:
        emit(
            name,
            digest_id=digest.id,
            channel=digest.channel,
            recipient=digest.recipient,
            target=digest.target_label,
            events=len(digest.members),
            attempt=attempts,
            **extra,
        )

    async def _sent(self, digest: DueDigest, attempts: int) -> None:
        now = self.clock()
        await self._record(digest, lambda conn: mark_sent(conn, digest, attempts, now))
        count = len(digest.members)
        self.metrics.pending.dec(count)
        self.metrics.deliveries.labels(digest.channel, "sent").inc(count)
        for member in digest.members:
            latency_s = max(0.0, now - member.event.received_at.timestamp())
            self.metrics.delivery_latency.labels(digest.channel).observe(latency_s)
        if count > 1:
            self.metrics.digests_sent.labels(digest.channel).inc()
            self.metrics.digested_events.labels(digest.channel).inc(count)
        self._log(log.info, "digest_sent", digest, attempts)

    async def _unsent(
        self, digest: DueDigest, attempts: int, error: str, retryable: bool, retry_after_s: float | None
    ) -> None:
        if not retryable:
            await self._failed(digest, attempts, error)
            return
        now = self.clock()
        policy = self.policy
        counted = attempts - digest.attempts_before  # a digest put back by hand counts from then
        delay_s = backoff_delay_s(counted, policy, retry_after_s, self.rng)
        if policy.max_attempts is not None and counted >= policy.max_attempts:
            await self._failed(digest, attempts, f"gave up after {counted} attempts: {error}")
            return
        if now + delay_s - digest.budget_from > policy.give_up_after_s:
            await self._failed(digest, attempts, f"gave up after {policy.give_up_after_s:g}s: {error}")
            return
        due = now + delay_s
        await self._record(digest, lambda conn: mark_retry(conn, digest, attempts, error, due, now))
        self.metrics.deliveries.labels(digest.channel, "retried").inc(len(digest.members))
        self._log(log.warning, "digest_retry", digest, attempts, error=error, retry_due=due_text(due))
        if self._next_due is None or due < self._next_due:
            self._next_due = due

    async def _failed(self, digest: DueDigest, attempts: int, error: str) -> None:
        now = self.clock()
        follow_up = (
            None
            if all(member.event.type == SEND_IM_FAILED for member in digest.members)
            else self._send_im_failed(digest, attempts, error)
        )
        await self._record(digest, lambda conn: mark_failed(conn, digest, attempts, error, now, follow_up))
        count = len(digest.members)
        self.metrics.pending.dec(count)
        self.metrics.deliveries.labels(digest.channel, "failed").inc(count)
        self._log(log.error, "digest_failed", digest, attempts, error=error)
        if follow_up is not None:
            self.events_recorded([follow_up])

    async def _suppressed(self, digest: DueDigest, reason: str) -> None:
        now = self.clock()
        await self._record(digest, lambda conn: mark_suppressed(conn, digest, reason, now))
        count = len(digest.members)
        if count:
            self.metrics.pending.dec(count)
            self.metrics.deliveries.labels(digest.channel, "suppressed").inc(count)
        self._log(log.info, "digest_suppressed", digest, digest.attempts, reason=reason)

    def _send_im_failed(self, digest: DueDigest, attempts: int, error: str) -> Event:
        """The Instant Message Failure notice about a digest that finally failed: about its first event, its error
        naming the digest and how many events it carried."""
        moment = datetime.fromtimestamp(self.clock(), tz=UTC)
        again = f"/retry-{digest.retries}" if digest.retries else ""
        first = digest.members[0].event  # a digest without members is suppressed, never failed
        return Event(
            id=f"digest-{digest.id}/failed{again}",
            type=SEND_IM_FAILED,
            occurred_at=moment,
            host=first.host,
            account=None,  # about the server's ability to notify: for system contacts only
            client_id=None,
            data={
                "channel": digest.channel,
                "recipient": digest.recipient,
                "target": digest.target_label,
                "failed_event_id": first.id,
                "failed_event_type": first.type,
                "attempts": attempts,
                "error": f"{error} (digest {digest.id} of {len(digest.members)} events)",
            },
            received_at=moment,
        )
