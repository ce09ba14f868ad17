"""Intake benchmark (issue 2): events per second from an MQTT burst to committed in the store.

    .venv/bin/python bench/intake.py [--quick] [--count 50000] [--json out.json]

A fresh mosquitto with our configuration (`max_queued_messages 0`, `max_inflight_messages 1000`) and the daemon
(`dispatcher run`) with **no contacts**: every event is parsed, committed (group commit, synchronous=FULL),
acknowledged, and planned to nothing, so delivery work is minimal. Events are one JSON object per line, each with
its own `id`, published by `mosquitto_pub -l -q 1 -M 1000` on `events/Backup/Failure`. Three measurements:

1. live: the daemon running while `mosquitto_pub` publishes (the two share the machine's cores). Time from the
   start of `mosquitto_pub` until `dispatcher_events_received_total` on /metrics (incremented after each commit)
   reaches the count; polled every 0.1 s.
2. backlog: the daemon stopped, the burst queued by the broker for its persistent session, then the daemon
   started: time from /readyz (connected and subscribed) to the count. The daemon alone, no publisher running.
3. ceiling: a plain aiomqtt subscriber (QoS 1, same MQTT version, acknowledging on receipt, doing nothing else)
   reading the same live burst from the same broker configuration. Both it and "live" share the cores with
   mosquitto_pub and the broker, so this is the read rate of a do-nothing aiomqtt client, not a hard bound.

"CPU s" is the daemon's (with its sender processes) in 1 and 2, the reader's in 3.

`--protocol 5` runs the daemon (and the reader) on MQTT 5 instead of 3.1.1.

The goal is 10,000 events/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import PYTHON, RESULTS, Daemon, Table, mosquitto_in, need, running

GOAL_PER_S = 10_000
TOPIC = "events/Backup/Failure"


def write_burst(path: Path, count: int, prefix: str) -> Path:
    with path.open("w") as out:
        for index in range(count):
            out.write(json.dumps({"id": f"{prefix}-{index}", "type": "Backup/Failure", "data": {"seq": index}}) + "\n")
    return path


def mosquitto_pub(port: int, burst: Path) -> subprocess.Popen[bytes]:
    binary = need("mosquitto_pub")
    if binary is None:
        raise SystemExit("mosquitto_pub is not installed (apt-get install mosquitto-clients)")
    with burst.open("rb") as lines:
        return subprocess.Popen(
            [binary, "-h", "127.0.0.1", "-p", str(port), "-t", TOPIC, "-q", "1", "-l", "-M", "1000"],
            stdin=lines,
            stdout=subprocess.DEVNULL,
        )


def wait_received(daemon: Daemon, count: int, timeout_s: float) -> tuple[float, float]:
    """Poll /metrics until `count` events are recorded; (time reached, events seen)."""
    deadline = time.monotonic() + timeout_s
    seen = 0.0
    while time.monotonic() < deadline:
        seen = daemon.metric("dispatcher_events_received_total")
        if seen >= count:
            return time.time(), seen
        time.sleep(0.1)
    return time.time(), seen


def run_live(workdir: Path, count: int, burst: Path, protocol: str) -> dict[str, Any]:
    broker = mosquitto_in(workdir / "live")
    daemon = Daemon(workdir / "live", broker=broker, protocol=protocol)
    with running(broker, daemon):
        daemon.start()
        before = daemon.stats()
        start = time.time()
        publisher = mosquitto_pub(broker.port, burst)
        done_at, seen = wait_received(daemon, count, timeout_s=max(120, count / 200))
        publisher.wait(timeout=60)
        after = daemon.stats()
    elapsed = done_at - start
    return {
        "measure": "live (daemon + mosquitto_pub together)",
        "events": int(seen),
        "seconds": round(elapsed, 2),
        "per_s": round(seen / elapsed, 0),
        "daemon_cpu_s": round(after.cpu_s - before.cpu_s, 2),
        "peak_mb": round(after.hwm_mb, 1),
    }


def run_backlog(workdir: Path, count: int, burst: Path, protocol: str) -> dict[str, Any]:
    broker = mosquitto_in(workdir / "backlog")
    daemon = Daemon(workdir / "backlog", broker=broker, protocol=protocol)
    with running(broker, daemon):
        daemon.start()  # once, so the broker knows the persistent session and queues for it
        daemon.stop()
        publisher = mosquitto_pub(broker.port, burst)
        publisher.wait(timeout=300)
        time.sleep(0.5)
        daemon.start()
        start = time.time()
        before = daemon.stats()
        done_at, seen = wait_received(daemon, count, timeout_s=max(120, count / 200))
        after = daemon.stats()
    elapsed = done_at - start
    return {
        "measure": "backlog (queued while down, daemon alone)",
        "events": int(seen),
        "seconds": round(elapsed, 2),
        "per_s": round(seen / elapsed, 0),
        "daemon_cpu_s": round(after.cpu_s - before.cpu_s, 2),
        "peak_mb": round(after.hwm_mb, 1),
    }


def run_ceiling(workdir: Path, count: int, burst: Path, protocol: str) -> dict[str, Any]:
    broker = mosquitto_in(workdir / "ceiling")
    with running(broker):
        subscriber = subprocess.Popen(
            [PYTHON, __file__, "--subscriber", str(broker.port), "--count", str(count), "--protocol", protocol],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert subscriber.stdout is not None
        if subscriber.stdout.readline().strip() != "ready":
            raise RuntimeError("the aiomqtt subscriber did not start")
        start = time.time()
        publisher = mosquitto_pub(broker.port, burst)
        result = json.loads(subscriber.stdout.readline())
        subscriber.wait(timeout=30)
        publisher.wait(timeout=60)
    elapsed = result["last_at"] - start
    return {
        "measure": "ceiling: plain aiomqtt subscriber (live)",
        "events": result["count"],
        "seconds": round(elapsed, 2),
        "per_s": round(result["count"] / elapsed, 0),
        "daemon_cpu_s": round(result["cpu_s"], 2),
        "peak_mb": None,
    }


async def subscriber(port: int, count: int, protocol: str) -> None:
    """Count QoS 1 messages on events/# with aiomqtt (acknowledged on receipt) until `count`."""
    import resource

    import aiomqtt

    received = 0
    version = aiomqtt.ProtocolVersion.V5 if protocol == "5" else aiomqtt.ProtocolVersion.V311
    async with aiomqtt.Client("127.0.0.1", port, identifier="bench-ceiling", protocol=version) as client:
        await client.subscribe("events/#", qos=1)
        print("ready", flush=True)
        async for _ in client.messages:
            received += 1
            if received >= count:
                break
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"count": received, "last_at": time.time(), "cpu_s": usage.ru_utime + usage.ru_stime}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5,000 events instead of 50,000")
    parser.add_argument("--count", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument(
        "--protocol",
        choices=["3.1.1", "5"],
        default="3.1.1",
        help="MQTT version of the daemon (bus.protocol) and of the ceiling's reader; default 3.1.1, the daemon's",
    )
    parser.add_argument("--subscriber", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    count = args.count or (5_000 if args.quick else 50_000)
    if args.subscriber is not None:
        asyncio.run(subscriber(args.subscriber, count, args.protocol))
        return
    with tempfile.TemporaryDirectory(prefix="bench-intake-") as tmp:
        workdir = Path(tmp)
        burst = write_burst(workdir / "burst.jsonl", count, "in")
        results = [
            run_live(workdir, count, burst, args.protocol),
            run_backlog(workdir, count, burst, args.protocol),
            run_ceiling(workdir, count, burst, args.protocol),
        ]
    ceiling = results[-1]["per_s"]
    table = Table(["measure", "events", "s", "events/s", "of ceiling", "of goal 10k/s", "CPU s", "peak MB"])
    for row in results:
        table.add(
            row["measure"],
            row["events"],
            row["seconds"],
            row["per_s"],
            f"{row['per_s'] / ceiling:.0%}",
            f"{row['per_s'] / GOAL_PER_S:.0%}",
            row["daemon_cpu_s"],
            row["peak_mb"],
        )
    print(table.markdown())
    report = {"count": count, "goal_per_s": GOAL_PER_S, "protocol": args.protocol, "results": results}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "intake.json").write_text(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
