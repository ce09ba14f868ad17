"""The outbox: every delivery an event leads to, as rows of the store, from planned to sent, failed or suppressed.

These are plain functions of a `sqlite3.Connection`, run through `Store.run` by the pipeline and the HTTP API,
and directly (read-only) by `dispatcher deliveries`. A delivery is one (event, recipient, channel, target);
the partial unique index makes "delivered once" hold even if an event were planned twice.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .events import Event
from .store import insert_events

SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    importance      TEXT NOT NULL,
    recipient       TEXT NOT NULL,          -- "root", "account:bob", "contact:34"
    recipient_kind  TEXT NOT NULL,          -- system | account | client | contact
    channel         TEXT,                   -- NULL when a whole recipient is suppressed
    target          TEXT,                   -- the real address/token/URL, needed to resume; never shown
    target_label    TEXT,                   -- the channel's describe_target(): what logs and the API show
    status          TEXT NOT NULL,          -- pending | sent | failed | suppressed
    reason          TEXT,                   -- why suppressed, or the last error
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    next_attempt_at REAL,                   -- pending: when the next attempt is due
    sent_at         REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS deliveries_once ON deliveries(event_id, channel, target) WHERE status != 'suppressed';
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries(next_attempt_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_by_event ON deliveries(event_id);
"""

STATUSES = ("pending", "sent", "failed", "suppressed")


@dataclass(frozen=True, slots=True)
class NewDelivery:
    """A row to insert: pending (with channel and target) or suppressed (with a reason)."""

    event: Event
    importance: str
    recipient: str
    recipient_kind: str
    channel: str | None
    target: str | None
    target_label: str | None
    status: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class PendingDelivery:
    """A pending row as the pipeline works on it."""

    id: int
    event_id: str
    importance: str
    recipient: str
    recipient_kind: str
    channel: str
    target: str
    target_label: str
    attempts: int
    created_at: float
    next_attempt_at: float


def record_plans(
    conn: sqlite3.Connection, event_ids: Sequence[str], rows: Iterable[NewDelivery], now: float
) -> list[PendingDelivery]:
    """Insert the planned rows and mark the events planned, in one transaction; return the new pending rows."""
    pending = []
    for row in rows:
        cursor = conn.execute(
            "INSERT OR IGNORE INTO deliveries (event_id, event_type, importance, recipient, recipient_kind, channel,"
            " target, target_label, status, reason, created_at, updated_at, next_attempt_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row.event.id,
                row.event.type,
                row.importance,
                row.recipient,
                row.recipient_kind,
                row.channel,
                row.target,
                row.target_label,
                row.status,
                row.reason,
                now,
                now,
                now if row.status == "pending" else None,
            ),
        )
        if row.status == "pending" and cursor.rowcount == 1:
            assert row.channel is not None and row.target is not None and row.target_label is not None
            pending.append(
                PendingDelivery(
                    id=int(cursor.lastrowid or 0),
                    event_id=row.event.id,
                    importance=row.importance,
                    recipient=row.recipient,
                    recipient_kind=row.recipient_kind,
                    channel=row.channel,
                    target=row.target,
                    target_label=row.target_label,
                    attempts=0,
                    created_at=now,
                    next_attempt_at=now,
                )
            )
    conn.executemany("UPDATE events SET planned = 1 WHERE id = ?", [(event_id,) for event_id in event_ids])
    return pending


_PENDING_COLUMNS = (
    "d.id, d.event_id, d.importance, d.recipient, d.recipient_kind, d.channel, d.target, d.target_label,"
    " d.attempts, d.created_at, d.next_attempt_at, e.body"
)


def _with_events(rows: Iterable[tuple[Any, ...]]) -> list[tuple[PendingDelivery, Event]]:
    return [(PendingDelivery(*row[:-1]), Event.from_json(row[-1])) for row in rows]


def load_unplanned(conn: sqlite3.Connection, after_seq: int, limit: int) -> list[tuple[int, Event]]:
    """Recorded events not yet planned, after `after_seq`, oldest first, as (seq, event)."""
    rows = conn.execute(
        "SELECT seq, body FROM events WHERE planned = 0 AND seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
    ).fetchall()
    return [(seq, Event.from_json(body)) for seq, body in rows]


