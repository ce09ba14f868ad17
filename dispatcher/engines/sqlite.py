"""SQLite, the embedded default: one file (WAL), one instance (`<db>.lock`), the schema version in its header.

The modules get the `sqlite3.Connection` itself: nothing stands between their SQL and SQLite. Durability is
switched per group with `PRAGMA synchronous` (FULL when a job of the group is durable, NORMAL otherwise).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from pathlib import Path

from ..errors import StoreError
from .base import Engine, StoreInUse

# Beside the database: `dispatcher.db` → `dispatcher.db.lock`.
LOCK_SUFFIX = ".lock"
# Upserts (3.24), RETURNING (3.35): the portable SQL of the modules needs them.
MIN_SQLITE = (3, 35, 0)


class SQLiteEngine(Engine):
    """The store in the SQLite file at `path`."""

    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = self.file = path
        self.shown = str(path)
        self._lock_fd: int | None = None
        self._synchronous: str | None = None

    @property
    def lock_path(self) -> Path:
        """The instance lock's file, beside the database."""
        return self.file.with_name(self.file.name + LOCK_SUFFIX)

    def lock_instance(self) -> None:
        self._lock_fd = _lock_instance(self.lock_path, shown=self.file)

    def release_instance(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = None

    @property
    def locked(self) -> bool:
        return self._lock_fd is not None

    def connect(self, *, readonly: bool, exclusive: bool) -> sqlite3.Connection:
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            needed = ".".join(map(str, MIN_SQLITE))
            raise StoreError(f"SQLite {sqlite3.sqlite_version} is too old for the store: {needed} or newer is needed")
        if readonly:
            conn = sqlite3.connect(f"file:{self.file}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
            try:
                conn.execute("PRAGMA busy_timeout=5000")
            except BaseException:
                conn.close()
                raise
            return conn
        self.file.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so group commit is explicit.
        conn = sqlite3.connect(self.file, isolation_level=None, check_same_thread=False)
        try:
            # Takes effect only for a new database, and only before its first write (the WAL switch below is one);
            # for an existing store it changes nothing.
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is on disk (WAL fsynced) before the event is acknowledged, even across a power cut.
            conn.execute("PRAGMA synchronous=FULL")
            self._synchronous = "FULL"
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=5000")
        except BaseException:
            conn.close()
            raise
        return conn

    def begin(self, conn: sqlite3.Connection, *, readonly: bool, durable: bool) -> None:
        if readonly:
            conn.execute("BEGIN")
            return
        synchronous = "FULL" if durable else "NORMAL"
        if synchronous != self._synchronous:  # a pragma SQLite takes outside a transaction only
            conn.execute(f"PRAGMA synchronous={synchronous}")
            self._synchronous = synchronous
        conn.execute("BEGIN IMMEDIATE")

    def begin_exclusive(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")

    def in_transaction(self, conn: sqlite3.Connection) -> bool:
        return conn.in_transaction

    def stored_version(self, conn: sqlite3.Connection) -> int | None:
        """The version in the file's header (`PRAGMA user_version`). A store that has tables but no version
        (`user_version` 0) was written by the first release: version 1."""
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version:
            return version
        has_tables = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' LIMIT 1").fetchone() is not None
        return 1 if has_tables else None

    def write_version(self, conn: sqlite3.Connection, version: int) -> None:
        conn.execute(f"PRAGMA user_version = {int(version)}")


def _lock_instance(lock_path: Path, *, shown: Path) -> int:
    """Take the exclusive instance lock on `lock_path` without waiting, write our pid in it, return its descriptor.

    Raises StoreInUse naming the holder's pid (as it wrote it) when another open file holds the lock. The file is
    never removed: removing it while held would let a newcomer lock a fresh file of the same name beside us.
    The descriptor is not inherited by child processes (Python's default), so a sender process cannot keep the
    lock alive after the daemon is gone.
    """
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as err:
        raise StoreError(f"cannot open the store's lock file {lock_path}: {err.strerror or err}") from err
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as err:
        holder = _holder_pid(fd)
        os.close(fd)
        by = f"another dispatcher (pid {holder})" if holder else "another dispatcher"
        raise StoreInUse(f"the store {shown} is in use by {by}; one store serves one instance") from err
    except OSError as err:
        os.close(fd)
        raise StoreError(f"cannot lock the store's lock file {lock_path}: {err.strerror or err}") from err
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    return fd


def _holder_pid(fd: int) -> int | None:
    """The pid the lock's holder wrote, or None (not written yet: it writes just after locking)."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
