"""Sender processes (`delivery.workers`): attempts run in child processes; a dead one loses nothing, a reload
reaches them, and the daemon's stop, not a stray signal, ends them."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import pickle
import signal
import socket
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest
import yaml

from dispatcher.catalog import load_catalog
from dispatcher.channels import BUILTIN_CHANNELS, Channel, Message
from dispatcher.config import load_config
from dispatcher.events import Event
from dispatcher.senders import channel_set, child, local, protocol
from dispatcher.senders import pool as sender_pool
from dispatcher.senders.local import LocalSender
from dispatcher.senders.pool import SenderPool

from .brokers import Mosquitto
from .conftest import RunningDaemon, settled, wait_until
from .servers import WebhookSink

FAST_RETRIES = {"max_attempts": 5, "backoff_initial_s": 0.05, "backoff_max_s": 0.2, "give_up_after_s": 60}


def webhook_contacts(webhook: WebhookSink) -> dict[str, Any]:
    return {"root": {"posturl": [webhook.url], "receives": {"posturl": "all"}}}


def children_running_senders() -> list[int]:
    """This process's children that are sender processes (`python -m dispatcher.senders`)."""
    found = []
    for listing in Path(f"/proc/{os.getpid()}/task").glob("*/children"):
        for pid in listing.read_text().split():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except FileNotFoundError:
                continue
            if b"dispatcher.senders" in cmdline:
                found.append(int(pid))
    return found


def process_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


async def submit(daemon: RunningDaemon, http: aiohttp.ClientSession, **event: Any) -> str:
    response = await http.post(f"{daemon.base_url}/api/v1/events", json=event, headers=daemon.auth)
    assert response.status == 202, await response.text()
    return str((await response.json())["id"])


async def test_two_sender_processes_share_the_deliveries(
    make_config: Callable[..., Path], start_daemon: Any, http: aiohttp.ClientSession
) -> None:
    async with WebhookSink() as webhook:
        config = make_config(delivery={"workers": 2}, contacts=webhook_contacts(webhook))
        daemon = await start_daemon(config)
        pool = daemon.dispatcher.pipeline.sender
        assert isinstance(pool, SenderPool)
        await wait_until(lambda: len(pool.pids) == 2)
        assert sorted(pool.pids) == sorted(children_running_senders())
        ids = [await submit(daemon, http, type="Backup/Failure", id=f"two-{n}") for n in range(40)]
        await webhook.wait_for(40)
        assert sorted(request.form["event_id"] for request in webhook.requests) == sorted(ids)


async def test_workers_0_sends_from_the_daemons_own_process(
    make_config: Callable[..., Path], start_daemon: Any, http: aiohttp.ClientSession
) -> None:
    async with WebhookSink() as webhook:
        config = make_config(delivery={"workers": 0}, contacts=webhook_contacts(webhook))
        daemon = await start_daemon(config)
        assert isinstance(daemon.dispatcher.pipeline.sender, LocalSender)
        event_id = await submit(daemon, http, type="Backup/Failure")
        (request,) = await webhook.wait_for(1)
        assert request.form["event_id"] == event_id
        assert children_running_senders() == []


async def test_a_killed_sender_process_is_replaced_and_nothing_is_lost(
    mosquitto: Mosquitto, make_config: Callable[..., Path], start_daemon: Any, http: aiohttp.ClientSession
) -> None:
    """SIGKILL the sender in the middle of 300 deliveries: its attempts are retried by its replacement, every
    event arrives, and the daemon logs the exit and keeps running."""
    async with WebhookSink(delay_s=0.01) as webhook:
        config = make_config(
            delivery={**FAST_RETRIES, "workers": 1},
            channels={"posturl": {"concurrency": 8}},
            contacts=webhook_contacts(webhook),
        )
        daemon = await start_daemon(config)
        pool = daemon.dispatcher.pipeline.sender
        assert isinstance(pool, SenderPool)
        await wait_until(lambda: pool.pids)
        (first,) = pool.pids
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
            for n in range(300):
                await client.publish("events/Backup/Failure", json.dumps({"id": f"kill-{n}"}).encode(), qos=1)
        await wait_until(lambda: len(webhook.requests) >= 50, timeout_s=30)
        os.kill(first, signal.SIGKILL)
        await wait_until(lambda: pool.pids and pool.pids != [first], timeout_s=20)
        await wait_until(lambda: len({r.form["event_id"] for r in webhook.requests}) == 300, timeout_s=60)
        arrivals = collections.Counter(request.form["event_id"] for request in webhook.requests)
        assert set(arrivals) == {f"kill-{n}" for n in range(300)}
        # Only attempts the dead process held can arrive twice: the daemon hands a process up to concurrency *
        # lookahead (8 * 2) of a channel's attempts, and any of them may have been sent but not yet answered.
        # Usually it is the 8 requests in flight; a kill between a send's end and its answer's flush adds more.
        held = 8 * pool.lookahead
        assert sum(n - 1 for n in arrivals.values()) <= held, arrivals.most_common(20)
        assert not daemon.task.done()

        async def all_recorded_as_sent() -> bool:
            metrics = await (await http.get(f"{daemon.base_url}/metrics")).text()
            return 'dispatcher_deliveries_total{channel="posturl",outcome="sent"} 300.0' in metrics

        await wait_until(all_recorded_as_sent)