def load_pending_page(conn: sqlite3.Connection, after_id: int, limit: int) -> list[tuple[PendingDelivery, Event]]:
    """Pending deliveries with their events, by id after `after_id` (resuming what a previous run left)."""
    rows = conn.execute(
        f"SELECT {_PENDING_COLUMNS} FROM deliveries d JOIN events e ON e.id = d.event_id"
        " WHERE d.status = 'pending' AND d.id > ? ORDER BY d.id LIMIT ?",
        (after_id, limit),
    ).fetchall()
    return _with_events(rows)


def load_due_retries(conn: sqlite3.Connection, now: float, limit: int) -> list[tuple[PendingDelivery, Event]]:
    """Pending deliveries that were tried before and whose next attempt is due, soonest first."""
    rows = conn.execute(
        f"SELECT {_PENDING_COLUMNS} FROM deliveries d JOIN events e ON e.id = d.event_id"
        " WHERE d.status = 'pending' AND d.attempts > 0 AND d.next_attempt_at <= ?"
        " ORDER BY d.next_attempt_at LIMIT ?",
        (now, limit),
    ).fetchall()
    return _with_events(rows)


def next_retry_due(conn: sqlite3.Connection, after: float) -> float | None:
    """When the next retry not yet due falls due, or None if no delivery waits for one."""
    row = conn.execute(
        "SELECT min(next_attempt_at) FROM deliveries WHERE status = 'pending' AND attempts > 0 AND next_attempt_at > ?",
        (after,),
    ).fetchone()
    return None if row[0] is None else float(row[0])


def mark_sent(conn: sqlite3.Connection, delivery_id: int, attempts: int, now: float) -> None:
    conn.execute(
        "UPDATE deliveries SET status = 'sent', attempts = ?, reason = NULL, sent_at = ?, updated_at = ?,"
        " next_attempt_at = NULL WHERE id = ?",
        (attempts, now, now, delivery_id),
    )


def mark_retry(conn: sqlite3.Connection, delivery_id: int, attempts: int, error: str, due: float, now: float) -> None:
    conn.execute(
        "UPDATE deliveries SET attempts = ?, reason = ?, next_attempt_at = ?, updated_at = ? WHERE id = ?",
        (attempts, error, due, now, delivery_id),
    )


def mark_failed(
    conn: sqlite3.Connection, delivery_id: int, attempts: int, error: str, now: float, follow_up: Event | None
) -> None:
    """Record the final failure and, in the same transaction, the SendIMFailed event that reports it."""
    conn.execute(
        "UPDATE deliveries SET status = 'failed', attempts = ?, reason = ?, updated_at = ?, next_attempt_at = NULL"
        " WHERE id = ?",
        (attempts, error, now, delivery_id),
    )
    if follow_up is not None:
        insert_events(conn, [follow_up], "internal")


def list_deliveries(
    conn: sqlite3.Connection, *, event_id: str | None = None, status: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Delivery records, newest first, as the API and the CLI show them (no real targets: labels only)."""
    clauses, params = [], []
    if event_id:
        clauses.append("event_id = ?")
        params.append(event_id)
    if status:
        clauses.append("status = ?")
        params.append(status)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = conn.execute(
        "SELECT id, event_id, event_type, importance, recipient, recipient_kind, channel, target_label, status, reason,"
        f" attempts, created_at, updated_at, next_attempt_at, sent_at FROM deliveries {where}"
        " ORDER BY id DESC LIMIT ?",
        (*params, limit),
    ).fetchall()
    keys = (
        "id",
        "event_id",
        "event_type",
        "importance",
        "recipient",
        "recipient_kind",
        "channel",
        "target",
        "status",
        "reason",
        "attempts",
        "created_at",
        "updated_at",
        "next_attempt_at",
        "sent_at",
    )
    return [dict(zip(keys, row, strict=True)) for row in rows]


def count_by_status(conn: sqlite3.Connection) -> dict[str, int]:
    counts = dict.fromkeys(STATUSES, 0)
    counts.update(dict(conn.execute("SELECT status, count(*) FROM deliveries GROUP BY status").fetchall()))
    return counts


def count_pending(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM deliveries WHERE status = 'pending'").fetchone()[0])
