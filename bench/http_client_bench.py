"""CPU a request: the HTTP channels' own client (channels/http_session.py) against aiohttp's ClientSession.

    .venv/bin/python bench/http_client_bench.py [--requests 5000] [--rounds 6]

Starts `bench/sinks.py` in a process of its own and POSTs a Post-to-URL-sized form body (~1.7 KB) to its `/hook`,
50 requests in flight, with each client in turn (`rounds` times each, so that the VM's drift falls on both), and
prints this process's CPU time per request (user + system, `getrusage`): the minimum and the median of the rounds.
The sink's CPU is not counted. Both clients keep their connections alive.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from dispatcher.channels.http_session import HttpSession

IN_FLIGHT = 50
BODY = b"subject=Backup+failed&body=" + b"x" * 1600 + b"&event_id=%d"
HEADERS = {"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"}


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def ours(url: str, count: int) -> None:
    http = HttpSession(IN_FLIGHT)
    try:
        await _drive(count, lambda n: http.post(url, timeout_s=10, cap_bytes=65536, body=BODY % n, headers=HEADERS))
    finally:
        await http.close()


async def aiohttp_session(url: str, count: int) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=IN_FLIGHT)) as session:

        async def one(n: int) -> tuple[int, bytes]:
            async with session.post(url, data=BODY % n, headers=HEADERS, allow_redirects=False) as response:
                return response.status, await response.read()

        await _drive(count, one)


async def _drive(count: int, request: object) -> None:
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def one(n: int) -> None:
        async with slots:
            status, *_ = await request(n)  # type: ignore[operator]
            assert status == 200, status

    await asyncio.gather(*(one(n) for n in range(200)))  # warm: connections open, code paths hot
    await asyncio.gather(*(one(n) for n in range(count)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    http_port, smtp_port = free_port(), free_port()
    sinks = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("sinks.py")),
            "--http-port",
            str(http_port),
            "--smtp-port",
            str(smtp_port),
        ]
    )
    url = f"http://127.0.0.1:{http_port}/hook"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", http_port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        clients = {"dispatcher HttpSession": ours, "aiohttp ClientSession": aiohttp_session}
        per_request: dict[str, list[float]] = {name: [] for name in clients}
        for _ in range(args.rounds):
            for name, client in clients.items():
                started = cpu_s()
                asyncio.run(client(url, args.requests))
                per_request[name].append((cpu_s() - started) / (args.requests + 200) * 1e6)
        for name, figures in per_request.items():
            best, median = min(figures), statistics.median(figures)
            print(f"{name}: {best:.1f} µs of CPU a request (median {median:.1f}; {args.rounds} × {args.requests})")
    finally:
        sinks.terminate()
        sinks.wait()


if __name__ == "__main__":
    main()
