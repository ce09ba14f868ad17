"""Shared fixtures: a real mosquitto per test, config files, the daemon embedded or as a process.

The store's engine under test: SQLite, or PostgreSQL when `DISPATCHER_TEST_STORE=postgresql` (`scripts/test` runs
the store's tests once more so). Then `make_config` and `store_where` give each test a database of its own on a
PostgreSQL server the session starts (`tests/postgres.py`), and only the tests that use a store are collected; a
test marked `sqlite_only` (it looks at the SQLite file itself: its lock, its pages, its header) is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from dispatcher.app import Dispatcher
from dispatcher.config import load_config
from dispatcher.engines import is_url

from .brokers import Mosquitto, free_port, wait_for_port
from .postgres import PostgresServer, find_bindir

API_TOKEN = "test-token-5f2c"

ENGINE = os.environ.get("DISPATCHER_TEST_STORE", "sqlite")
if ENGINE not in ("sqlite", "postgresql"):
    raise pytest.UsageError(f"DISPATCHER_TEST_STORE must be sqlite or postgresql, not {ENGINE!r}")
# The fixtures through which a test gets a store: in a PostgreSQL run, the tests that use none are left out.
STORE_FIXTURES = frozenset({"make_config", "store_where", "postgres_url"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if ENGINE != "postgresql":
        return
    kept, left_out = [], []
    for item in items:
        (kept if STORE_FIXTURES & set(getattr(item, "fixturenames", ())) else left_out).append(item)
        if item.get_closest_marker("sqlite_only"):
            item.add_marker(pytest.mark.skip(reason="looks at the SQLite file itself (run with the SQLite store)"))
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the whole session, started when a test first needs it; skips the test when the
    server's binaries are not installed (`scripts/setup` installs them), unless this run is the PostgreSQL one."""
    bindir = find_bindir()
    if bindir is None:
        message = "PostgreSQL's server binaries (initdb, postgres) are not installed: run scripts/setup"
        if ENGINE == "postgresql":
            pytest.fail(message)
        pytest.skip(message)
    server = PostgresServer(bindir)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database of its own for the test, dropped after it."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)


@pytest.fixture
def store_where(tmp_path: Path, request: pytest.FixtureRequest) -> Path | str:
    """Where this test's store is, on the engine under test: a file in the test's directory, or a fresh database."""
    if ENGINE == "postgresql":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return tmp_path / "dispatcher.db"


def store_of(config_path: Path) -> Path | str:
    """Where the daemon of the config file `config_path` keeps its store."""
    return load_config(config_path).store.where


