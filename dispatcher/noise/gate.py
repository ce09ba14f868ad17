"""The noise gate: silences, repeats and quiet hours applied to an event's planned deliveries.

The planner (`delivery/planning.py`) records a round's plans through `NoiseGate.record`, in the same transaction:
each pending row is looked at in the order planned, and

1. an active silence that fits the event stops it: `suppressed`, `silenced by <id> (<comment>)`;
2. else, under the first `repeats:` rule that fits, a delivery of an earlier event with the same key that went to
   the same (recipient, channel, target) within the interval stops it: `suppressed`,
   `repeat of <event id> (repeats[0], within 4h)` (an earlier row of the same round counts);
3. else a system contact's quiet hours hold it back when they cover its channel and importance and the planning
   time falls inside them: it stays `pending`, its first attempt at the window's end, with the reason
   `quiet hours until 07:00 Europe/Berlin`.

Reading the silences inside the planner's own transaction means a silence that `dispatcher silence add` writes to
the store applies from the next planning round on, with no cache to go stale. `decide` makes the same decisions
without writing anything, for `dispatcher routes` (`explain_plan`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

from ..errors import StoreError
from ..levels import Importance
from ..outbox import NewDelivery, PendingDelivery, record_plans
from ..routing.planner import Plan, Suppressed
from .quiet_hours import QuietHours, deferral
from .repeats import RepeatRule, earlier_delivery, first_rule, prune_marks, remember, repeat_mark, repeat_reason
from .silences import Silence, active_silences

if TYPE_CHECKING:
    from ..config import Config
    from ..engines import Connection
    from ..events import Event
    from ..store import Store

# Marks older than the longest interval are pruned at most this often (a range delete on an index: cheap, but
# not worth doing every round).
PRUNE_INTERVAL_S = 600.0

Kind = Literal["silence", "repeat", "quiet_hours"]


@dataclass(frozen=True, slots=True)
class Decision:
    """What the gate made of one planned delivery: `suppressed` (by a silence or as a repeat), or `pending`, held
    back until `next_attempt_at` (quiet hours), or `pending` as planned (`kind` None). `mark`: the repeat mark to
    remember once the row is stored, when a repeat rule applies."""

    status: Literal["pending", "suppressed"] = "pending"
    kind: Kind | None = None
    reason: str | None = None
    next_attempt_at: float | None = None
    mark: str | None = None


GOES = Decision()


@dataclass(frozen=True, slots=True)
class Stopped:
    """A delivery the gate stopped (`suppressed`) or held back (`until` set): for the metrics and the logs."""

    event_id: str
    recipient: str
    channel: str
    kind: Kind
    reason: str
    until: float | None = None


@dataclass(frozen=True, slots=True)
class Recorded:
    """A round's plans as stored: the new pending rows (those held back carry their later `next_attempt_at`), and
    what the gate suppressed and deferred."""

    pending: list[PendingDelivery]
    suppressed: list[Stopped]
    deferred: list[Stopped]


class NoiseGate:
    """Silences (from the store), `repeats` rules and the system contacts' `quiet_hours` (by contact name)."""

    def __init__(self, repeats: Sequence[RepeatRule] = (), quiet_hours: Mapping[str, QuietHours] | None = None) -> None:
        self.repeats = tuple(repeats)
        self.quiet_hours: Mapping[str, QuietHours] = MappingProxyType(dict(quiet_hours or {}))
        self._longest_interval_s = max((rule.interval_s for rule in self.repeats), default=0.0)
        self._next_prune_at = 0.0

    @classmethod
    def from_config(cls, config: Config) -> NoiseGate:
        return cls(
            config.repeats,
            {name: contact.quiet_hours for name, contact in config.contacts.items() if contact.quiet_hours is not None},
        )

    def decide(self, conn: Connection | None, rows: Sequence[NewDelivery], now: float) -> list[Decision]:
        """The decision for each of `rows` planned at `now` (rows that are not pending go as they are). Reads the
        store on `conn` (silences, earlier deliveries) and writes nothing; without a store (`conn` None) only quiet
        hours apply."""
        silences = active_silences(conn, now) if conn is not None else []
        went: dict[str, str] = {}  # the marks of this round's rows that go, and their event ids
        decisions: list[Decision] = []
        for row in rows:
            decision = self._decide(conn, row, now, silences, went)
            decisions.append(decision)
            if decision.mark is not None and decision.status == "pending":
                went.setdefault(decision.mark, row.event.id)
        return decisions

    def _decide(
        self, conn: Connection | None, row: NewDelivery, now: float, silences: list[Silence], went: dict[str, str]
    ) -> Decision:
        if row.status != "pending" or row.channel is None or row.target is None:
            return GOES
        silence = next((silence for silence in silences if silence.fits(row.event)), None)
        if silence is not None:
            return Decision("suppressed", "silence", silence.reason)
        importance = Importance.parse(row.importance)
        mark = None
        rule = first_rule(self.repeats, row.event, importance) if self.repeats else None
        if rule is not None:
            index, repeat = rule
            mark = repeat_mark(repeat, row.event, row.recipient, row.channel, row.target)
            earlier = went.get(mark)
            if earlier is None and conn is not None:
                earlier = earlier_delivery(conn, mark, now - repeat.interval_s)
            if earlier is not None:
                return Decision("suppressed", "repeat", repeat_reason(earlier, index, repeat))
        quiet = self.quiet_hours.get(row.recipient) if row.recipient_kind == "system" else None
        if quiet is not None and quiet.holds_back(row.channel, importance):
            held = deferral(quiet, now)
            if held is not None:
                until, reason = held
                return Decision("pending", "quiet_hours", reason, next_attempt_at=until, mark=mark)
        return GOES if mark is None else Decision(mark=mark)

    def record(
        self,
        conn: Connection,
        event_ids: Sequence[str],
        rows: Sequence[NewDelivery],
        now: float,
        claimed_by: int | None = None,
    ) -> Recorded:
        """`outbox.record_plans` with the gate's decisions applied, in the caller's transaction: stopped rows are
        stored suppressed (with no real target, as the planner's own), held-back rows pending until the window's
        end, and the repeat marks of the new pending rows remembered."""
        decisions = self.decide(conn, rows, now)
        stored: list[NewDelivery] = []
        suppressed: list[Stopped] = []
        # The decisions that still matter once the rows are in: by (event, recipient, channel, target).
        later: dict[tuple[str, str, str, str], Decision] = {}
        for row, decision in zip(rows, decisions, strict=True):
            if decision.status == "suppressed":
                assert row.channel is not None and decision.kind is not None and decision.reason is not None
                stored.append(dataclasses.replace(row, status="suppressed", target=None, reason=decision.reason))
                suppressed.append(Stopped(row.event.id, row.recipient, row.channel, decision.kind, decision.reason))
                continue
            stored.append(row)
            if decision is not GOES:
                assert row.channel is not None and row.target is not None
                later[(row.event.id, row.recipient, row.channel, row.target)] = decision
        pending = record_plans(conn, event_ids, stored, now, claimed_by)
        marks: list[tuple[int, str, str, float]] = []
        deferred: list[Stopped] = []
        for position, delivery in enumerate(pending):
            found = later.get((delivery.event_id, delivery.recipient, delivery.channel, delivery.target))
            if found is None:
                continue
            decision = found
            if decision.mark is not None:
                marks.append((delivery.id, decision.mark, delivery.event_id, now))
            if decision.next_attempt_at is not None:
                conn.execute(
                    "UPDATE deliveries SET next_attempt_at = ?, reason = ? WHERE id = ?",
                    (decision.next_attempt_at, decision.reason, delivery.id),
                )
                pending[position] = dataclasses.replace(delivery, next_attempt_at=decision.next_attempt_at)
                assert decision.kind is not None and decision.reason is not None
                deferred.append(
                    Stopped(
                        delivery.event_id,
                        delivery.recipient,
                        delivery.channel,
                        decision.kind,
                        decision.reason,
                        decision.next_attempt_at,
                    )
                )
        if marks:
            remember(conn, marks)
        if now >= self._next_prune_at:  # with no rule left (a reload), every mark goes
            prune_marks(conn, now - self._longest_interval_s)
            self._next_prune_at = now + PRUNE_INTERVAL_S
        return Recorded(pending, suppressed, deferred)


