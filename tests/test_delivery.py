"""Delivery end to end: events in, messages at real servers (aiosmtpd, aiohttp), every outcome recorded."""

from __future__ import annotations

import asyncio
import collections
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest
import structlog
from structlog.testing import capture_logs

from dispatcher.config import DeliveryConfig
from dispatcher.delivery.planning import PLAN_ROWS
from dispatcher.delivery.scheduling import BACKLOG_HIGH

from .brokers import Mosquitto
from .conftest import RunningDaemon, connect_store, holds_for, settled, store_of, store_settled, wait_until
from .servers import FakePushbullet, SmtpSink, WebhookSink

PUSH_TOKEN = "o.pushbullet-token-under-test"
FAST_RETRIES = {"max_attempts": 5, "backoff_initial_s": 0.05, "backoff_max_s": 0.2, "give_up_after_s": 60}


@pytest.fixture
async def smtp() -> Any:
    async with SmtpSink() as sink:
        yield sink


@pytest.fixture
async def webhook() -> Any:
    async with WebhookSink() as sink:
        yield sink


@pytest.fixture
async def pushbullet() -> Any:
    async with FakePushbullet([PUSH_TOKEN]) as api:
        yield api


def channels_for(smtp: SmtpSink, pushbullet: FakePushbullet | None = None) -> dict[str, Any]:
    channels: dict[str, Any] = {
        "email": {"host": "127.0.0.1", "port": smtp.port, "from": "Server <root@test.example.com>"}
    }
    if pushbullet is not None:
        channels["pushbullet"] = {"api_url": pushbullet.api_url}
    return channels


async def submit(daemon: RunningDaemon, http: aiohttp.ClientSession, **event: Any) -> str:
    response = await http.post(f"{daemon.base_url}/api/v1/events", json=event, headers=daemon.auth)
    assert response.status == 202, await response.text()
    return str((await response.json())["id"])


async def deliveries(daemon: RunningDaemon, http: aiohttp.ClientSession, **query: str) -> list[dict[str, Any]]:
    response = await http.get(f"{daemon.base_url}/api/v1/deliveries", params=query, headers=daemon.auth)
    assert response.status == 200
    return list((await response.json())["deliveries"])


async def test_an_email_arrives_with_the_headers_and_parts_of_the_spec(
    make_config: Callable[..., Path], start_daemon: Any, http: aiohttp.ClientSession, smtp: SmtpSink
) -> None:
    """Backup/Failure to root by email: multipart/alternative text + HTML, UTF-8, the dispatcher headers, one record."""
    config = make_config(channels=channels_for(smtp), contacts={"root": {"email": ["admin@example.com"]}})
    daemon = await start_daemon(config)
    event_id = await submit(daemon, http, type="Backup/Failure", id="b-1", data={"error": "disk full ü"})
    (mail,) = await smtp.wait_for(1)
    message = mail.message
    assert mail.rcpt_tos == ("admin@example.com",)
    assert message["From"] == "Server <root@test.example.com>"
    assert message["X-Dispatcher-Event-Id"] == event_id
    assert message["X-Dispatcher-Event-Type"] == "Backup/Failure"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Message-ID"] and message["Date"]
    assert message["Subject"].startswith("[test.example.com]")
    assert message.get_content_type() == "multipart/alternative"
    text, html = message.get_payload()
    assert (text.get_content_type(), html.get_content_type()) == ("text/plain", "text/html")
    assert text.get_content_charset() == "utf-8"
    assert "disk full ü" in text.get_content()
    await wait_until(lambda: _statuses(daemon, http, event_id, {"sent"}))
    (record,) = await deliveries(daemon, http, event_id=event_id)
    assert (record["recipient"], record["channel"], record["target"], record["attempts"]) == (
        "root",
        "email",
        "admin@example.com",
        1,
    )


async def _statuses(daemon: RunningDaemon, http: aiohttp.ClientSession, event_id: str, wanted: set[str]) -> bool:
    rows = await deliveries(daemon, http, event_id=event_id)
    return bool(rows) and {row["status"] for row in rows} <= wanted


