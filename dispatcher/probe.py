"""The Contact Manager's "Test" link: send one test notice to a recipient on one channel, now, and say how it went.

No outbox, no retries: the admin wants to know at once whether the address works.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import structlog

from .channels import Channel, DeliveryError
from .config import Config
from .contacts.accounts import read_contact_info
from .contacts.recipients import account_recipient
from .errors import DispatcherError, StoreError
from .events import Event
from .levels import Importance
from .outbox import record_test_notice
from .render import Renderer
from .routing.recipients import Recipient, system_recipient
from .store import Store

log = structlog.get_logger(__name__)

TEST_EVENT_TYPE = "Application/base"


async def resolve_test_recipient(config: Config, spec: str, store: Store) -> Recipient:
    """`root` → that system contact of the config; `account:bob` → that account's contact info in the store."""
    if spec.startswith("account:"):
        account = spec.removeprefix("account:")
        info = await store.run(lambda conn: read_contact_info(conn, account))
        return account_recipient(info)
    return system_contact(config, spec)


def system_contact(config: Config, name: str) -> Recipient:
    """The system contact `name` of the config, or a DispatcherError listing the known names."""
    contact = config.contacts.get(name)
    if contact is None:
        known = ", ".join(config.contacts) or "none"
        raise DispatcherError(f"no system contact named {name!r} (known: {known})")
    return system_recipient(contact)


async def send_test_notice(
    *,
    config: Config,
    renderer: Renderer,
    channels: Mapping[str, Channel],
    recipient: Recipient,
    channel_name: str,
    store: Store | None = None,
) -> list[dict[str, Any]]:
    """Send a test notice to every address `recipient` has on `channel_name`; one outcome per address. With a
    writable `store`, the notice and its outcomes are recorded there once sent (a failure to record is logged:
    the notice went out all the same)."""
    channel = channels.get(channel_name)
    if channel is None:
        raise DispatcherError(f"unknown channel {channel_name!r} (available: {', '.join(channels)})")
    targets = recipient.targets.get(channel_name, ())
    if not targets:
        raise DispatcherError(f"{recipient.name} has no {channel_name} address")
    now = datetime.now(UTC)
    event = Event(
        id=f"test-{uuid.uuid4()}",
        type=TEST_EVENT_TYPE,
        occurred_at=now,
        host=config.hostname,
        account=None,
        client_id=None,
        data={
            "subject": f"Test notification for {recipient.name} via {channel_name}",
            "message": (
                f"This is a test notification from dispatcher on {config.hostname}. It was sent to check that "
                f"{recipient.name} receives notices by {channel_name}. No action is needed."
            ),
        },
        received_at=now,
    )
    message = renderer.render(event, importance=Importance.LOW, recipient=recipient, channel=channel_name)
    outcomes = []
    for target in targets:
        outcome: dict[str, Any] = {"channel": channel_name, "target": channel.describe_target(target)}
        try:
            await channel.send(message, target)
        except DeliveryError as err:
            outcome.update(status="failed", error=err.message)
        else:
            outcome.update(status="sent")
        outcomes.append(outcome)
    if store is not None:
        recorded_at = time.time()
        try:
            await store.run(
                lambda conn: record_test_notice(conn, event, recipient.name, channel_name, outcomes, recorded_at)
            )
        except StoreError as err:
            log.warning("test_notice_not_recorded", event_id=event.id, error=str(err))
    return outcomes
