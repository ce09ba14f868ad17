"""The outbox: every delivery an event leads to, as rows of the store, from planned to sent, failed or suppressed.

These are plain functions of a connection (`engines.Connection`: SQLite's or PostgreSQL's, in portable SQL), run
through `Store.run` by the pipeline, the HTTP API and the commands. A delivery is one (event, recipient,
channel, target); the partial unique index makes "delivered once" hold even if an event were planned twice.

A failed delivery put back to pending by hand (`retry_failed`) gets a fresh retry budget: `delivery_retries`
remembers when and after how many attempts, so `max_attempts` and `give_up_after_s` count from there while
`attempts` keeps the whole history.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .cluster.claims import ANYONE, Claimant
from .digests.records import retry_digests
from .digests.schema import SCHEMA as DIGESTS_SCHEMA
from .engines import Connection, skip_locked
from .events import Event
from .store import insert_events

SCHEMA = (
    """
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
    sent_at         REAL,
    claimed_by      INTEGER                 -- pending: the instance that attempts it (cluster/claims.py)
);
CREATE UNIQUE INDEX IF NOT EXISTS deliveries_once ON deliveries(event_id, channel, target) WHERE status != 'suppressed';
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries(next_attempt_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_by_event ON deliveries(event_id);
CREATE TABLE IF NOT EXISTS delivery_retries (
    delivery_id     INTEGER PRIMARY KEY,    -- deliveries.id
    retries         INTEGER NOT NULL,       -- how often it was put back to pending by hand
    retried_at      REAL NOT NULL,          -- the last time: its retry budget counts from here
    attempts_before INTEGER NOT NULL        -- its attempts by then
);
"""
    + DIGESTS_SCHEMA
)  # a delivery waiting in a digest (`digests/`) is one of these rows: the two go together

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
    retries: int = 0
    """How often it was put back to pending by hand (`retry_failed`)."""
    retried_at: float | None = None
    """When it last was: its retry budget (`give_up_after_s`) counts from then instead of `created_at`."""
    attempts_before_retry: int = 0
    """Its attempts by then: `max_attempts` counts the ones after."""

    @property
    def budget_from(self) -> float:
        """Where `give_up_after_s` counts from."""
        return self.created_at if self.retried_at is None else self.retried_at


# Rows per INSERT of `record_plans`: 14 parameters each, far below both engines' limits on a statement's parameters.
PLAN_ROWS_PER_INSERT = 500
_DELIVERY_COLUMNS = (
    "event_id, event_type, importance, recipient, recipient_kind, channel, target, target_label, status, reason,"
    " created_at, updated_at, next_attempt_at, claimed_by"
)


def record_plans(
    conn: Connection, event_ids: Sequence[str], rows: Iterable[NewDelivery], now: float, claimed_by: int | None = None
) -> list[PendingDelivery]:
    """Mark the events planned and insert their planned rows, in one transaction; return the new pending rows,
    claimed by `claimed_by` (the instance that attempts them).

    An event already planned (by another instance that took it over meanwhile) is left as it is, its rows not
    inserted: an event is planned once. Many rows to a statement (on PostgreSQL each statement is a round trip to
    the server, and planning holds the store's thread meanwhile). A row already there inserts nothing and returns
    no id; the ids of the new pending rows come back by their (event, channel, target), unique among them."""
    newly_planned: set[str] = set()
    for start in range(0, len(event_ids), PLAN_ROWS_PER_INSERT):
        planned = event_ids[start : start + PLAN_ROWS_PER_INSERT]
        cursor = conn.execute(
            f"UPDATE events SET planned = 1, claimed_by = NULL WHERE id IN ({', '.join('?' * len(planned))})"
            " AND planned = 0 RETURNING id",
            planned,
        )
        newly_planned.update(event_id for (event_id,) in cursor.fetchall())
    rows = [row for row in rows if row.event.id in newly_planned]
    ids: dict[tuple[str, str | None, str | None], int] = {}
    for start in range(0, len(rows), PLAN_ROWS_PER_INSERT):
        chunk = rows[start : start + PLAN_ROWS_PER_INSERT]
        values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(chunk))
        parameters = [
            value
            for row in chunk
            for value in (
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
                claimed_by if row.status == "pending" else None,
            )
        ]
        cursor = conn.execute(
            f"INSERT INTO deliveries ({_DELIVERY_COLUMNS}) VALUES {values} ON CONFLICT DO NOTHING"
            " RETURNING id, event_id, channel, target, status",
            parameters,
        )
        for delivery_id, event_id, channel, target, status in cursor.fetchall():
            if status == "pending":
                ids[(event_id, channel, target)] = int(delivery_id)
    pending = []
    for row in rows:
        delivery_id = ids.pop((row.event.id, row.channel, row.target), None) if row.status == "pending" else None
        if delivery_id is not None:
            assert row.channel is not None and row.target is not None and row.target_label is not None
            pending.append(
                PendingDelivery(
                    id=delivery_id,
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
    return pending


def recipient_kind(name: str) -> str:
    """`root` → system, `account:bob` → account, `contact:34` → contact (the naming of `Recipient.name`)."""
    kind, sep, _ = name.partition(":")
    return kind if sep else "system"


def record_test_notice(
    conn: Connection,
    event: Event,
    recipient: str,
    channel: str,
    outcomes: Sequence[Mapping[str, Any]],
    now: float,
) -> None:
    """Record a test notice (the Contact Manager's Test link) as an event of source `test` with one finished
    delivery per address, so that `deliveries` lists it beside the rest. No real target is kept: nothing is
    resumed, and an address or token is better not stored twice."""
    insert_events(conn, [event], "test")
    conn.execute("UPDATE events SET planned = 1 WHERE id = ?", (event.id,))
    conn.executemany(
        "INSERT INTO deliveries (event_id, event_type, importance, recipient, recipient_kind, channel, target_label,"
        " status, reason, attempts, created_at, updated_at, sent_at)"
        " VALUES (?, ?, 'low', ?, ?, ?, ?, ?, ?, 1, ?, ?, ?)",
        [
            (
                event.id,
                event.type,
                recipient,
                recipient_kind(recipient),
                channel,
                outcome["target"],
                outcome["status"],
                outcome.get("error"),
                now,
                now,
                now if outcome["status"] == "sent" else None,
            )
            for outcome in outcomes
        ],
    )


_PENDING_COLUMNS = (
    "d.id, d.event_id, d.importance, d.recipient, d.recipient_kind, d.channel, d.target, d.target_label,"
    " d.attempts, d.created_at, d.next_attempt_at, coalesce(r.retries, 0), r.retried_at,"
    " coalesce(r.attempts_before, 0), e.body"
)
_PENDING_FROM = "deliveries d JOIN events e ON e.id = d.event_id LEFT JOIN delivery_retries r ON r.delivery_id = d.id"


def _with_events(rows: Iterable[tuple[Any, ...]]) -> list[tuple[PendingDelivery, Event]]:
    return [(PendingDelivery(*row[:-1]), Event.from_json(row[-1])) for row in rows]


def claim_unplanned(
    conn: Connection, limit: int, claimant: Claimant = ANYONE, passed_over: Collection[int] = ()
) -> list[tuple[int, Event]]:
    """Up to `limit` recorded events not yet planned and free for `claimant` (`cluster/claims.py`), oldest first,
    as (seq, event), claimed for it until they are planned. `passed_over`: seqs left out (events whose planning
    failed, planned again at the next start)."""
    free, params = claimant.free("claimed_by")
    skipped = f" AND seq NOT IN ({', '.join('?' * len(passed_over))})" if passed_over else ""
    rows = conn.execute(
        f"SELECT seq, body FROM events WHERE planned = 0 AND {free}{skipped} ORDER BY seq LIMIT ?{skip_locked(conn)}",
        (*params, *passed_over, limit),
    ).fetchall()
    if rows and claimant.me:
        conn.execute(
            f"UPDATE events SET claimed_by = ? WHERE seq IN ({', '.join('?' * len(rows))})",
            (claimant.me, *(seq for seq, _ in rows)),
        )
    return [(seq, Event.from_json(body)) for seq, body in rows]


@dataclass(frozen=True, slots=True)
class Claimed:
    """What `claim_due` took: the deliveries with their events, and those among them that another instance had
    claimed and is gone (their id, and that instance's): its attempt may have been under way."""

    deliveries: list[tuple[PendingDelivery, Event]]
    taken_over: list[tuple[int, int]]


def claim_due(conn: Connection, now: float, skip: Collection[int], limit: int, claimant: Claimant = ANYONE) -> Claimed:
    """Up to `limit` pending deliveries whose next attempt is due by `now` and that are free for `claimant`
    (`cluster/claims.py`), soonest first, claimed for it; leaving out the ids in `skip` (those it holds already).
    Retries that fell due, rows left by an instance that is gone (or by a killed daemon, at its next start), and any
    row left pending with no attempt under way (an outcome whose record failed, a row put back by `retry_failed`)."""
    free, params = claimant.free("claimed_by")
    cursor = conn.execute(
        f"SELECT id FROM deliveries WHERE status = 'pending' AND next_attempt_at <= ? AND {free}"
        " ORDER BY next_attempt_at",
        (now, *params),
    )
    # Ids only, until `limit` are not skipped: the rows held are most of the due ones in a burst.
    ids = list(itertools.islice((delivery_id for (delivery_id,) in cursor if delivery_id not in skip), limit))
    cursor.close()
    if not ids:
        return Claimed([], [])
    # Read again under lock (PostgreSQL): a row another instance claimed since is passed over.
    claims = conn.execute(
        f"SELECT id, claimed_by FROM deliveries WHERE id IN ({', '.join('?' * len(ids))}) AND status = 'pending'"
        f" AND {free}{skip_locked(conn)}",
        (*ids, *params),
    ).fetchall()
    if not claims:
        return Claimed([], [])
    ids = [delivery_id for delivery_id, _ in claims]
    if claimant.me:
        conn.execute(
            f"UPDATE deliveries SET claimed_by = ? WHERE id IN ({', '.join('?' * len(ids))})", (claimant.me, *ids)
        )
    taken_over = [(int(delivery_id), int(by)) for delivery_id, by in claims if by is not None and by != claimant.me]
    rows = conn.execute(
        f"SELECT {_PENDING_COLUMNS} FROM {_PENDING_FROM} WHERE d.id IN ({', '.join('?' * len(ids))})"
        " ORDER BY d.next_attempt_at",
        ids,
    ).fetchall()
    return Claimed(_with_events(rows), taken_over)


def next_due(conn: Connection, after: float) -> float | None:
    """When the next pending delivery not yet due falls due, or None if none waits."""
    row = conn.execute(
        "SELECT min(next_attempt_at) FROM deliveries WHERE status = 'pending' AND next_attempt_at > ?", (after,)
    ).fetchone()
    return None if row[0] is None else float(row[0])


def mark_sent(conn: Connection, delivery_id: int, attempts: int, now: float) -> None:
    conn.execute(
        "UPDATE deliveries SET status = 'sent', attempts = ?, reason = NULL, sent_at = ?, updated_at = ?,"
        " next_attempt_at = NULL WHERE id = ?",
        (attempts, now, now, delivery_id),
    )


def mark_retry(conn: Connection, delivery_id: int, attempts: int, error: str, due: float, now: float) -> None:
    conn.execute(
        "UPDATE deliveries SET attempts = ?, reason = ?, next_attempt_at = ?, updated_at = ? WHERE id = ?",
        (attempts, error, due, now, delivery_id),
    )


def mark_failed(
    conn: Connection, delivery_id: int, attempts: int, error: str, now: float, follow_up: Event | None
) -> None:
    """Record the final failure and, in the same transaction, the SendIMFailed event that reports it."""
    conn.execute(
        "UPDATE deliveries SET status = 'failed', attempts = ?, reason = ?, updated_at = ?, next_attempt_at = NULL"
        " WHERE id = ?",
        (attempts, error, now, delivery_id),
    )
    if follow_up is not None:
        insert_events(conn, [follow_up], "internal")


def mark_suppressed(conn: Connection, delivery_id: int, reason: str, now: float) -> bool:
    """Record a pending delivery as suppressed, with the reason; False if it was no longer pending."""
    cursor = conn.execute(
        "UPDATE deliveries SET status = 'suppressed', reason = ?, updated_at = ?, next_attempt_at = NULL"
        " WHERE id = ? AND status = 'pending'",
        (reason, now, delivery_id),
    )
    return cursor.rowcount == 1


def suppress_removed_targets(
    conn: Connection,
    configured: Collection[tuple[str, str, str]],
    skip: Collection[int],
    reason: str,
    now: float,
    claimant: Claimant = ANYONE,
) -> list[tuple[int, str]]:
    """Suppress, with `reason`, each pending delivery to a system contact whose (recipient, channel, target) is not
    in `configured` (a contact or address removed from the configuration), except the ids in `skip` (those the
    caller holds) and those another instance is working on (not free for `claimant`); the (id, channel) of each
    one suppressed."""
    free, params = claimant.free("claimed_by")
    rows = conn.execute(
        "SELECT id, recipient, channel, target FROM deliveries WHERE status = 'pending' AND recipient_kind = 'system'"
        f" AND {free}",
        params,
    ).fetchall()
    gone = [
        (delivery_id, channel)
        for delivery_id, recipient, channel, target in rows
        if (recipient, channel, target) not in configured and delivery_id not in skip
    ]
    conn.executemany(
        "UPDATE deliveries SET status = 'suppressed', reason = ?, updated_at = ?, next_attempt_at = NULL WHERE id = ?",
        [(reason, now, delivery_id) for delivery_id, _ in gone],
    )
    return gone


def retry_failed(conn: Connection, *, delivery_id: int | None = None, event_id: str | None = None, now: float) -> int:
    """Put failed deliveries back to pending, due at `now`: the one with `delivery_id`, those of `event_id` (both
    given: the one if it belongs to that event), or every failed one if neither is given. Each gets a fresh retry
    budget (see the module's docstring); its attempts so far and its last error stay on the record. A delivery
    that failed in a digest puts that digest back, with every failed delivery it carried (`digests.records`):
    the retry sends the same digest. How many deliveries were put back."""
    clauses: list[str] = ["status = 'failed'"]
    params: list[int | str] = []
    if delivery_id is not None:
        clauses.append("id = ?")
        params.append(delivery_id)
    if event_id is not None:
        clauses.append("event_id = ?")
        params.append(event_id)
    where = " AND ".join(clauses)
    rows = conn.execute(f"SELECT id, attempts FROM deliveries WHERE {where}", params).fetchall()
    in_digests = retry_digests(conn, [row_id for row_id, _ in rows], now)
    if in_digests:
        taken = set(in_digests)
        rows = [row for row in rows if row[0] not in taken]
    conn.executemany(
        "INSERT INTO delivery_retries (delivery_id, retries, retried_at, attempts_before) VALUES (?, 1, ?, ?)"
        " ON CONFLICT (delivery_id) DO UPDATE SET retries = delivery_retries.retries + 1,"
        " retried_at = excluded.retried_at,"
        " attempts_before = excluded.attempts_before",
        [(row_id, now, attempts) for row_id, attempts in rows],
    )
    conn.executemany(
        "UPDATE deliveries SET status = 'pending', next_attempt_at = ?, updated_at = ?, claimed_by = NULL WHERE id = ?",
        [(now, now, row_id) for row_id, _ in rows],
    )
    return len(rows) + len(in_digests)


def list_deliveries(
    conn: Connection, *, event_id: str | None = None, status: str | None = None, limit: int = 100
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


def count_by_status(conn: Connection) -> dict[str, int]:
    counts = dict.fromkeys(STATUSES, 0)
    counts.update(dict(conn.execute("SELECT status, count(*) FROM deliveries GROUP BY status").fetchall()))
    return counts


def count_pending(conn: Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM deliveries WHERE status = 'pending'").fetchone()[0])