async def test_a_webhook_that_fails_three_times_gets_the_message_once_after_backoff(
    make_config: Callable[..., Path],
    start_daemon: Any,
    http: aiohttp.ClientSession,
    smtp: SmtpSink,
    webhook: WebhookSink,
) -> None:
    """503, 503, 503, then 200: four attempts, spaced by the backoff, and the record says sent after 4."""
    webhook.respond((503, {}, "busy"), (503, {}, "busy"), (503, {}, "busy"))
    config = make_config(
        channels=channels_for(smtp),
        delivery=FAST_RETRIES,
        contacts={"root": {"posturl": [f"{webhook.url}/notify?key=abc"], "receives": {"posturl": "all"}}},
    )
    daemon = await start_daemon(config)
    started = time.monotonic()
    event_id = await submit(daemon, http, type="Backup/Failure", data={"error": "x"})
    requests = await webhook.wait_for(4)
    # Each of the three waits is at least backoff_initial_s.
    assert time.monotonic() - started >= 3 * FAST_RETRIES["backoff_initial_s"]
    await wait_until(lambda: _statuses(daemon, http, event_id, {"sent"}))
    (record,) = await deliveries(daemon, http, event_id=event_id)
    assert record["attempts"] == 4 and record["status"] == "sent"
    assert record["target"] != f"{webhook.url}/notify?key=abc" and "abc" not in record["target"]
    assert all(request.form["event_id"] == event_id for request in requests)
    assert requests[-1].form["key"] == "abc"  # the query string moved into the body
    await holds_for(lambda: len(webhook.requests) == 4, 0.3)  # sent once: nothing after the 200


async def test_deliveries_shows_when_a_waiting_delivery_is_tried_next(
    make_config: Callable[..., Path], start_daemon: Any, http: aiohttp.ClientSession, webhook: WebhookSink
) -> None:
    """A delivery waiting for its retry is listed by `dispatcher deliveries` with the time of its next attempt;
    finished ones show none."""
    webhook.respond((503, {}, "busy"))
    config = make_config(
        delivery={"backoff_initial_s": 600, "backoff_max_s": 600},
        contacts={"root": {"posturl": [webhook.url], "receives": {"posturl": "all"}}},
    )
    daemon = await start_daemon(config)
    event_id = await submit(daemon, http, type="Backup/Failure", data={"error": "x"})
    await webhook.wait_for(1)
    await wait_until(lambda: _attempted(daemon, http, event_id))
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "dispatcher", "deliveries", "-c", str(config), "--event", event_id],
        capture_output=True,
        text=True,
        timeout=60,
    )
    header, row = result.stdout.splitlines()
    assert "next attempt" in header
    next_at = datetime.strptime(row[header.index("next attempt") :].split("  ")[0], "%Y-%m-%d %H:%M:%S")
    wait_s = (next_at.replace(tzinfo=UTC) - datetime.now(UTC)).total_seconds()
    assert 60 < wait_s <= 600, (row, wait_s)  # the backoff (with jitter) from the first failure


async def _attempted(daemon: RunningDaemon, http: aiohttp.ClientSession, event_id: str) -> bool:
    rows = await deliveries(daemon, http, event_id=event_id)
    return bool(rows) and rows[0]["attempts"] == 1


async def test_a_permanent_failure_fails_at_once_and_root_hears_of_it(
    make_config: Callable[..., Path],
    start_daemon: Any,
    http: aiohttp.ClientSession,
    smtp: SmtpSink,
    webhook: WebhookSink,
) -> None:
    """HTTP 400 is permanent: failed after one attempt, and iContact/SendIMFailed reaches root by email."""
    webhook.respond((400, {}, "bad request"))
    config = make_config(
        channels=channels_for(smtp),
        delivery=FAST_RETRIES,
        contacts={"root": {"email": ["root@example.com"], "posturl": [webhook.url], "receives": {"posturl": "all"}}},
    )
    daemon = await start_daemon(config)
    event_id = await submit(daemon, http, type="Backup/Failure", data={"error": "x"})
    mails = await smtp.wait_for(2)
    types = sorted(mail.message["X-Dispatcher-Event-Type"] for mail in mails)
    assert types == ["Backup/Failure", "iContact/SendIMFailed"]
    await wait_until(lambda: _statuses(daemon, http, event_id, {"sent", "failed"}))
    failed = [row for row in await deliveries(daemon, http, event_id=event_id) if row["channel"] == "posturl"]
    assert failed[0]["status"] == "failed" and failed[0]["attempts"] == 1
    assert "400" in failed[0]["reason"]
    notice = next(mail for mail in mails if mail.message["X-Dispatcher-Event-Type"] == "iContact/SendIMFailed")
    assert event_id in notice.message.get_payload()[0].get_content()


