"""The benchmark's receivers in one process: Post to URL, Alertmanager's webhook, a fake Pushbullet, and SMTP.

    .venv/bin/python bench/sinks.py --http-port 8001 --smtp-port 8025

Run in a process of its own so that their CPU is not counted as the daemon's. They are kept cheap on purpose: the
machine's cores are shared with the broker and the daemon, so a sink parses only what it needs to find the event
id of a message, and the SMTP side is a minimal asyncio protocol rather than aiosmtpd.

Each message is recorded as (event id, arrival time `time.time()`):

- `POST /hook` (Post to URL): the `event_id` form field, or JSON key with `format: json`.
- `POST /am` (Alertmanager webhook): one record per alert, its `event_id` label; the webhooks themselves are
  counted too, and the most alerts one carried, so a report can tell one notification per alert from grouping.
- `POST /v2/pushes` (Pushbullet): the push's title (pushes carry no event id); answered like Pushbullet.
- SMTP: the `X-Dispatcher-Event-Id` header of each message (one record per message, whatever its recipients).

Control: `GET /_bench/count` (`{"count": n, "webhooks": n, "largest_webhook": n}`), `GET /_bench/arrivals`
(`{"ids": [...], "t": [...]}`), `POST /_bench/reset`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import time

from aiohttp import web

_EVENT_ID_HEADER = re.compile(rb"^X-Dispatcher-Event-Id:[ \t]*([^\r\n]*)", re.IGNORECASE | re.MULTILINE)
_FORM_EVENT_ID = re.compile(rb"(?:^|&)event_id=([^&]*)")


class Arrivals:
    """Event ids and arrival times, in arrival order (two flat lists: cheap to append to and to send)."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.times: list[float] = []
        self.webhooks = 0  # Alertmanager webhook POSTs
        self.largest_webhook = 0  # the most alerts one of them carried

    def add(self, event_id: str) -> None:
        self.ids.append(event_id)
        self.times.append(time.time())

    def reset(self) -> None:
        self.ids, self.times = [], []
        self.webhooks = self.largest_webhook = 0


# --------------------------------------------------------------------------------------------------------- HTTP


def build_app(arrivals: Arrivals) -> web.Application:
    from urllib.parse import unquote_plus

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        if request.content_type == "application/json":
            arrivals.add(str(json.loads(body).get("event_id", "")))
        else:
            match = _FORM_EVENT_ID.search(body)
            arrivals.add(unquote_plus(match.group(1).decode()) if match else "")
        return web.Response(text="ok")

    async def alertmanager(request: web.Request) -> web.Response:
        alerts = json.loads(await request.read()).get("alerts", [])
        arrivals.webhooks += 1
        arrivals.largest_webhook = max(arrivals.largest_webhook, len(alerts))
        for alert in alerts:
            arrivals.add(str(alert.get("labels", {}).get("event_id", "")))
        return web.Response(text="ok")

    async def pushes(request: web.Request) -> web.Response:
        push = json.loads(await request.read())
        arrivals.add(str(push.get("title", "")))
        now = time.time()
        return web.json_response({"active": True, "iden": "bench", "created": now, "modified": now, "type": "note"})

    async def count(request: web.Request) -> web.Response:
        return web.json_response(
            {"count": len(arrivals.ids), "webhooks": arrivals.webhooks, "largest_webhook": arrivals.largest_webhook}
        )

    async def dump(request: web.Request) -> web.Response:
        return web.json_response({"ids": arrivals.ids, "t": arrivals.times})

    async def reset(request: web.Request) -> web.Response:
        arrivals.reset()
        return web.json_response({"count": 0})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/hook", hook)
    app.router.add_post("/am", alertmanager)
    app.router.add_post("/v2/pushes", pushes)
    app.router.add_get("/_bench/count", count)
    app.router.add_get("/_bench/arrivals", dump)
    app.router.add_post("/_bench/reset", reset)
    return app


# --------------------------------------------------------------------------------------------------------- SMTP


class SmtpSinkProtocol(asyncio.Protocol):
    """Just enough ESMTP to take mail from aiosmtplib: EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT.

    Every command is accepted; a message is recorded when its DATA ends (`CRLF.CRLF`).
    """

    def __init__(self, arrivals: Arrivals) -> None:
        self.arrivals = arrivals
        self.buffer = bytearray()
        self.in_data = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(b"220 sink.bench ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        while True:
            if self.in_data:
                # The terminating line may follow the 354 at once (an empty message) or end a body.
                if self.buffer.startswith(b".\r\n"):
                    end, skip = 0, 3
                else:
                    end = self.buffer.find(b"\r\n.\r\n")
                    if end < 0:
                        return
                    skip = 5
                message = bytes(self.buffer[:end])
                del self.buffer[: end + skip]
                self.in_data = False
                header_end = message.find(b"\r\n\r\n")
                match = _EVENT_ID_HEADER.search(message, 0, header_end if header_end >= 0 else len(message))
                self.arrivals.add(match.group(1).decode("ascii", "replace").strip() if match else "")
                self.transport.write(b"250 2.0.0 Ok: queued\r\n")
                continue
            line_end = self.buffer.find(b"\r\n")
            if line_end < 0:
                return
            line = bytes(self.buffer[:line_end])
            del self.buffer[: line_end + 2]
            self._command(line)

    def _command(self, line: bytes) -> None:
        assert self.transport is not None
        verb = line[:4].upper()
        if verb == b"EHLO":
            self.transport.write(b"250-sink.bench\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 33554432\r\n")
        elif verb == b"DATA":
            self.in_data = True
            self.transport.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
        elif verb == b"QUIT":
            self.transport.write(b"221 2.0.0 Bye\r\n")
            self.transport.close()
        else:  # HELO, MAIL, RCPT, RSET, NOOP
            self.transport.write(b"250 2.0.0 Ok\r\n")


# ---------------------------------------------------------------------------------------------------------- main


async def serve(http_port: int, smtp_port: int) -> None:
    arrivals = Arrivals()
    runner = web.AppRunner(build_app(arrivals), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", http_port, backlog=1024).start()
    loop = asyncio.get_running_loop()
    smtp = await loop.create_server(lambda: SmtpSinkProtocol(arrivals), "127.0.0.1", smtp_port, backlog=1024)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    smtp.close()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--smtp-port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.http_port, args.smtp_port))


if __name__ == "__main__":
    main()
