"""The store's schema version, and the steps that bring a store written by an older release up to it.

The version is the store's, not a module's: one number, written when the store is created and raised by each
migration, kept where its engine keeps it (`engines/`): in the SQLite file's header (`PRAGMA user_version`), in the
one-row table `dispatcher_schema` of a PostgreSQL database. Each module still passes its own `SCHEMA`
(`CREATE TABLE IF NOT EXISTS …`) to the store, which always describes the current shape of its tables: that is how
a new store is created, and how a table or an index that an older store lacks is added. A migration step is only
needed for what `IF NOT EXISTS` cannot express: a column added to an existing table, a changed constraint, rows
rewritten. Such a step is a function of the connection, in the modules' portable SQL (`engines/`) or asking
`engine.name` where the engines differ; it must not assume that every table exists (a store opened with fewer
schemas, in tests and tools, lacks some), so it checks first.

Opening a writable store (`upgrade`) runs, in one transaction: the steps from the store's version up to
`SCHEMA_VERSION` in order, then every module's schema, then the new version. A step that fails rolls it all back,
and the store stays as it was, at its old version. A store from a newer release is refused (`StoreTooNew`), since
this release cannot know what the newer one changed: the admin upgrades dispatcher again or restores the backup
taken before the upgrade (docs/deploy.md).

Version 1 is the schema of the first release, which wrote no version (`user_version` 0 in a store that has
tables): `events`, `deliveries` and the contact tables. It knew SQLite only: a PostgreSQL store starts at version 2.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .engines.base import Connection, Engine, database_errors, split_statements
from .engines.sqlite import SQLiteEngine
from .errors import StoreError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Migration", "StoreTooNew", "check_known", "split_statements", "upgrade"]


@dataclass(frozen=True)
class Migration:
    """One step: what it brings a store of version `version - 1` to `version`, and the function that does it."""

    version: int
    summary: str
    apply: Callable[[Connection], None]


def _to_v2(conn: Connection) -> None:
    """Nothing to rewrite: version 2 only adds tables and an index, which their schemas create
    (`dead_letters`, `delivery_retries`, `events_received`)."""


def _to_v3(conn: Connection) -> None:
    """Nothing to rewrite: version 3 adds the digests' tables (`digests`, `digest_members`), which the outbox's
    schema creates. It is a version of its own for what it means to an older release: a delivery waiting in a
    digest is pending with no `next_attempt_at`, which a release without digests would try to resume on its own."""


def _to_v4(conn: Connection) -> None:
    """Nothing to rewrite: version 4 adds the tables `silences` and `repeat_marks`, which their schemas create
    (`noise/silences.py`, `noise/repeats.py`). It is a version of its own for what it means to an older release:
    one would deliver what a stored silence stops."""


def _to_v5(conn: Connection) -> None:
    """Claims, for instances sharing a store (`cluster/`): `claimed_by` on events, deliveries and digests (a table
    that does not exist yet, the digests' before version 3, gets it from its schema). The table `instances` comes
    from its schema."""
    kind = "INTEGER" if isinstance(conn, sqlite3.Connection) else "BIGINT"  # as the schemas' INTEGER on each
    for table in ("events", "deliveries", "digests"):
        columns = _columns(conn, table)
        if columns and "claimed_by" not in columns:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN claimed_by {kind}")


def _columns(conn: Connection, table: str) -> set[str]:
    """The columns of `table`; none if it does not exist."""
    if isinstance(conn, sqlite3.Connection):
        return {row[1] for row in conn.execute(f"PRAGMA table_info({table})").fetchall()}
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = ?",
        (table,),
    ).fetchall()
    return {row[0] for row in rows}


# In order, one per version after 1. A new step goes at the end, with the next version number.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        2,
        "dead letters kept in the store, retries by hand remembered, events indexed by receipt time for retention",
        _to_v2,
    ),
    Migration(3, "digests: deliveries held for one message per group and address", _to_v3),
    Migration(4, "silences kept in the store, and the marks of deliveries that repeat rules look back at", _to_v4),
    Migration(5, "claims: instances sharing one store take work from it, each what it claimed", _to_v5),
)

SCHEMA_VERSION = MIGRATIONS[-1].version


class StoreTooNew(StoreError):
    """The store was written by a newer release of dispatcher, whose schema this one does not know."""

    def __init__(self, shown: Path | str, version: int, known: int) -> None:
        super().__init__(
            f"the store {shown} has schema version {version}; this dispatcher knows up to {known}:"
            " upgrade dispatcher or restore a backup"
        )
        self.version = version
        self.known = known


def stored_version(conn: Any, engine: Engine | None = None) -> int | None:
    """The store's schema version; None for a new store (nothing of ours in it yet). On SQLite (the default), a store
    that has tables but no version (`user_version` 0) was written by the first release: version 1."""
    return (engine or _SQLITE).stored_version(conn)


def check_known(
    conn: Any, shown: Path | str, *, known: int = SCHEMA_VERSION, engine: Engine | None = None
) -> int | None:
    """The store's version, after refusing one newer than `known` (`StoreTooNew`). Changes nothing."""
    version = stored_version(conn, engine)
    if version is not None and version > known:
        raise StoreTooNew(shown, version, known)
    return version


def upgrade(
    conn: Any,
    schemas: Sequence[str],
    *,
    shown: Path | str,
    migrations: Sequence[Migration] = MIGRATIONS,
    engine: Engine | None = None,
) -> tuple[int | None, int]:
    """Bring the store on `conn` (in autocommit mode; an SQLite connection unless `engine` says otherwise) to the
    last version of `migrations`, in one transaction.

    Runs the steps after the store's version in order, then each of `schemas`, then writes the version. Returns
    (the version found, None for a new store; the version now). Raises `StoreTooNew` for a newer store, and
    `StoreError` naming both versions when a step fails (nothing of it is kept).
    """
    engine = engine or _SQLITE
    target = migrations[-1].version if migrations else 1
    engine.begin_exclusive(conn)
    try:
        found = check_known(conn, shown, known=target, engine=engine)
        if found is not None:
            for step in migrations:
                if step.version > found:
                    try:
                        step.apply(conn)
                    except database_errors() as err:
                        raise StoreError(
                            f"cannot upgrade the store {shown} from schema version {found} to {target}:"
                            f" version {step.version} failed: {err}"
                        ) from err
        for schema in schemas:
            for statement in engine.statements(schema):
                conn.execute(statement)
        if found != target:
            engine.write_version(conn, target)
        engine.commit(conn)
    except BaseException:
        engine.rollback(conn)
        raise
    return found, target


# The dialect of a plain SQLite connection (tests and tools pass one); its path is never used.
_SQLITE = SQLiteEngine(Path("dispatcher.db"))