@contextlib.contextmanager
def connect_store(where: Path | str) -> Iterator[Any]:
    """A connection to the store at `where` (a path, a URL, or a config file's path), for a test to read or change
    rows beside the daemon, on either engine: `execute` with `?` placeholders, in autocommit mode."""
    if isinstance(where, Path) and where.suffix in (".yaml", ".yml"):
        where = store_of(where)
    if is_url(where):
        from dispatcher.engines.postgresql import connect

        conn = connect(str(where))
    else:
        conn = sqlite3.connect(where, timeout=10, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A mosquitto of our own on a free loopback port, stopped after the test."""
    state = tmp_path / "broker"
    state.mkdir()
    broker = Mosquitto(state)
    broker.start()
    yield broker
    broker.stop()


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@pytest.fixture
def make_config(tmp_path: Path, mosquitto: Mosquitto, store_where: Path | str) -> Callable[..., Path]:
    """Write a config file for this test's broker and a fresh store (on the engine under test); keyword sections are
    merged over the base. A `store` section that names a `path` keeps the store in that SQLite file."""
    store = {"url": store_where} if is_url(store_where) else {"path": "dispatcher.db"}

    def make(name: str = "dispatcher.yaml", **sections: Any) -> Path:
        (tmp_path / "api.token").write_text(API_TOKEN + "\n")
        base = {
            "hostname": "test.example.com",
            "bus": {
                "url": mosquitto.url,
                "client_id": f"dispatcher-test-{uuid.uuid4().hex[:8]}",
                "topic_prefix": "events",
                "dead_letter_topic": "events-dead-letter",
            },
            "http": {"listen": f"127.0.0.1:{free_port()}", "token_file": "api.token"},
            "store": {} if "path" in sections.get("store", {}) else dict(store),
        }
        path = tmp_path / name
        path.write_text(yaml.safe_dump(_merge(base, sections), sort_keys=False))
        return path

    return make


async def wait_until(predicate: Callable[[], Any], timeout_s: float = 10.0, interval_s: float = 0.02) -> None:
    """Poll `predicate` (sync or async) until it is truthy; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(interval_s)


async def holds_for(predicate: Callable[[], Any], duration_s: float, interval_s: float = 0.02) -> None:
    """Check `predicate` (sync) all through `duration_s`; fail the test as soon as it is false.

    A bounded wait, for what must NOT happen (a repeat that must not arrive) when there is no event to wait on
    instead: it proves only that nothing happened within `duration_s`, so keep that short, and wait first for
    whatever can be waited on (`settled`, a server's `wait_for`)."""
    deadline = time.monotonic() + duration_s
    while True:
        assert predicate(), f"stopped holding within {duration_s}s"
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(interval_s)


def outbox_settled(conn: Any) -> bool:
    """Every stored event is planned and no delivery is pending: the daemon has nothing left to send (an outcome is
    recorded only once its send has ended, and a failure notice is stored in the same transaction as the failure
    it is about)."""
    unplanned = conn.execute("SELECT count(*) FROM events WHERE planned = 0").fetchone()[0]
    pending = conn.execute("SELECT count(*) FROM deliveries WHERE status = 'pending'").fetchone()[0]
    return bool(unplanned == 0 and pending == 0)


def store_settled(where: Path | str) -> bool:
    """`outbox_settled`, read beside a daemon that runs as a process of its own (`where` as `connect_store` takes
    it: the daemon's config file will do)."""
    with connect_store(where) as conn:
        return outbox_settled(conn)


async def settled(daemon: RunningDaemon, timeout_s: float = 10.0) -> None:
    """Wait until the embedded daemon has nothing left to send (`outbox_settled`): then what has not arrived
    will not, and no fixed sleep is needed to show it."""
    await wait_until(lambda: daemon.dispatcher.store.run(outbox_settled), timeout_s=timeout_s)


class RunningDaemon:
    """The daemon embedded in the test's event loop, with helpers to reach its HTTP side."""

    def __init__(self, dispatcher: Dispatcher, task: asyncio.Task[None]) -> None:
        self.dispatcher = dispatcher
        self.task = task

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.dispatcher.http_port}"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {API_TOKEN}"}

    async def stop(self) -> None:
        """Stop the daemon; one that does not stop within 30 s fails its test, with the stack of every task then
        (where it waits), and its sender processes are killed so that they do not outlive it and show up in the next
        test's process counts."""
        self.dispatcher.stop()
        try:
            done, _ = await asyncio.wait({self.task}, timeout=30)
            if not done:
                print("the daemon did not stop within 30 s; its tasks:")
                for task in asyncio.all_tasks():
                    task.print_stack(limit=8, file=sys.stdout)
            await asyncio.wait_for(self.task, 0.1)
        except BaseException:
            for pid in getattr(self.dispatcher.pipeline.sender, "pids", ()):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            raise


@pytest.fixture
async def start_daemon() -> AsyncIterator[Callable[[Path], Any]]:
    """Start an embedded daemon from a config file and wait until it is ready; stopped after the test."""
    running: list[RunningDaemon] = []

    async def start(config_path: Path, *, wait_ready: bool = True) -> RunningDaemon:
        dispatcher = Dispatcher(load_config(config_path))
        await dispatcher.start()
        task = asyncio.create_task(dispatcher.run(), name="daemon-under-test")
        daemon = RunningDaemon(dispatcher, task)
        running.append(daemon)
        if wait_ready:
            await wait_until(lambda: dispatcher.ready or task.done())
            if task.done():
                task.result()
        return daemon

    yield start
    for daemon in running:
        if not daemon.task.done():
            await daemon.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class DaemonProcess:
    """`python -m dispatcher run -c FILE` as a child process, for crash and signal tests."""

    def __init__(self, config_path: Path, log_path: Path) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.http_port = int(load_config(config_path).http.listen_port)

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                [sys.executable, "-m", "dispatcher", "run", "-c", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        wait_for_port(self.http_port, timeout_s=20)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def terminate(self, timeout_s: float = 30) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout_s)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def daemon_process(tmp_path: Path) -> Iterator[Callable[[Path], DaemonProcess]]:
    processes: list[DaemonProcess] = []

    def make(config_path: Path) -> DaemonProcess:
        process = DaemonProcess(config_path, tmp_path / f"daemon-{len(processes)}.log")
        processes.append(process)
        return process

    yield make
    for process in processes:
        if process.process is not None and process.process.poll() is None:
            process.process.kill()
            process.process.wait()
