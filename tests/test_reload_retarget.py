"""A reload retargets pending work: a system contact's address (or the whole contact) removed from the
configuration is no longer attempted after it, and its pending deliveries are recorded suppressed, saying why."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from structlog.testing import capture_logs

from dispatcher.delivery.attempts import TARGET_REMOVED

from .conftest import RunningDaemon, holds_for, settled, wait_until
from .servers import SmtpSink, WebhookSink

RETRIES = {"backoff_initial_s": 0.1, "backoff_max_s": 0.3, "give_up_after_s": 120}


async def submit(daemon: RunningDaemon, http: aiohttp.ClientSession, **event: Any) -> str:
    response = await http.post(f"{daemon.base_url}/api/v1/events", json=event, headers=daemon.auth)
    assert response.status == 202, await response.text()
    return str((await response.json())["id"])


async def records(daemon: RunningDaemon, http: aiohttp.ClientSession) -> list[dict[str, Any]]:
    response = await http.get(f"{daemon.base_url}/api/v1/deliveries", headers=daemon.auth)
    return list((await response.json())["deliveries"])


def rewrite(config: Path, change: Callable[[dict[str, Any]], None]) -> None:
    document = yaml.safe_load(config.read_text())
    change(document)
    config.write_text(yaml.safe_dump(document, sort_keys=False))


async def test_a_webhook_removed_by_a_reload_is_no_longer_attempted(
    make_config: Callable[..., Path], start_daemon: Any, http: aiohttp.ClientSession
) -> None:
    """An old webhook (its key in the URL) keeps answering 503, so three events' deliveries to it wait for their
    retries; the reload replaces it with a new one. After the reload the old URL gets no more requests, the three
    deliveries are recorded suppressed ("target removed from the configuration"), nobody is told of a failure, the
    pending gauge is 0, and the next event goes to the new URL."""
    async with (
        WebhookSink(plan=[(503, {}, "down")] * 1000) as old,
        WebhookSink() as new,
        SmtpSink() as smtp,
    ):
        config = make_config(
            channels={"email": {"host": "127.0.0.1", "port": smtp.port}},
            delivery=RETRIES,
            contacts={"root": {"email": ["root@example.com"], "posturl": [f"{old.url}/hook?key=old-secret"]}},
            importance={"Backup/*": "high"},
        )
        daemon = await start_daemon(config)
        ids = [await submit(daemon, http, type="Backup/Failure", id=f"before-{n}") for n in range(3)]
        await smtp.wait_for(3)
        await wait_until(lambda: {r.form["event_id"] for r in old.requests} == set(ids))  # each tried, refused
        rewrite(config, lambda doc: doc["contacts"]["root"].update(posturl=[f"{new.url}/hook?key=new-secret"]))
        assert await daemon.dispatcher.reload(config)

        async def all_suppressed() -> bool:
            rows = [row for row in await records(daemon, http) if row["channel"] == "posturl"]
            return len(rows) == 3 and {row["status"] for row in rows} == {"suppressed"}

        await wait_until(all_suppressed, timeout_s=5)
        rows = [row for row in await records(daemon, http) if row["channel"] == "posturl"]
        assert {row["reason"] for row in rows} == {TARGET_REMOVED}
        assert all(row["attempts"] >= 1 for row in rows)
        tried = len(old.requests)
        await holds_for(lambda: len(old.requests) == tried, 1.0)  # several retry intervals (0.1 to 0.3 s)
        after = await submit(daemon, http, type="Backup/Failure", id="after")
        (request,) = await new.wait_for(1)
        assert request.form["event_id"] == after and request.form["key"] == "new-secret"
        await settled(daemon)  # a SendIMFailed would be stored with a failure, and sent by now
        assert len(smtp.messages) == 4  # the four events' own mails: no SendIMFailed
        assert all(row["status"] != "failed" for row in await records(daemon, http))
        metrics = await (await http.get(f"{daemon.base_url}/metrics")).text()
        assert "dispatcher_deliveries_pending 0.0" in metrics
        assert 'dispatcher_deliveries_total{channel="posturl",outcome="suppressed"} 3.0' in metrics


async def test_a_system_contact_removed_by_a_reload_gets_nothing_more(
    make_config: Callable[..., Path], start_daemon: Any, http: aiohttp.ClientSession
) -> None:
    """The SMTP server is down with mail pending for root and ops; a reload removes ops. Ops' deliveries are
    suppressed with the reason, root's stay pending, and when the server is back only root's mail arrives."""
    smtp = SmtpSink()
    await smtp.start()
    await smtp.stop()
    config = make_config(
        channels={"email": {"host": "127.0.0.1", "port": smtp.port}},
        delivery=RETRIES,
        contacts={"root": {"email": ["root@example.com"]}, "ops": {"email": ["ops@example.com"]}},
    )
    daemon = await start_daemon(config)
    ids = [await submit(daemon, http, type="Backup/Failure", id=f"down-{n}") for n in range(2)]

    async def tried_each() -> bool:
        rows = await records(daemon, http)
        return len(rows) == 4 and all(row["attempts"] >= 1 for row in rows)

    await wait_until(tried_each)
    rewrite(config, lambda doc: doc["contacts"].pop("ops"))
    assert await daemon.dispatcher.reload(config)

    async def retargeted() -> bool:
        rows = await records(daemon, http)
        return sorted((row["recipient"], row["status"]) for row in rows) == [
            ("ops", "suppressed"),
            ("ops", "suppressed"),
            ("root", "pending"),
            ("root", "pending"),
        ]

    await wait_until(retargeted, timeout_s=5)
    assert {row["reason"] for row in await records(daemon, http) if row["recipient"] == "ops"} == {TARGET_REMOVED}
    await smtp.start()
    try:
        mails = await smtp.wait_for(2, timeout_s=10)
        await settled(daemon)
        assert len(smtp.messages) == 2
        assert sorted(mail.message["X-Dispatcher-Event-Id"] for mail in mails) == ids
        assert {mail.rcpt_tos for mail in mails} == {("root@example.com",)}
    finally:
        await smtp.stop()


async def test_an_attempt_in_flight_at_the_reload_is_not_followed_by_another(
    make_config: Callable[..., Path], start_daemon: Any, http: aiohttp.ClientSession
) -> None:
    """The reload comes while an attempt to the old webhook is in flight (the webhook holds its 503 until the reload
    is done): that attempt ends, and its retry is never made: the delivery is checked before it and recorded
    suppressed."""
    reloaded = asyncio.Event()
    async with WebhookSink(plan=[(503, {}, "down")] * 10, hold=reloaded) as old:
        config = make_config(delivery=RETRIES, contacts={"root": {"posturl": [old.url]}})
        daemon = await start_daemon(config)
        with capture_logs() as logs:
            await submit(daemon, http, type="Backup/Failure", id="in-flight")
            await old.wait_for(1)
            rewrite(config, lambda doc: doc["contacts"]["root"].update(posturl=[f"{old.url}/elsewhere"]))
            assert await daemon.dispatcher.reload(config)
            assert not [line for line in logs if line["event"] == "delivery_retry"], "no attempt was in flight"
            reloaded.set()

            async def suppressed() -> bool:
                (row,) = await records(daemon, http)
                return row["status"] == "suppressed"

            await wait_until(suppressed, timeout_s=10)
        (row,) = await records(daemon, http)
        assert (row["attempts"], row["reason"]) == (1, TARGET_REMOVED)
        assert [line["event"] for line in logs if line["event"].startswith("delivery_")] == [
            "delivery_retry",
            "delivery_suppressed",
        ]
        await holds_for(lambda: len(old.requests) == 1, 0.5)  # a retry (0.1 to 0.3 s) would have come
