"""The schema walker: typed reads from YAML nodes that record an issue, with the node's position, for each problem.

`Reader` collects the issues (and warnings) of one document and turns them into `FILE:LINE:COL: message` lines;
`Map` reads one mapping key by key and reports the keys nobody asked for. Both work on the composed node tree
(`yaml.compose`), since only the nodes remember where they came from.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, TypeVar

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .model import BUILTIN_CHANNELS, PLUGIN_GROUP
from .secret import Secret

_T = TypeVar("_T")
_STR, _INT, _FLOAT, _BOOL, _NULL = (f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null"))


def describe(node: Node, *, secret: bool = False) -> str:
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


class Reader:
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
            value: str = node.value
            return value
        self.error(node, path, f"expected a string, got {describe(node, secret=secret)}")
        return None

    def integer(self, node: Node, path: str, low: int, high: int | None = None) -> int | None:
        if not (isinstance(node, ScalarNode) and node.tag == _INT):
            self.error(node, path, f"expected an integer, got {describe(node)}")
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
            self.error(node, path, f"expected a number, got {describe(node)}")
            return None
        value = float(self._constructor.construct_object(node))
        if not math.isfinite(value) or value <= 0:
            self.error(node, path, f"expected a positive number, got {node.value}")
            return None
        return value

    def boolean(self, node: Node, path: str) -> bool | None:
        if isinstance(node, ScalarNode) and node.tag == _BOOL:
            return bool(self._constructor.construct_object(node))
        self.error(node, path, f"expected true or false, got {describe(node)}")
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
        self.error(node, path, f"expected a list, got {describe(node)}")
        return []

    def mapping(self, node: Node | None, path: str) -> Map:
        """A mapping to read keys from; an empty one (after an issue) if `node` is not a mapping."""
        if node is None or (isinstance(node, ScalarNode) and node.tag == _NULL):
            return Map(self, None, path)
        if not isinstance(node, MappingNode):
            self.error(node, path, f"expected a mapping, got {describe(node)}")
            return Map(self, None, path)
        try:
            self._constructor.flatten_mapping(node)  # resolve `<<: *anchor` merge keys
        except yaml.MarkedYAMLError as err:
            self.error(node, path, f"bad merge key: {err.problem}")
        return Map(self, node, path)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def is_null(node: Node | None) -> bool:
    return node is None or (isinstance(node, ScalarNode) and node.tag == _NULL)


class Map:
    """One YAML mapping being read. Each `take()` declares a key as known; `finish()` reports every other key.

    The typed getters return the default when the key is absent or null, and after recording an issue.
    """

    def __init__(self, reader: Reader, node: MappingNode | None, path: str) -> None:
        self.reader = reader
        self.node = node
        self.path = path
        self.entries: dict[str, tuple[Node, Node]] = {}
        self.known: list[str] = []
        for key_node, value_node in node.value if node is not None else ():
            if not isinstance(key_node, ScalarNode):
                reader.error(key_node, path, f"keys must be strings, got {describe(key_node)}")
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
        return None if entry is None or is_null(entry[1]) else entry[1]

    def value_node(self, key: str) -> Node | None:
        """The value node of `key` without declaring it (for pointing an issue at it), or None if absent/null."""
        entry = self.entries.get(key)
        return None if entry is None or is_null(entry[1]) else entry[1]

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
        fallback: str | _T = default
        return self.get(key, self.reader.string, fallback)

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
