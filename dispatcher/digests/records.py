"""The digests in the store: plain functions of a connection, run through `Store.run` (see schema.py).

Portable SQL (SQLite and PostgreSQL): `?` placeholders, `RETURNING` for new ids, no engine's own functions.
Member deliveries waiting for their digest are `pending` with no `next_attempt_at`, so the scheduler's queries
(`next_attempt_at <= now`) never take them up one by one; their `reason` says which digest they wait for.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..cluster.claims import ANYONE, Claimant
from ..events import Event
from ..levels import Importance
from ..store import insert_events
from .schema import SCHEMA

if TYPE_CHECKING:
    from ..engines.base import Connection

__all__ = [
    "MAX_MEMBERS",
    "MAX_SIZE_BYTES",
    "SCHEMA",
    "DueDigest",
    "Joining",
    "Member",
    "digest_of",
    "hold",
    "mark_failed",
    "mark_retry",
    "mark_sent",
    "mark_suppressed",
    "next_due",
    "prune",
    "recover",
    "retry_digests",
    "take_due",
]

# What one digest carries at most: past either, the group's next events start another digest, due at the same
# time. A digest's events travel to a sender process together, so this bounds that message (and the email).
MAX_MEMBERS = 500
MAX_SIZE_BYTES = 4 * 1024 * 1024

WAITING = ("collecting", "retry")


@dataclass(frozen=True, slots=True)
class Joining:
    """A pending delivery that joins a digest at planning: its delivery row, the group, and the rule's times."""

    delivery_id: int
    recipient: str
    recipient_kind: str
    channel: str
    target: str
    target_label: str
    importance: str
    group_key: str
    size_bytes: int
    wait_s: float
    interval_s: float
    not_before: float = 0.0
    """When the delivery may go at the earliest (quiet hours hold it until their end): its digest is due no sooner."""


@dataclass(frozen=True, slots=True)
class Member:
    """A member delivery still pending when its digest was taken, with its event."""

    delivery_id: int
    event: Event
    received_at: float


@dataclass(frozen=True, slots=True)
class DueDigest:
    """A digest taken for an attempt, with the members still pending (in the order their events came)."""

    id: int
    group_key: str
    recipient: str
    recipient_kind: str
    channel: str
    target: str
    target_label: str
    importance: str
    attempts: int
    retries: int
    attempts_before: int
    budget_from: float
    members: tuple[Member, ...]

    @property
    def delivery_ids(self) -> list[int]:
        return [member.delivery_id for member in self.members]


