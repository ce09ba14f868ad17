"""An attempt in this process: `SendJob`, what a sender is given, and `LocalSender`, which renders the message
(once per event, recipient and channel) and hands it to the channel under the attempt's bound. It runs in the
daemon's own process with `delivery.workers: 0`, in each sender process otherwise (child.py)."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..catalog import Catalog
from ..channels import Channel, DeliveryError, Message
from ..digests.render import DigestJob, DigestRenderer
from ..events import Event
from ..levels import Importance
from ..render import Renderer
from ..routing.recipients import Recipient
from .channel_set import attempt_timeout_s, build_channels, close_channels

if TYPE_CHECKING:
    from ..config import Config

# Rendered messages kept for reuse: a fan-out renders the same notice for one recipient once.
RENDER_CACHE_SIZE = 128


@dataclass(frozen=True, slots=True)
class SendJob:
    """One attempt: the delivery's channel, target and recipient, and the event to render; for a digest, the
    digest's events too (`event` is its first), rendered as one message."""

    event: Event
    channel: str
    target: str
    importance: str
    recipient_kind: str
    recipient: str
    digest: DigestJob | None = None


class LocalSender:
    """Renders and sends in this process, with the channels of the current config."""

    # Attempts in flight per channel, as a multiple of its concurrency (see SenderPool.lookahead).
    lookahead = 1

    def __init__(self, config: Config, catalog: Catalog, channels: dict[str, Channel] | None = None) -> None:
        self.catalog = catalog
        self.channels: dict[str, Channel] = {}
        self._retired: list[Channel] = []
        self._rendered: OrderedDict[tuple[str, str, str, str], Message] = OrderedDict()
        self.apply_config(config, channels)

    def start(self) -> None:
        """Nothing to start: attempts run in this process."""

    def apply_config(self, config: Config, channels: dict[str, Channel] | None = None) -> None:
        """Render and send with `config` (and `channels`, if given) from now on; channels replaced are closed at
        `close()`, since sends in flight may still use them."""
        self.renderer = Renderer(self.catalog, templates_dir=config.templates.dir, hostname=config.hostname)
        self.digest_renderer = DigestRenderer(self.renderer, templates_dir=config.templates.dir)
        self._rendered.clear()
        self._retired.extend(self.channels.values())  # sends in flight may still use them
        self.channels = channels if channels is not None else build_channels(config)

    def render(self, job: SendJob) -> Message:
        """The message for `job`; rendered once per (event, recipient, channel), so a fan-out renders once (a
        digest each time: it goes to one address)."""
        if job.digest is not None:
            recipient = Recipient(kind=job.recipient_kind, name=job.recipient, targets={}, thresholds=None)
            return self.digest_renderer.render(
                job.digest, importance=Importance.parse(job.importance), recipient=recipient, channel=job.channel
            )
        key = (job.event.id, job.recipient_kind, job.recipient, job.channel)
        message = self._rendered.get(key)
        if message is None:
            recipient = Recipient(kind=job.recipient_kind, name=job.recipient, targets={}, thresholds=None)
            message = self.renderer.render(
                job.event, importance=Importance.parse(job.importance), recipient=recipient, channel=job.channel
            )
            self._rendered[key] = message
            if len(self._rendered) > RENDER_CACHE_SIZE:
                self._rendered.popitem(last=False)
        return message

    async def send(self, job: SendJob) -> None:
        """Render and send; raises `DeliveryError`, `TimeoutError` (the attempt's bound) or the channel's bug."""
        async with asyncio.timeout(self.time_limit_s(job)):
            await self.send_unbounded(job)

    async def send_unbounded(self, job: SendJob) -> None:
        """`send` without its bound, for a caller that keeps the time itself (a sender process's watch)."""
        channel = self.channels.get(job.channel)
        if channel is None:
            raise DeliveryError(f"channel {job.channel} is not available", retryable=False)
        message = self.render(job)
        await channel.send(message, job.target)

    def time_limit_s(self, job: SendJob) -> float:
        """How long `job`'s attempt may take: its channel's bound."""
        channel = self.channels.get(job.channel)
        return attempt_timeout_s(channel.config if channel is not None else None)

    async def close(self) -> None:
        await close_channels([*self.channels.values(), *self._retired])
