"""The benchmark's load generator, run as a process of its own: events on MQTT, or alerts to Alertmanager.

    .venv/bin/python bench/publish.py mqtt --port 1883 --count 50000 [--rate 1000] --prefix a
    .venv/bin/python bench/publish.py alertmanager --url http://127.0.0.1:9093 --count 50000 [--rate 1000] [--batch 256]

MQTT: QoS 1 on `events/Backup/Failure`, one JSON event per message with `id` `<prefix>-<n>` and `data.sent_at`
(epoch seconds when it was handed to the socket), from a minimal MQTT 3.1.1 client (see `publish_mqtt`). A burst
keeps `--inflight` messages unacknowledged by the broker and sends the next as soon as one is acknowledged, so it
goes as fast as the broker takes them.
Alertmanager: `POST /api/v2/alerts`, `--batch` alerts a request (default 256, Prometheus's), one request after
another over one kept-alive connection, as Prometheus's notifier feeds an Alertmanager; each alert labelled
`event_id`, `sent_at` in its annotations. `--batch 1` posts each alert on its own.
`--rate 0` (the default) is a burst; otherwise messages are spaced to that rate. It waits until the broker (or
Alertmanager) has acknowledged everything, then prints one JSON line: count, first/last publish, acked-at times;
`--times FILE` also writes the send time of every message (a JSON list indexed by n), for latencies.
"""

from __future__ import annotations

import argparse
import http.client
import json
import resource
import socket
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

TOPIC = "events/Backup/Failure"
EVENT_TYPE = "Backup/Failure"


def _pace(start: float, index: int, rate: float) -> None:
    if rate > 0:
        delay = start + index / rate - time.time()
        if delay > 0:
            time.sleep(delay)


def _remaining_length(n: int) -> bytes:
    """MQTT's variable-length integer."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _publish_packet(topic: bytes, packet_id: int, payload: bytes) -> bytes:
    """PUBLISH, QoS 1 (MQTT 3.1.1 §3.3)."""
    body = len(topic).to_bytes(2, "big") + topic + packet_id.to_bytes(2, "big") + payload
    return b"\x32" + _remaining_length(len(body)) + body


def publish_mqtt(port: int, count: int, rate: float, prefix: str, inflight: int, times: list[float]) -> dict[str, Any]:
    """MQTT 3.1.1 spoken on a plain socket: CONNECT, then QoS 1 PUBLISH packets written in large writes, at most
    `inflight` unacknowledged; a thread counts the PUBACKs.

    Not paho: paho's Python per message made the publisher take a large share of the two cores the daemon under
    test shares with it (the figures are in bench/history/), while the peer's load generator posts hundreds of
    alerts a request. Written like this, the publisher takes about as little of the machine as the peer's does.
    """
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client_id = f"bench-publisher-{prefix}".encode()
    # Protocol "MQTT" level 4, clean session, keep-alive 0 (off: the run may be idle longer than any interval).
    connect = b"\x00\x04MQTT\x04\x02\x00\x00" + len(client_id).to_bytes(2, "big") + client_id
    sock.sendall(b"\x10" + _remaining_length(len(connect)) + connect)
    connack = sock.recv(4)
    if connack[:1] != b"\x20" or connack[3:4] != b"\x00":
        raise SystemExit(f"the broker refused the connection: {connack!r}")

    acked = 0
    all_acked = threading.Event()
    window = threading.Semaphore(inflight)

    def read_acks() -> None:
        nonlocal acked
        pending = b""
        while acked < count:
            data = sock.recv(65536)
            if not data:
                break
            pending += data
            whole = len(pending) - len(pending) % 4  # PUBACK: 0x40 0x02 and the packet id
            for _ in range(whole // 4):
                window.release()
            acked += whole // 4
            pending = pending[whole:]
        all_acked.set()

    reader = threading.Thread(target=read_acks, daemon=True)
    reader.start()
    topic = TOPIC.encode()
    start = time.time()
    first = last = 0.0
    out = bytearray()
    for index in range(count):
        _pace(start, index, rate)
        if not window.acquire(blocking=False):
            if out:  # what is written waits for room: send it now
                sock.sendall(out)
                out.clear()
            window.acquire()
        now = time.time()
        payload = {"id": f"{prefix}-{index}", "type": EVENT_TYPE, "data": {"sent_at": now, "seq": index}}
        out += _publish_packet(topic, index % 65535 + 1, json.dumps(payload).encode())
        times.append(now)
        if index == 0:
            first = now
        last = now
        if rate > 0 or len(out) >= 64 * 1024:
            sock.sendall(out)
            out.clear()
    if out:
        sock.sendall(out)
    all_acked.wait(timeout=max(60.0, count / 500))
    acked_at = time.time()
    sock.sendall(b"\xe0\x00")  # DISCONNECT
    sock.close()
    return {"count": count, "acked": acked, "first_publish": first, "last_publish": last, "acked_at": acked_at}


# Prometheus's notifier sends at most this many alerts in one request (`DefaultMaxBatchSize`, notifier/notifier.go),
# one request at a time to each Alertmanager.
PROMETHEUS_MAX_BATCH = 256


def publish_alertmanager(
    url: str, count: int, rate: float, prefix: str, batch: int, times: list[float]
) -> dict[str, Any]:
    """POST the alerts `batch` at a time, one request after another over one kept-alive connection (a refused
    or broken request counts as an error, and the next one reconnects)."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    path = parts.path.rstrip("/") + "/api/v2/alerts"
    headers = {"Content-Type": "application/json"}
    start = time.time()
    first = last = 0.0
    errors = requests = 0
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
        try:
            connection.request("POST", path, json.dumps(alerts).encode(), headers)
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                errors += 1
        except (OSError, http.client.HTTPException):
            errors += 1
            connection.close()
        requests += 1
        times.extend([now] * size)
        if index == 0:
            first = now
        last = now
        index += size
    connection.close()
    return {
        "count": count,
        "batch": batch,
        "requests": requests,
        "errors": errors,
        "first_publish": first,
        "last_publish": last,
        "acked_at": time.time(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="target", required=True)
    mqtt_parser = sub.add_parser("mqtt")
    mqtt_parser.add_argument("--port", type=int, required=True)
    mqtt_parser.add_argument("--inflight", type=int, default=1000)
    am_parser = sub.add_parser("alertmanager")
    am_parser.add_argument("--url", required=True)
    am_parser.add_argument(
        "--batch", type=int, default=PROMETHEUS_MAX_BATCH, help="alerts a request (default: Prometheus's 256)"
    )
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
