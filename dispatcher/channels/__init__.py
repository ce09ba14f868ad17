"""Delivery channels: the built-ins, registered explicitly, and third-party ones found through entry points.

A third-party package adds a channel by declaring an entry point in group `dispatcher.channels` whose name is
the channel's name and whose value is a `Channel` subclass, e.g. in its `pyproject.toml`:

    [project.entry-points."dispatcher.channels"]
    sms = "dispatcher_sms:SmsChannel"
"""

from __future__ import annotations

from importlib.metadata import entry_points

import structlog

from dispatcher.channels.base import Channel, DeliveryError, Message, parse_retry_after, short_hash
from dispatcher.channels.email import EmailChannel
from dispatcher.channels.posturl import PostUrlChannel
from dispatcher.channels.pushbullet import PushbulletChannel

__all__ = [
    "BUILTIN_CHANNELS",
    "ENTRY_POINT_GROUP",
    "Channel",
    "DeliveryError",
    "EmailChannel",
    "Message",
    "PostUrlChannel",
    "PushbulletChannel",
    "available_channels",
    "parse_retry_after",
    "short_hash",
]

log = structlog.get_logger(__name__)

ENTRY_POINT_GROUP = "dispatcher.channels"

BUILTIN_CHANNELS: dict[str, type[Channel]] = {
    "email": EmailChannel,
    "pushbullet": PushbulletChannel,
    "posturl": PostUrlChannel,
}


def available_channels() -> dict[str, type[Channel]]:
    """Every channel by name: the built-ins, then each installed plugin's entry point.

    A built-in wins a name clash; a plugin that cannot be imported or is not a `Channel` subclass is skipped.
    Each of these is logged, and none stops the daemon. Entry points are read on every call, so a reload sees
    newly installed plugins.
    """
    channels: dict[str, type[Channel]] = dict(BUILTIN_CHANNELS)
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        name = entry_point.name
        if name in BUILTIN_CHANNELS:
            log.warning("channel_plugin_shadowed", channel=name, plugin=entry_point.value)
            continue
        if name in channels:
            log.warning("channel_plugin_duplicate", channel=name, plugin=entry_point.value)
            continue
        try:
            loaded = entry_point.load()
        except Exception as err:  # a broken plugin must not take the daemon down with it
            log.error("channel_plugin_load_failed", channel=name, plugin=entry_point.value, error=repr(err))
            continue
        if not (isinstance(loaded, type) and issubclass(loaded, Channel)):
            log.error("channel_plugin_invalid", channel=name, plugin=entry_point.value, reason="not a Channel subclass")
            continue
        channels[name] = loaded
        log.debug("channel_plugin_loaded", channel=name, plugin=entry_point.value)
    return channels
