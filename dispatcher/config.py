"""The configuration file (SPEC §8): YAML parsed once into frozen, typed dataclasses.

`load_config(path)` reads a file, `parse_config(text)` a string, `default_config()` gives every default and no
contacts. Problems never stop at the first one: every unknown key, wrong type and bad value is collected with the
position of the offending key or value, and `ConfigError(issues)` is raised with one `FILE:LINE:COL: message` line
each (1-based; problems with the file as a whole, such as a missing file, are `FILE: message`).

The walk works on the composed YAML node tree (`yaml.compose`) rather than on constructed Python objects, since only
the nodes remember where they came from. `null` for a key means the same as leaving the key out: its default (one
exception: `store.retention_days: null` keeps everything, while left out it is 30 days).

Secrets come from `*_file` keys (read at load, trailing whitespace stripped) or, discouraged, inline keys. They are
held in `Secret`, whose repr is `<secret>`, and no error message ever quotes a secret's value. Relative paths resolve
against the directory of the config file.
"""

from __future__ import annotations

import difflib
import email.policy
import ipaddress
import math
import os
import re
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar
from urllib.parse import urlsplit

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from dispatcher.catalog import CatalogError, load_catalog
from dispatcher.errors import ConfigError
from dispatcher.levels import Importance, Threshold

__all__ = [
    "BusConfig",
    "ChannelsConfig",
    "Config",
    "Contact",
    "DeliveryConfig",
    "EmailChannelConfig",
    "HttpConfig",
    "PostUrlChannelConfig",
    "PushbulletChannelConfig",
    "Route",
    "RouteMatch",
    "Secret",
    "StoreConfig",
    "TemplatesConfig",
    "default_config",
    "load_config",
    "parse_config",
    "redact_url",
]

BUILTIN_CHANNELS = ("email", "pushbullet", "posturl")
PLUGIN_GROUP = "dispatcher.channels"
DEFAULT_STORE_PATH = Path("/var/lib/dispatcher/dispatcher.db")
# As long as cPanel keeps its own notification history.
DEFAULT_RETENTION_DAYS = 30
# A century: more is a typo (and past what a date can hold); null keeps everything.
MAX_RETENTION_DAYS = 36500
# Sender processes (`delivery.workers`): each is a Python process of ~40 MB; more than this is a typo.
MAX_SENDER_WORKERS = 32
# SPEC §3: a system contact's channels receive All, High and Medium, All unless told otherwise.
DEFAULT_RECEIVES: Mapping[str, Threshold] = MappingProxyType(
    {"email": Threshold.ALL, "pushbullet": Threshold.MEDIUM, "posturl": Threshold.ALL}
)
_PLUGIN_DEFAULT_THRESHOLD = Threshold.ALL


# --------------------------------------------------------------------------------------------------------------------
# Secrets and URLs


@dataclass(frozen=True, repr=False)
class Secret:
    """A secret string: `reveal()` gives it, `repr()` and `str()` give `<secret>`, so logs and errors cannot leak it.

    Note that `dataclasses.asdict()` copies the value out; never serialise config objects that way.
    """

    _value: str

    def reveal(self) -> str:
        """The secret itself, for the one place that needs it (an HTTP header, an SMTP login)."""
        return self._value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__


def redact_url(url: str) -> str:
    """`url` safe for logs: user info removed, every query value (and any fragment) replaced by `***`.

    `https://u:p@hooks.example.com/n?key=abc&x` → `https://hooks.example.com/n?key=***&***`. A string that does not
    parse as a URL gives `***`.
    """
    try:
        parts = urlsplit(url)
    except ValueError:  # unbalanced IPv6 brackets
        return "***"
    netloc = parts.netloc.rpartition("@")[2]
    text = f"{parts.scheme}://{netloc}{parts.path}" if parts.scheme or netloc else parts.path
    if parts.query:
        # A bare item (`?abc123`) may be a key on its own, so it is hidden too.
        items = (f"{item.partition('=')[0]}=***" if "=" in item else "***" for item in parts.query.split("&") if item)
        text += "?" + "&".join(items)
    if parts.fragment:
        text += "#***"
    return text


# --------------------------------------------------------------------------------------------------------------------
# The typed configuration


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
    """The SQLite database file, and for how many days finished events and their delivery records are kept (None:
    for ever; `retention.py`)."""

    path: Path = DEFAULT_STORE_PATH
    retention_days: int | None = DEFAULT_RETENTION_DAYS


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
    `dispatcher/senders.py`)."""

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
    source: Path | None = None
    # `FILE:LINE:COL: warning: message` lines: valid but suspicious settings (check-config prints them, the daemon
    # logs them). Not part of what the config means, so two configs that differ only here are equal.
    warnings: tuple[str, ...] = field(default=(), compare=False)


# --------------------------------------------------------------------------------------------------------------------
# Entry points


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate the config file at `path`; raises ConfigError listing every problem.

    Issues name the file as `path` was given; relative paths inside resolve against the file's directory.
    """
    shown = os.fspath(path)
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise ConfigError([f"{shown}: cannot read the config file: {err.strerror or err}"]) from err
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise ConfigError([f"{shown}:{line}:{column}: the file is not UTF-8 text"]) from err
    # abspath, not resolve(): a symlinked config's relative paths stay relative to where the admin put the link.
    absolute = Path(os.path.abspath(path))
    return _parse(text, source=shown, base_dir=absolute.parent, origin=absolute)


