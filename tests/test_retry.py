"""Retries: a failed delivery put back by hand (`dispatcher retry`, `POST /api/v1/deliveries/retry`) is sent by the
running daemon with a fresh budget; and with the default policy, retries outlast a real outage."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .conftest import RunningDaemon, holds_for, settled, wait_until
from .servers import SmtpSink, WebhookSink

FAST_RETRIES = {"backoff_initial_s": 0.05, "backoff_max_s": 0.2, "give_up_after_s": 60}


async def submit(daemon: RunningDaemon, http: aiohttp.ClientSession, **event: Any) -> str:
    response = await http.post(f"{daemon.base_url}/api/v1/events", json=event, headers=daemon.auth)
    assert response.status == 202, await response.text()
    return str((await response.json())["id"])


async def records(daemon: RunningDaemon, http: aiohttp.ClientSession, **query: str) -> list[dict[str, Any]]:
    response = await http.get(f"{daemon.base_url}/api/v1/deliveries", params=query, headers=daemon.auth)
    assert response.status == 200
    return list((await response.json())["deliveries"])


async def status_of(daemon: RunningDaemon, http: aiohttp.ClientSession, event_id: str, channel: str) -> str | None:
    rows = [row for row in await records(daemon, http, event_id=event_id) if row["channel"] == channel]
    return rows[0]["status"] if rows else None


async def retry_api(daemon: RunningDaemon, http: aiohttp.ClientSession, body: Any) -> tuple[int, Any]:
    response = await http.post(f"{daemon.base_url}/api/v1/deliveries/retry", json=body, headers=daemon.auth)
    return response.status, await response.json()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dispatcher", *args], capture_output=True, text=True, timeout=60, check=False
    )


def email_to(smtp: SmtpSink) -> dict[str, Any]:
    return {"email": {"host": "127.0.0.1", "port": smtp.port, "from": "Server <root@test.example.com>"}}


async def test_a_failed_delivery_retried_over_the_api_is_sent_at_once(
    make_config: Callable[..., Path], start_daemon: Any, http: aiohttp.ClientSession
) -> None:
    """A webhook refuses (400: permanent, failed at once), then works: POST /api/v1/deliveries/retry with the
    event's id answers {"retried": 1}, the daemon sends it straight away (woken, not at its next sweep), and the
    record ends sent after 2 attempts. Retrying again finds nothing failed: {"retried": 0}."""
    async with WebhookSink(plan=[(400, {}, "bad key")]) as webhook:
        config = make_config(delivery=FAST_RETRIES, contacts={"root": {"posturl": [webhook.url]}})
        daemon = await start_daemon(config)
        event_id = await submit(daemon, http, type="Backup/Failure", id="api-retry")
        await wait_until(lambda: _is(daemon, http, event_id, "failed"))
        started = time.monotonic()
        assert await retry_api(daemon, http, {"event_id": event_id}) == (200, {"retried": 1})
        await wait_until(lambda: _is(daemon, http, event_id, "sent"), timeout_s=5)
        print(f"sent {time.monotonic() - started:.2f} s after the API's retry")
        (record,) = [row for row in await records(daemon, http, event_id=event_id) if row["channel"] == "posturl"]
        assert record["attempts"] == 2 and record["reason"] is None
        ours = [request for request in webhook.requests if request.form.get("event_id") == event_id]
        assert len(ours) == 2  # the refused one, and the retry
        assert await retry_api(daemon, http, {"event_id": event_id}) == (200, {"retried": 0})
        assert await retry_api(daemon, http, {"status": "failed"}) == (200, {"retried": 0})


async def _is(daemon: RunningDaemon, http: aiohttp.ClientSession, event_id: str, status: str) -> bool:
    return await status_of(daemon, http, event_id, "posturl") == status


@pytest.mark.slow
async def test_a_failed_delivery_retried_from_the_command_line_is_sent_by_the_running_daemon(
    make_config: Callable[..., Path], start_daemon: Any, http: aiohttp.ClientSession
) -> None:
    """An SMTP server refuses a message (550: failed at once), then accepts: `dispatcher retry -c FILE --delivery ID`
    writes the store beside the running daemon and prints `retried: 1`; the daemon finds the row at its next sweep
    and the mail arrives within a few seconds, once. `--event` and `--failed` then find nothing failed."""
    async with SmtpSink() as smtp:
        config = make_config(channels=email_to(smtp), contacts={"root": {"email": ["root@example.com"]}})
        daemon = await start_daemon(config)
        smtp.fail_next(1, 550, stage="rcpt")
        event_id = await submit(daemon, http, type="Backup/Failure", id="cli-retry")

        async def failed_row() -> dict[str, Any] | None:
            rows = await records(daemon, http, event_id=event_id)
            return rows[0] if rows and rows[0]["status"] == "failed" else None

        await wait_until(failed_row)
        row = await failed_row()
        assert row is not None and "550" in row["reason"]
        notices = await smtp.wait_for(1)  # iContact/SendIMFailed about it, to root
        assert notices[0].message["X-Dispatcher-Event-Type"] == "iContact/SendIMFailed"
        result = await asyncio.to_thread(run_cli, "retry", "-c", str(config), "--delivery", str(row["id"]))
        assert (result.returncode, result.stdout, result.stderr) == (0, "retried: 1\n", "")
        started = time.monotonic()
        mails = await smtp.wait_for(2, timeout_s=10)
        print(f"sent {time.monotonic() - started:.2f} s after `dispatcher retry`")
        assert mails[1].message["X-Dispatcher-Event-Id"] == event_id
        await wait_until(lambda: _email_is(daemon, http, event_id, "sent"), timeout_s=5)
        for selector in (["--event", event_id], ["--failed"]):
            result = await asyncio.to_thread(run_cli, "retry", "-c", str(config), *selector)
            assert (result.returncode, result.stdout) == (0, "retried: 0\n")
        await settled(daemon)  # a row put back by mistake would be sent by now
        assert len(smtp.messages) == 2


async def _email_is(daemon: RunningDaemon, http: aiohttp.ClientSession, event_id: str, status: str) -> bool:
    return await status_of(daemon, http, event_id, "email") == status


async def test_a_retried_delivery_gets_a_fresh_budget_and_its_new_failure_a_new_notice(
    make_config: Callable[..., Path], start_daemon: Any, http: aiohttp.ClientSession
) -> None:
    """max_attempts 2 and a webhook that keeps answering 503: failed after 2 attempts, and root hears of it by
    email. Retried by hand, it gets 2 more attempts (not 0: its budget counts from the retry), fails again with
    4 attempts on record, and root gets a second notice (its own id, not taken for a repeat of the first)."""
    async with WebhookSink(plan=[(503, {}, "busy")] * 50) as webhook, SmtpSink() as smtp:
        config = make_config(
            channels=email_to(smtp),
            delivery={**FAST_RETRIES, "max_attempts": 2},
            contacts={"root": {"email": ["root@example.com"], "posturl": [webhook.url]}},
        )
        daemon = await start_daemon(config)
        event_id = await submit(daemon, http, type="Backup/Failure", id="budget")
        await wait_until(lambda: _is(daemon, http, event_id, "failed"))
        assert await retry_api(daemon, http, {"event_id": event_id, "status": "failed"}) == (200, {"retried": 1})
        await wait_until(lambda: sum(r.form.get("event_id") == event_id for r in webhook.requests) == 4)
        await wait_until(lambda: _is(daemon, http, event_id, "failed"))
        (record,) = [row for row in await records(daemon, http, event_id=event_id) if row["channel"] == "posturl"]
        assert record["attempts"] == 4 and record["reason"].startswith("gave up after 2 attempts: ")
        notices = await smtp.wait_for(3, timeout_s=10)  # the event's own mail, then a notice per failure
        kinds = sorted(mail.message["X-Dispatcher-Event-Type"] for mail in notices)
        assert kinds == ["Backup/Failure", "iContact/SendIMFailed", "iContact/SendIMFailed"]


async def test_bad_retry_requests_are_refused(
    make_config: Callable[..., Path], start_daemon: Any, http: aiohttp.ClientSession
) -> None:
    """Every body the route cannot take is a 400 with the error and details, and retries nothing: not JSON, not an
    object, no selector at all (an empty object never means "everything"), wrong types, a status other than
    failed, unknown fields, JSON the shared decoder refuses. Without the token: 401."""
    config = make_config()
    daemon = await start_daemon(config)
    url = f"{daemon.base_url}/api/v1/deliveries/retry"
    bodies = [
        b"",
        b"not json",
        b"[1]",
        b'"failed"',
        b"{}",
        b'{"delivery_id": "7"}',
        b'{"delivery_id": true}',
        b'{"delivery_id": 0}',
        b'{"delivery_id": 1.5}',
        b'{"event_id": ""}',
        b'{"event_id": 5}',
        b'{"status": "sent"}',
        b'{"status": null}',
        b'{"status": "failed", "limit": 3}',
        b'{"delivery_id": NaN}',
        b'{"delivery_id": 1' + b"0" * 200 + b"}",
        b'{"event_id": "\\ud800"}',
        b"\xff\xfe",
    ]
    for body in bodies:
        response = await http.post(url, data=body, headers={**daemon.auth, "Content-Type": "application/json"})
        answer = await response.json()
        assert response.status == 400, (body, answer)
        assert isinstance(answer["error"], str) and isinstance(answer["details"], list), (body, answer)
    response = await http.post(url, json={"status": "failed"})
    assert response.status == 401


def test_the_retry_command_needs_exactly_one_selector_and_a_store(tmp_path: Path) -> None:
    """No selector, or two, is bad usage (exit 2); a config whose store does not exist yet fails in one line
    (exit 1)."""
    config = tmp_path / "dispatcher.yaml"
    config.write_text("store: {path: nowhere/dispatcher.db}\n")
    for selector in ([], ["--failed", "--delivery", "3"]):
        result = run_cli("retry", "-c", str(config), *selector)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    result = run_cli("retry", "-c", str(config), "--failed")
    assert result.returncode == 1 and result.stderr.startswith("dispatcher: no store at "), result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "nowhere").exists()


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_mail_sent_during_a_150_s_smtp_outage_arrives_after_it_with_the_default_policy(
    make_config: Callable[..., Path], start_daemon: Any, http: aiohttp.ClientSession
) -> None:
    """The SMTP server is down for 150 s. With the default delivery policy (no attempt limit: give_up_after_s, a
    day, decides; only backoff_max_s is shortened, to 10 s, to keep the test short) the delivery stays pending
    through many more attempts than the old limit of 8, and the mail arrives once the server is back: sent."""
    smtp = SmtpSink()
    await smtp.start()
    await smtp.stop()
    config = make_config(
        channels=email_to(smtp),
        delivery={"backoff_max_s": 10},
        contacts={"root": {"email": ["root@example.com"]}},
    )
    daemon = await start_daemon(config)
    assert daemon.dispatcher.config.delivery.max_attempts is None
    outage_started = time.monotonic()
    event_id = await submit(daemon, http, type="Backup/Failure", id="outage")
    await asyncio.sleep(150 - (time.monotonic() - outage_started))
    (row,) = await records(daemon, http, event_id=event_id)
    assert row["status"] == "pending" and row["attempts"] > 8, row
    await smtp.start()
    try:
        (mail,) = await smtp.wait_for(1, timeout_s=20)
        print(f"mail arrived {time.monotonic() - outage_started:.1f} s after the outage began")
        assert mail.message["X-Dispatcher-Event-Id"] == event_id
        await wait_until(lambda: _email_is(daemon, http, event_id, "sent"), timeout_s=5)
        (row,) = await records(daemon, http, event_id=event_id)
        print(f"attempts: {row['attempts']}")
        await holds_for(lambda: len(smtp.messages) == 1, 0.5)  # and only once
    finally:
        await smtp.stop()
