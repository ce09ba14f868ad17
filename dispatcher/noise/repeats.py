"""Repeats (SPEC §8a): the same thing again, to the same address, within an interval, is not sent again.

    repeats:
      - match: {type: "Quota/*"}     # the matcher of routes
        key: [type, account]         # type, app, account, host or data.KEY; default [type, account, host]
        interval_s: 14400

The first rule whose `match` fits an event decides. The event's key is the values of the rule's `key` fields (a
missing account or data field counts as a value of its own; hosts are compared without regard to case). A
delivery of the event to a (recipient, channel, target) is recorded `suppressed`, with the reason
`repeat of <earlier event id> (repeats[0], within 4h)`, when a delivery of an earlier event with the same key to
that same (recipient, channel, target) went within the last `interval_s`: it was planned then and is sent or still
pending (not suppressed, not failed). So a key that keeps firing is sent once per interval, as Alertmanager's
`repeat_interval` does, and an address whose last message failed gets the next one.

What went is remembered in the table `repeat_marks`: for each pending delivery planned under a rule, a mark (a
SHA-256 of the key, the recipient, the channel and the target as the planner compares it, so no address or token
is stored again) beside the delivery's id, whose row says whether it went. Marks older than the longest interval
are pruned as planning goes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..levels import Importance
from ..routing.planner import comparable_target
from ..routing.routes import data_text, route_matches
from .durations import duration_text

if TYPE_CHECKING:
    from ..config import RouteMatch
    from ..engines import Connection
    from ..events import Event

SCHEMA = """
CREATE TABLE IF NOT EXISTS repeat_marks (
    delivery_id INTEGER PRIMARY KEY,    -- deliveries.id of a pending delivery planned under a repeat rule
    mark        TEXT NOT NULL,          -- SHA-256 of (key fields, key values, recipient, channel, target)
    event_id    TEXT NOT NULL,
    created_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS repeat_marks_by_mark ON repeat_marks(mark, created_at);
"""

KEY_FIELDS = ("type", "app", "account", "host")
DEFAULT_KEY = ("type", "account", "host")
DATA_PREFIX = "data."


@dataclass(frozen=True)
class RepeatRule:
    """A `repeats:` rule: events fitting `match` are keyed by `key` (field names) and repeat within `interval_s`."""

    match: RouteMatch
    interval_s: float
    key: tuple[str, ...] = DEFAULT_KEY


def parse_key_field(text: str) -> str:
    """A key field as written (`type`, `app`, `account`, `host`, `data.KEY`), or ValueError naming the choices."""
    if text in KEY_FIELDS or (text.startswith(DATA_PREFIX) and len(text) > len(DATA_PREFIX)):
        return text
    raise ValueError(f"unknown key field {text!r} (expected {', '.join(KEY_FIELDS)} or data.KEY)")


def first_rule(rules: Sequence[RepeatRule], event: Event, importance: Importance) -> tuple[int, RepeatRule] | None:
    """The first rule (and its index) whose match fits `event` at `importance`, or None."""
    for index, rule in enumerate(rules):
        if route_matches(rule.match, event, importance):
            return index, rule
    return None


def key_values(fields: Iterable[str], event: Event) -> list[str | None]:
    """The event's values of the key `fields`: None for a missing account or data field; hosts lower-cased; data
    values as routes match them (strings as they are, anything else as JSON)."""
    values: list[str | None] = []
    for field in fields:
        if field == "type":
            values.append(event.type)
        elif field == "app":
            values.append(event.app)
        elif field == "account":
            values.append(event.account)
        elif field == "host":
            values.append(event.host.lower())
        else:
            name = field.removeprefix(DATA_PREFIX)
            values.append(data_text(event.data[name]) if name in event.data else None)
    return values


def repeat_mark(rule: RepeatRule, event: Event, recipient: str, channel: str, target: str) -> str:
    """What two deliveries share when the second repeats the first: a hash of the key and the address."""
    text = json.dumps(
        [list(rule.key), key_values(rule.key, event), recipient, channel, comparable_target(channel, target)],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def repeat_reason(earlier_event_id: str, index: int, rule: RepeatRule) -> str:
    """`repeat of <event id> (repeats[0], within 4h)`."""
    return f"repeat of {earlier_event_id} (repeats[{index}], within {duration_text(rule.interval_s)})"


def earlier_delivery(conn: Connection, mark: str, since: float) -> str | None:
    """The event id of the earliest delivery with `mark` planned at or after `since` that is sent or pending."""
    row = conn.execute(
        "SELECT m.event_id FROM repeat_marks m JOIN deliveries d ON d.id = m.delivery_id"
        " WHERE m.mark = ? AND m.created_at >= ? AND d.status IN ('pending', 'sent')"
        " ORDER BY m.created_at, m.delivery_id LIMIT 1",
        (mark, since),
    ).fetchone()
    return None if row is None else str(row[0])


def remember(conn: Connection, marks: Iterable[tuple[int, str, str, float]]) -> None:
    """Store the marks of newly planned deliveries: (delivery id, mark, event id, planned at)."""
    conn.executemany(
        "INSERT INTO repeat_marks (delivery_id, mark, event_id, created_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (delivery_id) DO NOTHING",
        list(marks),
    )


def prune_marks(conn: Connection, before: float) -> int:
    """Delete the marks planned before `before` (older than any interval that can still ask for them); how many."""
    return int(conn.execute("DELETE FROM repeat_marks WHERE created_at < ?", (before,)).rowcount)