def parse_config(text: str, source: str = "<string>", base_dir: Path | None = None) -> Config:
    """Validate config `text`; issues are named `source`, relative paths resolve against `base_dir` (default: cwd)."""
    return _parse(text, source=source, base_dir=base_dir or Path.cwd(), origin=None)


def default_config(hostname: str | None = None) -> Config:
    """Every default and no contacts or routes (for commands run without `-c`); hostname defaults to the FQDN."""
    reader = _Reader("<defaults>", Path.cwd())
    return _read_config(reader, None, None, hostname)


def _parse(text: str, *, source: str, base_dir: Path, origin: Path | None) -> Config:
    reader = _Reader(source, base_dir)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        raise ConfigError([_syntax_issue(source, err)]) from err
    except yaml.reader.ReaderError as err:
        before = text[: err.position]
        line, column = before.count("\n") + 1, err.position - (before.rfind("\n") + 1) + 1
        raise ConfigError(
            [f"{source}:{line}:{column}: YAML syntax error: {err.reason} (#x{err.character:04x})"]
        ) from err
    except yaml.YAMLError as err:  # pragma: no cover - every PyYAML parse error is one of the above
        raise ConfigError([f"{source}: YAML syntax error: {err}"]) from err
    config = _read_config(reader, root, origin, None)
    if reader.issues:
        raise ConfigError(reader.sorted_issues())
    return config


def _syntax_issue(source: str, err: yaml.MarkedYAMLError) -> str:
    # Built from problem and context only: str(err) would quote a snippet of the line, which may hold a secret.
    mark = err.problem_mark or err.context_mark
    where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
    message = err.problem or err.context or "invalid YAML"
    if err.context and err.problem:
        # PyYAML's own order: what it was doing (and where that began), then what went wrong.
        began = f" (line {err.context_mark.line + 1}, column {err.context_mark.column + 1})" if err.context_mark else ""
        message = f"{err.context}{began}: {err.problem}"
    return f"{where}: YAML syntax error: {message}"


# --------------------------------------------------------------------------------------------------------------------
# The schema walker: typed reads from YAML nodes that record an issue, with the node's position, for each problem

