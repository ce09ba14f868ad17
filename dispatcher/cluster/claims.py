"""Claims: which instance works on a row of `events`, `deliveries` or `digests` (its `claimed_by`).

A row is free for an instance (`Claimant`) when nobody claimed it, when it claimed it itself, or when its claimer
is gone: found gone at the last heartbeat (`Membership`), or no longer in `instances` at all (it stopped cleanly,
or was forgotten). The queries that take work put `Claimant.free(column)` in their WHERE and, on PostgreSQL, lock
what they read with `FOR UPDATE SKIP LOCKED` (`engines.skip_locked`), so two instances taking work at the same
moment take different rows, neither waiting for the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Claimant:
    """An instance taking work: its id, and the instances whose claims it may take over."""

    me: int = 0
    gone: frozenset[int] = field(default_factory=frozenset)

    def free(self, column: str, *, own: bool = True) -> tuple[str, list[int]]:
        """SQL that holds when the row's claim in `column` (a column of a table aliased or named so) is free for
        this instance, and its parameters. `own=False`: its own claims do not count as free (what it finds left
        by others, such as a digest whose sending a gone instance never finished)."""
        gone = sorted(self.gone)
        among_gone = f" OR {column} IN ({', '.join('?' * len(gone))})" if gone else ""
        sql = (
            f"({column} IS NULL OR {column} = ?{among_gone}"
            f" OR NOT EXISTS (SELECT 1 FROM instances claimer WHERE claimer.id = {column}))"
        )
        return sql, [self.me if own else 0, *gone]


# Nobody in particular: what a store with no instance rows (a tool, a test) takes; free is what nobody claimed.
ANYONE = Claimant()
