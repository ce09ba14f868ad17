"""The daemon as a process: SIGKILL in the middle of a burst loses nothing; SIGTERM stops cleanly with exit 0."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt

from .brokers import Mosquitto
from .conftest import connect_store, store_of, wait_until

BURST = 5000


def count_events(db: Path | str) -> tuple[int, int]:
    """(rows, distinct ids) in the store (a file or a database); 0s while the file does not exist yet."""
    if isinstance(db, Path) and not db.exists():
        return 0, 0
    with connect_store(db) as conn:
        return conn.execute("SELECT count(*), count(DISTINCT id) FROM events").fetchone()


def is_stored(db: Path | str, event_id: str) -> bool:
    with connect_store(db) as conn:
        return conn.execute("SELECT count(*) FROM events WHERE id = ?", (event_id,)).fetchone()[0] == 1


async def test_sigkill_during_a_burst_loses_no_acknowledged_event(
    mosquitto: Mosquitto, make_config: Callable[..., Path], daemon_process: Any
) -> None:
    """5,000 events, the daemon killed mid-burst and restarted: every event the broker took is stored exactly once."""
    config = make_config()
    db = store_of(config)
    daemon = daemon_process(config)
    daemon.start()
    await wait_until(lambda: b"bus_connected" in daemon.log_path.read_bytes(), timeout_s=20)

    async def publish(event_ids: list[str]) -> None:
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, protocol=aiomqtt.ProtocolVersion.V5) as client:
            for event_id in event_ids:
                await client.publish("events/Backup/Failure", json.dumps({"id": event_id}).encode(), qos=1)

    publisher = asyncio.create_task(publish([f"burst-{i}" for i in range(BURST)]))
    await wait_until(lambda: count_events(db)[0] >= BURST // 5, timeout_s=30)
    daemon.kill()
    killed_at = count_events(db)[0]
    await publisher  # the broker queues the rest for the daemon's persistent session
    assert killed_at < BURST, "the burst finished before the kill; the test proves nothing"

    daemon.start()
    await wait_until(lambda: count_events(db)[0] >= BURST, timeout_s=60)
    # The broker sends its session's messages in order, redeliveries first: once a marker published now is stored,
    # anything redelivered from before the kill has been handled too.
    await publish(["after-the-burst"])
    await wait_until(lambda: is_stored(db, "after-the-burst"), timeout_s=30)
    assert count_events(db) == (BURST + 1, BURST + 1)
    assert daemon.terminate() == 0


async def test_sigterm_stops_intake_closes_the_store_and_exits_0(
    mosquitto: Mosquitto, make_config: Callable[..., Path], daemon_process: Any
) -> None:
    """SIGTERM: the log says it stopped, the exit status is 0 and the store is consistent (SQLite's integrity
    check; on PostgreSQL, the daemon's session has ended and released its instance lock)."""
    config = make_config()
    daemon = daemon_process(config)
    daemon.start()
    await wait_until(lambda: b"bus_connected" in daemon.log_path.read_bytes(), timeout_s=20)
    assert daemon.terminate() == 0
    logs = daemon.logs()
    assert '"event": "stopped"' in logs or "stopped" in logs
    with connect_store(config) as conn:
        if isinstance(conn, sqlite3.Connection):
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        else:
            assert conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone() == (0,)


def test_run_with_a_bad_config_exits_1_with_one_line(tmp_path: Path) -> None:
    """A config error is reported as FILE:LINE:COL lines on stderr and the daemon does not start."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("bus:\n  url: ftp://nowhere\n")
    result = subprocess.run(
        [sys.executable, "-m", "dispatcher", "run", "-c", str(bad)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1
    assert f"{bad}:2:" in result.stderr
    assert "Traceback" not in result.stderr
