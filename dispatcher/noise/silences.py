"""Silences (SPEC §8a): maintenance windows set at run time, over the API or from the command line.

A silence has matchers (`type`, `account`, `host`: shell-style globs, at least one), a comment, who made it, and
an end (`ends_at`). While it is active (from its creation until its end, or until it is expired by hand) every
delivery planned for an event that all its matchers fit is recorded `suppressed`, with the reason
`silenced by <id> (<comment>)`. Matching follows the routes' rules: `type` and `account` are case-sensitive globs,
`host` is compared without regard to case, and an event without an account never fits a silence that sets
`account`. A silence stops what is planned while it is active; deliveries planned before it (retries, deliveries
held back by quiet hours) go on.

Silences live in the store (table `silences`), so the daemon, `dispatcher silence` (which writes the store
directly, as `dispatcher retry` does) and the API share them, and they survive restarts. Expiring one sets its end
to that moment; it stays listed, as `expired`, until the store's retention removes it.

These are plain functions of a store connection, in portable SQL (`?` placeholders, `ON CONFLICT`, no engine's own
functions).
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ..events import parse_time

if TYPE_CHECKING:
    from ..engines import Connection
    from ..events import Event

SCHEMA = """
CREATE TABLE IF NOT EXISTS silences (
    id          TEXT PRIMARY KEY,       -- a UUID
    matchers    TEXT NOT NULL,          -- JSON object: type, account and host globs (at least one)
    comment     TEXT NOT NULL,
    created_by  TEXT,
    created_at  REAL NOT NULL,
    ends_at     REAL NOT NULL,          -- when it ends, or ended (set to the moment it was expired by hand)
    expired_at  REAL                    -- when it was expired by hand
);
CREATE INDEX IF NOT EXISTS silences_by_end ON silences(ends_at);
"""

MATCHER_KEYS = ("type", "account", "host")
# The longest silence: a year. Longer is almost certainly a mistake (milliseconds for seconds); muting something
# for good belongs in the config (importance `disabled`, routes).
MAX_DURATION_S = 366 * 86400
MAX_GLOB_CHARS = 255
MAX_COMMENT_CHARS = 1000
MAX_CREATED_BY_CHARS = 255
# How much of the comment a delivery's reason quotes.
REASON_COMMENT_CHARS = 80
STATES = ("active", "expired")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_BODY_FIELDS = ("matchers", "duration_s", "ends_at", "comment", "created_by")


@dataclass(frozen=True)
class Silence:
    """One silence as stored. Times are epoch seconds; `expired_at` is set when it was expired by hand."""

    id: str
    matchers: Mapping[str, str]
    comment: str
    created_by: str | None
    created_at: float
    ends_at: float
    expired_at: float | None = None

    def state(self, now: float) -> str:
        """`active` from its creation until its end, `expired` after (or once expired by hand)."""
        return "active" if self.created_at <= now < self.ends_at and self.expired_at is None else "expired"

    def fits(self, event: Event) -> bool:
        """Whether every matcher of the silence fits `event` (the routes' way of matching)."""
        pattern = self.matchers.get("type")
        if pattern is not None and not fnmatchcase(event.type, pattern):
            return False
        pattern = self.matchers.get("account")
        if pattern is not None and (event.account is None or not fnmatchcase(event.account, pattern)):
            return False
        pattern = self.matchers.get("host")
        return pattern is None or fnmatchcase(event.host.lower(), pattern.lower())

    @property
    def reason(self) -> str:
        """What a delivery it stops is recorded with: `silenced by <id> (<comment, cut short>)`."""
        comment = self.comment
        if len(comment) > REASON_COMMENT_CHARS:
            comment = comment[: REASON_COMMENT_CHARS - 1] + "…"
        return f"silenced by {self.id} ({comment})"

    def describe_matchers(self) -> str:
        """`type=Backup/* host=web1*` (for tables and logs)."""
        return " ".join(f"{key}={self.matchers[key]}" for key in MATCHER_KEYS if key in self.matchers)

    def to_json(self, now: float) -> dict[str, Any]:
        """The API's and `silence list --json`'s form: times in RFC 3339 (UTC), and the state at `now`."""
        return {
            "id": self.id,
            "matchers": dict(self.matchers),
            "comment": self.comment,
            "created_by": self.created_by,
            "created_at": rfc3339(self.created_at),
            "ends_at": rfc3339(self.ends_at),
            "expired_at": None if self.expired_at is None else rfc3339(self.expired_at),
            "state": self.state(now),
        }


class BadSilence(ValueError):
    """A silence that cannot be made: `problems` holds one line per fault (`field: what is wrong`)."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


def rfc3339(epoch_s: float) -> str:
    """`2026-11-23T10:00:00Z` (whole seconds, UTC)."""
    return datetime.fromtimestamp(round(epoch_s), UTC).isoformat().replace("+00:00", "Z")


# -- what a silence may be --------------------------------------------------------------------------------------


def check_glob(pattern: str) -> str:
    """`pattern` if it is a usable glob (`*`, `?`, `[…]`), else ValueError saying why: empty, too long, a control
    character, or a `[` that is never closed (fnmatch would read it as a plain `[`, which is rarely what was
    meant)."""
    if not pattern:
        raise ValueError("expected a glob such as Backup/*, got an empty string")
    if len(pattern) > MAX_GLOB_CHARS:
        raise ValueError(f"a glob is at most {MAX_GLOB_CHARS} characters")
    if _CONTROL_RE.search(pattern):
        raise ValueError("a glob must not hold control characters")
    index = 0
    while index < len(pattern):
        if pattern[index] == "[":
            # fnmatch's own reading: `[!` negates, and a `]` right after the opening is a member, not the end.
            end = index + 1
            if end < len(pattern) and pattern[end] == "!":
                end += 1
            if end < len(pattern) and pattern[end] == "]":
                end += 1
            end = pattern.find("]", end)
            if end < 0:
                raise ValueError(f"the [ at position {index + 1} is never closed (write [[] for a literal [)")
            index = end
        index += 1
    return pattern


def new_silence(
    matchers: Mapping[str, Any],
    *,
    comment: Any,
    now: float,
    duration_s: Any = None,
    ends_at: Any = None,
    created_by: Any = None,
) -> Silence:
    """A silence made at `now` from what a person gave, checked; raises `BadSilence` listing every fault.

    Exactly one of `duration_s` (a positive number of seconds) and `ends_at` (an RFC 3339 time, a string, or an
    aware datetime) must be given, and the end must fall within `MAX_DURATION_S` after `now`.
    """
    problems: list[str] = []
    globs: dict[str, str] = {}
    for key, value in matchers.items():
        if key not in MATCHER_KEYS:
            problems.append(f"matchers: unknown key {_quote(key)} (known: {', '.join(MATCHER_KEYS)})")
        elif not isinstance(value, str):
            problems.append(f"matchers.{key}: expected a glob string")
        else:
            try:
                globs[key] = check_glob(value)
            except ValueError as err:
                problems.append(f"matchers.{key}: {err}")
    if not matchers:
        problems.append("matchers: give at least one of type, account, host (a silence of everything is refused)")
    end = _end(now, duration_s, ends_at, problems)
    if not isinstance(comment, str) or not comment.strip():
        problems.append("comment: required, a non-empty string saying why")
    elif len(comment) > MAX_COMMENT_CHARS or _CONTROL_RE.search(comment):
        problems.append(f"comment: one line of at most {MAX_COMMENT_CHARS} characters")
    if created_by is not None and (
        not isinstance(created_by, str)
        or not created_by.strip()
        or len(created_by) > MAX_CREATED_BY_CHARS
        or _CONTROL_RE.search(created_by)
    ):
        problems.append(f"created_by: a name of at most {MAX_CREATED_BY_CHARS} characters, on one line")
    if problems or end is None:
        raise BadSilence(problems)
    assert isinstance(comment, str)
    return Silence(
        id=str(uuid.uuid4()),
        matchers=MappingProxyType({key: globs[key] for key in MATCHER_KEYS if key in globs}),
        comment=comment.strip(),
        created_by=created_by.strip() if isinstance(created_by, str) else None,
        created_at=now,
        ends_at=end,
    )


def _end(now: float, duration_s: Any, ends_at: Any, problems: list[str]) -> float | None:
    """The end `duration_s` or `ends_at` gives (exactly one of them), or None after adding the problem."""
    if (duration_s is None) == (ends_at is None):
        problems.append("give either duration_s or ends_at")
        return None
    if duration_s is not None:
        if isinstance(duration_s, bool) or not isinstance(duration_s, int | float) or not math.isfinite(duration_s):
            problems.append("duration_s: expected a number of seconds")
            return None
        if not 0 < duration_s <= MAX_DURATION_S:
            problems.append(f"duration_s: expected more than 0 and at most {MAX_DURATION_S} (366 days)")
            return None
        return now + float(duration_s)
    if isinstance(ends_at, str):
        try:
            moment = parse_time(ends_at)
        except ValueError as err:
            problems.append(f"ends_at: {err} (expected e.g. 2026-11-23T22:00:00Z)")
            return None
    elif isinstance(ends_at, datetime) and ends_at.tzinfo is not None:
        moment = ends_at
    else:
        problems.append("ends_at: expected an RFC 3339 time such as 2026-11-23T22:00:00Z")
        return None
    end = moment.timestamp()
    if end <= now:
        problems.append(f"ends_at: {rfc3339(end)} is not in the future")
        return None
    if end - now > MAX_DURATION_S:
        problems.append("ends_at: at most 366 days from now")
        return None
    return end


def silence_from_body(body: Any, now: float) -> Silence:
    """The silence a `POST /api/v1/silences` body asks for: `{"matchers": {...}, "duration_s" | "ends_at",
    "comment", "created_by"?}`; raises `BadSilence` listing every fault (unknown fields included)."""
    if not isinstance(body, dict):
        raise BadSilence(["the body must be a JSON object"])
    problems = [
        f"{_quote(key)}: unknown field (known: {', '.join(_BODY_FIELDS)})" for key in body if key not in _BODY_FIELDS
    ]
    matchers = body.get("matchers")
    if not isinstance(matchers, dict):
        problems.append("matchers: required, an object with type, account and/or host globs")
        matchers = {}
    try:
        silence = new_silence(
            matchers,
            comment=body.get("comment"),
            now=now,
            duration_s=body.get("duration_s"),
            ends_at=body.get("ends_at"),
            created_by=body.get("created_by"),
        )
    except BadSilence as err:
        raise BadSilence([*problems, *err.problems]) from None
    if problems:
        raise BadSilence(problems)
    return silence


def _quote(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


# -- the store --------------------------------------------------------------------------------------------------

_COLUMNS = "id, matchers, comment, created_by, created_at, ends_at, expired_at"


def _silence(row: Sequence[Any]) -> Silence:
    silence_id, matchers, comment, created_by, created_at, ends_at, expired_at = row
    return Silence(
        id=silence_id,
        matchers=MappingProxyType(json.loads(matchers)),
        comment=comment,
        created_by=created_by,
        created_at=float(created_at),
        ends_at=float(ends_at),
        expired_at=None if expired_at is None else float(expired_at),
    )


def add_silence(conn: Connection, silence: Silence) -> None:
    """Store a new silence."""
    conn.execute(
        f"INSERT INTO silences ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            silence.id,
            json.dumps(dict(silence.matchers), sort_keys=True),
            silence.comment,
            silence.created_by,
            silence.created_at,
            silence.ends_at,
            silence.expired_at,
        ),
    )


def expire_silence(conn: Connection, silence_id: str, now: float) -> Silence | None:
    """End the silence `silence_id` at `now` (one already over is left as it is); the silence as it is now, or None
    if there is none with that id."""
    conn.execute(
        "UPDATE silences SET ends_at = ?, expired_at = ? WHERE id = ? AND ends_at > ?",
        (now, now, silence_id, now),
    )
    row = conn.execute(f"SELECT {_COLUMNS} FROM silences WHERE id = ?", (silence_id,)).fetchone()
    return None if row is None else _silence(row)


def get_silence(conn: Connection, silence_id: str) -> Silence | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM silences WHERE id = ?", (silence_id,)).fetchone()
    return None if row is None else _silence(row)


def active_silences(conn: Connection, now: float) -> list[Silence]:
    """The silences active at `now`, oldest first (the first that fits an event is the one its reason names)."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM silences WHERE ends_at > ? AND created_at <= ? ORDER BY created_at, id", (now, now)
    ).fetchall()
    return [_silence(row) for row in rows]


def list_silences(conn: Connection, *, now: float, state: str | None = None, limit: int = 1000) -> list[Silence]:
    """Silences, newest first: every one, or those `active` or `expired` at `now`; at most `limit`."""
    where = {None: "", "active": "WHERE ends_at > ? AND created_at <= ?", "expired": "WHERE ends_at <= ?"}[state]
    params: tuple[float, ...] = {None: (), "active": (now, now), "expired": (now,)}[state]
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM silences {where} ORDER BY created_at DESC, id LIMIT ?", (*params, limit)
    ).fetchall()
    return [_silence(row) for row in rows]


def count_active(conn: Connection, now: float) -> int:
    """How many silences are active at `now` (the `/metrics` gauge)."""
    row = conn.execute("SELECT count(*) FROM silences WHERE ends_at > ? AND created_at <= ?", (now, now)).fetchone()
    return int(row[0])


def prune_silences(conn: Connection, ended_before: float) -> int:
    """Delete the silences that ended before `ended_before` (retention); how many."""
    cursor = conn.execute("DELETE FROM silences WHERE ends_at < ?", (ended_before,))
    return int(cursor.rowcount)
