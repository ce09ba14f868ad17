"""`check-config` on a PostgreSQL store (a cluster, SPEC §8a) compares the file with what the running instances use.

Each live instance's row in `instances` holds its config's hash (`cluster/membership.py`); `check-config` reads the
store read-only and prints `FILE: warning: …` on stderr for each live instance whose hash differs from the file's,
naming it (id, host, pid, config path), and still says OK and exits 0. Instances that are gone (a stale heartbeat,
or no presence lock: a killed process) are not compared. A store that cannot be reached is a warning that it could
not be checked, never an error, and shows the store as its engine does (no user, no query: a `passfile`).

The instances here are rows inserted beside the command (`register`), their presence shown by the test's own store
connection (`hold_presence`), as a running daemon's is.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from dispatcher.cluster.membership import LEASE_S, SCHEMA, config_hash, register
from dispatcher.config import load_config
from dispatcher.store import Store

from .brokers import free_port

PASSFILE = "/etc/dispatcher/pgpass-SECRET-PLACE"


def write_config(
    tmp_path: Path, url: str, *, name: str = "dispatcher.yaml", hostname: str = "a.example.com", extra: str = ""
) -> Path:
    path = tmp_path / name
    path.write_text(f"hostname: {hostname}\nstore:\n  url: {url}\n{extra}", encoding="utf-8")
    return path


def with_passfile(url: str) -> str:
    """`url` naming a password file (the tests' server trusts loopback logins: libpq never reads it)."""
    return f"{url}?passfile={PASSFILE}"


async def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    """`dispatcher check-config -c PATH` in a process of its own, without blocking the test's event loop."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "dispatcher", "check-config", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
async def cluster(postgres_url: str) -> AsyncIterator[Callable[..., Any]]:
    """Add an instance's row to the store at `postgres_url` (created here); `present=True` shows it alive the way
    a running daemon does, with its presence lock held by this store's connection until the test ends."""
    store = Store(postgres_url, schemas=[SCHEMA])
    await store.open()

    async def add(
        digest: str, *, heartbeat_age_s: float = 0.0, present: bool = True, host: str = "b.example.com", pid: int = 4242
    ) -> int:
        now = time.time() - heartbeat_age_s

        def insert(conn: Any) -> int:
            return register(conn, host=host, pid=pid, config_hash=digest, config_path="/etc/dispatcher/b.yaml", now=now)

        instance = await store.run(insert)
        if present:
            await store.hold_presence(instance)
        return instance

    yield add
    await store.close()


async def test_an_instance_with_the_same_config_gives_no_warning(
    tmp_path: Path, postgres_url: str, cluster: Any
) -> None:
    """A live instance whose config hash is the file's: nothing on stderr, OK, exit 0."""
    path = write_config(tmp_path, postgres_url)
    await cluster(config_hash(load_config(path)))
    result = await check_config(path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == f"{path}: OK\n"


async def test_the_hash_ignores_what_is_the_instance_s_own(tmp_path: Path, postgres_url: str, cluster: Any) -> None:
    """Instances on different hosts differ in `hostname` (and their HTTP listener): that is no disagreement. (The
    email channel's sender is given: its default, `dispatcher@<hostname>`, does differ from host to host.)"""
    sender = "channels:\n  email:\n    from: alerts@example.com\n"
    other = write_config(
        tmp_path,
        postgres_url,
        name="b.yaml",
        hostname="b.example.com",
        extra=sender + "http:\n  listen: 127.0.0.1:9101\n",
    )
    await cluster(config_hash(load_config(other)))
    path = write_config(tmp_path, postgres_url, extra=sender)
    result = await check_config(path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


async def test_a_live_instance_with_another_config_is_named_in_a_warning(
    tmp_path: Path, postgres_url: str, cluster: Any
) -> None:
    """A live instance with another hash: one `FILE: warning:` line naming it (id, host, pid, config path) and
    saying the running instances use another configuration; the store shown as its engine shows it (no query);
    still OK and exit 0. An agreeing instance beside it is not named."""
    path = write_config(tmp_path, with_passfile(postgres_url))
    mine = config_hash(load_config(path))
    await cluster(mine, host="c.example.com", pid=1111)
    other = await cluster("0123456789abcdef")
    result = await check_config(path)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith(
        f"{path}: warning: instance {other} (host b.example.com, pid 4242, config /etc/dispatcher/b.yaml)"
    )
    assert "runs a different configuration" in line
    assert "0123456789abcdef" in line and mine in line
    assert "reload or restart" in line
    assert postgres_url.rpartition("@")[2] in line  # the store, as host:port/database
    assert "SECRET" not in result.stderr + result.stdout
    assert "c.example.com" not in line
    assert result.stdout == f"{path}: OK\n"


async def test_every_disagreeing_instance_gets_its_line(tmp_path: Path, postgres_url: str, cluster: Any) -> None:
    path = write_config(tmp_path, postgres_url)
    first = await cluster("1111111111111111", pid=1)
    second = await cluster("2222222222222222", pid=2)
    result = await check_config(path)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert [line.partition(" (")[0] for line in lines] == [
        f"{path}: warning: instance {first}",
        f"{path}: warning: instance {second}",
    ]


async def test_an_instance_whose_heartbeat_is_stale_is_not_compared(
    tmp_path: Path, postgres_url: str, cluster: Any
) -> None:
    """A heartbeat older than the lease: the instance is gone, whatever it ran."""
    path = write_config(tmp_path, postgres_url)
    await cluster("0123456789abcdef", heartbeat_age_s=LEASE_S + 5)
    result = await check_config(path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == f"{path}: OK\n"


async def test_an_instance_without_its_presence_lock_is_not_compared(
    tmp_path: Path, postgres_url: str, cluster: Any
) -> None:
    """A fresh heartbeat but no presence lock (its process was killed, its connection closed): gone too."""
    path = write_config(tmp_path, postgres_url)
    await cluster("0123456789abcdef", present=False)
    result = await check_config(path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


async def test_a_database_without_a_store_has_nothing_to_compare(tmp_path: Path, postgres_url: str) -> None:
    """No daemon has created its tables in the database yet: no warning, and the command creates nothing."""
    path = write_config(tmp_path, postgres_url)
    result = await check_config(path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == f"{path}: OK\n"
    from dispatcher.engines.postgresql import connect

    conn = connect(postgres_url)
    try:
        row = conn.execute("SELECT to_regclass('instances')").fetchone()
        assert row is not None and row[0] is None
    finally:
        conn.close()


async def test_an_unreachable_store_is_a_warning(tmp_path: Path) -> None:
    """Nothing listens at the URL: one warning that the instances could not be checked, exit 0, OK, and the store
    shown without its user or query."""
    port = free_port()
    path = write_config(tmp_path, f"postgresql://SECRET-user@127.0.0.1:{port}/nowhere?passfile={PASSFILE}")
    result = await check_config(path)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(
        f"{path}: warning: the instances sharing the store postgresql://127.0.0.1:{port}/nowhere"
    )
    assert "could not be checked" in lines[0]
    assert "SECRET" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert result.stdout == f"{path}: OK\n"


def test_an_sqlite_store_is_not_compared(tmp_path: Path) -> None:
    """One instance per SQLite file: nothing to compare, nothing opened (the file is not created)."""
    path = tmp_path / "dispatcher.yaml"
    path.write_text("hostname: a.example.com\nstore:\n  path: state.db\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "dispatcher", "check-config", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert not (tmp_path / "state.db").exists()
