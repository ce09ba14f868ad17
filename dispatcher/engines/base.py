"""What every engine offers the store (`Engine`), and what the modules' SQL is given (`Connection`)."""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from ..errors import StoreError

URL_SCHEMES = ("postgresql://", "postgres://")


class Cursor(Protocol):
    """What the modules use of a cursor: rows one by one or all at once, and how many rows a statement changed."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...

    def close(self) -> None: ...


class Connection(Protocol):
    """What the modules use of a connection (a `sqlite3.Connection` is one): statements with `?` placeholders."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Cursor: ...


class StoreInUse(StoreError):
    """Another process (or another open Store) holds the store's instance lock: one store serves one instance."""


def is_url(where: Path | str) -> bool:
    """Whether `where` names a PostgreSQL database (a `postgresql://` URL) rather than an SQLite file."""
    return isinstance(where, str) and where.startswith(URL_SCHEMES)


def skip_locked(conn: Connection) -> str:
    """What a SELECT that takes work for this instance ends with: on PostgreSQL, `FOR UPDATE SKIP LOCKED` (rows
    another instance is taking in a transaction of its own are passed over, never waited for); nothing on SQLite,
    whose write transactions exclude one another already."""
    return "" if isinstance(conn, sqlite3.Connection) else " FOR UPDATE SKIP LOCKED"


# `one_writer_at_a_time` keys: what instances sharing a store must change one at a time.
CONTACTS_WRITES = 0x636F6E74  # "cont"


def one_writer_at_a_time(conn: Connection, key: int) -> None:
    """In a job that checks then writes (a client's next id, an address that must stay unique): on PostgreSQL,
    wait for any other instance's transaction doing the same (`pg_advisory_xact_lock`, held to the commit); on
    SQLite nothing, since `BEGIN IMMEDIATE` already makes every write transaction the only one."""
    if not isinstance(conn, sqlite3.Connection):
        conn.execute("SELECT pg_advisory_xact_lock(?)", (key,))


def database_errors() -> tuple[type[Exception], ...]:
    """The exceptions a database library raises (sqlite3's, and psycopg's once it is in use)."""
    psycopg = sys.modules.get("psycopg")
    return (sqlite3.Error, psycopg.Error) if psycopg is not None else (sqlite3.Error,)


def is_store_failure(err: BaseException) -> bool:
    """Whether `err` is the store's own failure (disk full, the database locked or gone), not a refusal of the values
    a statement was given. After such a failure nothing more can be written in the transaction: on PostgreSQL any
    error the server raises aborts it, so every server-side error counts here (a value psycopg cannot send, such as
    a NUL character in a text, is refused before it reaches the server, and does not)."""
    if isinstance(err, sqlite3.OperationalError):
        return True
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(err, psycopg.Error):
        return isinstance(err, psycopg.OperationalError) or getattr(err, "sqlstate", None) is not None
    return False


def split_statements(script: str) -> list[str]:
    """The SQL statements of `script`, one by one (comments kept), so that they can run in the caller's
    transaction: `executescript` would commit it first."""
    statements: list[str] = []
    start = 0
    for index, char in enumerate(script):
        if char == ";" and sqlite3.complete_statement(script[start : index + 1]):
            statements.append(script[start : index + 1].strip())
            start = index + 1
    rest = script[start:].strip()
    if rest and not all(line.strip().startswith("--") for line in rest.splitlines() if line.strip()):
        statements.append(rest)  # an unterminated last statement: SQLite runs it (or says what is wrong with it)
    return statements


class Engine:
    """One engine's way of doing what the store and its migrations need; the SQL of the modules is the same on all.

    A connection is used by one thread at a time (the store's), in autocommit mode: the store opens and ends every
    transaction itself (`begin`, `commit`, `rollback`), so that group commit is explicit.
    """

    name: str
    """"sqlite" or "postgresql"."""
    path: Path | None = None
    """The SQLite file (None on PostgreSQL)."""
    shown: str
    """Where the store is, as messages and logs show it (a PostgreSQL URL without its credentials)."""

    # -- connections ---------------------------------------------------------------------------------------------

    def lock_instance(self) -> None:
        """Before connecting: take what makes this store one instance's (SQLite's `<db>.lock`); `StoreInUse` if
        another holds it. An engine whose lock lives in the connection takes it in `connect(exclusive=True)`."""

    def release_instance(self) -> None:
        """Give back what `lock_instance` took (nothing if it took nothing)."""

    def connect(self, *, readonly: bool, exclusive: bool) -> Any:
        """A connection in autocommit mode, set up for the store (nothing of the schema is touched yet)."""
        raise NotImplementedError

    def hold_presence(self, conn: Any, instance: int) -> None:
        """Show, while `conn` lives, that `instance` is alive (PostgreSQL; SQLite has one instance per file)."""

    def present_instances(self, conn: Any) -> set[int] | None:
        """The instances whose presence is shown now; None where the engine cannot tell (SQLite)."""
        return None

    def usable(self, conn: Any) -> bool:
        """Whether `conn` can still run statements (a PostgreSQL connection is lost when its server restarts)."""
        return True

    def close(self, conn: Any) -> None:
        conn.close()

    # -- transactions --------------------------------------------------------------------------------------------

    def begin(self, conn: Any, *, readonly: bool, durable: bool) -> None:
        """Open a transaction for a group of jobs. `durable=False`: its commit need not reach the disk at once."""
        raise NotImplementedError

    def begin_exclusive(self, conn: Any) -> None:
        """Open a transaction that no other connection's changes of the schema can interleave with (migrations)."""
        raise NotImplementedError

    def commit(self, conn: Any) -> None:
        conn.execute("COMMIT")

    def rollback(self, conn: Any) -> None:
        """End the transaction in hand without its changes (nothing if none is open)."""
        if self.in_transaction(conn):
            conn.execute("ROLLBACK")

    def in_transaction(self, conn: Any) -> bool:
        raise NotImplementedError

    # -- the schema ----------------------------------------------------------------------------------------------

    def stored_version(self, conn: Any) -> int | None:
        """The store's schema version; None for a new store (nothing of ours in it yet)."""
        raise NotImplementedError

    def write_version(self, conn: Any, version: int) -> None:
        raise NotImplementedError

    def statements(self, schema: str) -> list[str]:
        """A module's `SCHEMA` (written for SQLite) as this engine's statements, one by one."""
        return split_statements(schema)
