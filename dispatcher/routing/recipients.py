"""Who may get an event: `Recipient`, the `RecipientSource` protocol, and the system contacts source.

A source proposes `Candidate`s for one event; the planner (`routing.planner`) turns them into deliveries. Three
kinds of source exist (SPEC §3): the system contacts of the config (here), and the account and client contacts
of the store (`dispatcher.contacts`). A candidate the source already knows gets nothing (a `notify_*` preference
is off, routes left it out) carries the reason in `suppressed`, so that `dispatcher routes` and the delivery
records can say why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..levels import Threshold
from .importance import importance_for_alert
from .routes import select_contacts

if TYPE_CHECKING:
    from ..catalog import AlertType
    from ..config import Config, Contact
    from ..events import Event

# The channels every contact can have addresses on; plugin channels come after, from `contact.plugins`.
BUILTIN_CHANNEL_NAMES = ("email", "pushbullet", "posturl")


@dataclass(frozen=True, slots=True)
class Recipient:
    """Someone who may get an event, with their addresses per channel.

    `kind` is `"system"`, `"account"`, `"client"` or `"contact"`; `name` identifies them in records and output
    (`"root"`, `"account:bob"`, `"client:12"`, `"contact:34"`). `targets` maps a channel to its addresses (email
    addresses, Pushbullet tokens, URLs), revealed: never log them, show them through `describe_target`.
    `thresholds` maps a channel to its threshold for system contacts; None means importance does not filter.
    """

    kind: str
    name: str
    targets: Mapping[str, tuple[str, ...]]
    thresholds: Mapping[str, Threshold] | None

    def __repr__(self) -> str:
        # Targets hold Pushbullet tokens and URLs with credentials: a repr names the channels only.
        channels = ", ".join(f"{channel}×{len(addresses)}" for channel, addresses in self.targets.items())
        return f"Recipient(kind={self.kind!r}, name={self.name!r}, targets=<{channels}>)"


@dataclass(frozen=True, slots=True)
class Candidate:
    """What a source proposes for one event: a recipient, and why they get nothing (`suppressed`), if so."""

    recipient: Recipient
    suppressed: str | None = None


class RecipientSource(Protocol):
    """Proposes the recipients of an event. `name` identifies the source in logs."""

    name: str

    async def candidates(self, event: Event, alert: AlertType, config: Config) -> list[Candidate]:
        """The candidates for `event`, whose catalog entry is `alert`, under `config`."""
        ...


class SystemContacts:
    """The system contacts of `config.contacts` (the Contact Manager), narrowed or widened by `config.routes`.

    Every alert type whose audience includes `system` is proposed to them; a type for accounts alone
    (`ContactInfo/Change`) is not. Contacts the routes leave out are proposed as suppressed
    (`not selected by routes (routes[0])`), so the answer says why they get nothing. Each channel carries the
    contact's threshold; the planner applies it.
    """

    name = "system"

    async def candidates(self, event: Event, alert: AlertType, config: Config) -> list[Candidate]:
        """One candidate per system contact, in config order."""
        if "system" not in alert.audience:
            return []
        importance = importance_for_alert(event.type, config, alert)
        selected, matched = select_contacts(event, importance, config)
        left_out = "not selected by routes (" + ", ".join(f"routes[{index}]" for index in matched) + ")"
        candidates = [
            Candidate(system_recipient(config.contacts[name])) for name in selected if name in config.contacts
        ]
        candidates.extend(
            Candidate(system_recipient(contact), suppressed=left_out)
            for name, contact in config.contacts.items()
            if name not in selected
        )
        return candidates


def system_recipient(contact: Contact) -> Recipient:
    """The recipient of a system contact: its addresses on every channel it has, with their thresholds.

    Channels without an address are left out; a channel without a `receives` entry takes `all`.
    """
    channels = [*BUILTIN_CHANNEL_NAMES, *(name for name in contact.plugins if name not in BUILTIN_CHANNEL_NAMES)]
    targets = {channel: addresses for channel in channels if (addresses := tuple(contact.targets(channel)))}
    thresholds = {channel: contact.receives.get(channel, Threshold.ALL) for channel in targets}
    return Recipient(kind="system", name=contact.name, targets=targets, thresholds=thresholds)
