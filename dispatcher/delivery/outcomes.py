"""Outcomes: what became of an attempt, recorded before anything else happens.

    sent       → row sent
    retryable  → row keeps pending with next_attempt_at (backoff with jitter, Retry-After honoured)
    permanent, or out of attempts/time → row failed, and an iContact/SendIMFailed event in the same transaction
    to an address the configuration no longer has → row suppressed, not attempted

The one thing kept in memory for a while is an outcome the store refused to record (busy, disk full): it is
written again, with backoff, until it lands, and its delivery stays in hand meanwhile, so it is neither attempted
again nor left behind. Once recorded, the delivery is settled with the scheduler; a retry is taken back from the
store when due.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

from ..errors import StoreError
from ..events import Event
from ..outbox import PendingDelivery, mark_failed, mark_retry, mark_sent, mark_suppressed
from .scheduling import Scheduler, StoreRun

if TYPE_CHECKING:
    from ..config import DeliveryConfig
    from ..metrics import Metrics

log = structlog.get_logger(__name__)

SEND_IM_FAILED = "iContact/SendIMFailed"
# An outcome the store refused is written again after this, doubling up to the max, until it lands.
RECORD_RETRY_INITIAL_S = 0.2
RECORD_RETRY_MAX_S = 5.0


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


class Outcomes:
    """Records each attempt's outcome under the retry policy (`policy`, the config's `delivery` section), settles
    the delivery with the scheduler, counts it and logs it; a final failure raises `iContact/SendIMFailed`, whose
    planning `events_recorded` starts."""

    def __init__(
        self,
        *,
        store_run: StoreRun,
        metrics: Metrics,
        clock: Callable[[], float],
        scheduler: Scheduler,
        policy: DeliveryConfig,
        events_recorded: Callable[[Sequence[Event]], None],
    ) -> None:
        self._store_run = store_run
        self.metrics = metrics
        self.clock = clock
        self.scheduler = scheduler
        self.policy = policy  # replaced at a reload
        self.events_recorded = events_recorded
        self.rng = random.Random()

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

    async def sent(self, delivery: PendingDelivery, event: Event, attempts: int) -> None:
        now = self.clock()
        await self._record(delivery, lambda conn: mark_sent(conn, delivery.id, attempts, now))
        self.scheduler.settle(delivery)
        self.metrics.pending.dec()
        self.metrics.deliveries.labels(delivery.channel, "sent").inc()
        self.metrics.delivery_latency.labels(delivery.channel).observe(max(0.0, now - event.received_at.timestamp()))
        _log_delivery(log.info, "delivery_sent", delivery, attempts)

    async def unsent(
        self,
        delivery: PendingDelivery,
        event: Event,
        attempts: int,
        error: str,
        retryable: bool,
        retry_after_s: float | None,
    ) -> None:
        now = self.clock()
        policy = self.policy
        if not retryable:
            await self.failed(delivery, event, attempts, error)
            return
        # A delivery put back by hand (`dispatcher retry`) counts its attempts and time from then.
        counted = attempts - delivery.attempts_before_retry
        delay_s = backoff_delay_s(counted, policy, retry_after_s, self.rng)
        max_attempts: int | None = policy.max_attempts  # None: no limit, give_up_after_s decides
        if max_attempts is not None and counted >= max_attempts:
            await self.failed(delivery, event, attempts, f"gave up after {counted} attempts: {error}")
            return
        if now + delay_s - delivery.budget_from > policy.give_up_after_s:
            await self.failed(delivery, event, attempts, f"gave up after {policy.give_up_after_s:g}s: {error}")
            return
        due = now + delay_s
        await self._record(delivery, lambda conn: mark_retry(conn, delivery.id, attempts, error, due, now))
        self.metrics.deliveries.labels(delivery.channel, "retried").inc()
        _log_delivery(log.warning, "delivery_retry", delivery, attempts, error=error, retry_in_s=round(delay_s, 3))
        self.scheduler.settle(delivery)  # it waits in the store; the scheduler takes it back when due
        self.scheduler.retry_at(due)

    async def failed(self, delivery: PendingDelivery, event: Event, attempts: int, error: str) -> None:
        now = self.clock()
        follow_up = None if event.type == SEND_IM_FAILED else self._send_im_failed(delivery, event, attempts, error)
        await self._record(delivery, lambda conn: mark_failed(conn, delivery.id, attempts, error, now, follow_up))
        self.scheduler.settle(delivery)
        self.metrics.pending.dec()
        self.metrics.deliveries.labels(delivery.channel, "failed").inc()
        _log_delivery(log.error, "delivery_failed", delivery, attempts, error=error)
        if follow_up is not None:
            self.events_recorded([follow_up])

    async def suppressed(self, delivery: PendingDelivery, reason: str) -> None:
        """Record a pending delivery as suppressed without attempting it (its address left the configuration)."""
        now = self.clock()
        changed = await self._record(delivery, lambda conn: mark_suppressed(conn, delivery.id, reason, now))
        self.scheduler.settle(delivery)
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
