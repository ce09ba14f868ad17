"""Repeats and quiet hours in the running daemon (SPEC §8a), with a real SMTP sink.

A `repeats:` rule suppresses a delivery whose key already went to the same address within the interval (reason
`repeat of <event id> …`); a contact's quiet hours hold back what is planned inside them until their end (pending,
reason `quiet hours until …`), except at or above `except`. Both show in `deliveries`, `/metrics` and `routes`.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from .conftest import RunningDaemon, holds_for, settled, wait_until
from .servers import SmtpSink


def email_config(smtp: SmtpSink, **root: Any) -> dict[str, Any]:
    return {
        "channels": {"email": {"host": "127.0.0.1", "port": smtp.port, "from": "Server <root@test.example.com>"}},
        "contacts": {"root": {"email": ["root@example.com"], **root}},
    }


async def submit(daemon: RunningDaemon, http: aiohttp.ClientSession, **fields: Any) -> str:
    answer = await http.post(f"{daemon.base_url}/api/v1/events", json=fields, headers=daemon.auth)
    assert answer.status == 202, await answer.text()
    return str((await answer.json())["id"])


async def email_record(daemon: RunningDaemon, http: aiohttp.ClientSession, event_id: str) -> dict[str, Any]:
    answer = await http.get(f"{daemon.base_url}/api/v1/deliveries", params={"event_id": event_id}, headers=daemon.auth)
    (row,) = [row for row in (await answer.json())["deliveries"] if row["channel"] == "email"]
    return dict(row)


async def metric(http: aiohttp.ClientSession, daemon: RunningDaemon, line_start: str) -> float:
    text = await (await http.get(f"{daemon.base_url}/metrics")).text()
    (value,) = [line.rpartition(" ")[2] for line in text.splitlines() if line.startswith(line_start + " ")]
    return float(value)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dispatcher", *args], capture_output=True, text=True, timeout=60, check=False
    )


async def test_a_repeat_rule_suppresses_the_second_disk_warning_for_bob_and_not_carols(
    make_config: Callable[..., Path], start_daemon: Any, http: aiohttp.ClientSession
) -> None:
    """Under `repeats: [{match: {type: Quota/*}, key: [type, account], interval_s: 3600}]`: bob's first
    Quota/DiskWarning is mailed; his second (another host, other data) is recorded suppressed, `repeat of <first id>
    (repeats[0], within 1h)`; carol's first is mailed. `/metrics` counts one repeat; `dispatcher routes` for bob
    says the next one would be a repeat, for carol's neighbour dave it would go."""
    async with SmtpSink() as smtp:
        config = make_config(
            **email_config(smtp),
            repeats=[{"match": {"type": "Quota/*"}, "key": ["type", "account"], "interval_s": 3600}],
        )
        daemon = await start_daemon(config)
        first = await submit(daemon, http, type="Quota/DiskWarning", account="bob", data={"domain": "bob.example"})
        await smtp.wait_for(1)
        second = await submit(
            daemon, http, type="Quota/DiskWarning", account="bob", host="web2.example.com", data={"percent_used": 97}
        )
        carol = await submit(daemon, http, type="Quota/DiskWarning", account="carol", data={"domain": "carol.example"})
        mails = await smtp.wait_for(2)
        await settled(daemon)
        assert [mail.message["X-Dispatcher-Event-Id"] for mail in mails] == [first, carol]
        assert len(smtp.messages) == 2
        record = await email_record(daemon, http, second)
        assert (record["status"], record["reason"]) == ("suppressed", f"repeat of {first} (repeats[0], within 1h)")
        assert record["target"] == "root@example.com"
        assert (await email_record(daemon, http, carol))["status"] == "sent"
        assert await metric(http, daemon, 'dispatcher_suppressions_total{reason="repeat"}') == 1.0

        for account, expected in (("bob", f"repeat of {first}"), ("dave", None)):
            result = await asyncio.to_thread(
                run_cli, "routes", "Quota/DiskWarning", "-c", str(config), "--account", account, "--json"
            )
            assert result.returncode == 0, result.stderr
            answer = json.loads(result.stdout)
            stopped = [item["reason"] for item in answer["suppressed"] if item["channel"] == "email"]
            if expected is None:
                assert stopped == [] and [item["channel"] for item in answer["deliveries"]] == ["email"]
            else:
                assert [reason.partition(" (")[0] for reason in stopped] == [expected]