async def test_a_failing_failure_notice_does_not_loop(
    make_config: Callable[..., Path],
    start_daemon: Any,
    http: aiohttp.ClientSession,
    smtp: SmtpSink,
    webhook: WebhookSink,
) -> None:
    """When the SendIMFailed notice itself cannot be delivered, no further notice is raised about it."""
    webhook.respond(*[(400, {}, "no")] * 5)
    config = make_config(
        channels=channels_for(smtp),
        delivery=FAST_RETRIES,
        contacts={"root": {"posturl": [webhook.url], "receives": {"posturl": "all"}}},
    )
    daemon = await start_daemon(config)
    await submit(daemon, http, type="Backup/Failure")
    await webhook.wait_for(2)
    await settled(daemon)  # a notice about the failed notice would be stored with that failure, and sent by now
    assert len(webhook.requests) == 2
    failed = await deliveries(daemon, http, status="failed")
    assert sorted(row["event_type"] for row in failed) == ["Backup/Failure", "iContact/SendIMFailed"]


async def test_mail_waits_for_an_smtp_server_that_is_down(
    make_config: Callable[..., Path], start_daemon: Any, http: aiohttp.ClientSession, smtp: SmtpSink
) -> None:
    """The SMTP server is down for a while: every message is kept pending and arrives once it is back."""
    await smtp.stop()
    config = make_config(
        channels=channels_for(smtp),
        delivery={"max_attempts": 50, "backoff_initial_s": 0.1, "backoff_max_s": 0.5, "give_up_after_s": 60},
        contacts={"root": {"email": ["root@example.com", "ops@example.com"]}},
    )
    daemon = await start_daemon(config)
    ids = [await submit(daemon, http, type="Backup/Failure", id=f"down-{i}") for i in range(10)]

    async def each_tried_twice() -> bool:
        rows = await deliveries(daemon, http)
        return len(rows) == 20 and all(row["attempts"] >= 2 for row in rows)

    await wait_until(each_tried_twice)
    assert {row["status"] for row in await deliveries(daemon, http)} == {"pending"}
    assert await pending_gauge(daemon, http) == 20
    await smtp.start()
    mails = await smtp.wait_for(20, timeout_s=15)
    assert collections.Counter(mail.message["X-Dispatcher-Event-Id"] for mail in mails) == {i: 2 for i in ids}
    await wait_until(lambda: _no_pending_gauge(daemon, http))


async def _no_pending_gauge(daemon: RunningDaemon, http: aiohttp.ClientSession) -> bool:
    return await pending_gauge(daemon, http) == 0


async def pending_gauge(daemon: RunningDaemon, http: aiohttp.ClientSession) -> float:
    """The outbox depth as /metrics reports it."""
    text = await (await http.get(f"{daemon.base_url}/metrics")).text()
    (line,) = [line for line in text.splitlines() if line.startswith("dispatcher_deliveries_pending ")]
    return float(line.split()[1])


async def test_pushbullet_notes_and_a_refused_token(
    make_config: Callable[..., Path],
    start_daemon: Any,
    http: aiohttp.ClientSession,
    smtp: SmtpSink,
    pushbullet: FakePushbullet,
    tmp_path: Path,
) -> None:
    """A good token gets a note with the subject and text; a refused one fails at once, saying so without the token."""
    (tmp_path / "good.token").write_text(PUSH_TOKEN + "\n")
    (tmp_path / "bad.token").write_text("o.refused-token\n")
    config = make_config(
        channels=channels_for(smtp, pushbullet),
        delivery=FAST_RETRIES,
        contacts={
            "root": {
                "pushbullet": [{"token_file": "good.token"}, {"token_file": "bad.token"}],
                "receives": {"pushbullet": "all"},
            }
        },
    )
    daemon = await start_daemon(config)
    event_id = await submit(daemon, http, type="Backup/Failure", data={"error": "tape jam"})
    (push,) = await pushbullet.wait_for_pushes(1)
    assert push.token == PUSH_TOKEN
    assert push.request["type"] == "note" and "tape jam" in push.request["body"]
    await wait_until(lambda: _statuses(daemon, http, event_id, {"sent", "failed"}))
    rows = await deliveries(daemon, http, event_id=event_id)
    failed = next(row for row in rows if row["status"] == "failed")
    assert "refused" in failed["reason"] and "o.refused-token" not in json.dumps(rows)


