"""A hostile publisher cannot stop the daemon: poison messages, floods of bad ones, backlogs and large events.

Each test runs the daemon as a process of its own against a real mosquitto, as an admin would run it, and
checks what the admin would: the daemon is still ready, every bad message went to the dead-letter topic, and the
good events that follow are delivered.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest

from .brokers import Mosquitto
from .conftest import DaemonProcess, connect_store, wait_until
from .servers import WebhookSink

# Each was enough, before, to kill the daemon (and to kill it again at every restart, since it was never
# acknowledged) or to make it drop off the bus: lone surrogates, deep nesting, huge numbers, dates that
# overflow in UTC. Now each is a dead letter with its reason.
POISON = [
    (b'{"type":"Backup/Failure","data":{"x":"\\ud800"}}', "invalid_json"),
    (b'{"data":{"\\udfff":1}}', "invalid_json"),
    (b'{"data":' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"}", "invalid_json"),
    (b'{"data":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "invalid_json"),
    (b'{"data":{"n":' + b"9" * 5000 + b"}}", "invalid_json"),
    (b'{"data":{"n":NaN,"m":Infinity}}', "invalid_json"),
    (b'{"data":{"n":1e999}}', "invalid_json"),
    (b'{"data":{"x":"\xff\xfe"}}', "invalid_json"),
    (b'{"occurred_at":"9999-12-31T23:59:59-01:00"}', "bad_field"),
    (b'{"occurred_at":"0001-01-01T00:00:00+01:00"}', "bad_field"),
    (b'{"account":"bo\\u0000b"}', "bad_field"),
    (b'{"client_id":' + b"1" * 30 + b"}", "bad_field"),
    (b'{"id":"' + b"x" * 10_000 + b'"}', "bad_field"),
]


@pytest.fixture
def broker_without_inflight_limit(tmp_path: Path) -> Iterator[Mosquitto]:
    """A mosquitto that sends a session's whole backlog at once (`max_inflight_messages 0`)."""
    state = tmp_path / "unlimited-broker"
    state.mkdir()
    broker = Mosquitto(state, max_inflight=0)
    broker.start()
    yield broker
    broker.stop()


async def publish_all(port: int, messages: list[tuple[str, bytes]]) -> None:
    """Publish at QoS 1, up to 500 awaiting their PUBACK at once (a busy publisher, not one at a time)."""
    async with aiomqtt.Client(
        "127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5, max_inflight_messages=500, timeout=30
    ) as client:
        for start in range(0, len(messages), 500):
            await asyncio.gather(*(client.publish(topic, body, qos=1) for topic, body in messages[start : start + 500]))


async def ready(http: aiohttp.ClientSession, daemon: DaemonProcess) -> bool:
    try:
        async with http.get(f"http://127.0.0.1:{daemon.http_port}/readyz") as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False


def dead_letters_left(config: Path) -> int:
    """Dead letters committed and not yet republished (the admin's view: a connection to the store)."""
    with connect_store(config) as conn:
        return int(conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0])


async def started(daemon: DaemonProcess, http: aiohttp.ClientSession) -> DaemonProcess:
    daemon.start()
    await wait_until(lambda: ready(http, daemon), timeout_s=30)
    return daemon


def webhook_config(make_config: Callable[..., Path], webhook: WebhookSink, **sections: Any) -> Path:
    return make_config(contacts={"root": {"posturl": [webhook.url], "receives": {"posturl": "all"}}}, **sections)


def delivered_ids(webhook: WebhookSink) -> list[str]:
    return [request.form["event_id"] for request in webhook.requests]


@pytest.mark.slow
async def test_poison_messages_are_dead_lettered_and_the_daemon_stays_ready_across_a_restart(
    mosquitto: Mosquitto, make_config: Callable[..., Path], daemon_process: Any, http: aiohttp.ClientSession
) -> None:
    """Every message of the poison set goes to the dead-letter topic with its reason, the daemon answers
    /readyz after each, and after a restart (and the set once more) the next good event is delivered."""
    async with WebhookSink() as webhook:
        config = webhook_config(make_config, webhook, bus={"protocol": "5"})  # dead letters unwrapped
        daemon = await started(daemon_process(config), http)
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, protocol=aiomqtt.ProtocolVersion.V5) as watcher:
            await watcher.subscribe("events-dead-letter", qos=1)
            for round_ in ("first", "after restart"):
                for payload, reason in POISON:
                    await watcher.publish("events/Backup/Failure", payload, qos=1)
                    async with asyncio.timeout(10):
                        letter = await anext(aiter(watcher.messages))
                    assert letter.payload == payload, round_
                    assert dict(letter.properties.UserProperty)["reason"].startswith(reason + ": "), (
                        round_,
                        payload[:60],
                    )
                    assert await ready(http, daemon), (round_, payload[:60])
                good_id = f"good-{round_}"
                await watcher.publish("events/Backup/Failure", json.dumps({"id": good_id}).encode(), qos=1)
                await wait_until(lambda good_id=good_id: good_id in delivered_ids(webhook), timeout_s=15)
                if round_ == "first":
                    assert daemon.terminate() == 0
                    daemon = await started(daemon_process(config), http)
        await wait_until(lambda: dead_letters_left(config) == 0)
        assert "Traceback" not in daemon.logs()
        assert daemon.terminate() == 0


