"""Who is told what: the `importance` overrides (with a warning for a key the catalog does not know), the system
`contacts` with their targets and thresholds, and the `routes` that send events to them."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType

from yaml.nodes import MappingNode, Node, SequenceNode

from dispatcher.catalog import CatalogError, load_catalog
from dispatcher.levels import Importance, Threshold
from dispatcher.noise.settings import read_quiet_hours

from .model import BUILTIN_CHANNELS, DEFAULT_RECEIVES, Contact, Route, RouteMatch
from .secret import Secret
from .values import TYPE_KEY_RE, email_address, http_url
from .yaml_reader import Map, Reader, describe, is_null

_PLUGIN_DEFAULT_THRESHOLD = Threshold.ALL


def read_importance(reader: Reader, m: Map) -> Mapping[str, Importance]:
    levels: dict[str, Importance] = {}
    for key, key_node, node in m:
        if not TYPE_KEY_RE.match(key):
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


def read_contacts(reader: Reader, m: Map) -> Mapping[str, Contact]:
    contacts: dict[str, Contact] = {}
    for name, key_node, node in m:
        if not name or ":" in name:
            # `account:NAME` names an account's own contacts on the command line and in the API.
            reader.error(key_node, m.sub(name), "a contact name must be non-empty and without ':'")
            continue
        contacts[name] = _read_contact(reader, reader.mapping(node, m.sub(name)), name)
    return MappingProxyType(contacts)


def _read_contact(reader: Reader, m: Map, name: str) -> Contact:
    emails = tuple(
        value
        for path, node in _items(reader, m, "email")
        if (value := reader.parsed(node, path, email_address)) is not None
    )
    pushbullet = tuple(
        token for path, node in _items(reader, m, "pushbullet") if (token := _secret_item(reader, node, path, "token"))
    )
    posturl = tuple(
        url
        for path, node in _items(reader, m, "posturl")
        if (url := _secret_item(reader, node, path, "url", check=lambda t: http_url(t, secret=True)))
    )
    receives_map = reader.mapping(m.take("receives"), m.sub("receives"))
    channel_names = (*BUILTIN_CHANNELS, *sorted(reader.plugin_channels()))
    quiet_hours = read_quiet_hours(reader, m.take("quiet_hours"), m.sub("quiet_hours"), channel_names)
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
        threshold = reader.parsed(node, path, Threshold.parse) if not is_null(node) else None
        if threshold is not None:
            receives[channel] = threshold
    return Contact(
        name=name,
        email=emails,
        pushbullet=pushbullet,
        posturl=posturl,
        plugins=MappingProxyType(plugins),
        receives=MappingProxyType(receives),
        quiet_hours=quiet_hours,
    )


def _items(reader: Reader, m: Map, key: str) -> list[tuple[str, Node]]:
    node = m.take(key)
    return reader.sequence(node, m.sub(key)) if node is not None else []


def _secret_item(
    reader: Reader, node: Node, path: str, key: str, check: Callable[[str], str] | None = None
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


def read_routes(reader: Reader, node: Node, contacts: Mapping[str, Contact]) -> tuple[Route, ...]:
    routes: list[Route] = []
    for path, item in reader.sequence(node, "routes"):
        if not isinstance(item, MappingNode):
            reader.error(item, path, f"expected a mapping, got {describe(item)}")
            continue
        m = reader.mapping(item, path)
        match = read_match(reader, reader.mapping(m.take("match"), m.sub("match")))
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


def read_match(reader: Reader, m: Map) -> RouteMatch:
    """A route's `match` (also the matcher of the noise rules, `repeats:` and `digests:`)."""
    type_ = m.string("type", None)
    app = m.get("app", lambda n, p: reader.parsed(n, p, _app_name), None)
    min_importance = m.get("min_importance", lambda n, p: reader.parsed(n, p, _min_importance), None)
    account = m.string("account", None)
    host = m.string("host", None)
    data_map = reader.mapping(m.take("data"), m.sub("data"))
    data = {
        key: value
        for key, _, node in data_map
        if not is_null(node) and (value := reader.string(node, data_map.sub(key))) is not None
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