_T = TypeVar("_T")
_STR, _INT, _FLOAT, _BOOL, _NULL = (f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null"))


def _describe(node: Node, *, secret: bool = False) -> str:
    """How a wrong value is quoted in a message: `'abc'`, `12.5`, `true`, `a mapping`; secrets by kind only."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if node.tag == _NULL:
        return "null"
    if secret:
        return {_STR: "a string", _INT: "an integer", _FLOAT: "a number", _BOOL: "a boolean"}.get(node.tag, "a value")
    text = node.value if len(node.value) <= 60 else node.value[:57] + "..."
    return repr(text) if node.tag == _STR else text


class _Reader:
    """Collects issues for one document and converts scalar nodes to Python values."""

    def __init__(self, source: str, base_dir: Path) -> None:
        self.source = source
        self.base_dir = base_dir
        self.issues: list[tuple[int, int, int, str]] = []
        self.warnings: list[tuple[int, int, int, str]] = []
        self._constructor = yaml.constructor.SafeConstructor()
        self._plugins: frozenset[str] | None = None

    def error(self, node: Node, path: str, message: str) -> None:
        mark = node.start_mark
        self.issues.append((mark.line, mark.column, len(self.issues), f"{path}: {message}" if path else message))

    def sorted_issues(self) -> list[str]:
        return [f"{self.source}:{line + 1}:{col + 1}: {msg}" for line, col, _, msg in sorted(self.issues)]

    def warn(self, node: Node, path: str, message: str) -> None:
        """Record something suspicious that is still valid: reported, never refused."""
        mark = node.start_mark
        self.warnings.append((mark.line, mark.column, len(self.warnings), f"{path}: {message}"))

    def sorted_warnings(self) -> tuple[str, ...]:
        return tuple(
            f"{self.source}:{line + 1}:{col + 1}: warning: {msg}" for line, col, _, msg in sorted(self.warnings)
        )

    def plugin_channels(self) -> frozenset[str]:
        """Names of installed channel plugins (entry points in group `dispatcher.channels`), looked up once."""
        if self._plugins is None:
            names = {ep.name for ep in entry_points(group=PLUGIN_GROUP)}
            self._plugins = frozenset(names - set(BUILTIN_CHANNELS))
        return self._plugins

    # -- scalars; each returns None after recording an issue

    def string(self, node: Node, path: str, *, secret: bool = False) -> str | None:
        # Numbers and dates are taken as written (`client_id: 1234`); booleans are refused since `yes`/`no` were
        # almost certainly not meant as text.
        if isinstance(node, ScalarNode) and node.tag not in (_BOOL, _NULL):
            return node.value
        self.error(node, path, f"expected a string, got {_describe(node, secret=secret)}")
        return None

    def integer(self, node: Node, path: str, low: int, high: int | None = None) -> int | None:
        if not (isinstance(node, ScalarNode) and node.tag == _INT):
            self.error(node, path, f"expected an integer, got {_describe(node)}")
            return None
        value: int = self._constructor.construct_object(node)
        if value < low or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            self.error(node, path, f"expected an integer {bounds}, got {value}")
            return None
        return value

    def number(self, node: Node, path: str) -> float | None:
        """A positive, finite number of seconds (integers allowed)."""
        if not (isinstance(node, ScalarNode) and node.tag in (_INT, _FLOAT)):
            self.error(node, path, f"expected a number, got {_describe(node)}")
            return None
        value = float(self._constructor.construct_object(node))
        if not math.isfinite(value) or value <= 0:
            self.error(node, path, f"expected a positive number, got {node.value}")
            return None
        return value

    def boolean(self, node: Node, path: str) -> bool | None:
        if isinstance(node, ScalarNode) and node.tag == _BOOL:
            return bool(self._constructor.construct_object(node))
        self.error(node, path, f"expected true or false, got {_describe(node)}")
        return None

    def choice(self, node: Node, path: str, choices: tuple[str, ...]) -> str | None:
        value = self.string(node, path)
        if value is not None and value not in choices:
            self.error(node, path, f"expected one of {', '.join(choices)}, got {value!r}")
            return None
        return value

    def parsed(self, node: Node, path: str, parse: Callable[[str], _T]) -> _T | None:
        """A string run through `parse`, whose ValueError message becomes the issue."""
        value = self.string(node, path)
        if value is None:
            return None
        try:
            return parse(value)
        except ValueError as err:
            self.error(node, path, str(err))
            return None

    def path(self, node: Node, path: str) -> Path | None:
        value = self.string(node, path)
        if value is None:
            return None
        if not value:
            self.error(node, path, "expected a file path, got ''")
            return None
        return self.base_dir / Path(value).expanduser()

    def secret_file(self, node: Node, path: str) -> tuple[Secret | None, Path | None]:
        """Read a secret from the file named by `node`; trailing whitespace and newlines are not part of it."""
        file = self.path(node, path)
        if file is None:
            return None, None
        try:
            value = file.read_text(encoding="utf-8").rstrip()
        except UnicodeDecodeError:
            self.error(node, path, f"{node.value!r} is not UTF-8 text")
            return None, file
        except OSError as err:
            self.error(node, path, f"cannot read {node.value!r}: {err.strerror or err}")
            return None, file
        if not value:
            self.error(node, path, f"{node.value!r} is empty")
            return None, file
        return Secret(value), file

    def inline_secret(self, node: Node, path: str) -> Secret | None:
        value = self.string(node, path, secret=True)
        if value is None:
            return None
        if not value.strip():
            self.error(node, path, "expected a non-empty secret")
            return None
        return Secret(value.strip())

    def raw(self, node: Node, path: str) -> Any:
        """The plain Python value of a subtree (plugin settings are passed through as they are)."""
        try:
            return self._constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError) as err:
            self.error(node, path, f"cannot read the value: {getattr(err, 'problem', None) or err}")
            return None

    # -- collections

    def sequence(self, node: Node, path: str) -> list[tuple[str, Node]]:
        """The items of a list with their paths (`path[0]`, …); [] after an issue if `node` is not a list."""
        if isinstance(node, SequenceNode):
            return [(f"{path}[{index}]", item) for index, item in enumerate(node.value)]
        self.error(node, path, f"expected a list, got {_describe(node)}")
        return []

    def mapping(self, node: Node | None, path: str) -> _Map:
        """A mapping to read keys from; an empty one (after an issue) if `node` is not a mapping."""
        if node is None or (isinstance(node, ScalarNode) and node.tag == _NULL):
            return _Map(self, None, path)
        if not isinstance(node, MappingNode):
            self.error(node, path, f"expected a mapping, got {_describe(node)}")
            return _Map(self, None, path)
        try:
            self._constructor.flatten_mapping(node)  # resolve `<<: *anchor` merge keys
        except yaml.MarkedYAMLError as err:
            self.error(node, path, f"bad merge key: {err.problem}")
        return _Map(self, node, path)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _is_null(node: Node | None) -> bool:
    return node is None or (isinstance(node, ScalarNode) and node.tag == _NULL)


class _Map:
    """One YAML mapping being read. Each `take()` declares a key as known; `finish()` reports every other key.

    The typed getters return the default when the key is absent or null, and after recording an issue.
    """

    def __init__(self, reader: _Reader, node: MappingNode | None, path: str) -> None:
        self.reader = reader
        self.node = node
        self.path = path
        self.entries: dict[str, tuple[Node, Node]] = {}
        self.known: list[str] = []
        for key_node, value_node in node.value if node is not None else ():
            if not isinstance(key_node, ScalarNode):
                reader.error(key_node, path, f"keys must be strings, got {_describe(key_node)}")
                continue
            if key_node.value in self.entries:
                reader.error(key_node, _join(path, key_node.value), "duplicate key")
                continue
            self.entries[key_node.value] = (key_node, value_node)

    def __iter__(self) -> Iterator[tuple[str, Node, Node]]:
        """Every (key, key node, value node), in file order; for mappings whose keys are names, not a schema."""
        for key, (key_node, value_node) in self.entries.items():
            yield key, key_node, value_node

    def take(self, key: str) -> Node | None:
        """The value node of `key`, or None if absent or null."""
        self.known.append(key)
        entry = self.entries.get(key)
        return None if entry is None or _is_null(entry[1]) else entry[1]

    def value_node(self, key: str) -> Node | None:
        """The value node of `key` without declaring it (for pointing an issue at it), or None if absent/null."""
        entry = self.entries.get(key)
        return None if entry is None or _is_null(entry[1]) else entry[1]

    def sub(self, key: str) -> str:
        return _join(self.path, key)

    def unknown(self, key: str, also: str = "") -> None:
        """Report `key` as unknown, listing the keys declared so far (and `also`, free text)."""
        expected = ", ".join([*dict.fromkeys(self.known), *([also] if also else [])])
        hint = f" (expected one of: {expected})" if expected else ""
        self.reader.error(self.entries[key][0], self.sub(key), f"unknown key{hint}")

    def finish(self) -> None:
        for key in self.entries:
            if key not in self.known:
                self.unknown(key)

    # -- typed getters

    def get(self, key: str, read: Callable[[Node, str], _T | None], default: _T) -> _T:
        node = self.take(key)
        if node is None:
            return default
        value = read(node, self.sub(key))
        return default if value is None else value

    def string(self, key: str, default: _T) -> str | _T:
        return self.get(key, self.reader.string, default)

    def integer(self, key: str, default: int, low: int, high: int | None = None) -> int:
        return self.get(key, lambda node, path: self.reader.integer(node, path, low, high), default)

    def number(self, key: str, default: float) -> float:
        return self.get(key, self.reader.number, default)

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        return self.get(key, lambda node, path: self.reader.choice(node, path, choices), default)

    def secret(self, key: str) -> tuple[Secret | None, Path | None]:
        """The secret given by `<key>_file` (preferred) or inline `<key>`, and the file it came from."""
        file_node, inline_node = self.take(f"{key}_file"), self.take(key)
        if file_node is not None and inline_node is not None:
            self.reader.error(inline_node, self.sub(key), f"give either {key} or {key}_file, not both")
        if file_node is not None:
            return self.reader.secret_file(file_node, self.sub(f"{key}_file"))
        if inline_node is not None:
            return self.reader.inline_secret(inline_node, self.sub(key)), None
        return None, None

    def missing(self, key: str) -> None:
        if self.node is not None:
            self.reader.error(self.node, self.path, f"missing required key {key!r}")


# --------------------------------------------------------------------------------------------------------------------
# Value checks shared by several keys

_TYPE_KEY_RE = re.compile(r"^[A-Za-z0-9_.\-]+/(?:\*|[A-Za-z0-9_.\-]+)$")  # App/Event (as events.py) or App/*
_TOPIC_FORBIDDEN = set("+#\0")
_LABEL = r"[^\W_](?:[\w-]{0,61}[^\W_])?"
_DOMAIN_RE = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_LOCAL_RE = re.compile(r"^[^\s@<>()\[\],;:\\\"]+$")
_LISTEN_RE = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.%\w]+)\]|(?P<host>[^\s:\[\]]+)):(?P<port>[0-9]+)$")


def _is_addr_spec(text: str) -> bool:
    """Whether `text` is a plain address `local@domain` (no display name)."""
    local, at, domain = text.rpartition("@")
    return bool(at) and bool(_LOCAL_RE.match(local)) and bool(_DOMAIN_RE.match(domain))


def _email_address(text: str) -> str:
    if not _is_addr_spec(text):
        raise ValueError(f"expected an email address like admin@example.com, got {text!r}")
    return text


def _from_address(text: str) -> str:
    """`root@host` or `Name <root@host>`: exactly one address, no header-breaking characters."""
    bad = ValueError(f'expected an address like "Server notices <root@example.com>", got {text!r}')
    if "\r" in text or "\n" in text:
        raise bad
    header = email.policy.default.header_factory("From", text)
    if header.defects or len(header.addresses) != 1 or not _is_addr_spec(header.addresses[0].addr_spec):
        raise bad
    return text


def _http_url(text: str, *, secret: bool) -> str:
    """An http(s) URL with a host. A secret URL is not quoted back, since it may carry a key."""
    shown = "" if secret else f", got {redact_url(text)!r}"
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise ValueError(f"expected an http:// or https:// URL with a valid port{shown}") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL{shown}")
    return text


def _topic(text: str) -> str:
    if not text or text.startswith("/") or text.endswith("/") or _TOPIC_FORBIDDEN & set(text):
        raise ValueError(f"expected an MQTT topic without wildcards or leading/trailing '/', got {text!r}")
    return text


def _name(what: str) -> Callable[[str], str]:
    def check(text: str) -> str:
        if not text or any(ch.isspace() for ch in text):
            raise ValueError(f"expected a {what} without spaces, got {text!r}")
        return text

    return check


# --------------------------------------------------------------------------------------------------------------------
# The sections


def _read_config(reader: _Reader, root: Node | None, origin: Path | None, hostname: str | None) -> Config:
    top = reader.mapping(root, "")
    hostname = top.get("hostname", lambda n, p: reader.parsed(n, p, _name("host name")), hostname)
    hostname = hostname or socket.getfqdn()
    bus = _read_bus(reader, reader.mapping(top.take("bus"), "bus"))
    http = _read_http(reader, reader.mapping(top.take("http"), "http"))
    store = _read_store(reader.mapping(top.take("store"), "store"))
    templates = _read_templates(reader, reader.mapping(top.take("templates"), "templates"))
    channels = _read_channels(reader, reader.mapping(top.take("channels"), "channels"), hostname)
    delivery = _read_delivery(reader, reader.mapping(top.take("delivery"), "delivery"))
    importance = _read_importance(reader, reader.mapping(top.take("importance"), "importance"))
    contacts = _read_contacts(reader, reader.mapping(top.take("contacts"), "contacts"))
    routes_node = top.take("routes")
    routes = _read_routes(reader, routes_node, contacts) if routes_node is not None else ()
    top.finish()
    return Config(
        hostname=hostname,
        bus=bus,
        http=http,
        store=store,
        templates=templates,
        channels=channels,
        delivery=delivery,
        importance=importance,
        contacts=contacts,
        routes=routes,
        source=origin,
        warnings=reader.sorted_warnings(),
    )


def _read_bus(reader: _Reader, m: _Map) -> BusConfig:
    url_node = m.take("url")
    url, host, port, tls = "mqtt://127.0.0.1:1883", "127.0.0.1", 1883, False
    if url_node is not None:
        parsed = _bus_url(reader, url_node, m.sub("url"))
        if parsed is not None:
            url, host, port, tls = parsed
    username = m.string("username", None)
    password, _ = m.secret("password")
    ca_file = m.get("ca_file", reader.path, None)
    ca_node = m.value_node("ca_file")
    if ca_file is not None and ca_node is not None:
        if not tls:
            reader.error(ca_node, m.sub("ca_file"), "needs an mqtts:// url")
        else:
            try:
                with ca_file.open("rb"):
                    pass
            except OSError as err:
                reader.error(ca_node, m.sub("ca_file"), f"cannot read {ca_node.value!r}: {err.strerror or err}")
    topic_prefix = m.get("topic_prefix", lambda n, p: reader.parsed(n, p, _topic), "events")
    client_id = m.get("client_id", lambda n, p: reader.parsed(n, p, _name("client id")), "dispatcher-1")
    shared_group = m.get("shared_group", lambda n, p: reader.parsed(n, p, _topic), None)
    if shared_group is not None and "/" in shared_group:
        reader.error(m.value_node("shared_group"), m.sub("shared_group"), f"must not contain '/', got {shared_group!r}")
    dead_letter_topic = m.get("dead_letter_topic", lambda n, p: reader.parsed(n, p, _topic), "events-dead-letter")
    # 3.1.1 unless shared subscriptions need 5: paho-mqtt spends about twice the CPU on an MQTT 5 message
    # (bench/README.md). (The growth once blamed on paho was mosquitto sending past its inflight limit into
    # aiomqtt's unbounded queue; the intake now stops reading instead, see intake/mqtt.py.)
    protocol = m.choice("protocol", "5" if shared_group is not None else "3.1.1", ("5", "3.1.1"))
    if shared_group is not None and protocol != "5":
        reader.error(m.value_node("shared_group"), m.sub("shared_group"), "shared subscriptions need protocol 5")
    m.finish()
    return BusConfig(
        url=url,
        host=host,
        port=port,
        tls=tls,
        username=username,
        password=password,
        ca_file=ca_file,
        topic_prefix=topic_prefix,
        client_id=client_id,
        shared_group=shared_group,
        dead_letter_topic=dead_letter_topic,
        protocol=protocol,
    )


def _bus_url(reader: _Reader, node: Node, path: str) -> tuple[str, str, int, bool] | None:
    text = reader.string(node, path)
    if text is None:
        return None
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        reader.error(node, path, f"bad port in {redact_url(text)!r} (expected 1 to 65535)")
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("mqtt", "mqtts"):
        reader.error(node, path, f"expected an mqtt:// or mqtts:// URL, got {redact_url(text)!r}")
        return None
    if parts.username is not None or parts.password is not None:
        reader.error(node, path, "credentials do not belong in the URL: use bus.username and bus.password_file")
        return None
    if not parts.hostname:
        reader.error(node, path, f"missing host in {text!r}")
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        reader.error(node, path, f"expected mqtt[s]://HOST[:PORT] with nothing after, got {redact_url(text)!r}")
        return None
    if port == 0:
        reader.error(node, path, f"bad port in {text!r} (expected 1 to 65535)")
        return None
    tls = scheme == "mqtts"
    return text, parts.hostname, port or (8883 if tls else 1883), tls


def _read_http(reader: _Reader, m: _Map) -> HttpConfig:
    host, port = "127.0.0.1", 8470
    listen = m.take("listen")
    if listen is not None:
        text = reader.string(listen, m.sub("listen"))
        found = _LISTEN_RE.match(text) if text is not None else None
        if text is not None and found is None:
            reader.error(listen, m.sub("listen"), f"expected HOST:PORT or [IPv6]:PORT, got {text!r}")
        elif found is not None:
            # Port 0 is allowed here: the OS picks a free port (tests and embedding use it).
            if int(found["port"]) > 65535:
                reader.error(listen, m.sub("listen"), f"expected a port between 0 and 65535, got {found['port']}")
            else:
                host, port = found["v6"] or found["host"], int(found["port"])
    token, token_file = m.secret("token")
    m.finish()
    return HttpConfig(listen_host=host, listen_port=port, token=token, token_file=token_file)


def _read_store(m: _Map) -> StoreConfig:
    path = m.get("path", m.reader.path, DEFAULT_STORE_PATH)
    # The one key whose null is not its default: `retention_days: null` keeps everything, as `max_attempts: null`
    # sets no limit. Left out, it is 30 days.
    retention_days: int | None = DEFAULT_RETENTION_DAYS
    if "retention_days" in m.entries:
        retention_days = m.get(
            "retention_days", lambda node, path: m.reader.integer(node, path, 1, MAX_RETENTION_DAYS), None
        )
        if retention_days is None and m.value_node("retention_days") is not None:
            retention_days = DEFAULT_RETENTION_DAYS  # a bad value, already reported
    m.finish()
    return StoreConfig(path=path, retention_days=retention_days)


def _read_templates(reader: _Reader, m: _Map) -> TemplatesConfig:
    directory = m.get("dir", reader.path, None)
    if directory is not None and not directory.is_dir():
        node = m.value_node("dir")
        reader.error(node, m.sub("dir"), f"{node.value!r} is not a directory")
    m.finish()
    return TemplatesConfig(dir=directory)


def _read_channels(reader: _Reader, m: _Map, hostname: str) -> ChannelsConfig:
    email = _read_email(reader, reader.mapping(m.take("email"), m.sub("email")), hostname)
    pm = reader.mapping(m.take("pushbullet"), m.sub("pushbullet"))
    pushbullet = PushbulletChannelConfig(
        api_url=pm.get(
            "api_url",
            lambda n, p: reader.parsed(n, p, lambda t: _http_url(t, secret=False)),
            "https://api.pushbullet.com",
        ).rstrip("/"),
        timeout_s=pm.number("timeout_s", 10.0),
        concurrency=pm.integer("concurrency", 4, 1),
    )
    pm.finish()
    um = reader.mapping(m.take("posturl"), m.sub("posturl"))
    posturl = PostUrlChannelConfig(
        timeout_s=um.number("timeout_s", 10.0),
        format=um.choice("format", "form", ("form", "json")),
        concurrency=um.integer("concurrency", 32, 1),
    )
    um.finish()
    plugins: dict[str, Mapping[str, Any]] = {}
    for key, _, node in m:
        if key in m.known:
            continue
        if key not in reader.plugin_channels():
            m.unknown(key, also="an installed channel plugin")
            continue
        value = {} if _is_null(node) else reader.raw(node, m.sub(key))
        if not isinstance(value, dict):
            if value is not None:
                reader.error(node, m.sub(key), f"expected a mapping, got {_describe(node)}")
            continue
        plugins[key] = MappingProxyType(value)
    return ChannelsConfig(email=email, pushbullet=pushbullet, posturl=posturl, plugins=MappingProxyType(plugins))


def _read_email(reader: _Reader, m: _Map, hostname: str) -> EmailChannelConfig:
    host = m.get("host", lambda n, p: reader.parsed(n, p, _name("host name")), "127.0.0.1")
    security = m.choice("security", "none", ("none", "starttls", "tls"))
    # Implicit TLS on port 25 never works, so `security: tls` alone means the submissions port.
    port = m.integer("port", 465 if security == "tls" else 25, 1, 65535)
    username = m.string("username", None)
    password, _ = m.secret("password")
    config = EmailChannelConfig(
        host=host,
        port=port,
        security=security,
        username=username,
        password=password,
        from_addr=m.get("from", lambda n, p: reader.parsed(n, p, _from_address), f"dispatcher@{hostname}"),
        timeout_s=m.number("timeout_s", 30.0),
        concurrency=m.integer("concurrency", 8, 1),
    )
    if config.password is not None and config.username is None:
        node = m.value_node("password") or m.value_node("password_file")
        reader.error(node, m.sub("password"), "needs a username")
    security_node = m.value_node("security")
    # `security` as written (not a bad value already reported, which reads as the default "none").
    plain = security_node is None or getattr(security_node, "value", None) == "none"
    if config.username is not None and plain and not _is_loopback(config.host):
        # A login (aiosmtplib logs in whenever a username is set, with an empty password if none is given) over a
        # plain connection puts the password on the wire in clear: refused, as Alertmanager requires TLS by default.
        # The error points at `security` when it is written out, since that is the line to change.
        key = "security" if security_node is not None else "username"
        reader.error(
            m.value_node(key),
            m.sub(key),
            f"an SMTP login with security: none would send the password in clear to {config.host}; use security:"
            " starttls (usually port 587) or tls (port 465), or a loopback host (127.0.0.1, ::1, localhost)",
        )
    m.finish()
    return config


def _is_loopback(host: str) -> bool:
    """Whether `host` names this machine by a loopback address or `localhost`: traffic to it never leaves the box."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _read_delivery(reader: _Reader, m: _Map) -> DeliveryConfig:
    config = DeliveryConfig(
        max_attempts=m.get("max_attempts", lambda node, path: reader.integer(node, path, 1), None),
        backoff_initial_s=m.number("backoff_initial_s", 1.0),
        backoff_max_s=m.number("backoff_max_s", 300.0),
        give_up_after_s=m.number("give_up_after_s", 86400.0),
        workers=m.integer("workers", DeliveryConfig.workers, 0, MAX_SENDER_WORKERS),
    )
    if config.backoff_max_s < config.backoff_initial_s:
        node = m.value_node("backoff_max_s") or m.value_node("backoff_initial_s")
        reader.error(node, m.sub("backoff_max_s"), f"must be at least backoff_initial_s ({config.backoff_initial_s:g})")
    m.finish()
    return config


def _read_importance(reader: _Reader, m: _Map) -> Mapping[str, Importance]:
    levels: dict[str, Importance] = {}
    for key, key_node, node in m:
        if not _TYPE_KEY_RE.match(key):
            reader.error(key_node, m.sub(key), "expected an event type App/Event or App/*")
            continue
        level = reader.parsed(node, m.sub(key), Importance.parse)
        if level is not None:
            levels[key] = level
            unknown = _unknown_type(key)
            if unknown:
                reader.warn(key_node, m.sub(key), unknown)
    return MappingProxyType(levels)


def _unknown_type(pattern: str) -> str | None:
    """Why an `importance:` key matches no type of the shipped catalog (a likely typo), or None if it matches one.

    Only a warning: events of types outside the catalog are allowed, and such a key is how they get an importance.
    """
    try:
        catalog = load_catalog()
    except CatalogError:  # reported wherever the catalog is used; not this file's problem
        return None
    app, _, event = pattern.partition("/")
    if event == "*":
        apps = {alert.app for alert in catalog}
        if app in apps:
            return None
        what, names, suggest = f"no type in the catalog has the application {app!r}", apps, "{}/*"
        effect = f"it only applies to events published as {app}/…"
    else:
        if pattern in catalog:
            return None
        what, names, suggest = f"{pattern!r} is not a type in the catalog", set(catalog.keys()), "{}"
        effect = "it only applies if events of that type are published"
    by_lower = {name.lower(): name for name in sorted(names)}
    close = difflib.get_close_matches(app.lower() if event == "*" else pattern.lower(), by_lower, n=1, cutoff=0.75)
    hint = f" (did you mean {suggest.format(by_lower[close[0]])}?)" if close else ""
    return f"{what}{hint}; {effect}"


def _read_contacts(reader: _Reader, m: _Map) -> Mapping[str, Contact]:
    contacts: dict[str, Contact] = {}
    for name, key_node, node in m:
        if not name or ":" in name:
            # `account:NAME` names an account's own contacts on the command line and in the API.
            reader.error(key_node, m.sub(name), "a contact name must be non-empty and without ':'")
            continue
        contacts[name] = _read_contact(reader, reader.mapping(node, m.sub(name)), name)
    return MappingProxyType(contacts)


def _read_contact(reader: _Reader, m: _Map, name: str) -> Contact:
    emails = tuple(
        value
        for path, node in _items(reader, m, "email")
        if (value := reader.parsed(node, path, _email_address)) is not None
    )
    pushbullet = tuple(
        token for path, node in _items(reader, m, "pushbullet") if (token := _secret_item(reader, node, path, "token"))
    )
    posturl = tuple(
        url
        for path, node in _items(reader, m, "posturl")
        if (url := _secret_item(reader, node, path, "url", check=lambda t: _http_url(t, secret=True)))
    )
    receives_map = reader.mapping(m.take("receives"), m.sub("receives"))
    plugins: dict[str, tuple[str, ...]] = {}
    for key, _, _ in m:
        if key in m.known:
            continue
        if key not in reader.plugin_channels():
            m.unknown(key, also="an installed channel plugin")
            continue
        plugins[key] = tuple(
            value for path, item in _items(reader, m, key) if (value := reader.string(item, path)) is not None
        )
    receives = dict(DEFAULT_RECEIVES) | dict.fromkeys(plugins, _PLUGIN_DEFAULT_THRESHOLD)
    for channel, key_node, node in receives_map:
        path = receives_map.sub(channel)
        if channel not in BUILTIN_CHANNELS and channel not in reader.plugin_channels():
            expected = ", ".join((*BUILTIN_CHANNELS, *sorted(reader.plugin_channels())))
            reader.error(key_node, path, f"unknown channel (expected one of: {expected})")
            continue
        threshold = reader.parsed(node, path, Threshold.parse) if not _is_null(node) else None
        if threshold is not None:
            receives[channel] = threshold
    return Contact(
        name=name,
        email=emails,
        pushbullet=pushbullet,
        posturl=posturl,
        plugins=MappingProxyType(plugins),
        receives=MappingProxyType(receives),
    )


def _items(reader: _Reader, m: _Map, key: str) -> list[tuple[str, Node]]:
    node = m.take(key)
    return reader.sequence(node, m.sub(key)) if node is not None else []


def _secret_item(
    reader: _Reader, node: Node, path: str, key: str, check: Callable[[str], str] | None = None
) -> Secret | None:
    """A list entry holding a secret: a plain string, `{<key>: …}` or `{<key>_file: …}`; checked with `check`."""
    if isinstance(node, MappingNode):
        item = reader.mapping(node, path)
        secret, _ = item.secret(key)
        if secret is None and item.take(key) is None and item.take(f"{key}_file") is None:
            reader.error(node, path, f"expected {key}_file or {key}")
        item.finish()
    else:
        secret = reader.inline_secret(node, path)
    if secret is not None and check is not None:
        try:
            check(secret.reveal())
        except ValueError as err:
            reader.error(node, path, str(err))
            return None
    return secret


def _read_routes(reader: _Reader, node: Node, contacts: Mapping[str, Contact]) -> tuple[Route, ...]:
    routes: list[Route] = []
    for path, item in reader.sequence(node, "routes"):
        if not isinstance(item, MappingNode):
            reader.error(item, path, f"expected a mapping, got {_describe(item)}")
            continue
        m = reader.mapping(item, path)
        match = _read_match(reader, reader.mapping(m.take("match"), m.sub("match")))
        to: list[str] = []
        to_node = m.take("to")
        if to_node is None:
            m.missing("to")
        else:
            names = reader.sequence(to_node, m.sub("to"))
            if isinstance(to_node, SequenceNode) and not names:
                reader.error(to_node, m.sub("to"), "expected at least one contact")
            for name_path, name_node in names:
                name = reader.string(name_node, name_path)
                if name is not None and name not in contacts:
                    defined = ", ".join(contacts) or "none"
                    reader.error(name_node, name_path, f"unknown contact {name!r} (defined: {defined})")
                elif name is not None:
                    to.append(name)
        continue_ = m.get("continue", reader.boolean, False)
        m.finish()
        routes.append(Route(match=match, to=tuple(to), continue_=continue_))
    return tuple(routes)


def _min_importance(text: str) -> Importance:
    level = Importance.parse(text)
    if level == Importance.DISABLED:
        raise ValueError("expected high, medium or low (disabled events are never delivered)")
    return level


def _read_match(reader: _Reader, m: _Map) -> RouteMatch:
    type_ = m.string("type", None)
    app = m.get("app", lambda n, p: reader.parsed(n, p, _app_name), None)
    min_importance = m.get("min_importance", lambda n, p: reader.parsed(n, p, _min_importance), None)
    account = m.string("account", None)
    host = m.string("host", None)
    data_map = reader.mapping(m.take("data"), m.sub("data"))
    data = {
        key: value
        for key, _, node in data_map
        if not _is_null(node) and (value := reader.string(node, data_map.sub(key))) is not None
    }
    match = RouteMatch(
        type=type_, app=app, min_importance=min_importance, account=account, host=host, data=MappingProxyType(data)
    )
    m.finish()
    return match


def _app_name(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", text):
        raise ValueError(f"expected an application name like Backup (the App of App/Event), got {text!r}")
    return text
