"""One attempt of a delivery: checked that it can still go (its channel is there, and a system contact's address
is still in the config), handed to the sender as a `SendJob`, and the far end's answer turned into an outcome
(outcomes.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import structlog

from ..channels import Channel, DeliveryError
from ..events import Event
from ..outbox import PendingDelivery
from ..routing.recipients import system_recipient
from ..senders.local import SendJob
from .outcomes import Outcomes

if TYPE_CHECKING:
    from ..config import Config
    from ..senders.local import LocalSender
    from ..senders.pool import SenderPool

log = structlog.get_logger(__name__)

# Why a pending delivery to a system contact's address is dropped after a reload (or a restart) without it.
TARGET_REMOVED = "target removed from the configuration"


def system_targets(config: Config) -> frozenset[tuple[str, str, str]]:
    """Every (system contact, channel, address) of `config`: what a delivery to a system contact must still be."""
    return frozenset(
        (name, channel, target)
        for name, contact in config.contacts.items()
        for channel, targets in system_recipient(contact).targets.items()
        for target in targets
    )


class Attempts:
    """Makes attempts with the channels and system contacts' addresses of the current config (`apply_config`)."""

    def __init__(
        self,
        *,
        sender: LocalSender | SenderPool,
        outcomes: Outcomes,
        channels: Mapping[str, Channel],
        system_targets: frozenset[tuple[str, str, str]],
    ) -> None:
        self.sender = sender
        self.outcomes = outcomes
        self.apply_config(channels, system_targets)

    def apply_config(self, channels: Mapping[str, Channel], system_targets: frozenset[tuple[str, str, str]]) -> None:
        """Attempt with these from now on (a reload): no attempt goes to a system contact's address the config no
        longer has (checked before each attempt)."""
        self.channels = channels
        self.system_targets = system_targets

    async def attempt(self, delivery: PendingDelivery, event: Event, free_slot: Callable[[], None]) -> None:
        """Attempt `delivery` and record its outcome; `free_slot()` is called as soon as the far end has answered."""
        attempts = delivery.attempts + 1
        channel = self.channels.get(delivery.channel)
        if channel is None:
            await self.outcomes.failed(delivery, event, attempts, f"channel {delivery.channel} is not available")
            return
        if (
            delivery.recipient_kind == "system"
            and (delivery.recipient, delivery.channel, delivery.target) not in self.system_targets
        ):
            await self.outcomes.suppressed(delivery, TARGET_REMOVED)
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
            await self.outcomes.unsent(delivery, event, attempts, err.message, err.retryable, err.retry_after_s)
        except TimeoutError:
            free_slot()
            await self.outcomes.unsent(delivery, event, attempts, "timed out", True, None)
        except Exception as err:
            free_slot()
            log.exception("delivery_crashed", channel=delivery.channel, delivery_id=delivery.id)
            await self.outcomes.unsent(delivery, event, attempts, f"unexpected error: {type(err).__name__}", True, None)
        else:
            free_slot()
            await self.outcomes.sent(delivery, event, attempts)
