"""Sender processes that stop answering without dying (SIGSTOP, a call that blocks their event loop): the daemon
kills and replaces them, their attempts are retried on another process, and nothing they held is sent twice: a
killed process cannot wake up, and one that wakes up in time does not start a job it got too late."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import pickle
import signal
import socket
import time
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import aiomqtt
import pytest
import structlog
from structlog.testing import capture_logs

from dispatcher.catalog import load_catalog
from dispatcher.channels import BUILTIN_CHANNELS, Channel, Message
from dispatcher.config import load_config
from dispatcher.events import Event
from dispatcher.senders import channel_set, child, local, protocol
from dispatcher.senders import pool as sender_pool
from dispatcher.senders.pool import SenderPool

from .brokers import Mosquitto
from .conftest import RunningDaemon, connect_store, settled, store_settled, wait_until
from .servers import SmtpSink, WebhookSink
from .test_senders import process_alive

FAST_RETRIES = {"backoff_initial_s": 0.05, "backoff_max_s": 0.2, "give_up_after_s": 60}


async def submit(daemon: RunningDaemon, http: aiohttp.ClientSession, **event: Any) -> str:
    response = await http.post(f"{daemon.base_url}/api/v1/events", json=event, headers=daemon.auth)
    assert response.status == 202, await response.text()
    return str((await response.json())["id"])


def log_lines(log_path: Path, event: str) -> list[dict[str, Any]]:
    """The daemon's JSON log lines about `event`."""
    return [
        line
        for line in (json.loads(text) for text in log_path.read_text().splitlines() if text.startswith("{"))
        if line.get("event") == event
    ]


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_stopped_sender_processes_are_replaced_and_each_event_goes_out_once(
    mosquitto: Mosquitto, make_config: Callable[..., Path], daemon_process: Any
) -> None:
    """The daemon as a process, with its two sender processes stopped (SIGSTOP) before 5 events arrive on the bus:
    the stuck processes are killed and replaced, all 5 mails arrive within 60 s, and after SIGCONT (to any that
    still exists) each event has arrived exactly once and is recorded sent."""
    async with SmtpSink() as smtp:
        config = make_config(
            channels={"email": {"host": "127.0.0.1", "port": smtp.port, "from": "Server <root@test.example.com>"}},
            contacts={"root": {"email": ["root@example.com"]}},
        )
        daemon = daemon_process(config)
        daemon.start()
        await wait_until(
            lambda: (
                len(log_lines(daemon.log_path, "sender_started")) == 2 and log_lines(daemon.log_path, "bus_connected")
            ),
            timeout_s=30,
        )
        stuck = [int(line["pid"]) for line in log_lines(daemon.log_path, "sender_started")]
        event_ids = [f"stuck-{n}" for n in range(5)]
        for pid in stuck:
            os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
                for event_id in event_ids:
                    await client.publish("events/Backup/Failure", json.dumps({"id": event_id}).encode(), qos=1)
            await smtp.wait_for(5, timeout_s=60)
            print(f"5 events delivered {time.monotonic() - started:.1f} s after they were published")
        finally:
            for pid in stuck:
                if process_alive(pid):
                    os.kill(pid, signal.SIGCONT)
        # A stuck process is killed (it never wakes up to send what it held), and every delivery is recorded: what
        # has not arrived by then will not.
        await wait_until(lambda: not any(process_alive(pid) for pid in stuck), timeout_s=10)
        await wait_until(lambda: store_settled(config), timeout_s=10)
        arrivals = collections.Counter(mail.message["X-Dispatcher-Event-Id"] for mail in smtp.messages)
        assert arrivals == dict.fromkeys(event_ids, 1)
        killed = {int(line["pid"]) for line in log_lines(daemon.log_path, "sender_killed")}
        assert killed == set(stuck) and not any(process_alive(pid) for pid in stuck)
        # Each replaced (a replacement starts a moment after the kill).
        await wait_until(lambda: len(log_lines(daemon.log_path, "sender_started")) >= 4, timeout_s=20)
        assert len(log_lines(daemon.log_path, "sender_started")) == 4
        with connect_store(config) as conn:
            statuses = conn.execute("SELECT status, count(*) FROM deliveries GROUP BY status").fetchall()
        assert statuses == [("sent", 5)]
        assert daemon.terminate() == 0