async def test_thresholds_and_routes_are_recorded_as_suppressed(
    make_config: Callable[..., Path], start_daemon: Any, http: aiohttp.ClientSession, smtp: SmtpSink
) -> None:
    """A Low event below a pushbullet threshold of medium is recorded as suppressed with the reason."""
    config = make_config(
        channels=channels_for(smtp),
        importance={"Backup/*": "low"},
        contacts={"root": {"email": ["root@example.com"], "pushbullet": ["o.inline"], "receives": {"email": "high"}}},
    )
    daemon = await start_daemon(config)
    event_id = await submit(daemon, http, type="Backup/Failure")
    await wait_until(lambda: deliveries(daemon, http, event_id=event_id))
    rows = await deliveries(daemon, http, event_id=event_id)
    reasons = sorted((row["channel"], row["status"], row["reason"]) for row in rows)
    assert reasons == [
        ("email", "suppressed", "below threshold high"),
        ("pushbullet", "suppressed", "below threshold medium"),
    ]
    assert smtp.messages == []


async def test_the_test_link_sends_now_on_each_channel(
    make_config: Callable[..., Path],
    start_daemon: Any,
    http: aiohttp.ClientSession,
    smtp: SmtpSink,
    webhook: WebhookSink,
    pushbullet: FakePushbullet,
) -> None:
    """POST /api/v1/test and `dispatcher test` send a test notice to every address of the channel and report it."""
    config = make_config(
        channels=channels_for(smtp, pushbullet),
        contacts={"root": {"email": ["root@example.com"], "pushbullet": [PUSH_TOKEN], "posturl": [webhook.url]}},
    )
    daemon = await start_daemon(config)
    for channel in ("email", "pushbullet", "posturl"):
        response = await http.post(
            f"{daemon.base_url}/api/v1/test", json={"recipient": "root", "channel": channel}, headers=daemon.auth
        )
        body = await response.json()
        assert response.status == 200 and body["ok"], body
    assert len(smtp.messages) == 1 and len(pushbullet.pushes) == 1 and len(webhook.requests) == 1
    assert "Test notification" in smtp.messages[0].message["Subject"]
    assert PUSH_TOKEN not in json.dumps(body)

    response = await http.post(
        f"{daemon.base_url}/api/v1/test", json={"recipient": "nobody", "channel": "email"}, headers=daemon.auth
    )
    assert response.status == 404

    for channel in ("email", "posturl"):
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "dispatcher", "test", "root", channel, "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("sent: root via " + channel)
    assert len(smtp.messages) == 2 and len(webhook.requests) == 2

    # Each notice is recorded beside the other deliveries, the API's three and the command line's two.
    listed = await deliveries(daemon, http)
    assert sorted((row["channel"], row["status"]) for row in listed) == sorted(
        [("email", "sent"), ("pushbullet", "sent"), ("posturl", "sent"), ("email", "sent"), ("posturl", "sent")]
    )
    assert {row["recipient"] for row in listed} == {"root"}
    assert PUSH_TOKEN not in json.dumps(listed)


async def started_on_the_bus(daemon_process: Any, config: Path) -> Any:
    """The daemon as a process of its own, once it has subscribed."""
    daemon = daemon_process(config)
    daemon.start()
    await wait_until(lambda: b"bus_connected" in daemon.log_path.read_bytes(), timeout_s=20)
    return daemon


async def publish_backup_failures(mosquitto: Mosquitto, event_ids: list[str]) -> None:
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, protocol=aiomqtt.ProtocolVersion.V5) as client:
        for event_id in event_ids:
            await client.publish("events/Backup/Failure", json.dumps({"id": event_id}).encode(), qos=1)


