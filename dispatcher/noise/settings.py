"""The config's noise settings read from YAML: the top-level `repeats:` list and a contact's `quiet_hours:`.

The config package calls these readers with its own `Reader` (every problem recorded at FILE:LINE:COL, never
raised) and, for a rule's `match`, its routes' matcher reader; this module imports nothing of the config package
at run time, so that the package can import it while it loads.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, TypeVar

from yaml.nodes import MappingNode, Node, ScalarNode

from ..levels import Importance
from .quiet_hours import QuietHours, parse_clock, parse_zone
from .repeats import DEFAULT_KEY, RepeatRule, parse_key_field
from .silences import check_glob

if TYPE_CHECKING:
    from ..config import RouteMatch
    from ..config.yaml_reader import Map, Reader

_T = TypeVar("_T")
# A year: a longer repeat interval is almost certainly a unit mistake (milliseconds for seconds).
MAX_INTERVAL_S = 366 * 86400
_GLOB_KEYS = ("type", "account", "host")
_NULL_TAG = "tag:yaml.org,2002:null"


def read_repeats(reader: Reader, node: Node, read_match: Callable[[Reader, Map], RouteMatch]) -> tuple[RepeatRule, ...]:
    """The `repeats:` list: each rule's `match` (read by `read_match`, its globs checked), `key` (a non-empty list
    of distinct fields, default [type, account, host]) and `interval_s` (required, positive, at most a year)."""
    rules: list[RepeatRule] = []
    for path, item in reader.sequence(node, "repeats"):
        if not isinstance(item, MappingNode):
            _expected_mapping(reader, item, path)
            continue
        m = reader.mapping(item, path)
        match_map = reader.mapping(m.take("match"), m.sub("match"))
        check_match_globs(reader, match_map)
        match = read_match(reader, match_map)
        key = _read_key(reader, m)
        interval_node = m.take("interval_s")
        interval_s = None
        if interval_node is None:
            m.missing("interval_s")
        else:
            interval_s = reader.number(interval_node, m.sub("interval_s"))
            if interval_s is not None and interval_s > MAX_INTERVAL_S:
                reader.error(interval_node, m.sub("interval_s"), f"expected at most {MAX_INTERVAL_S} (a year)")
                interval_s = None
        m.finish()
        if interval_s is not None and key is not None:
            rules.append(RepeatRule(match=match, interval_s=interval_s, key=key))
    return tuple(rules)


def _expected_mapping(reader: Reader, item: Node, path: str) -> None:
    if isinstance(item, ScalarNode) and item.tag == _NULL_TAG:
        reader.error(item, path, "expected a mapping, got null")
    else:
        reader.mapping(item, path)  # records "expected a mapping, got …"


def _read_key(reader: Reader, m: Map) -> tuple[str, ...] | None:
    node = m.take("key")
    if node is None:
        return DEFAULT_KEY
    items = reader.sequence(node, m.sub("key"))
    if not isinstance(node, ScalarNode) and not items:
        reader.error(node, m.sub("key"), "expected at least one field (type, app, account, host or data.KEY)")
        return None
    fields: list[str] = []
    ok = bool(items)
    for path, item in items:
        field = reader.parsed(item, path, parse_key_field)
        if field is None:
            ok = False
        elif field in fields:
            reader.error(item, path, f"{field} is listed twice")
            ok = False
        else:
            fields.append(field)
    return tuple(fields) if ok else None


def check_match_globs(reader: Reader, match_map: Map) -> None:
    """Record a problem for each glob of a matcher (`type`, `account`, `host`, `data` values) that `check_glob`
    refuses; the matcher's reader reports wrong types and unknown keys."""
    for key in _GLOB_KEYS:
        _check_glob_node(reader, match_map.value_node(key), match_map.sub(key))
    data_node = match_map.value_node("data")
    if isinstance(data_node, MappingNode):
        for key_node, value_node in data_node.value:
            if isinstance(key_node, ScalarNode):
                _check_glob_node(reader, value_node, f"{match_map.sub('data')}.{key_node.value}")


def _check_glob_node(reader: Reader, node: Node | None, path: str) -> None:
    if isinstance(node, ScalarNode) and node.tag != _NULL_TAG and isinstance(node.value, str):
        try:
            check_glob(node.value)
        except ValueError as err:
            reader.error(node, path, str(err))


def read_quiet_hours(reader: Reader, node: Node | None, path: str, channels: Collection[str]) -> QuietHours | None:
    """A contact's `quiet_hours: {from, to, timezone, channels?, except?}`; None when absent or after a problem.

    `from` and `to` are required times of day (HH:MM or HH:MM:SS) that differ; `timezone` a required IANA name;
    `channels` a non-empty list of distinct names among `channels`; `except` high, medium or low.
    """
    m = reader.mapping(node, path)
    if m.node is None:
        return None
    start = _required(reader, m, "from", parse_clock)
    end = _required(reader, m, "to", parse_clock)
    timezone = _required(reader, m, "timezone", parse_zone)
    if start is not None and end is not None and start == end:
        to_node = m.value_node("to")
        assert to_node is not None
        reader.error(to_node, m.sub("to"), "must differ from `from` (the window would be empty)")
        end = None
    names = _read_channels(reader, m, channels)
    except_ = m.get("except", lambda n, p: reader.parsed(n, p, _except_importance), None)
    m.finish()
    if start is None or end is None or timezone is None or isinstance(names, tuple):
        return None
    return QuietHours(start=start, end=end, timezone=timezone, channels=names, except_=except_)


def _required(reader: Reader, m: Map, key: str, parse: Callable[[str], _T]) -> _T | None:
    node = m.take(key)
    if node is None:
        m.missing(key)
        return None
    return reader.parsed(node, m.sub(key), parse)


def _read_channels(reader: Reader, m: Map, known: Collection[str]) -> frozenset[str] | tuple[()] | None:
    """The listed channels; None when the key is absent (every channel); `()` after a problem."""
    node = m.take("channels")
    if node is None:
        return None
    items = reader.sequence(node, m.sub("channels"))
    if not items:
        if not isinstance(node, ScalarNode):
            reader.error(node, m.sub("channels"), "expected at least one channel (leave the key out for every one)")
        return ()
    names: set[str] = set()
    ok = True
    for path, item in items:
        name = reader.string(item, path)
        if name is None:
            ok = False
        elif name not in known:
            reader.error(item, path, f"unknown channel {name!r} (expected one of: {', '.join(known)})")
            ok = False
        elif name in names:
            reader.error(item, path, f"{name} is listed twice")
            ok = False
        else:
            names.add(name)
    return frozenset(names) if ok else ()


def _except_importance(text: str) -> Importance:
    level = Importance.parse(text)
    if level == Importance.DISABLED:
        raise ValueError("expected high, medium or low (disabled events are never delivered)")
    return level
