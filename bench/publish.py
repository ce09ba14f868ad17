"""The benchmark's load generator, run as a process of its own: events on MQTT, or alerts to Alertmanager.

    .venv/bin/python bench/publish.py mqtt --port 1883 --count 50000 [--rate 1000] --prefix a
    .venv/bin/python bench/publish.py alertmanager --url http://127.0.0.1:9093 --count 50000 [--rate 1000]

MQTT: QoS 1 on `events/Backup/Failure`, one JSON event per message with `id` `<prefix>-<n>` and `data.sent_at`
(epoch seconds when it was handed to the client). A burst keeps `--inflight` messages unacknowledged by the broker
and sends the next as soon as one is acknowledged, so it goes as fast as the broker takes them.
Alertmanager: `POST /api/v2/alerts` in batches, each alert labelled `event_id`, `sent_at` in its annotations.
`--rate 0` (the default) is a burst; otherwise messages are spaced to that rate. It waits until the broker (or
Alertmanager) has acknowledged everything, then prints one JSON line: count, first/last publish, acked-at times;
`--times FILE` also writes the send time of every message (a JSON list indexed by n), for latencies.
"""

from __future__ import annotations

import argparse
import json
import resource
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

TOPIC = "events/Backup/Failure"
EVENT_TYPE = "Backup/Failure"


def _pace(start: float, index: int, rate: float) -> None:
    if rate > 0:
        delay = start + index / rate - time.time()
        if delay > 0:
            time.sleep(delay)


def publish_mqtt(port: int, count: int, rate: float, prefix: str, inflight: int, times: list[float]) -> dict[str, Any]:
    import paho.mqtt.client as mqtt

    acked = 0
    all_acked = threading.Event()
    lock = threading.Lock()
    # At most `inflight` messages handed to paho and not yet acknowledged. paho scans its whole outgoing queue
    # on every PUBACK (`_update_inflight`), so handing it a whole burst at once makes publishing quadratic: a
    # burst of 50,000 then crawls and the publisher, not the daemon, sets the pace.
    window = threading.Semaphore(inflight)

    def on_publish(client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        nonlocal acked
        window.release()
        with lock:
            acked += 1
            if acked >= count:
                all_acked.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-publisher-{prefix}")
    client.max_inflight_messages_set(inflight)
    client.max_queued_messages_set(0)
    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    start = time.time()
    first = last = 0.0
    for index in range(count):
        _pace(start, index, rate)
        window.acquire()
        now = time.time()
        payload = {"id": f"{prefix}-{index}", "type": EVENT_TYPE, "data": {"sent_at": now, "seq": index}}
        client.publish(TOPIC, json.dumps(payload), qos=1)
        times.append(now)
        if index == 0:
            first = now
        last = now
    all_acked.wait(timeout=max(60.0, count / 500))
    acked_at = time.time()
    client.disconnect()
    client.loop_stop()
    return {"count": count, "acked": acked, "first_publish": first, "last_publish": last, "acked_at": acked_at}


def publish_alertmanager(
    url: str, count: int, rate: float, prefix: str, batch: int, times: list[float]
) -> dict[str, Any]:
    start = time.time()
    first = last = 0.0
    errors = 0
    index = 0
    # In steady mode a batch is what is due by now, so alerts are not held back to fill a batch.
    while index < count:
        _pace(start, index, rate)
        now = time.time()
        due = count if rate <= 0 else min(count, int((now - start) * rate) + 1)
        size = max(1, min(batch, due - index, count - index))
        alerts = [
            {
                "labels": {"alertname": "BackupFailure", "event_id": f"{prefix}-{n}", "host": "bench.example.com"},
                "annotations": {"sent_at": repr(now), "summary": "Backup failed"},
            }
            for n in range(index, index + size)
        ]
        request = urllib.request.Request(
            f"{url}/api/v2/alerts", data=json.dumps(alerts).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                response.read()
        except OSError:
            errors += 1
        times.extend([now] * size)
        if index == 0:
            first = now
        last = now
        index += size
    return {"count": count, "errors": errors, "first_publish": first, "last_publish": last, "acked_at": time.time()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="target", required=True)
    mqtt_parser = sub.add_parser("mqtt")
    mqtt_parser.add_argument("--port", type=int, required=True)
    mqtt_parser.add_argument("--inflight", type=int, default=1000)
    am_parser = sub.add_parser("alertmanager")
    am_parser.add_argument("--url", required=True)
    am_parser.add_argument("--batch", type=int, default=500)
    for each in (mqtt_parser, am_parser):
        each.add_argument("--count", type=int, required=True)
        each.add_argument("--rate", type=float, default=0.0, help="messages per second; 0 = a burst")
        each.add_argument("--prefix", default="ev")
        each.add_argument("--times", type=Path, default=None, help="write the send time of each message here (JSON)")
    args = parser.parse_args()
    times: list[float] = []
    if args.target == "mqtt":
        result = publish_mqtt(args.port, args.count, args.rate, args.prefix, args.inflight, times)
    else:
        result = publish_alertmanager(args.url, args.count, args.rate, args.prefix, args.batch, times)
    if args.times:
        args.times.write_text(json.dumps(times))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_s"] = round(usage.ru_utime + usage.ru_stime, 2)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
