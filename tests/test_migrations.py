"""The store's schema version: an older store is migrated at start and keeps working, a newer one is refused.

The store of the first release is built from its own CREATE statements and rows (`testdata/store/v1.sql`, copied
from commit e4ff3df), then opened by today's daemon.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from structlog.testing import capture_logs

from dispatcher import contacts, outbox
from dispatcher.cluster.membership import SCHEMA as INSTANCES_SCHEMA
from dispatcher.errors import StoreError
from dispatcher.intake import dead_letters
from dispatcher.migrations import SCHEMA_VERSION, Migration, StoreTooNew, split_statements, upgrade
from dispatcher.noise import repeats, silences
from dispatcher.store import EVENTS_SCHEMA, Store

from .brokers import free_port
from .servers import WebhookSink

V1_STORE = Path(__file__).resolve().parent / "testdata" / "store" / "v1.sql"
DAEMON_SCHEMAS = [outbox.SCHEMA, contacts.SCHEMA, dead_letters.SCHEMA, silences.SCHEMA, repeats.SCHEMA]

# Every test here is about SQLite stores of earlier releases (PostgreSQL's version table: test_store_engines.py).
pytestmark = pytest.mark.sqlite_only


def build_v1_store(db: Path) -> None:
    """The first release's store, rows included, as that release left it (no schema version written)."""
    with sqlite3.connect(db) as conn:
        conn.executescript(V1_STORE.read_text(encoding="utf-8"))
    conn.close()


def schema_of(db: Path) -> set[tuple[str, str, str]]:
    """Every table and index of a store as (type, name, CREATE statement without its comments and spacing; a column
    added by `ALTER TABLE` reads `x REAL , y` where a new table's says `x REAL, y`)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL").fetchall()
    conn.close()
    return {
        (kind, name, re.sub(r"\s*([,()])\s*", r"\1", " ".join(re.sub(r"--[^\n]*", "", sql).split())))
        for kind, name, sql in rows
    }


def user_version(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    conn.close()
    return version


async def new_store(db: Path) -> None:
    """A store created by today's daemon, closed again."""
    store = Store(db, schemas=DAEMON_SCHEMAS)
    await store.open(exclusive=True)
    await store.close()


# -- the previous release's store, opened by today's daemon --------------------------------------------------------


async def test_a_store_of_the_first_release_opens_keeps_its_rows_and_works(
    tmp_path: Path, make_config: Callable[..., Path], start_daemon: Any, http: Any
) -> None:
    """A version-1 store (no user_version) is migrated when the daemon starts (`store_migrated` 1 → current),
    keeps every row (events, delivery records, account and client contacts), and works: the event the old
    release recorded but never planned is delivered, and so is an event published now. Afterwards it has exactly
    the tables and indexes of a store created new, so no change of schema went without its migration step."""
    db = tmp_path / "dispatcher.db"
    build_v1_store(db)
    assert user_version(db) == 0
    async with WebhookSink() as webhook:
        config = make_config(contacts={"root": {"posturl": [f"{webhook.url}/notify"]}})
        with capture_logs() as logs:
            daemon = await start_daemon(config)
            assert daemon.dispatcher.store.found_version == 1
            assert daemon.dispatcher.store.schema_version == SCHEMA_VERSION
            first = await webhook.wait_for(1, timeout_s=15)
            assert first[0].form["event_id"] == "v1-unplanned"
            assert first[0].form["event_type"] == "Backup/Failure"

            answer = await http.post(
                f"{daemon.base_url}/api/v1/events",
                json={"id": "after-upgrade", "type": "Backup/Failure", "data": {"error": "disk full"}},
                headers=daemon.auth,
            )
            assert answer.status == 202
            await webhook.wait_for(2, timeout_s=15)
            assert webhook.requests[1].form["event_id"] == "after-upgrade"
            await daemon.stop()
    migrated = [entry for entry in logs if entry["event"] == "store_migrated"]
    assert [(entry["from_version"], entry["to_version"]) for entry in migrated] == [(1, SCHEMA_VERSION)]

    assert user_version(db) == SCHEMA_VERSION
    with sqlite3.connect(db) as conn:
        events = dict(conn.execute("SELECT id, planned FROM events"))
        assert events == {"v1-delivered": 1, "v1-unplanned": 1, "after-upgrade": 1}
        old_records = conn.execute(
            "SELECT recipient, status, target FROM deliveries WHERE event_id = 'v1-delivered' ORDER BY id"
        ).fetchall()
        assert old_records == [("root", "sent", "admin@example.com"), ("account:bob", "sent", "bob@example.com")]
        assert conn.execute("SELECT email FROM account_contacts WHERE account = 'bob'").fetchone() == (
            "bob@example.com",
        )
        assert conn.execute("SELECT client_id FROM client_accounts WHERE account = 'bob'").fetchone() == (12,)
        assert conn.execute("SELECT email FROM client_contacts WHERE client_id = 12").fetchone() == (
            "wendy@bob.example.com",
        )
        assert conn.execute("SELECT count(*) FROM dead_letters").fetchone() == (0,)
    conn.close()

    fresh = tmp_path / "fresh.db"
    await new_store(fresh)
    assert schema_of(db) == schema_of(fresh)


