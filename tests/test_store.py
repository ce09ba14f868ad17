"""The store: jobs of one group commit together, a failing job is rolled back alone, durability levels.

These run on the engine under test (`store_where`): SQLite, or PostgreSQL in the PostgreSQL run.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from dispatcher.engines import Connection, is_url
from dispatcher.errors import StoreError
from dispatcher.store import Store, StoreNotCreated

from .conftest import connect_store

SCHEMA = "CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL UNIQUE);"


async def test_a_failing_job_is_rolled_back_alone(store_where: Path | str) -> None:
    """Jobs handed over together share a transaction; one that raises loses its writes, the others keep theirs."""
    store = Store(store_where, schemas=[SCHEMA])
    await store.open()

    def insert(text: str, fail: bool = False) -> Any:
        def job(conn: Connection) -> int:
            cursor = conn.execute("INSERT INTO notes (text) VALUES (?) RETURNING id", (text,))
            if fail:
                raise ValueError(f"refused {text}")
            return int(cursor.fetchall()[0][0])

        return job

    results = await asyncio.gather(
        store.run(insert("a")),
        store.run(insert("b", fail=True)),
        store.run(insert("a")),  # violates UNIQUE: a database error inside a job is that job's failure
        store.run(insert("c")),
        return_exceptions=True,
    )
    assert isinstance(results[0], int) and isinstance(results[3], int)
    assert isinstance(results[1], ValueError) and str(results[1]) == "refused b"
    assert isinstance(results[2], StoreError)
    assert "IntegrityError" in {cls.__name__ for cls in type(results[2].__cause__).__mro__}
    texts = await store.run(lambda conn: [row[0] for row in conn.execute("SELECT text FROM notes ORDER BY id")])
    assert texts == ["a", "c"]
    await store.close()


async def test_bookkeeping_and_durable_writes_are_both_committed(store_where: Path | str) -> None:
    """durable=False only skips the fsync: the write is committed and visible to another connection at once."""
    store = Store(store_where, schemas=[SCHEMA])
    await store.open()
    await store.run(lambda conn: conn.execute("INSERT INTO notes (text) VALUES ('lazy')"), durable=False)
    await store.run(lambda conn: conn.execute("INSERT INTO notes (text) VALUES ('durable')"))
    with connect_store(store_where) as other:
        assert [row[0] for row in other.execute("SELECT text FROM notes ORDER BY id")] == ["lazy", "durable"]
    await store.close()


async def test_a_closed_store_refuses_work_and_readonly_cannot_write(store_where: Path | str) -> None:
    """A closed store refuses jobs; a read-only one refuses writes (its transactions are read-only on both engines);
    a read-only open where no store is fails at once."""
    if is_url(store_where):
        with pytest.raises(StoreNotCreated, match="no store at"):
            await Store(store_where, readonly=True).open()
    store = Store(store_where, schemas=[SCHEMA])
    await store.open()
    await store.close()
    with pytest.raises(StoreError):
        await store.run(lambda conn: None)
    readonly = Store(store_where, readonly=True)
    await readonly.open()
    with pytest.raises(StoreError, match=r"read-?only"):
        await readonly.run(lambda conn: conn.execute("INSERT INTO notes (text) VALUES ('x')"))
    await readonly.close()
    if not is_url(store_where):
        with pytest.raises(StoreError, match="cannot open the store"):
            await Store(Path(store_where).parent / "missing" / "s.db", readonly=True).open()
