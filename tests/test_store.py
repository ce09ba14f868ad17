"""The store: jobs of one group commit together, a failing job is rolled back alone, durability levels."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from dispatcher.errors import StoreError
from dispatcher.store import Store

SCHEMA = "CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL UNIQUE);"


async def test_a_failing_job_is_rolled_back_alone(tmp_path: Path) -> None:
    """Jobs handed over together share a transaction; one that raises loses its writes, the others keep theirs."""
    store = Store(tmp_path / "s.db", schemas=[SCHEMA])
    await store.open()

    def insert(text: str, fail: bool = False) -> int:
        def job(conn: sqlite3.Connection) -> int:
            cursor = conn.execute("INSERT INTO notes (text) VALUES (?)", (text,))
            if fail:
                raise ValueError(f"refused {text}")
            return int(cursor.lastrowid or 0)

        return job  # type: ignore[return-value]

    results = await asyncio.gather(
        store.run(insert("a")),
        store.run(insert("b", fail=True)),
        store.run(insert("a")),  # violates UNIQUE: an sqlite3 error inside a job is that job's failure
        store.run(insert("c")),
        return_exceptions=True,
    )
    assert isinstance(results[0], int) and isinstance(results[3], int)
    assert isinstance(results[1], ValueError) and str(results[1]) == "refused b"
    assert isinstance(results[2], StoreError) and isinstance(results[2].__cause__, sqlite3.IntegrityError)
    texts = await store.run(lambda conn: [row[0] for row in conn.execute("SELECT text FROM notes ORDER BY id")])
    assert texts == ["a", "c"]
    await store.close()


async def test_bookkeeping_and_durable_writes_are_both_committed(tmp_path: Path) -> None:
    """durable=False only skips the fsync: the write is committed and visible to another connection at once."""
    store = Store(tmp_path / "s.db", schemas=[SCHEMA])
    await store.open()
    await store.run(lambda conn: conn.execute("INSERT INTO notes (text) VALUES ('lazy')"), durable=False)
    await store.run(lambda conn: conn.execute("INSERT INTO notes (text) VALUES ('durable')"))
    with sqlite3.connect(tmp_path / "s.db") as other:
        assert [row[0] for row in other.execute("SELECT text FROM notes ORDER BY id")] == ["lazy", "durable"]
    await store.close()


async def test_a_closed_store_refuses_work_and_readonly_cannot_write(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db", schemas=[SCHEMA])
    await store.open()
    await store.close()
    with pytest.raises(StoreError):
        await store.run(lambda conn: None)
    readonly = Store(tmp_path / "s.db", readonly=True)
    await readonly.open()
    with pytest.raises(StoreError, match="readonly"):
        await readonly.run(lambda conn: conn.execute("INSERT INTO notes (text) VALUES ('x')"))
    await readonly.close()
    with pytest.raises(StoreError, match="cannot open the store"):
        await Store(tmp_path / "missing" / "s.db", readonly=True).open()
