"""The config's `digests:` section: a list of rules, read from YAML with every problem at FILE:LINE:COL.

    digests:
      - match: {type: "Backup/*"}   # the matcher of routes (left out: every event)
        group_by: [type, host]      # type, app, account, host or data.KEY; default [type]; [] makes one group
        wait_s: 30                  # default 30; 0 sends the group's first event at once
        interval_s: 300             # default 300

`read_digests` is called by the config package with its `Reader` and its reader of a route's `match`, so that
a digest's matcher is the routes' one, checked the same way. This module imports nothing of the config package
at run time (the config's model names `DigestRule`, and importing this must not import the config back).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

if TYPE_CHECKING:
    from ..config.model import RouteMatch
    from ..config.yaml_reader import Map, Reader

# What `group_by` may name besides `data.KEY`.
GROUP_FIELDS = ("type", "app", "account", "host")
DATA_PREFIX = "data."
DEFAULT_GROUP_BY = ("type",)
DEFAULT_WAIT_S = 30.0
DEFAULT_INTERVAL_S = 300.0
# The longest wait or interval: a day. Longer is more likely a value in milliseconds than a wish.
MAX_SECONDS = 86400.0

_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_STR_TAG = "tag:yaml.org,2002:str"


@dataclass(frozen=True)
class DigestRule:
    """One `digests:` rule: events fitting `match` are grouped by the values `group_by` names; a group's first
    digest waits `wait_s` for more events, later ones go out `interval_s` after the one before."""

    match: RouteMatch
    group_by: tuple[str, ...] = DEFAULT_GROUP_BY
    wait_s: float = DEFAULT_WAIT_S
    interval_s: float = DEFAULT_INTERVAL_S
    # Where the rule is in the file (`digests[2]`), for logs and `dispatcher routes`.
    name: str = field(default="digests[0]", compare=False)


def read_digests(reader: Reader, node: Node, read_match: Callable[[Reader, Map], RouteMatch]) -> tuple[DigestRule, ...]:
    """The rules of the `digests:` list at `node`; each problem is recorded in `reader` at its position (a rule
    with a problem is left out, and the config is refused as a whole)."""
    rules: list[DigestRule] = []
    for path, item in reader.sequence(node, "digests"):
        if not isinstance(item, MappingNode):
            reader.error(item, path, "expected a mapping with match, group_by, wait_s and interval_s")
            continue
        issues_before = len(reader.issues)
        m = reader.mapping(item, path)
        match = read_match(reader, reader.mapping(m.take("match"), m.sub("match")))
        group_node = m.take("group_by")
        group_by = _read_group_by(reader, group_node, m.sub("group_by")) if group_node is not None else None
        wait_s = _read_seconds(reader, m.take("wait_s"), m.sub("wait_s"), zero_allowed=True)
        interval_s = _read_seconds(reader, m.take("interval_s"), m.sub("interval_s"), zero_allowed=False)
        m.finish()
        if len(reader.issues) > issues_before:
            continue
        rules.append(
            DigestRule(
                match=match,
                group_by=DEFAULT_GROUP_BY if group_by is None else group_by,
                wait_s=DEFAULT_WAIT_S if wait_s is None else wait_s,
                interval_s=DEFAULT_INTERVAL_S if interval_s is None else interval_s,
                name=path,
            )
        )
    return tuple(rules)


def _read_group_by(reader: Reader, node: Node, path: str) -> tuple[str, ...] | None:
    names: list[str] = []
    for item_path, item in reader.sequence(node, path):
        name = reader.string(item, item_path)
        if name is None:
            continue
        problem = group_field_problem(name)
        if problem is not None:
            reader.error(item, item_path, problem)
        elif name in names:
            reader.error(item, item_path, f"{name} is named twice")
        else:
            names.append(name)
    return tuple(names)


def group_field_problem(name: str) -> str | None:
    """Why `name` cannot be a `group_by` entry, or None if it can."""
    if name in GROUP_FIELDS:
        return None
    if name.startswith(DATA_PREFIX):
        return None if name[len(DATA_PREFIX) :] else "expected data.KEY with a key, got 'data.'"
    fields = ", ".join(GROUP_FIELDS)
    return f"expected one of {fields} or data.KEY, got {name!r}"


def _read_seconds(reader: Reader, node: Node | None, path: str, *, zero_allowed: bool) -> float | None:
    """A number of seconds: at least 0 (or above 0), at most MAX_SECONDS; None when absent or after an issue."""
    if node is None:
        return None
    if not (isinstance(node, ScalarNode) and node.tag in (_INT_TAG, _FLOAT_TAG)):
        reader.error(node, path, f"expected a number of seconds, got {_shown(node)}")
        return None
    raw = reader.raw(node, path)  # YAML's own reading: `1_800`, `0x1f` and `30:00` are numbers too
    if not isinstance(raw, int | float):
        return None  # `raw` recorded why
    value = float(raw)
    lowest = "at least 0" if zero_allowed else "above 0"
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_allowed) or value > MAX_SECONDS:
        reader.error(node, path, f"expected a number of seconds {lowest} and at most {MAX_SECONDS:g}, got {node.value}")
        return None
    return value


def _shown(node: Node) -> str:
    """A wrong value as a message quotes it: `'abc'`, `true`, `a list` (the config's `describe`, which this module
    cannot import)."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    text = str(node.value) if len(str(node.value)) <= 60 else str(node.value)[:57] + "..."
    return repr(text) if node.tag == _STR_TAG else text