async def test_a_reload_reaches_the_sender_process(
    make_config: Callable[..., Path], start_daemon: Any, http: aiohttp.ClientSession
) -> None:
    """Post to URL's `format` is read only where the request is made: after a reload the next event goes as JSON."""
    async with WebhookSink() as webhook:
        config = make_config(channels={"posturl": {"format": "form"}}, contacts=webhook_contacts(webhook))
        daemon = await start_daemon(config)
        await submit(daemon, http, type="Backup/Failure", id="before")
        await webhook.wait_for(1)
        document = yaml.safe_load(config.read_text())
        document["channels"]["posturl"]["format"] = "json"
        config.write_text(yaml.safe_dump(document))
        assert await daemon.dispatcher.reload(config)
        await submit(daemon, http, type="Backup/Failure", id="after")
        before, after = await webhook.wait_for(2)
        assert before.form["event_id"] == "before" and before.json is None
        assert after.json["event_id"] == "after"


async def test_a_reload_while_the_senders_start_reaches_them(
    make_config: Callable[..., Path], start_daemon: Any, http: aiohttp.ClientSession
) -> None:
    """A reload at once after start, before the sender processes are ready: each sends under the new config."""
    async with WebhookSink() as webhook:
        config = make_config(
            delivery={"workers": 2}, channels={"posturl": {"format": "form"}}, contacts=webhook_contacts(webhook)
        )
        daemon = await start_daemon(config)
        pool = daemon.dispatcher.pipeline.sender
        assert isinstance(pool, SenderPool) and len(pool.pids) < 2, "the senders were ready: this proves nothing"
        document = yaml.safe_load(config.read_text())
        document["channels"]["posturl"]["format"] = "json"
        config.write_text(yaml.safe_dump(document))
        assert await daemon.dispatcher.reload(config)
        for n in range(8):  # enough event ids for both senders
            await submit(daemon, http, type="Backup/Failure", id=f"after-{n}")
        received = await webhook.wait_for(8)
        assert sorted(request.json["event_id"] for request in received) == [f"after-{n}" for n in range(8)]


async def test_sigterm_to_the_whole_group_stops_the_daemon_and_its_sender(
    make_config: Callable[..., Path], daemon_process: Any
) -> None:
    """systemd's stop signal reaches every process of the unit: the sender ignores it, the daemon drains, closes
    the sender, and exits 0 with no process left behind."""
    async with WebhookSink() as webhook:
        config = make_config(contacts=webhook_contacts(webhook))
        daemon = daemon_process(config)
        daemon.start()
        await wait_until(lambda: b"sender_started" in daemon.log_path.read_bytes(), timeout_s=20)
        started = next(
            json.loads(line) for line in daemon.log_path.read_text().splitlines() if '"sender_started"' in line
        )
        sender = int(started["pid"])
        assert process_alive(sender)
        os.kill(sender, signal.SIGTERM)
        os.kill(daemon.process.pid, signal.SIGTERM)
        assert await asyncio.to_thread(daemon.process.wait, 30) == 0
        await wait_until(lambda: not process_alive(sender), timeout_s=10)
        assert "sender_exited" not in daemon.logs()  # stopped by the daemon, not found dead


async def test_a_sender_that_cannot_start_is_retried_and_deliveries_wait_for_it(
    make_config: Callable[..., Path],
    start_daemon: Any,
    http: aiohttp.ClientSession,
    monkeypatch: Any,
    capsys: Any,
) -> None:
    """The sender's interpreter fails at first (a broken install being fixed): the daemon logs each failed start,
    keeps the event, and delivers it once a sender starts."""
    monkeypatch.setattr(sys, "executable", "/bin/false")
    async with WebhookSink() as webhook:
        config = make_config(contacts=webhook_contacts(webhook))
        daemon = await start_daemon(config)
        event_id = await submit(daemon, http, type="Backup/Failure")
        await wait_until(lambda: capsys.readouterr().out.count("sender_start_failed") or False, timeout_s=10)
        assert webhook.requests == []
        monkeypatch.undo()
        (request,) = await webhook.wait_for(1, timeout_s=20)
        assert request.form["event_id"] == event_id