async def test_a_repeat_counts_from_what_went_not_from_what_was_suppressed(
    make_config: Callable[..., Path], start_daemon: Any, http: aiohttp.ClientSession
) -> None:
    """With `interval_s: 1.5` and the default key [type, account, host]: a second event within the interval is
    suppressed; one after it (counted from the first, which went) is mailed again. Two events of the same key in
    one planning round: the first goes, the second is its repeat."""
    async with SmtpSink() as smtp:
        config = make_config(**email_config(smtp), repeats=[{"match": {"app": "Quota"}, "interval_s": 1.5}])
        daemon = await start_daemon(config)
        first = await submit(daemon, http, type="Quota/DiskWarning", account="bob")
        await smtp.wait_for(1)
        repeat = await submit(daemon, http, type="Quota/DiskWarning", account="bob")
        await settled(daemon)
        assert (await email_record(daemon, http, repeat))["reason"].startswith(f"repeat of {first} ")
        await asyncio.sleep(1.6)
        later = await submit(daemon, http, type="Quota/DiskWarning", account="bob")
        mails = await smtp.wait_for(2)
        assert mails[1].message["X-Dispatcher-Event-Id"] == later

        batch = [{"id": f"burst-{n}", "type": "Quota/DiskWarning", "account": "erin"} for n in range(2)]
        await asyncio.sleep(1.6)
        await asyncio.gather(*(submit(daemon, http, **fields) for fields in batch))
        await settled(daemon)
        statuses = sorted([(await email_record(daemon, http, f"burst-{n}"))["status"] for n in range(2)])
        assert statuses == ["sent", "suppressed"]


def quiet_window(ends_in_s: float) -> tuple[str, str, float]:
    """A quiet window in UTC that began an hour ago and ends `ends_in_s` from now (whole seconds): its `from`, its
    `to`, and its end as epoch seconds."""
    end = math.ceil(time.time() + ends_in_s)
    start = datetime.fromtimestamp(end - 3600 - ends_in_s, UTC).strftime("%H:%M:%S")
    return start, datetime.fromtimestamp(end, UTC).strftime("%H:%M:%S"), float(end)


async def test_quiet_hours_hold_a_low_event_until_their_end_and_let_a_high_one_through(
    make_config: Callable[..., Path], start_daemon: Any, http: aiohttp.ClientSession
) -> None:
    """Root's quiet hours (UTC) began an hour ago and end in 5 s, with `except: high`. A Backup/Success (low) is
    recorded pending, `quiet hours until HH:MM:SS UTC`, its next attempt at the window's end, and is not mailed
    before it; a Backup/Failure (high) is mailed at once. `dispatcher routes` shows the low one deferred and
    `/metrics` counts one deferral. At the window's end the low one is mailed and recorded sent."""
    start, end_text, end = quiet_window(5)
    async with SmtpSink() as smtp:
        quiet = {"from": start, "to": end_text, "timezone": "UTC", "except": "high"}
        config = make_config(**email_config(smtp, quiet_hours=quiet))
        daemon = await start_daemon(config)
        low = await submit(daemon, http, type="Backup/Success")
        high = await submit(daemon, http, type="Backup/Failure", data={"error": "disk full"})
        (mail,) = await smtp.wait_for(1)
        assert mail.message["X-Dispatcher-Event-Id"] == high

        async def held() -> bool:
            record = await email_record(daemon, http, low)
            return bool(record["status"] == "pending" and record["reason"])

        await wait_until(held)
        record = await email_record(daemon, http, low)
        assert record["reason"] == f"quiet hours until {end_text} UTC"
        assert record["next_attempt_at"] == end
        assert await metric(http, daemon, 'dispatcher_deferrals_total{reason="quiet_hours"}') == 1.0
        routes = await asyncio.to_thread(run_cli, "routes", "Backup/Success", "-c", str(config))
        deferred = rf"\nroot +email +root@example\.com +deferred: quiet hours until {end_text} UTC\n"
        assert re.search(deferred, routes.stdout), routes.stdout
        await holds_for(lambda: len(smtp.messages) == 1, max(0.0, end - time.time() - 1.0))

        mails = await smtp.wait_for(2, timeout_s=10)
        arrived = time.time()
        assert mails[1].message["X-Dispatcher-Event-Id"] == low
        assert end - 0.1 <= arrived <= end + 5
        await settled(daemon)
        record = await email_record(daemon, http, low)
        assert (record["status"], record["reason"], record["attempts"]) == ("sent", None, 1)
        assert record["sent_at"] >= end
