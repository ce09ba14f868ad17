"""The planner: from an event's candidates to its deliveries, each one (recipient, channel, target), or why not.

`plan()` is pure: no I/O, no clock, nothing global, so the daemon, `dispatcher routes` and the tests get the same
answer. Rules, in the order they are applied:

1. Importance `disabled`: nothing is delivered; every candidate is suppressed (`importance disabled`).
2. A candidate its source suppressed (a preference is off, routes left it out) gets nothing, with that reason.
3. A recipient with no address on any channel gets nothing (`no address`).
4. For each of a recipient's addresses: a system contact's channel with threshold `none` is off
   (`channel off (none)`); one whose threshold does not admit the importance is `below threshold medium`;
   a channel not configured or not installed is `channel X not available`.
5. Each (channel, target) is delivered once (SPEC §3): the first recipient to reach it keeps it, a later one is
   listed as `duplicate of <name>`. Email addresses are compared without regard to case.

Suppressions of a whole recipient (rules 1-3) have no channel and no target; the others name both.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..levels import Importance, Threshold, threshold_admits
from .importance import effective_importance
from .recipients import Candidate, Recipient, RecipientSource

if TYPE_CHECKING:
    from ..catalog import AlertType, Catalog
    from ..config import Config
    from ..events import Event


@dataclass(frozen=True, slots=True)
class PlannedDelivery:
    """One message to send: `target` (revealed; show it with the channel's `describe_target`) on `channel`."""

    recipient: Recipient
    channel: str
    target: str

    def __repr__(self) -> str:
        return f"PlannedDelivery(recipient={self.recipient.name!r}, channel={self.channel!r}, target=<target>)"


@dataclass(frozen=True, slots=True)
class Suppressed:
    """A recipient, or one of its addresses, that gets nothing, and why.

    `channel` and `target` are None when the whole recipient is suppressed. `target` is revealed, as in
    `PlannedDelivery`.
    """

    recipient_name: str
    channel: str | None
    target: str | None
    reason: str

    def __repr__(self) -> str:
        shown = None if self.target is None else "<target>"
        return (
            f"Suppressed(recipient_name={self.recipient_name!r}, channel={self.channel!r}, target={shown}, "
            f"reason={self.reason!r})"
        )


@dataclass(frozen=True, slots=True)
class Plan:
    """What an event leads to: its effective importance, the deliveries to make, and what is not sent."""

    importance: Importance
    deliveries: tuple[PlannedDelivery, ...]
    suppressed: tuple[Suppressed, ...]


def plan(
    event: Event,
    alert: AlertType,
    importance: Importance,
    candidates: Sequence[Candidate],
    channels: Collection[str],
) -> Plan:
    """Apply the rules of this module to `candidates` of `event` at `importance`.

    `channels` names the channels that can send (configured and installed). The order of the deliveries is the
    order of the candidates, then of their channels and addresses.
    """
    deliveries: list[PlannedDelivery] = []
    suppressed: list[Suppressed] = []
    holders: dict[tuple[str, str], str] = {}  # (channel, comparable target) -> the recipient delivering there

    for candidate in candidates:
        recipient = candidate.recipient
        if importance == Importance.DISABLED:
            suppressed.append(Suppressed(recipient.name, None, None, "importance disabled"))
            continue
        if candidate.suppressed is not None:
            suppressed.append(Suppressed(recipient.name, None, None, candidate.suppressed))
            continue
        addresses = [
            (channel, target) for channel, targets in recipient.targets.items() for target in targets if target.strip()
        ]
        if not addresses:
            suppressed.append(Suppressed(recipient.name, None, None, "no address"))
            continue
        for channel, target in addresses:
            reason = _channel_refusal(recipient, channel, importance, channels)
            if reason is None:
                key = (channel, comparable_target(channel, target))
                holder = holders.get(key)
                if holder is None:
                    holders[key] = recipient.name
                    deliveries.append(PlannedDelivery(recipient, channel, target))
                    continue
                reason = f"duplicate of {holder}"
            suppressed.append(Suppressed(recipient.name, channel, target, reason))

    return Plan(importance=importance, deliveries=tuple(deliveries), suppressed=tuple(suppressed))


def _channel_refusal(
    recipient: Recipient, channel: str, importance: Importance, channels: Collection[str]
) -> str | None:
    """Why `recipient` gets nothing on `channel` at `importance`, or None if it may."""
    if recipient.thresholds is not None:
        threshold = recipient.thresholds.get(channel, Threshold.ALL)
        if threshold == Threshold.NONE:
            return "channel off (none)"
        if not threshold_admits(threshold, importance):
            return f"below threshold {threshold.label}"
    if channel not in channels:
        return f"channel {channel} not available"
    return None


def comparable_target(channel: str, target: str) -> str:
    """The form in which two targets of `channel` are the same address: email ignores case, others only spaces."""
    stripped = target.strip()
    return stripped.casefold() if channel == "email" else stripped


async def plan_event(
    event: Event,
    *,
    config: Config,
    catalog: Catalog,
    sources: Sequence[RecipientSource],
    channels: Collection[str],
) -> Plan:
    """Plan `event`: its effective importance, the candidates of every source (in the order of `sources`), `plan()`."""
    alert = catalog.get(event.type)
    importance = effective_importance(event.type, config, catalog)
    # One source after the other: most answer without waiting (system contacts; an event without an account),
    # and gather() would cost a task per source per event.
    candidates = [candidate for source in sources for candidate in await source.candidates(event, alert, config)]
    return plan(event, alert, importance, candidates, channels)
