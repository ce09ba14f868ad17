"""Loading: a file or a string through PyYAML into a `Config`, every issue collected and raised as one ConfigError.

`load_config(path)` reads a file, `parse_config(text)` a string, `default_config()` gives every default and no
contacts. The top of the document is read here, each section by its own module (`daemon.py`, `channels.py`,
`routing.py`).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import yaml
from yaml.nodes import Node

from dispatcher.digests.rules import read_digests
from dispatcher.errors import ConfigError
from dispatcher.noise.settings import read_repeats

from .channels import read_channels
from .daemon import read_bus, read_delivery, read_http, read_store, read_templates
from .model import Config
from .routing import read_contacts, read_importance, read_match, read_routes
from .values import name_without_spaces
from .yaml_reader import Reader


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
    reader = Reader("<defaults>", Path.cwd())
    return _read_config(reader, None, None, hostname)


def _parse(text: str, *, source: str, base_dir: Path, origin: Path | None) -> Config:
    reader = Reader(source, base_dir)
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


def _read_config(reader: Reader, root: Node | None, origin: Path | None, hostname: str | None) -> Config:
    top = reader.mapping(root, "")
    hostname = top.get("hostname", lambda n, p: reader.parsed(n, p, name_without_spaces("host name")), hostname)
    hostname = hostname or socket.getfqdn()
    bus = read_bus(reader, reader.mapping(top.take("bus"), "bus"))
    http = read_http(reader, reader.mapping(top.take("http"), "http"))
    store_node = top.take("store")
    store = read_store(reader.mapping(store_node, "store"))
    if store_node is not None and bus.shared_group is not None and store.url is not None:
        # A cluster elects one intake on the cluster's one session (cluster/election.py): a shared subscription
        # would spread events over the members' sessions, where a stopped member's share waits for it.
        reader.warn(
            store_node,
            "store",
            "instances on a PostgreSQL store elect one intake with the one bus.client_id; bus.shared_group spreads"
            " events over sessions that wait for a stopped member (set it to null)",
        )
    templates = read_templates(reader, reader.mapping(top.take("templates"), "templates"))
    channels = read_channels(reader, reader.mapping(top.take("channels"), "channels"), hostname)
    delivery = read_delivery(reader, reader.mapping(top.take("delivery"), "delivery"))
    importance = read_importance(reader, reader.mapping(top.take("importance"), "importance"))
    contacts = read_contacts(reader, reader.mapping(top.take("contacts"), "contacts"))
    routes_node = top.take("routes")
    routes = read_routes(reader, routes_node, contacts) if routes_node is not None else ()
    repeats_node = top.take("repeats")
    repeats = read_repeats(reader, repeats_node, read_match) if repeats_node is not None else ()
    digests_node = top.take("digests")
    digests = read_digests(reader, digests_node, read_match) if digests_node is not None else ()
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
        digests=digests,
        repeats=repeats,
        source=origin,
        warnings=reader.sorted_warnings(),
    )