@pytest.mark.slow
async def test_ten_thousand_malformed_messages_then_a_good_one_is_delivered(
    mosquitto: Mosquitto, make_config: Callable[..., Path], daemon_process: Any, http: aiohttp.ClientSession
) -> None:
    """On a broker with max_inflight_messages 1000 (the README's advice), 10,000 malformed messages no longer
    take the daemon off the bus: each is dead-lettered, and the good event published after them is delivered."""
    async with WebhookSink() as webhook:
        config = webhook_config(make_config, webhook)
        daemon = await started(daemon_process(config), http)
        bad = [("events/Backup/Failure", b"{not json %d" % n) for n in range(10_000)]
        await publish_all(mosquitto.port, [*bad, ("events/Backup/Failure", b'{"id": "after-the-flood"}')])
        await wait_until(lambda: "after-the-flood" in delivered_ids(webhook), timeout_s=60)
        assert await ready(http, daemon)
        await wait_until(lambda: dead_letters_left(config) == 0, timeout_s=60)
        text = await (await http.get(f"http://127.0.0.1:{daemon.http_port}/metrics")).text()
        assert 'dispatcher_events_rejected_total{reason="invalid_json",source="mqtt"} 10000.0' in text
        assert daemon.terminate() == 0


@pytest.mark.slow
async def test_a_backlog_queued_while_down_is_all_delivered_from_a_broker_without_inflight_limit(
    broker_without_inflight_limit: Mosquitto,
    make_config: Callable[..., Path],
    daemon_process: Any,
    http: aiohttp.ClientSession,
) -> None:
    """3,000 valid events queued for the daemon's session while it was stopped, then sent all at once (no
    in-flight limit): they arrive before the SUBACK and faster than the store takes them; all are delivered."""
    broker = broker_without_inflight_limit
    async with WebhookSink() as webhook:
        config = webhook_config(make_config, webhook, bus={"url": broker.url}, channels={"posturl": {"concurrency": 8}})
        daemon = await started(daemon_process(config), http)
        assert daemon.terminate() == 0  # the broker now queues for its persistent session
        ids = [f"backlog-{n}" for n in range(3000)]
        await publish_all(broker.port, [("events/Backup/Failure", json.dumps({"id": i}).encode()) for i in ids])
        daemon = await started(daemon_process(config), http)
        await wait_until(lambda: len(set(delivered_ids(webhook))) == len(ids), timeout_s=120)
        assert sorted(set(delivered_ids(webhook))) == sorted(ids)
        assert daemon.terminate() == 0


def peak_memory_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc")


@pytest.mark.slow
async def test_a_thousand_events_of_200_kb_keep_the_daemon_under_256_mib(
    mosquitto: Mosquitto, make_config: Callable[..., Path], daemon_process: Any, http: aiohttp.ClientSession
) -> None:
    """1,000 events of 200 KB each (200 MB) queued, then taken and delivered: the intake bounds what it holds by
    bytes, so the daemon's process peaks well under 256 MiB."""
    async with WebhookSink() as webhook:
        config = webhook_config(make_config, webhook)
        daemon = await started(daemon_process(config), http)
        assert daemon.terminate() == 0
        blob = "x" * 200_000
        ids = [f"big-{n}" for n in range(1000)]
        await publish_all(
            mosquitto.port,
            [("events/Backup/Failure", json.dumps({"id": i, "data": {"log": blob}}).encode()) for i in ids],
        )
        daemon = await started(daemon_process(config), http)
        assert daemon.process is not None
        await wait_until(lambda: len(set(delivered_ids(webhook))) == len(ids), timeout_s=120)
        peak_mb = peak_memory_mb(daemon.process.pid)
        print(f"daemon peak RSS: {peak_mb:.1f} MiB")
        assert peak_mb < 256, peak_mb
        assert daemon.terminate() == 0


async def test_a_dead_letter_the_broker_refuses_is_logged_and_does_not_stop_the_intake(
    tmp_path: Path, make_config: Callable[..., Path], daemon_process: Any, http: aiohttp.ClientSession
) -> None:
    """A broker whose ACL forbids the dead-letter topic (MQTT 5 answers PUBACK "not authorised", and mosquitto
    2.0 then drops the connection): the refusal is logged once, dead letters are no longer republished (not
    retried for ever, one reconnect each), and the good events before and after are delivered."""
    state = tmp_path / "acl-broker"
    state.mkdir()
    (state / "acl").write_text("topic readwrite events/#\n")  # anonymous clients: events only
    broker = Mosquitto(state, listener_options=f"acl_file {state / 'acl'}")
    broker.start()
    try:
        async with WebhookSink() as webhook:
            config = webhook_config(make_config, webhook, bus={"url": broker.url, "protocol": "5"})
            daemon = await started(daemon_process(config), http)
            await publish_all(
                broker.port, [("events/Backup/Failure", b"{bad"), ("events/Backup/Failure", b'{"id": "ok"}')]
            )
            await wait_until(lambda: "ok" in delivered_ids(webhook), timeout_s=15)
            await wait_until(lambda: dead_letters_left(config) == 0, timeout_s=15)
            later = [("events/Backup/Failure", b"{bad %d" % n) for n in range(50)]
            await publish_all(broker.port, [*later, ("events/Backup/Failure", b'{"id": "ok-later"}')])
            await wait_until(lambda: "ok-later" in delivered_ids(webhook), timeout_s=15)
            await wait_until(lambda: dead_letters_left(config) == 0, timeout_s=15)
            await wait_until(lambda: ready(http, daemon))
            assert daemon.logs().count('"dead_letters_refused"') == 1
            assert daemon.logs().count('"bus_disconnected"') <= 1, "one reconnect at most, not one per dead letter"
            assert daemon.terminate() == 0
    finally:
        broker.stop()
