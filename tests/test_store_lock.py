"""One store, one instance (SPEC §8a): the daemon holds an exclusive lock on its store file while it runs.

A second daemon on the same store refuses with one line and exit 1, before it joins the bus or sends anything;
the first goes on delivering and every event is sent exactly once. Read-only opens (`routes`, `test`,
`deliveries`) and writers that change a running daemon's store on purpose (`retry`) are not blocked.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import yaml

from dispatcher.store import Store, StoreInUse

from .brokers import Mosquitto, free_port
from .conftest import wait_until
from .servers import WebhookSink

EVENTS = 10

# Every test here is about the lock file beside an SQLite store (PostgreSQL's advisory lock: test_store_engines.py).
pytestmark = pytest.mark.sqlite_only


def in_use_line(db: Path, pid: int) -> str:
    return f"dispatcher: the store {db} is in use by another dispatcher (pid {pid}); one store serves one instance"


async def test_a_second_exclusive_open_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    """Two exclusive opens of one file (two daemons embedded in one process, say): the second raises StoreInUse
    naming this process's pid; once the first closes, it opens."""
    db = tmp_path / "state" / "dispatcher.db"
    first, second = Store(db), Store(db)
    await first.open(exclusive=True)
    try:
        with pytest.raises(StoreInUse) as caught:
            await second.open(exclusive=True)
        assert str(caught.value) == in_use_line(db, os.getpid()).removeprefix("dispatcher: ")
        assert not second.is_open
        assert (db.parent / "dispatcher.db.lock").read_text() == f"{os.getpid()}\n"
    finally:
        await first.close()
    await second.open(exclusive=True)
    await second.close()


async def test_read_only_and_plain_opens_are_not_blocked(tmp_path: Path) -> None:
    """While the daemon's store is open exclusively, a read-only store (`routes`, `deliveries`) and a plain
    writable one (`retry` changing rows for the daemon to pick up) open, read and write."""
    db = tmp_path / "dispatcher.db"
    daemon = Store(db)
    await daemon.open(exclusive=True)
    try:
        reader, writer = Store(db, readonly=True), Store(db)
        await reader.open(exclusive=True)  # ignored for a read-only store
        await writer.open()
        await writer.run(lambda conn: conn.execute("CREATE TABLE IF NOT EXISTS marks (n INTEGER)"))
        await writer.run(lambda conn: conn.execute("INSERT INTO marks VALUES (1)"))
        assert await reader.run(lambda conn: conn.execute("SELECT count(*) FROM marks").fetchone()[0]) == 1
        await reader.close()
        await writer.close()
    finally:
        await daemon.close()


HOLDER = textwrap.dedent(
    """
    import asyncio, sys
    from dispatcher.store import Store

    async def main():
        store = Store(sys.argv[1])
        await store.open(exclusive=True)
        print("locked", flush=True)
        await asyncio.sleep(120)

    asyncio.run(main())
    """
)


async def test_the_lock_dies_with_its_process(tmp_path: Path) -> None:
    """A daemon killed with SIGKILL leaves no lock behind: the kernel drops it with the process, so a restart
    after a crash needs no clean-up (the lock file itself stays, naming the dead pid, and is harmless)."""
    db = tmp_path / "dispatcher.db"
    holder = await asyncio.create_subprocess_exec(sys.executable, "-c", HOLDER, str(db), stdout=subprocess.PIPE)
    assert holder.stdout is not None
    try:
        async with asyncio.timeout(30):
            while (line := await holder.stdout.readline()) != b"locked\n":  # the store logs its own lines first
                assert line, "the holder exited before it took the lock"
        with pytest.raises(StoreInUse, match=f"pid {holder.pid}"):
            await Store(db).open(exclusive=True)
    finally:
        holder.send_signal(signal.SIGKILL)
        await holder.wait()
    store = Store(db)
    await store.open(exclusive=True)
    await store.close()


def sends_by_event(webhook: WebhookSink) -> collections.Counter[str]:
    return collections.Counter(request.form["event_id"] for request in webhook.requests)


def delivery_statuses(db: Path) -> collections.Counter[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        return collections.Counter(status for (status,) in conn.execute("SELECT status FROM deliveries"))


async def test_a_second_daemon_on_the_same_store_refuses_and_each_event_is_sent_once(
    mosquitto: Mosquitto, make_config: Callable[..., Path], daemon_process: Any
) -> None:
    """Ten deliveries wait for their retry (the receiver answered 503) when a second `dispatcher run` starts on
    the same config (the same store, bus and client id; only its HTTP port differs): it exits 1 with one line on
    stderr naming the store and the first daemon's pid, without joining the bus. The first keeps its MQTT session
    and delivers each event exactly once."""
    async with WebhookSink() as webhook:
        webhook.respond(*[(503, {}, "busy")] * EVENTS)
        config = make_config(
            delivery={"max_attempts": 5, "backoff_initial_s": 1.5, "backoff_max_s": 1.5, "give_up_after_s": 60},
            contacts={"root": {"posturl": [f"{webhook.url}/notify"]}},
        )
        db = config.parent / "dispatcher.db"
        first = daemon_process(config)
        first.start()
        await wait_until(lambda: b"bus_connected" in first.log_path.read_bytes(), timeout_s=20)
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
            for n in range(EVENTS):
                await client.publish("events/Backup/Failure", json.dumps({"id": f"once-{n}"}).encode(), qos=1)
        await webhook.wait_for(EVENTS, timeout_s=20)  # every first attempt refused: ten retries are waiting

        # The same file but another HTTP port, so that only the store can stop it (the same port would too).
        document = yaml.safe_load(config.read_text())
        document["http"]["listen"] = f"127.0.0.1:{free_port()}"
        other = config.with_name("second.yaml")
        other.write_text(yaml.safe_dump(document, sort_keys=False))
        # Run while this loop goes on serving the webhook: the first daemon's retries fall due meanwhile.
        second = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dispatcher", "run", "-c", str(other), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            async with asyncio.timeout(60):
                stdout, stderr = await second.communicate()
        finally:
            if second.returncode is None:  # it did not refuse: stop it, so it does not outlive the test
                second.kill()
                await second.wait()
        assert second.returncode == 1
        assert stderr.decode().splitlines() == [in_use_line(db, first.process.pid)]
        assert b"bus_connected" not in stdout and b"http_listening" not in stdout

        await wait_until(lambda: len(webhook.requests) >= 2 * EVENTS, timeout_s=30)
        await wait_until(lambda: delivery_statuses(db) == {"sent": EVENTS}, timeout_s=10)
        # No wait for a repeat: the second process has exited (refused before it could send), and the first has
        # recorded every delivery sent.
        assert sends_by_event(webhook) == {f"once-{n}": 2 for n in range(EVENTS)}  # one 503, one 200 each
        assert first.process.poll() is None
        assert first.logs().count('"bus_connected"') == 1  # never kicked off the bus by a second session
        assert first.terminate() == 0