async def test_sigkill_with_1000_pending_deliveries_resumes_them_all(
    mosquitto: Mosquitto, make_config: Callable[..., Path], daemon_process: Any
) -> None:
    """1,000 events to a webhook, the daemon SIGKILLed mid-way and restarted: every event arrives, and none whose
    success was recorded arrives twice."""
    async with WebhookSink(delay_s=0.01) as webhook:
        config = make_config(
            channels={"posturl": {"concurrency": 8}},
            contacts={"root": {"posturl": [webhook.url], "receives": {"posturl": "all"}}},
        )
        db = store_of(config)
        daemon = await started_on_the_bus(daemon_process, config)
        await publish_backup_failures(mosquitto, [f"k-{i}" for i in range(1000)])
        await wait_until(lambda: len(webhook.requests) >= 250, timeout_s=60)
        daemon.kill()
        with connect_store(db) as conn:
            recorded_sent = {row[0] for row in conn.execute("SELECT event_id FROM deliveries WHERE status = 'sent'")}
        assert len(recorded_sent) < 1000, "everything was sent before the kill; the test proves nothing"

        daemon.start()
        await wait_until(lambda: len({r.form["event_id"] for r in webhook.requests}) == 1000, timeout_s=90)
        await wait_until(lambda: store_settled(config), timeout_s=30)  # no attempt left that could still arrive
        arrivals = collections.Counter(request.form["event_id"] for request in webhook.requests)
        duplicates = {event_id: n for event_id, n in arrivals.items() if n > 1}
        print(
            f"duplicates after SIGKILL: {len(duplicates)} of 1000"
            f" (recorded as sent before the kill: {len(recorded_sent)})"
        )
        assert not set(duplicates) & recorded_sent
        # At most what was sent and not recorded at the kill: the channel's slots are its concurrency (8) times the
        # sender's lookahead (2 x workers), a slot is freed when the far end answers, before the record is
        # committed, and the channel starts at most twice its slots before their records are written
        # (`Scheduler._unrecorded`), however far the store's commits lag (35 once on a loaded PostgreSQL).
        assert len(duplicates) <= 2 * (2 * DeliveryConfig.workers * 8)
        assert daemon.terminate() == 0


async def test_a_delivery_gives_up_after_max_attempts_or_give_up_after_s(
    make_config: Callable[..., Path], start_daemon: Any, http: aiohttp.ClientSession, smtp: SmtpSink
) -> None:
    """A receiver that keeps answering 503 gets max_attempts tries (the first included), then the delivery fails;
    with a short give_up_after_s it fails sooner, saying why."""
    async with (
        WebhookSink(plan=[(503, {}, "busy")] * 50) as always_busy,
        WebhookSink(plan=[(503, {}, "busy")] * 50) as slow,
    ):
        config = make_config(
            channels=channels_for(smtp),
            delivery={"max_attempts": 3, "backoff_initial_s": 0.05, "backoff_max_s": 0.1, "give_up_after_s": 60},
            contacts={"root": {"posturl": [always_busy.url]}},
        )
        daemon = await start_daemon(config)
        event_id = await submit(daemon, http, type="Backup/Failure")
        await wait_until(lambda: _statuses(daemon, http, event_id, {"failed"}))
        (record,) = await deliveries(daemon, http, event_id=event_id)
        assert record["attempts"] == 3 and record["reason"].startswith("gave up after 3 attempts: ")
        assert sum(request.form["event_id"] == event_id for request in always_busy.requests) == 3
        await daemon.stop()

        config = make_config(
            name="give-up.yaml",
            channels=channels_for(smtp),
            delivery={"max_attempts": 50, "backoff_initial_s": 0.2, "backoff_max_s": 0.2, "give_up_after_s": 0.5},
            contacts={"root": {"posturl": [slow.url]}},
            store={"path": "give-up.db"},
        )
        daemon = await start_daemon(config)
        event_id = await submit(daemon, http, type="Backup/Failure")
        await wait_until(lambda: _statuses(daemon, http, event_id, {"failed"}))
        (record,) = await deliveries(daemon, http, event_id=event_id)
        assert record["reason"].startswith("gave up after 0.5s: ") and record["attempts"] < 50


@pytest.mark.sqlite_only  # the refusal is an SQLite trigger calling a Python function
async def test_a_store_that_refuses_writes_delays_delivery_and_loses_nothing(
    make_config: Callable[..., Path], start_daemon: Any, http: aiohttp.ClientSession, webhook: WebhookSink
) -> None:
    """While the store refuses to record plans (an SQLite error on every delivery insert), the daemon stays up and
    keeps the event; once the store accepts writes again, the event is planned and delivered once."""
    config = make_config(contacts={"root": {"posturl": [webhook.url]}})
    daemon = await start_daemon(config)
    store = daemon.dispatcher.store
    refused: list[int] = []  # one item per refused insert (the trigger calls `refused()` before it aborts)

    def refuse_inserts(conn: sqlite3.Connection) -> None:
        conn.create_function("refused", 0, lambda: refused.append(1))
        conn.execute(
            "CREATE TEMP TRIGGER refuse BEFORE INSERT ON deliveries"
            " BEGIN SELECT refused(); SELECT RAISE(ABORT, 'no room'); END"
        )

    await store.run(refuse_inserts)
    event_id = await submit(daemon, http, type="Backup/Failure")
    await wait_until(lambda: len(refused) >= 2)  # the planner was refused, and again when it tried again
    assert webhook.requests == []
    assert (await http.get(f"{daemon.base_url}/readyz")).status == 200
    await store.run(lambda conn: conn.execute("DROP TRIGGER refuse"))
    (request,) = await webhook.wait_for(1, timeout_s=10)
    assert request.form["event_id"] == event_id
    await settled(daemon)
    assert len(webhook.requests) == 1