async def test_a_new_store_has_the_current_version_and_its_modules_tables(tmp_path: Path) -> None:
    """A new store is created at the current version with `auto_vacuum=INCREMENTAL`, and its tables are exactly
    what the modules' schemas create when run as scripts (the store runs them statement by statement, inside its
    one transaction)."""
    db = tmp_path / "dispatcher.db"
    await new_store(db)
    assert user_version(db) == SCHEMA_VERSION
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA auto_vacuum").fetchone() == (2,)
    conn.close()

    scripted = tmp_path / "scripted.db"
    with sqlite3.connect(scripted) as conn:
        for schema in (EVENTS_SCHEMA, INSTANCES_SCHEMA, *DAEMON_SCHEMAS):
            conn.executescript(schema)
    conn.close()
    assert schema_of(db) == schema_of(scripted)


async def test_reopening_a_current_store_changes_nothing(tmp_path: Path) -> None:
    """A store already at the current version is not migrated again (no `store_migrated`), and its version stays."""
    db = tmp_path / "dispatcher.db"
    await new_store(db)
    with capture_logs() as logs:
        store = Store(db, schemas=DAEMON_SCHEMAS)
        await store.open()
        assert (store.found_version, store.schema_version) == (SCHEMA_VERSION, SCHEMA_VERSION)
        await store.close()
    assert not [entry for entry in logs if entry["event"] == "store_migrated"]


# -- a store from a newer release ----------------------------------------------------------------------------------


def newer_store_line(db: Path) -> str:
    return (
        f"dispatcher: the store {db} has schema version {SCHEMA_VERSION + 1}; this dispatcher knows up to"
        f" {SCHEMA_VERSION}: upgrade dispatcher or restore a backup"
    )


def test_run_refuses_a_store_from_a_newer_release_with_one_line(tmp_path: Path) -> None:
    """`dispatcher run` on a store whose version is above what it knows exits 1 with one line on stderr, naming
    the store, both versions and what to do, and leaves the store as it was."""
    db = tmp_path / "dispatcher.db"
    build_v1_store(db)
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    (tmp_path / "api.token").write_text("token\n")
    config = tmp_path / "dispatcher.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "hostname": "test.example.com",
                "bus": {"url": f"mqtt://127.0.0.1:{free_port()}"},
                "http": {"listen": f"127.0.0.1:{free_port()}", "token_file": "api.token"},
                "store": {"path": "dispatcher.db"},
            }
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "dispatcher", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines() == [newer_store_line(db)]
    assert user_version(db) == SCHEMA_VERSION + 1


async def test_a_newer_store_is_refused_by_every_open(tmp_path: Path) -> None:
    """Writable, exclusive and read-only opens all raise `StoreTooNew`, a StoreError, and do not change the file;
    the instance lock is given back."""
    db = tmp_path / "dispatcher.db"
    await new_store(db)
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    before = schema_of(db)
    for store, exclusive in (
        (Store(db), True),
        (Store(db, schemas=DAEMON_SCHEMAS), False),
        (Store(db, readonly=True), False),
    ):
        with pytest.raises(StoreTooNew) as caught:
            await store.open(exclusive=exclusive)
        assert isinstance(caught.value, StoreError)
        assert str(caught.value) == newer_store_line(db).removeprefix("dispatcher: ")
        assert not store.is_open
    assert schema_of(db) == before and user_version(db) == SCHEMA_VERSION + 1
    store = Store(db, readonly=True)  # nothing holds the lock or the file
    with pytest.raises(StoreTooNew):
        await store.open()


async def test_a_read_only_open_does_not_migrate(tmp_path: Path) -> None:
    """`deliveries` and `routes` only read: a version-1 store opened read-only stays version 1 and is readable."""
    db = tmp_path / "dispatcher.db"
    build_v1_store(db)
    store = Store(db, readonly=True)
    await store.open()
    assert store.schema_version == 1
    assert await store.run(lambda conn: conn.execute("SELECT count(*) FROM events").fetchone()[0]) == 2
    await store.close()
    assert user_version(db) == 0