def due_text(due_at: float) -> str:
    """A due time as reasons show it: `2026-12-05 10:31:05 UTC`."""
    return datetime.fromtimestamp(due_at, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def waiting_reason(digest_id: int, due_at: float) -> str:
    """What a member delivery's record says while it waits: `in digest 12, due 2026-12-05 10:31:05 UTC`."""
    return f"in digest {digest_id}, due {due_text(due_at)}"


def _higher(a: str, b: str) -> str:
    """The more important of two importance labels (high is above medium)."""
    return a if int(Importance.parse(a)) <= int(Importance.parse(b)) else b


def hold(conn: Connection, joining: Iterable[Joining], now: float) -> list[tuple[int, int, float]]:
    """Put each delivery of `joining` into its group's digest to its (recipient, channel, target), in the caller's
    transaction (the one that records the plan); returns (delivery id, digest id, due at) for each.

    The group's last digest, if it is still collecting, has room and is not due before the delivery's `not_before`,
    takes it. Otherwise a new digest is made, due `interval_s` after the last one was taken for sending if that is
    still ahead, else (a full digest) when the full one is due, else `wait_s` from now; and no sooner than
    `not_before`. The delivery stays pending, without a due time of its own."""
    # The digests of this call by their group and address, so a burst asks the store once per group.
    latest: dict[tuple[str, str, str, str], list[Any]] = {}
    held: list[tuple[int, int, float]] = []
    for join in joining:
        where = (join.group_key, join.recipient, join.channel, join.target)
        row = latest.get(where)
        if row is None:
            found = conn.execute(
                "SELECT id, state, due_at, flushed_at, members, size_bytes, importance FROM digests"
                " WHERE group_key = ? AND recipient = ? AND channel = ? AND target = ? ORDER BY id DESC LIMIT 1",
                where,
            ).fetchone()
            row = list(found) if found is not None else None
        digest_id: int
        if (
            row is not None
            and row[1] == "collecting"
            and row[4] < MAX_MEMBERS
            and row[5] + join.size_bytes <= MAX_SIZE_BYTES
            and float(row[2]) >= join.not_before
        ):
            digest_id, due_at = int(row[0]), float(row[2])
            row[4] += 1
            row[5] += join.size_bytes
            row[6] = _higher(row[6], join.importance)
            conn.execute(
                "UPDATE digests SET members = ?, size_bytes = ?, importance = ?, updated_at = ? WHERE id = ?",
                (row[4], row[5], row[6], now, digest_id),
            )
        else:
            if row is not None and row[3] is not None and float(row[3]) + join.interval_s > now:
                due_at = float(row[3]) + join.interval_s
            elif row is not None and row[1] == "collecting":  # full: the next one goes with it
                due_at = float(row[2])
            else:
                due_at = now + join.wait_s
            due_at = max(due_at, join.not_before)
            digest_id = int(
                conn.execute(
                    "INSERT INTO digests (group_key, recipient, recipient_kind, channel, target, target_label,"
                    " importance, state, members, size_bytes, created_at, due_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, 'collecting', 1, ?, ?, ?, ?) RETURNING id",
                    (
                        join.group_key,
                        join.recipient,
                        join.recipient_kind,
                        join.channel,
                        join.target,
                        join.target_label,
                        join.importance,
                        join.size_bytes,
                        now,
                        due_at,
                        now,
                    ),
                ).fetchall()[0][0]
            )
            row = [digest_id, "collecting", due_at, None, 1, join.size_bytes, join.importance]
        latest[where] = row
        conn.execute("INSERT INTO digest_members (delivery_id, digest_id) VALUES (?, ?)", (join.delivery_id, digest_id))
        conn.execute(
            "UPDATE deliveries SET next_attempt_at = NULL, reason = ?, updated_at = ? WHERE id = ?",
            (waiting_reason(digest_id, due_at), now, join.delivery_id),
        )
        held.append((join.delivery_id, digest_id, due_at))
    return held


def next_due(conn: Connection) -> float | None:
    """When the next waiting digest (collecting, or waiting for a retry) is due; None if none waits."""
    row = conn.execute(
        "SELECT min(due_at) FROM digests WHERE state IN ('collecting', 'retry')",
    ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def recover(conn: Connection, now: float, claimant: Claimant = ANYONE) -> int:
    """Digests left `sending` by an instance that is gone (a previous run killed during an attempt, or another
    instance of a cluster) wait for a retry, due now; how many. Their message may have gone out already: as for any
    delivery, a crash can repeat a send, never lose it. The claimant's own are left alone."""
    free, params = claimant.free("claimed_by", own=False)
    cursor = conn.execute(
        f"UPDATE digests SET state = 'retry', due_at = ?, updated_at = ?, claimed_by = NULL"
        f" WHERE state = 'sending' AND {free}",
        (now, now, *params),
    )
    return int(cursor.rowcount)


def take_due(conn: Connection, now: float, limit: int, claimant: Claimant = ANYONE) -> list[DueDigest]:
    """Up to `limit` waiting digests due by `now`, soonest first, marked `sending` (the group's next events start a
    new digest from here), each with its members still pending."""
    rows = conn.execute(
        "SELECT id, group_key, recipient, recipient_kind, channel, target, target_label, importance, attempts,"
        " retries, attempts_before, coalesce(budget_from, ?) FROM digests"
        " WHERE state IN ('collecting', 'retry') AND due_at <= ? ORDER BY due_at, id LIMIT ?",
        (now, now, limit),
    ).fetchall()
    taken: list[DueDigest] = []
    for row in rows:
        digest_id = int(row[0])
        # Taken only if still waiting: another connection (an instance sharing a PostgreSQL store) that took it
        # first made this change nothing, and this one leaves it to that one.
        cursor = conn.execute(
            "UPDATE digests SET state = 'sending', flushed_at = coalesce(flushed_at, ?),"
            " budget_from = coalesce(budget_from, ?), updated_at = ?, claimed_by = ?"
            " WHERE id = ? AND state IN ('collecting', 'retry')",
            (now, now, now, claimant.me or None, digest_id),
        )
        if cursor.rowcount != 1:
            continue
        members = tuple(
            Member(int(delivery_id), Event.from_json(body), float(created_at))
            for delivery_id, body, created_at in conn.execute(
                "SELECT d.id, e.body, d.created_at FROM digest_members m JOIN deliveries d ON d.id = m.delivery_id"
                " JOIN events e ON e.id = d.event_id WHERE m.digest_id = ? AND d.status = 'pending' ORDER BY e.seq",
                (digest_id,),
            ).fetchall()
        )
        taken.append(
            DueDigest(
                id=digest_id,
                group_key=row[1],
                recipient=row[2],
                recipient_kind=row[3],
                channel=row[4],
                target=row[5],
                target_label=row[6],
                importance=row[7],
                attempts=int(row[8]),
                retries=int(row[9]),
                attempts_before=int(row[10]),
                budget_from=float(row[11]),
                members=members,
            )
        )
    return taken


def _finish_members(
    conn: Connection, delivery_ids: Sequence[int], status: str, attempts: int, reason: str | None, now: float
) -> None:
    conn.executemany(
        "UPDATE deliveries SET status = ?, attempts = ?, reason = ?, updated_at = ?, next_attempt_at = NULL,"
        " sent_at = ? WHERE id = ? AND status = 'pending'",
        [
            (status, attempts, reason, now, now if status == "sent" else None, delivery_id)
            for delivery_id in delivery_ids
        ],
    )


def mark_sent(conn: Connection, digest: DueDigest, attempts: int, now: float) -> None:
    """The digest went out: it and each member it carried are recorded sent."""
    conn.execute(
        "UPDATE digests SET state = 'sent', attempts = ?, reason = NULL, sent_at = ?, updated_at = ? WHERE id = ?",
        (attempts, now, now, digest.id),
    )
    reason = f"sent in digest {digest.id} ({len(digest.members)} events)" if len(digest.members) > 1 else None
    _finish_members(conn, digest.delivery_ids, "sent", attempts, reason, now)


def mark_retry(conn: Connection, digest: DueDigest, attempts: int, error: str, due: float, now: float) -> None:
    """An attempt failed and the next is due at `due`: the digest waits (taking no new members); its members'
    records say when, and why."""
    conn.execute(
        "UPDATE digests SET state = 'retry', attempts = ?, reason = ?, due_at = ?, updated_at = ? WHERE id = ?",
        (attempts, error, due, now, digest.id),
    )
    reason = f"in digest {digest.id}, next attempt due {due_text(due)}: {error}"
    conn.executemany(
        "UPDATE deliveries SET attempts = ?, reason = ?, updated_at = ? WHERE id = ? AND status = 'pending'",
        [(attempts, reason, now, delivery_id) for delivery_id in digest.delivery_ids],
    )


def mark_failed(
    conn: Connection, digest: DueDigest, attempts: int, error: str, now: float, follow_up: Event | None
) -> None:
    """The digest finally failed: it and its members are recorded failed and, in the same transaction, the
    SendIMFailed event that reports it."""
    conn.execute(
        "UPDATE digests SET state = 'failed', attempts = ?, reason = ?, updated_at = ? WHERE id = ?",
        (attempts, error, now, digest.id),
    )
    _finish_members(conn, digest.delivery_ids, "failed", attempts, f"digest {digest.id}: {error}", now)
    if follow_up is not None:
        insert_events(conn, [follow_up], "internal")


def mark_suppressed(conn: Connection, digest: DueDigest, reason: str, now: float) -> None:
    """Nothing of the digest is sent (its address left the configuration, or no member is left pending)."""
    conn.execute(
        "UPDATE digests SET state = 'suppressed', reason = ?, updated_at = ? WHERE id = ?", (reason, now, digest.id)
    )
    conn.executemany(
        "UPDATE deliveries SET status = 'suppressed', reason = ?, updated_at = ?, next_attempt_at = NULL"
        " WHERE id = ? AND status = 'pending'",
        [(reason, now, delivery_id) for delivery_id in digest.delivery_ids],
    )


def digest_of(conn: Connection, delivery_id: int) -> int | None:
    """The digest a delivery is a member of, if any."""
    row = conn.execute("SELECT digest_id FROM digest_members WHERE delivery_id = ?", (delivery_id,)).fetchone()
    return None if row is None else int(row[0])


def retry_digests(conn: Connection, delivery_ids: Iterable[int], now: float) -> list[int]:
    """Put back the failed digests that any of the failed `delivery_ids` belongs to, due now, each with a fresh
    retry budget (as `outbox.retry_failed` does for a delivery), and every failed member of each back to pending
    with it: a retry sends the same digest. Returns the member deliveries put back (the caller leaves them to this)."""
    digest_ids: set[int] = set()
    for delivery_id in delivery_ids:
        found = conn.execute(
            "SELECT g.id FROM digest_members m JOIN digests g ON g.id = m.digest_id"
            " WHERE m.delivery_id = ? AND g.state = 'failed'",
            (delivery_id,),
        ).fetchone()
        if found is not None:
            digest_ids.add(int(found[0]))
    members: list[int] = []
    for digest_id in sorted(digest_ids):
        conn.execute(
            "UPDATE digests SET state = 'retry', due_at = ?, retries = retries + 1, attempts_before = attempts,"
            " budget_from = ?, updated_at = ? WHERE id = ?",
            (now, now, now, digest_id),
        )
        ids = [
            int(row[0])
            for row in conn.execute(
                "SELECT d.id FROM digest_members m JOIN deliveries d ON d.id = m.delivery_id"
                " WHERE m.digest_id = ? AND d.status = 'failed'",
                (digest_id,),
            ).fetchall()
        ]
        conn.executemany(
            "UPDATE deliveries SET status = 'pending', next_attempt_at = NULL, reason = ?, updated_at = ? WHERE id = ?",
            [(waiting_reason(digest_id, now), now, delivery_id) for delivery_id in ids],
        )
        members.extend(ids)
    return members


def prune(conn: Connection, before: float, limit: int) -> int:
    """Delete up to `limit` finished digests (sent, failed, suppressed) last changed before `before`, with their
    member links; how many. Retention removes their deliveries with their events."""
    ids = [
        int(row[0])
        for row in conn.execute(
            "SELECT id FROM digests WHERE state IN ('sent', 'failed', 'suppressed') AND updated_at < ? LIMIT ?",
            (before, limit),
        ).fetchall()
    ]
    conn.executemany("DELETE FROM digest_members WHERE digest_id = ?", [(digest_id,) for digest_id in ids])
    conn.executemany("DELETE FROM digests WHERE id = ?", [(digest_id,) for digest_id in ids])
    return len(ids)