@pytest.mark.slow
async def test_a_large_fan_out_is_planned_a_few_events_at_a_time(
    mosquitto: Mosquitto, make_config: Callable[..., Path], daemon_process: Any
) -> None:
    """20 events to 200 URLs each and a slow receiver: the daemon plans only what it can hold (the rest waits in
    the store, unplanned), and every one of the 4,000 messages arrives once the receiver speeds up."""
    async with WebhookSink(delay_s=0.5) as webhook:
        urls = [f"{webhook.url}?n={n}" for n in range(200)]
        config = make_config(
            channels={"posturl": {"concurrency": 8}},
            contacts={"root": {"posturl": urls, "receives": {"posturl": "all"}}},
        )
        db = store_of(config)
        daemon = await started_on_the_bus(daemon_process, config)
        await publish_backup_failures(mosquitto, [f"fan-{i}" for i in range(20)])

        def counts() -> tuple[int, int]:
            with connect_store(db) as conn:
                events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
                deliveries = conn.execute("SELECT count(*) FROM deliveries").fetchone()[0]
            return events, deliveries

        await wait_until(lambda: counts()[0] == 20 and len(webhook.requests) >= 8, timeout_s=30)
        await wait_until(lambda: counts()[1] >= BACKLOG_HIGH, timeout_s=30)  # planned as far as it may go
        # The backlog's bound plus one planning round (its rows, and one more event's plan at most).
        bound = BACKLOG_HIGH + PLAN_ROWS + 200
        assert bound < 20 * 200
        # Planning that ran ahead would go past the bound in milliseconds: a second is ample to see it.
        await holds_for(lambda: counts()[1] <= bound, 1.0, interval_s=0.05)

        webhook.delay_s = 0.0
        await wait_until(lambda: len(webhook.requests) >= 4_000, timeout_s=120)
        await wait_until(lambda: store_settled(config), timeout_s=30)
        arrivals = collections.Counter((r.form["event_id"], r.form["n"]) for r in webhook.requests)
        assert len(arrivals) == 4_000 and max(arrivals.values()) == 1
        assert counts() == (20, 4_000)
        assert daemon.terminate() == 0


async def test_the_journal_has_one_line_per_outcome(
    make_config: Callable[..., Path], start_daemon: Any, http: aiohttp.ClientSession, webhook: WebhookSink
) -> None:
    """An event that is delivered logs its delivery's outcome at info (with the event's id and type), and its
    plan only at debug; an event that leads to nothing logs its plan at info, saying so."""
    config = make_config(
        importance={"killacct/Notify": "disabled"},
        contacts={"root": {"posturl": [webhook.url], "receives": {"posturl": "all"}}},
    )
    daemon = await start_daemon(config)
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:  # event_id is bound per task
        sent_id = await submit(daemon, http, type="Backup/Failure")
        await webhook.wait_for(1)
        quiet_id = await submit(daemon, http, type="killacct/Notify", data={"user": "bob"})
        await wait_until(
            lambda: any(line.get("event_id") == quiet_id and line["event"] == "event_planned" for line in logs)
        )
    info = [line for line in logs if line["log_level"] == "info"]
    about_sent = [(line["event"], line["event_type"]) for line in info if line.get("event_id") == sent_id]
    assert about_sent == [("delivery_sent", "Backup/Failure")]
    about_quiet = [line for line in info if line.get("event_id") == quiet_id]
    assert [(line["event"], line["deliveries"]) for line in about_quiet] == [("event_planned", 0)]
    planned = [line for line in logs if line["event"] == "event_planned" and line["event_id"] == sent_id]
    assert [(line["log_level"], line["deliveries"]) for line in planned] == [("debug", 1)]