async def explain_plan(
    plan: Plan, event: Event, config: Config, store: Store | None, now: float
) -> tuple[Plan, list[str | None]]:
    """`plan` as the daemon would record it at `now` (for `dispatcher routes`): the deliveries a silence or a repeat
    rule stops moved to the suppressed ones with their reason, and for each delivery left, why it would wait (quiet
    hours) or None. Reads `store` (open, read-only) for silences and earlier deliveries; without one, or with a store
    the daemon has not brought up to date yet, only quiet hours apply."""
    gate = NoiseGate.from_config(config)
    rows = [
        NewDelivery(
            event=event,
            importance=plan.importance.label,
            recipient=delivery.recipient.name,
            recipient_kind=delivery.recipient.kind,
            channel=delivery.channel,
            target=delivery.target,
            target_label=None,
            status="pending",
        )
        for delivery in plan.deliveries
    ]
    decisions = None
    if store is not None:
        try:
            decisions = await store.run(lambda conn: gate.decide(conn, rows, now))
        except StoreError:  # an older store, without the silences' table yet
            decisions = None
    if decisions is None:
        decisions = gate.decide(None, rows, now)
    kept, held, suppressed = [], [], list(plan.suppressed)
    for delivery, decision in zip(plan.deliveries, decisions, strict=True):
        if decision.status == "suppressed":
            reason = decision.reason or "suppressed"
            suppressed.append(Suppressed(delivery.recipient.name, delivery.channel, delivery.target, reason))
        else:
            kept.append(delivery)
            held.append(decision.reason if decision.kind == "quiet_hours" else None)
    return Plan(importance=plan.importance, deliveries=tuple(kept), suppressed=tuple(suppressed)), held
