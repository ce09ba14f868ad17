"""The ceiling: the same sinks driven straight by the client libraries the daemon uses, nothing else in between.

    .venv/bin/python bench/ceiling.py http --url http://127.0.0.1:8001/hook --count 50000 [--inflight 50]
    .venv/bin/python bench/ceiling.py smtp --port 8025 --count 10000 [--connections 8]

HTTP: aiohttp posting a form body shaped like a Post to URL notice (same fields, a ~600-byte text), `--inflight`
requests at once over one session. SMTP: aiosmtplib, `--connections` sessions each sending one prebuilt
`multipart/alternative` message after another (only the `X-Dispatcher-Event-Id` header changes). No store, no
templates, no retries: what is left is the transport, i.e. the most the daemon could reach with these libraries
on this machine. Event ids are `<prefix>-<n>`; `--rate` spaces the sends (0 = as fast as possible). Prints one
JSON line: count, errors, start time, CPU seconds of this process; `--times FILE` writes each send's start time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

TEXT = (
    "The backup of bench.example.com failed.\n\n"
    "Backup destination: local\nStarted: 2026-01-01 03:00 UTC\nReason: the destination is full\n\n"
    "Check the backup logs in WHM (Backup > Backup Configuration) and free space on the destination, then run the"
    " backup again.\n\nThis notice was sent by dispatcher on bench.example.com because the Contact Manager has it"
    " set to High importance.\n"
)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _paced(count: int, rate: float, workers: int, send: Any, times: list[float]) -> tuple[int, float]:
    """Run `send(slot, index)` for every index, `workers` at once (spaced to `rate` if > 0); (errors, start).

    `times[index]` gets the time each send began.
    """
    start = time.time()
    times[:] = [0.0] * count
    next_index = 0
    errors = 0

    async def worker(slot: int) -> None:
        nonlocal next_index, errors
        while next_index < count:
            index = next_index
            next_index += 1
            if rate > 0:
                delay = start + index / rate - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            times[index] = time.time()
            try:
                await send(slot, index)
            except Exception:
                errors += 1

    await asyncio.gather(*(worker(slot) for slot in range(workers)))
    return errors, start


async def http_ceiling(
    url: str, count: int, inflight: int, rate: float, prefix: str, times: list[float]
) -> dict[str, Any]:
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=inflight)) as session:

        async def send(slot: int, index: int) -> None:
            body = urlencode(
                {
                    "subject": "[bench.example.com] Backup failed",
                    "body": TEXT,
                    "application": "Backup",
                    "event_name": "Failure",
                    "hostname": "bench.example.com",
                    "event_id": f"{prefix}-{index}",
                    "event_type": "Backup/Failure",
                    "importance": "high",
                    "account": "",
                }
            )
            async with session.post(
                url, data=body, headers={"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"}
            ) as response:
                await response.read()
                response.raise_for_status()

        errors, start = await _paced(count, rate, inflight, send, times)
    return {"count": count, "errors": errors, "start": start, "cpu_s": _cpu_s()}


def _mail_template() -> bytes:
    message = EmailMessage()
    message["From"] = "Server notices <root@bench.example.com>"
    message["To"] = "ops@example.com"
    message["Subject"] = "[bench.example.com] Backup failed"
    message["Auto-Submitted"] = "auto-generated"
    message["X-Dispatcher-Event-Type"] = "Backup/Failure"
    message["X-Dispatcher-Event-Id"] = "@@ID@@"
    message.set_content(TEXT)
    message.add_alternative(f"<html><body><pre>{TEXT}</pre></body></html>", subtype="html")
    return message.as_bytes()


async def smtp_ceiling(
    port: int, count: int, connections: int, rate: float, prefix: str, times: list[float]
) -> dict[str, Any]:
    import aiosmtplib

    template = _mail_template()
    clients = [aiosmtplib.SMTP(hostname="127.0.0.1", port=port) for _ in range(connections)]
    for client in clients:
        await client.connect()

    async def send(slot: int, index: int) -> None:
        data = template.replace(b"@@ID@@", f"{prefix}-{index}".encode())
        await clients[slot].sendmail("root@bench.example.com", ["ops@example.com"], data)

    errors, start = await _paced(count, rate, connections, send, times)
    for client in clients:
        await client.quit()
    return {"count": count, "errors": errors, "start": start, "cpu_s": _cpu_s()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="kind", required=True)
    http = sub.add_parser("http")
    http.add_argument("--url", required=True)
    http.add_argument("--inflight", type=int, default=50)
    smtp = sub.add_parser("smtp")
    smtp.add_argument("--port", type=int, required=True)
    smtp.add_argument("--connections", type=int, default=8)
    for each in (http, smtp):
        each.add_argument("--count", type=int, required=True)
        each.add_argument("--rate", type=float, default=0.0)
        each.add_argument("--prefix", default="ceil")
        each.add_argument("--times", type=Path, default=None, help="write the send time of each message here (JSON)")
    args = parser.parse_args()
    times: list[float] = []
    if args.kind == "http":
        result = asyncio.run(http_ceiling(args.url, args.count, args.inflight, args.rate, args.prefix, times))
    else:
        result = asyncio.run(smtp_ceiling(args.port, args.count, args.connections, args.rate, args.prefix, times))
    if args.times:
        args.times.write_text(json.dumps(times))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
