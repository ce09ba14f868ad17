"""Which digest rule an event fits, and the key of its group.

The first rule whose `match` fits decides (the routes' matcher, `routing/routes.py`); an event no rule fits is
not digested. The group is the rule's position and the values its `group_by` names: `type`, `app`, `account`
(none for an event without one), `host` (compared without regard to case, as routes do) or `data.KEY` (a string
as it is, anything else as JSON; none when the event has no such field). The key is that, as canonical JSON, so
the same group always makes the same key, and a reload that changes a rule's place or its `group_by` starts new
groups rather than mixing events grouped two ways.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from ..events import Event
from ..levels import Importance
from ..routing.routes import data_text, route_matches
from .rules import DATA_PREFIX, DigestRule


def find_rule(rules: Sequence[DigestRule], event: Event, importance: Importance) -> tuple[int, DigestRule] | None:
    """The first rule `event` (at `importance`) fits, with its position; None if it fits none."""
    for index, rule in enumerate(rules):
        if route_matches(rule.match, event, importance):
            return index, rule
    return None


def group_values(rule: DigestRule, event: Event) -> dict[str, str | None]:
    """The values of `event` that `rule.group_by` names, by name (`{"type": "Backup/Failure", "host": "s1"}`)."""
    values: dict[str, str | None] = {}
    for name in rule.group_by:
        if name == "type":
            values[name] = event.type
        elif name == "app":
            values[name] = event.app
        elif name == "account":
            values[name] = event.account
        elif name == "host":
            values[name] = event.host.lower()
        elif name.startswith(DATA_PREFIX):
            key = name[len(DATA_PREFIX) :]
            values[name] = data_text(event.data[key]) if key in event.data else None
    return values


def group_key(index: int, rule: DigestRule, event: Event) -> str:
    """The key of `event`'s group under the rule at `index`: `[index, {name: value, …}]` as canonical JSON."""
    return json.dumps([index, group_values(rule, event)], sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def group_labels(key: str) -> dict[str, str | None]:
    """The group's values back from its key (for the digest's templates and logs)."""
    try:
        _, values = json.loads(key)
    except (ValueError, TypeError):
        return {}
    return {str(name): None if value is None else str(value) for name, value in dict(values).items()}
