"""A store that refuses to record an outcome (a real fault of the database: a trigger that aborts every UPDATE of the
deliveries, installed and dropped through a second connection to the store) never strands or doubles a delivery;
and a pending row that nothing holds is taken up by the running daemon without a restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from structlog.testing import capture_logs

from dispatcher.delivery.scheduling import SWEEP_INTERVAL_S
from dispatcher.engines import is_url

from .conftest import RunningDaemon, connect_store, holds_for, settled, store_of, wait_until
from .servers import SmtpSink

REFUSE_UPDATES = (
    "CREATE TRIGGER refuse_delivery_updates BEFORE UPDATE ON deliveries"
    " BEGIN SELECT RAISE(ABORT, 'database or disk is full (test)'); END"
)
# The same trigger in PostgreSQL's words, and how each engine drops it.
REFUSE_UPDATES_PG = (
    "CREATE FUNCTION refuse_delivery_updates() RETURNS trigger LANGUAGE plpgsql AS"
    " 'BEGIN RAISE EXCEPTION ''database or disk is full (test)''; END';"
    " CREATE TRIGGER refuse_delivery_updates BEFORE UPDATE ON deliveries"
    " FOR EACH ROW EXECUTE FUNCTION refuse_delivery_updates()"
)
ALLOW_UPDATES = "DROP TRIGGER refuse_delivery_updates"
ALLOW_UPDATES_PG = "DROP TRIGGER refuse_delivery_updates ON deliveries"


async def submit(daemon: RunningDaemon, http: aiohttp.ClientSession, **event: Any) -> str:
    response = await http.post(f"{daemon.base_url}/api/v1/events", json=event, headers=daemon.auth)
    assert response.status == 202, await response.text()
    return str((await response.json())["id"])


async def record(daemon: RunningDaemon, http: aiohttp.ClientSession, event_id: str) -> dict[str, Any]:
    response = await http.get(
        f"{daemon.base_url}/api/v1/deliveries", params={"event_id": event_id}, headers=daemon.auth
    )
    (row,) = (await response.json())["deliveries"]
    return dict(row)


async def pending_gauge(daemon: RunningDaemon, http: aiohttp.ClientSession) -> float:
    text = await (await http.get(f"{daemon.base_url}/metrics")).text()
    (line,) = [line for line in text.splitlines() if line.startswith("dispatcher_deliveries_pending ")]
    return float(line.split()[1])


def on_the_side(db: Path | str, sql: str, *params: Any) -> None:
    """Run one statement through a connection of our own to the daemon's store, as another program would."""
    with connect_store(db) as conn:
        if params or not is_url(db):
            conn.execute(sql, params)
        else:
            conn.raw.execute(sql)  # PostgreSQL's own text, two statements at once


def email_config(make_config: Callable[..., Path], smtp: SmtpSink) -> Path:
    return make_config(
        channels={"email": {"host": "127.0.0.1", "port": smtp.port, "from": "Server <root@test.example.com>"}},
        contacts={"root": {"email": ["root@example.com"]}},
    )


@pytest.mark.slow
async def test_an_outcome_the_store_refuses_is_kept_and_recorded_once_it_can_be(
    make_config: Callable[..., Path], start_daemon: Any, http: aiohttp.ClientSession
) -> None:
    """The mail goes out while every write of a delivery's outcome fails: the outcome is kept and written again,
    with backoff, until it lands. Meanwhile the row stays pending and in hand, so no sweep sends it again (over
    two sweeps); once the fault is gone the record ends sent, after 1 attempt, and the mail arrived once."""
    async with SmtpSink() as smtp:
        config = email_config(make_config, smtp)
        db = store_of(config)
        daemon = await start_daemon(config)
        await asyncio.to_thread(on_the_side, db, REFUSE_UPDATES_PG if is_url(db) else REFUSE_UPDATES)
        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            event_id = await submit(daemon, http, type="Backup/Failure", id="refused-record")
            await smtp.wait_for(1)
            await wait_until(lambda: any(line["event"] == "delivery_record_failed" for line in logs))
            # Two sweeps come and go (the scheduler has no hook to make them sooner): neither may send it again.
            await holds_for(lambda: len(smtp.messages) == 1, 2 * SWEEP_INTERVAL_S + 0.5)
            row = await record(daemon, http, event_id)
            assert (row["status"], row["attempts"]) == ("pending", 0)
            await asyncio.to_thread(on_the_side, db, ALLOW_UPDATES_PG if is_url(db) else ALLOW_UPDATES)
            await wait_until(lambda: _status_is(daemon, http, event_id, "sent"), timeout_s=10)
        row = await record(daemon, http, event_id)
        assert row["attempts"] == 1
        failures = [line for line in logs if line["event"] == "delivery_record_failed"]
        assert len(failures) >= 2 and "database or disk is full (test)" in failures[0]["error"]
        waits = [line["retry_in_s"] for line in failures]
        assert waits == sorted(waits) and waits[0] < waits[-1]  # backing off
        await settled(daemon)
        assert len(smtp.messages) == 1
        assert await pending_gauge(daemon, http) == 0


async def _status_is(daemon: RunningDaemon, http: aiohttp.ClientSession, event_id: str, status: str) -> bool:
    return (await record(daemon, http, event_id))["status"] == status


async def test_a_pending_row_that_nothing_holds_is_sent_without_a_restart(
    make_config: Callable[..., Path], start_daemon: Any, http: aiohttp.ClientSession
) -> None:
    """A row left pending with no attempt under way and none scheduled (attempts 0, due: what a lost outcome used to
    leave until the next start) is found by the scheduler's sweep and sent within a few seconds; the pending gauge,
    which the sweep sets from the store's count, ends at 0 (not -1 for a row it never saw planned)."""
    async with SmtpSink() as smtp:
        config = email_config(make_config, smtp)
        db = store_of(config)
        daemon = await start_daemon(config)
        event_id = await submit(daemon, http, type="Backup/Failure", id="stranded")
        await smtp.wait_for(1)
        await wait_until(lambda: _status_is(daemon, http, event_id, "sent"))
        await wait_until(lambda: _gauge_is(daemon, http, 0))
        stranded_at = time.time()
        await asyncio.to_thread(
            on_the_side,
            db,
            "UPDATE deliveries SET status = 'pending', attempts = 0, sent_at = NULL, next_attempt_at = ?"
            " WHERE event_id = ?",
            stranded_at,
            event_id,
        )
        started = time.monotonic()
        (_, again) = await smtp.wait_for(2, timeout_s=SWEEP_INTERVAL_S + 5)
        print(f"the stranded row was sent {time.monotonic() - started:.2f} s later")
        assert again.message["X-Dispatcher-Event-Id"] == event_id
        await wait_until(lambda: _status_is(daemon, http, event_id, "sent"))
        assert (await record(daemon, http, event_id))["attempts"] == 1
        await wait_until(lambda: _gauge_is(daemon, http, 0), timeout_s=SWEEP_INTERVAL_S + 5)
        await settled(daemon)
        assert len(smtp.messages) == 2


async def _gauge_is(daemon: RunningDaemon, http: aiohttp.ClientSession, value: float) -> bool:
    return await pending_gauge(daemon, http) == value
