"""The store's two engines: SQLite (one file, the embedded default) and PostgreSQL (one database a cluster shares).

Every module writes its SQL once, as functions of a `Connection` that the store's thread passes them
(`await store.run(fn)`), and that SQL is portable: `?` placeholders; `INSERT … ON CONFLICT DO NOTHING`, never
`INSERT OR IGNORE`; `RETURNING id`, never `lastrowid`, its rows read with `fetchall()` (sqlite3 keeps the statement
in progress, and the transaction from committing, until its last row is read); upserts that name the table in `DO
UPDATE SET`; `lower(x) = lower(?)`, never `COLLATE NOCASE`; no `IS NOT ?`, no negative `LIMIT`, no `sum()` (a
numeric on PostgreSQL). What must differ is in this package and nowhere else:

- the connection: on SQLite the `sqlite3.Connection` itself; on PostgreSQL a thin adapter over psycopg 3 that offers
  the part of sqlite3's API the modules use (`execute`, `executemany`, `executescript`, cursors with `fetchone`,
  `fetchall`, `rowcount` and iteration) and turns `?` into psycopg's `%s` (`postgresql.py`);
- the schemas' DDL: each module's `SCHEMA` is written for SQLite and translated for PostgreSQL in one function
  (`postgresql.translate_ddl`: AUTOINCREMENT → identity, INTEGER → bigint, REAL → double precision, BLOB → bytea);
- transactions and durability: `BEGIN IMMEDIATE` and `PRAGMA synchronous` on SQLite, `BEGIN` and
  `synchronous_commit` on PostgreSQL;
- the schema version: `PRAGMA user_version` in the SQLite file, a one-row table `dispatcher_schema` on PostgreSQL;
- instances: one per SQLite file (an `flock` on `<db>.lock` beside it); any number on PostgreSQL, each showing it is
  alive with a session advisory lock held by its store's connection (`hold_presence`, `present_instances`), and
  taking work with `FOR UPDATE SKIP LOCKED` (`skip_locked`; nothing on SQLite).

psycopg is an optional dependency (`pip install dispatcher[postgresql]`): it is imported only when a store at a
`postgresql://` URL is opened.
"""

from __future__ import annotations

from pathlib import Path

from .base import Connection, Cursor, Engine, database_errors, is_store_failure, is_url, skip_locked


def engine_for(where: Path | str) -> Engine:
    """The engine of the store at `where`: a `postgresql://` URL or the path of an SQLite file."""
    if is_url(where):
        from .postgresql import PostgresEngine  # psycopg only when it is needed

        return PostgresEngine(str(where))
    from .sqlite import SQLiteEngine

    return SQLiteEngine(Path(where))


__all__ = [
    "Connection",
    "Cursor",
    "Engine",
    "database_errors",
    "engine_for",
    "is_store_failure",
    "is_url",
    "skip_locked",
]