# -- the migration framework ---------------------------------------------------------------------------------------


def note_steps(done: list[int]) -> list[Migration]:
    """Three versions: 2 adds a column, 3 fills it; each notes that it ran."""

    def to_v2(conn: sqlite3.Connection) -> None:
        done.append(2)
        conn.execute("ALTER TABLE notes ADD COLUMN color TEXT")

    def to_v3(conn: sqlite3.Connection) -> None:
        done.append(3)
        conn.execute("UPDATE notes SET color = 'red'")

    return [Migration(2, "color", to_v2), Migration(3, "red", to_v3)]


def old_notes(db: Path, version: int) -> sqlite3.Connection:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    conn.execute("INSERT INTO notes (text) VALUES ('kept')")
    conn.execute(f"PRAGMA user_version = {version}")
    return conn


def test_steps_run_in_order_from_the_stores_version(tmp_path: Path) -> None:
    """A version-1 store runs steps 2 then 3 and ends at 3 with its rows rewritten; a version-2 store runs only
    step 3; the modules' schemas run after the steps (an index on the new column works)."""
    schema = "CREATE INDEX IF NOT EXISTS notes_color ON notes(color);"
    for version, expected in ((0, [2, 3]), (1, [2, 3]), (2, [3])):
        done: list[int] = []
        db = tmp_path / f"v{version}.db"
        conn = old_notes(db, version)
        if version == 2:
            conn.execute("ALTER TABLE notes ADD COLUMN color TEXT")
        assert upgrade(conn, [schema], shown=db, migrations=note_steps(done)) == (version or 1, 3)
        assert done == expected
        assert conn.execute("SELECT text, color FROM notes").fetchall() == [("kept", "red")]
        assert conn.execute("PRAGMA user_version").fetchone() == (3,)
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'notes_color'").fetchone() == ("notes_color",)
        conn.close()


def test_a_failing_step_leaves_the_store_as_it_was(tmp_path: Path) -> None:
    """Steps, schemas and the version are one transaction: when step 3 fails, step 2's column is gone again, the
    version is still the old one, and the error names the store, both versions and the step."""
    db = tmp_path / "s.db"
    conn = old_notes(db, 1)
    done: list[int] = []
    steps = note_steps(done)

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE no_such_table SET x = 1")

    steps[1] = Migration(3, "broken", broken)
    with pytest.raises(StoreError) as caught:
        upgrade(conn, ["CREATE TABLE IF NOT EXISTS extra (x INTEGER);"], shown=db, migrations=steps)
    assert str(caught.value) == (
        f"cannot upgrade the store {db} from schema version 1 to 3: version 3 failed: no such table: no_such_table"
    )
    assert done == [2]
    assert not conn.in_transaction
    assert [row[1] for row in conn.execute("PRAGMA table_info(notes)")] == ["id", "text"]
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'extra'").fetchone() is None
    assert conn.execute("PRAGMA user_version").fetchone() == (1,)
    conn.close()


def test_a_new_database_runs_no_step(tmp_path: Path) -> None:
    """A database without tables is new: its schemas describe the current shape, so no step runs."""
    done: list[int] = []
    conn = sqlite3.connect(tmp_path / "new.db", isolation_level=None)
    assert upgrade(
        conn, ["CREATE TABLE notes (id INTEGER PRIMARY KEY, color TEXT);"], shown="new.db", migrations=note_steps(done)
    ) == (None, 3)
    assert done == []
    assert conn.execute("PRAGMA user_version").fetchone() == (3,)
    conn.close()


def test_split_statements_keeps_comments_and_semicolons_inside_text() -> None:
    """Statements split at their own semicolons only: not at one inside a string or a comment, and two on one line
    are two."""
    script = """
    CREATE TABLE a (x TEXT DEFAULT ';');  -- a comment; with a semicolon
    CREATE TABLE b (y INTEGER); CREATE INDEX b_y ON b(y);
    -- a trailing comment
    """
    statements = split_statements(script)
    assert len(statements) == 3
    assert statements[0] == "CREATE TABLE a (x TEXT DEFAULT ';');"
    assert statements[1].endswith("CREATE TABLE b (y INTEGER);")
    assert statements[2] == "CREATE INDEX b_y ON b(y);"
    conn = sqlite3.connect(":memory:")
    for statement in statements:
        conn.execute(statement)
    conn.close()