async def test_a_sender_process_whose_answer_is_overdue_is_killed_and_replaced(
    make_config: Callable[..., Path], start_daemon: Any, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sender process stuck without exiting (SIGSTOP): past the answer's bound it is killed (it can never wake up
    and send what it held), the attempt fails as retryable, "the sender process did not answer", and the retry is
    delivered once by the process that replaces it."""
    monkeypatch.setattr(sender_pool, "attempt_timeout_s", lambda section: 0.3)  # the daemon's side only
    monkeypatch.setattr(sender_pool, "ANSWER_GRACE_S", 0.2)
    monkeypatch.setattr(sender_pool, "WATCH_INTERVAL_S", 0.1)
    async with WebhookSink() as webhook:
        config = make_config(delivery={**FAST_RETRIES, "workers": 1}, contacts=webhook_contacts(webhook))
        daemon = await start_daemon(config)
        pool = daemon.dispatcher.pipeline.sender
        assert isinstance(pool, SenderPool)
        await wait_until(lambda: pool.pids)
        (pid,) = pool.pids
        os.kill(pid, signal.SIGSTOP)
        try:
            event_id = await submit(daemon, http, type="Backup/Failure", id="stuck")

            async def retried() -> bool:
                response = await http.get(f"{daemon.base_url}/api/v1/deliveries", headers=daemon.auth)
                rows = (await response.json())["deliveries"]
                return any(row["reason"] == "the sender process did not answer" for row in rows)

            await wait_until(retried, timeout_s=5)
            await wait_until(lambda: not process_alive(pid), timeout_s=5)
        finally:
            if process_alive(pid):
                os.kill(pid, signal.SIGCONT)
        await wait_until(lambda: any(r.form["event_id"] == event_id for r in webhook.requests), timeout_s=10)
        assert pool.pids and pool.pids != [pid]
        await settled(daemon)
        assert [r.form["event_id"] for r in webhook.requests] == [event_id]


class _HangingChannel(Channel):
    """A channel that never returns: what a plugin without a timeout of its own may do."""

    name = "hang"
    cancelled = 0

    def describe_target(self, target: str) -> str:
        return target

    async def send(self, message: Message, target: str) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            _HangingChannel.cancelled += 1
            raise


async def test_a_sender_process_ends_an_attempt_past_its_bound(
    make_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sender process's side, in this process: a job whose channel hangs is cancelled at the attempt's bound
    and answered "timed out" (retryable); a job that gets through is answered at once; meanwhile the process says
    it is alive every WATCH_INTERVAL_S."""
    monkeypatch.setattr(channel_set, "available_channels", lambda: {"hang": _HangingChannel, **BUILTIN_CHANNELS})
    monkeypatch.setattr(local, "attempt_timeout_s", lambda section: 0.3)
    monkeypatch.setattr(child, "WATCH_INTERVAL_S", 0.05)
    config = load_config(make_config())
    ours, theirs = socket.socketpair()
    service_reader, service_writer = await asyncio.open_unix_connection(sock=theirs)
    service = asyncio.create_task(child._SenderService(service_reader, service_writer).serve())
    reader, writer = await asyncio.open_unix_connection(sock=ours)

    def send_frame(frame: Any) -> None:
        body = pickle.dumps(frame)
        writer.write(protocol.HEADER.pack(len(body)) + body)

    alive = 0

    async def read_outcomes() -> Any:
        nonlocal alive
        while (frame := await asyncio.wait_for(protocol.read_frame(reader), 5)) == ("alive",):
            alive += 1
        return frame

    event = Event(
        id="e-1", type="Backup/Failure", occurred_at=datetime.now(UTC), host="h", account=None, client_id=None, data={}
    )
    job = local.SendJob(
        event=event, channel="hang", target="t", importance="high", recipient_kind="system", recipient="r"
    )
    missing = local.SendJob(
        event=event, channel="nowhere", target="t", importance="high", recipient_kind="system", recipient="r"
    )
    try:
        send_frame(("init", config, load_catalog()))
        assert await protocol.read_frame(reader) == ("ready",)
        started = asyncio.get_running_loop().time()
        start_by = time.monotonic() + 5
        send_frame(("jobs", [(1, start_by, job), (2, start_by, missing)]))
        first = await read_outcomes()
        assert first == ("outcomes", [(2, ("channel nowhere is not available", False, None))])
        second = await read_outcomes()
        assert second == ("outcomes", [(1, ("timed out", True, None))])
        assert 0.3 <= asyncio.get_running_loop().time() - started < 1.0
        assert _HangingChannel.cancelled == 1
        assert alive >= 3  # 0.3 s at one ("alive",) every 0.05 s, give or take the loop's timing
    finally:
        writer.close()
        await asyncio.wait_for(service, 5)
        service_writer.close()
