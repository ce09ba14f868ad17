"""The typed configuration: the frozen dataclasses a config file becomes, their defaults, and the channel names a
config can use. Nothing here reads YAML; `load.py` builds these objects."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from dispatcher.digests.rules import DigestRule
from dispatcher.levels import Importance, Threshold
from dispatcher.noise.quiet_hours import QuietHours
from dispatcher.noise.repeats import RepeatRule

from .secret import Secret

BUILTIN_CHANNELS = ("email", "pushbullet", "posturl")
PLUGIN_GROUP = "dispatcher.channels"
DEFAULT_STORE_PATH = Path("/var/lib/dispatcher/dispatcher.db")
# As long as cPanel keeps its own notification history.
DEFAULT_RETENTION_DAYS = 30
# SPEC §3: a system contact's channels receive All, High and Medium, All unless told otherwise.
DEFAULT_RECEIVES: Mapping[str, Threshold] = MappingProxyType(
    {"email": Threshold.ALL, "pushbullet": Threshold.MEDIUM, "posturl": Threshold.ALL}
)


@dataclass(frozen=True)
class BusConfig:
    """The MQTT bus: where events come in and rejected ones go (`dead_letter_topic`)."""

    url: str
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: Secret | None = None
    ca_file: Path | None = None
    topic_prefix: str = "events"
    client_id: str = "dispatcher-1"
    # Subscribe as `$share/<group>/<prefix>/#` so several instances split the load (MQTT 5 only).
    shared_group: str | None = None
    dead_letter_topic: str = "events-dead-letter"
    protocol: str = "3.1.1"  # "5" or "3.1.1"; an addition to SPEC §8


@dataclass(frozen=True)
class HttpConfig:
    """The HTTP API listener; `token` is the bearer token (read from `token_file` when that is set)."""

    listen_host: str = "127.0.0.1"
    listen_port: int = 8470
    token: Secret | None = None
    token_file: Path | None = None


@dataclass(frozen=True)
class StoreConfig:
    """Where the store is, the SQLite database file (`path`, the default) or a PostgreSQL database (`url`, SPEC §8a;
    `path` is then None), and for how many days finished events and their delivery records are kept (None: for
    ever; `retention.py`)."""

    path: Path | None = DEFAULT_STORE_PATH
    url: str | None = None
    retention_days: int | None = DEFAULT_RETENTION_DAYS

    @property
    def where(self) -> Path | str:
        """What `Store` is opened with: the PostgreSQL URL, or the SQLite file's path."""
        if self.url is not None:
            return self.url
        assert self.path is not None  # the reader sets one of the two
        return self.path


@dataclass(frozen=True)
class TemplatesConfig:
    """A directory whose templates override the shipped ones (same `<App>/<Event>.*.j2` layout), or None."""

    dir: Path | None = None


@dataclass(frozen=True)
class EmailChannelConfig:
    """SMTP submission for the email channel."""

    host: str = "127.0.0.1"
    port: int = 25
    security: str = "none"  # "none", "starttls" or "tls" (implicit TLS)
    username: str | None = None
    password: Secret | None = None
    from_addr: str = "dispatcher@localhost"  # the config's default is dispatcher@<hostname>
    timeout_s: float = 30.0
    concurrency: int = 8


@dataclass(frozen=True)
class PushbulletChannelConfig:
    api_url: str = "https://api.pushbullet.com"
    timeout_s: float = 10.0
    concurrency: int = 4


@dataclass(frozen=True)
class PostUrlChannelConfig:
    timeout_s: float = 10.0
    format: str = "form"  # "form" (application/x-www-form-urlencoded) or "json"
    concurrency: int = 32


@dataclass(frozen=True)
class ChannelsConfig:
    """The built-in channels' settings, and the raw mapping given to each plugin channel (by entry point name)."""

    email: EmailChannelConfig = field(default_factory=EmailChannelConfig)
    pushbullet: PushbulletChannelConfig = field(default_factory=PushbulletChannelConfig)
    posturl: PostUrlChannelConfig = field(default_factory=PostUrlChannelConfig)
    plugins: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class DeliveryConfig:
    """Retry policy: `max_attempts` counts every attempt, the first included; None (the default) sets no limit, so
    `give_up_after_s` alone decides when a delivery fails (retries then outlast an outage shorter than it).
    `workers`: sender processes that render and send beside the daemon's own (0: the daemon's process does it; see
    `dispatcher/senders/`)."""

    max_attempts: int | None = None
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 300.0
    give_up_after_s: float = 86400.0
    workers: int = 2


@dataclass(frozen=True)
class Contact:
    """A system contact (the Contact Manager): its targets per channel and each channel's threshold.

    `receives` always holds email, pushbullet and posturl (defaults all, medium, all), and every plugin channel
    the contact has targets for (default all).
    """

    name: str
    email: tuple[str, ...] = ()
    pushbullet: tuple[Secret, ...] = ()
    posturl: tuple[Secret, ...] = ()
    plugins: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    receives: Mapping[str, Threshold] = field(default_factory=lambda: DEFAULT_RECEIVES)
    # Deliveries planned inside these hours wait for their end (`noise/quiet_hours.py`); None: never.
    quiet_hours: QuietHours | None = None

    def targets(self, channel: str) -> tuple[str, ...]:
        """The contact's addresses on `channel`, secrets revealed (use the channel's describe_target() to log them)."""
        if channel == "email":
            return self.email
        if channel == "pushbullet":
            return tuple(token.reveal() for token in self.pushbullet)
        if channel == "posturl":
            return tuple(url.reveal() for url in self.posturl)
        return self.plugins.get(channel, ())


@dataclass(frozen=True)
class RouteMatch:
    """What a route matches; None means any. `type`, `account`, `host` and `data` values are fnmatch globs."""

    type: str | None = None
    app: str | None = None
    min_importance: Importance | None = None
    account: str | None = None
    host: str | None = None
    data: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Route:
    """A routing rule: events fitting `match` go to the contacts `to`; `continue_` lets later rules add theirs."""

    match: RouteMatch
    to: tuple[str, ...]
    continue_: bool = False


@dataclass(frozen=True)
class Config:
    """The whole configuration. `source` is the file it came from (None for a string or the defaults)."""

    hostname: str
    bus: BusConfig
    http: HttpConfig
    store: StoreConfig
    templates: TemplatesConfig
    channels: ChannelsConfig
    delivery: DeliveryConfig
    importance: Mapping[str, Importance]
    contacts: Mapping[str, Contact]
    routes: tuple[Route, ...]
    # `digests:` rules (`digests/rules.py`): the events of one group to one address go out as one message.
    digests: tuple[DigestRule, ...] = ()
    # `repeats:` rules (`noise/repeats.py`): the same key to the same address within an interval is suppressed.
    repeats: tuple[RepeatRule, ...] = ()
    source: Path | None = None
    # `FILE:LINE:COL: warning: message` lines: valid but suspicious settings (check-config prints them, the daemon
    # logs them). Not part of what the config means, so two configs that differ only here are equal.
    warnings: tuple[str, ...] = field(default=(), compare=False)