@pytest.mark.slow
async def test_the_attempts_of_a_stuck_process_are_retried_on_the_other_one(
    make_config: Callable[..., Path],
    start_daemon: Any,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two sender processes; the one four events are pinned to (by their ids) is stopped. Once it has been silent
    past the limit it is killed, and the events' retries go to the other process, long before a replacement
    starts (held back here for a minute). Each event arrives once."""
    monkeypatch.setattr(sender_pool, "SILENCE_LIMIT_S", 3.0)
    # The daemon's looks; the processes still say alive each 1 s.
    monkeypatch.setattr(sender_pool, "WATCH_INTERVAL_S", 0.2)
    monkeypatch.setattr(sender_pool, "RESTART_DELAY_S", 60.0)
    async with WebhookSink() as webhook:
        config = make_config(delivery={**FAST_RETRIES, "workers": 2}, contacts={"root": {"posturl": [webhook.url]}})
        daemon = await start_daemon(config)
        pool = daemon.dispatcher.pipeline.sender
        assert isinstance(pool, SenderPool)
        await wait_until(lambda: len(pool.pids) == 2, timeout_s=20)
        first, other = pool.pids
        pinned = [f"pinned-{n}" for n in range(40) if zlib.crc32(f"pinned-{n}".encode()) % 2 == 0][:4]
        os.kill(first, signal.SIGSTOP)
        try:
            with capture_logs() as logs:
                for event_id in pinned:
                    await submit(daemon, http, type="Backup/Failure", id=event_id)
                await webhook.wait_for(4, timeout_s=15)
            assert pool.pids == [other]  # delivered by the other process; no replacement yet
        finally:
            if process_alive(first):
                os.kill(first, signal.SIGCONT)
        assert not process_alive(first)
        await settled(daemon)
        assert collections.Counter(request.form["event_id"] for request in webhook.requests) == dict.fromkeys(pinned, 1)
        (killed,) = [line for line in logs if line["event"] == "sender_killed"]
        assert killed["pid"] == first and killed["reason"].startswith("silent for ")


async def test_a_process_that_wakes_up_does_not_start_the_jobs_it_got_too_late(
    make_config: Callable[..., Path],
    start_daemon: Any,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A sender process stopped for 1.5 s, shorter than the silence that gets it killed, while three events are
    handed to it: when it runs again it answers each job it was handed more than START_GRACE_S (0.5 s here) ago as
    taken too late instead of sending it, the daemon retries them, and each event arrives once, from the same
    process."""
    monkeypatch.setattr(sender_pool, "START_GRACE_S", 0.5)  # the daemon stamps each job's start_by with it
    async with WebhookSink() as webhook:
        config = make_config(delivery={**FAST_RETRIES, "workers": 1}, contacts={"root": {"posturl": [webhook.url]}})
        daemon = await start_daemon(config)
        pool = daemon.dispatcher.pipeline.sender
        assert isinstance(pool, SenderPool)
        await wait_until(lambda: pool.pids, timeout_s=20)
        (pid,) = pool.pids
        ids = [f"late-{n}" for n in range(3)]
        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            os.kill(pid, signal.SIGSTOP)
            try:
                for event_id in ids:
                    await submit(daemon, http, type="Backup/Failure", id=event_id)
                await asyncio.sleep(1.5)
            finally:
                os.kill(pid, signal.SIGCONT)
            await webhook.wait_for(3, timeout_s=10)
            await settled(daemon)
        assert collections.Counter(request.form["event_id"] for request in webhook.requests) == dict.fromkeys(ids, 1)
        late = {
            line["event_id"]
            for line in logs
            if line["event"] == "delivery_retry" and line["error"] == "the sender process took the job too late"
        }
        assert late == set(ids)
        assert pool.pids == [pid] and not [line for line in logs if line["event"] == "sender_killed"]


class _RecordingChannel(Channel):
    """A channel that records what it is asked to send."""

    name = "record"
    sent: ClassVar[list[str]] = []

    def describe_target(self, target: str) -> str:
        return target

    async def send(self, message: Message, target: str) -> None:
        _RecordingChannel.sent.append(target)


async def test_a_sender_process_answers_a_job_past_its_start_by_without_sending_it(
    make_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sender process's side, in this process: of two jobs in one frame, the one whose start_by has passed is
    answered "took the job too late" (retryable) and never reaches the channel; the other is sent."""
    # The frames and the service are this package's own internals (SLF001), as in tests/test_senders.py.
    monkeypatch.setattr(channel_set, "available_channels", lambda: {"record": _RecordingChannel, **BUILTIN_CHANNELS})
    monkeypatch.setattr(_RecordingChannel, "sent", [])
    config = load_config(make_config())
    ours, theirs = socket.socketpair()
    service_reader, service_writer = await asyncio.open_unix_connection(sock=theirs)
    service_side = child._SenderService(service_reader, service_writer)  # noqa: SLF001
    service = asyncio.create_task(service_side.serve(), name="sender-service")
    reader, writer = await asyncio.open_unix_connection(sock=ours)

    def send_frame(frame: Any) -> None:
        body = pickle.dumps(frame)
        writer.write(protocol.HEADER.pack(len(body)) + body)

    async def read_answers() -> dict[int, Any]:
        answers: dict[int, Any] = {}
        while len(answers) < 2:
            frame = await asyncio.wait_for(protocol.read_frame(reader), 5)
            if frame[0] == "outcomes":
                answers.update(frame[1])
        return answers

    event = Event(
        id="e-1", type="Backup/Failure", occurred_at=datetime.now(UTC), host="h", account=None, client_id=None, data={}
    )

    def job(target: str) -> local.SendJob:
        return local.SendJob(
            event=event, channel="record", target=target, importance="high", recipient_kind="system", recipient="r"
        )

    try:
        send_frame(("init", config, load_catalog()))
        assert await protocol.read_frame(reader) == ("ready",)
        now = time.monotonic()
        send_frame(("jobs", [(1, now - 0.1, job("stale")), (2, now + 5, job("fresh"))]))
        assert await read_answers() == {1: ("the sender process took the job too late", True, None), 2: None}
        assert _RecordingChannel.sent == ["fresh"]
    finally:
        writer.close()
        await asyncio.wait_for(service, 5)
        service_writer.close()
