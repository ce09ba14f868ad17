"""The channels a config sets up: one instance of each available channel, what a sender reads of their config
sections (how many sends at once, the bound on one attempt), and closing them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import structlog

from ..channels import Channel, available_channels

if TYPE_CHECKING:
    from ..config import Config

log = structlog.get_logger(__name__)


def build_channels(config: Config) -> dict[str, Channel]:
    """One instance of every available channel, built from its config section."""
    sections: Mapping[str, Any] = {
        "email": config.channels.email,
        "pushbullet": config.channels.pushbullet,
        "posturl": config.channels.posturl,
        **config.channels.plugins,
    }
    channels = {}
    for name, channel_class in available_channels().items():
        channels[name] = channel_class(sections.get(name, {}), hostname=config.hostname)
    return channels


def _setting(section: Any, key: str) -> Any:
    """A channel's setting: built-in sections are dataclasses, a plugin's is a mapping."""
    return section.get(key) if isinstance(section, Mapping) else getattr(section, key, None)


def channel_concurrency(channel: Channel) -> int:
    return int(_setting(channel.config, "concurrency") or 8)


def attempt_timeout_s(section: Any) -> float:
    """The bound on one attempt under a channel's config `section`. A channel bounds its own requests (its
    `timeout_s`, after waiting for one of its slots); this catches a channel that does not."""
    return float(_setting(section, "timeout_s") or 30) * 2 + 5


async def close_channels(channels: list[Channel]) -> None:
    """Close each channel; one that fails to close is logged and does not keep the others open."""
    for channel in channels:
        try:
            await channel.close()
        except Exception as err:
            log.warning("channel_close_failed", channel=channel.name, error=str(err))
