"""The HTTP client the HTTP channels (Pushbullet, Post to URL) each keep: POST a body, read the answer, keep the
connection for the next request.

A small HTTP/1.1 client of our own rather than aiohttp's `ClientSession`. A channel only ever POSTs one body to a
few URLs and reads a status, two headers and the start of the answer, and Post to URL makes one request per
delivery. `ClientSession` does much more each time (request and response objects, cookie filtering, trace hooks,
redirect, timer and payload bookkeeping): 85 µs of CPU a request on the benchmark machine against about 40 µs
here, the largest single cost of a delivery after rendering (bench/README.md). Answers are parsed by httptools
(llhttp, Node.js's C parser, also uvicorn's), so framing (chunked bodies, keep-alive rules, malformed answers) is
not ours to get right.

What it does: HTTP and HTTPS (certificates verified against the system's CAs, as before), keep-alive with up to
`concurrency` requests at once per channel, no redirects followed, no cookies kept (receivers are unrelated
sites, and each Pushbullet token is its own account), no proxies (aiohttp used none unless told to), no
compression asked for. Where a far end misbehaves it does what `ClientSession` does (tests/test_http_client_faults.py
runs both against the same servers): credentials in a URL go as basic auth, never in the `Host` header; an answer's
headers are capped (`MAX_HEADER_BYTES`, so a server streaming headers cannot grow our memory); a host with several
addresses is connected to by happy eyeballs (RFC 8305, through aiohappyeyeballs, aiohttp's own), so a dead IPv6
address costs 0.25 s, not the whole timeout; 1xx interim answers are skipped; chunked and close-delimited bodies are
read; a connection is reused after an error answer whose body was read in full.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httptools
from aiohappyeyeballs import AddrInfoType, start_connection
from yarl import URL

from dispatcher import __version__

# An idle connection is closed after this long unused (aiohttp's default keep-alive, which receivers expect).
KEEPALIVE_S = 15.0
_USER_AGENT = f"dispatcher/{__version__}"
_DEFAULT_PORTS = {"http": 80, "https": 443}
# The most bytes an answer's status line and headers may take. Real answers use a few hundred; without a bound, a
# server streaming headers would grow the parser's buffers without end. (aiohttp bounds each line at 8 KiB and the
# number of headers, which allows more in all.)
MAX_HEADER_BYTES = 64 * 1024
# How long a connection attempt to one address runs alone before the next address is tried beside it (RFC 8305's
# recommended 250 ms, aiohttp's default too).
HAPPY_EYEBALLS_DELAY_S = 0.25

# Resolves (host, port) to getaddrinfo()'s entries, in the order to try them.
Resolve = Callable[[str, int], Awaitable[Sequence[AddrInfoType]]]


class InvalidURL(ValueError):
    """The URL is not an absolute http(s) URL with a host."""


class Unreachable(Exception):
    """No answer: the name did not resolve, the connection or TLS handshake failed, the connection dropped, or the
    answer was not HTTP or had headers beyond `MAX_HEADER_BYTES`.

    `reason` says which, in words fit for a delivery's error (no URL: the caller shows its own, redacted).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Headers(dict[str, str]):
    """An answer's headers by lower-case name (the last of a repeated header); `get` takes any case."""

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name.lower(), default)


class HttpSession:
    """One per channel: at most `concurrency` requests at once, over connections kept alive between them.

    `resolve` turns a host and port into the addresses to try (default: the system's resolver, getaddrinfo); a
    test gives its own, as aiohttp's `TCPConnector(resolver=…)` allows.
    """

    def __init__(self, concurrency: int, *, resolve: Resolve | None = None) -> None:
        self.concurrency = max(1, int(concurrency))
        self._resolve = resolve or _system_resolve
        self._slots = asyncio.Semaphore(self.concurrency)
        # Idle connections by (scheme, host, port), most recently used last, with the time each went idle.
        self._idle: dict[tuple[str, str, int], list[tuple[_Connection, float]]] = {}
        self._tls: ssl.SSLContext | None = None
        self._swept_at = 0.0

    async def post(
        self, url: URL | str, *, timeout_s: float, cap_bytes: int, body: bytes, headers: dict[str, str]
    ) -> tuple[int, Headers, bytes]:
        """POST `body` without following redirects: the status, the headers and at most `cap_bytes` of the body.

        `timeout_s` bounds the request once it has a slot (waiting for a slot is not the far end's fault).
        Raises TimeoutError, InvalidURL or Unreachable.
        """
        url = URL(url) if isinstance(url, str) else url
        origin = _origin(url)
        head = _request_head(url, headers, len(body))
        async with self._slots:
            deadline = asyncio.get_running_loop().time() + timeout_s
            connection = self._take_idle(origin)
            if connection is None:
                async with asyncio.timeout_at(deadline):
                    connection = await self._connect(origin)
            try:
                status, answer_headers, answer, reusable = await connection.request(head + body, cap_bytes, deadline)
            except BaseException:
                connection.close()  # timed out, cancelled or broken mid-answer: its state is unknown
                raise
        if reusable:
            self._put_idle(origin, connection)
        else:
            connection.close()
        return status, answer_headers, answer

    def _take_idle(self, origin: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            connection, since = idle.pop()
            if connection.open and now - since < KEEPALIVE_S:
                return connection
            connection.close()
        return None

    def _put_idle(self, origin: tuple[str, str, int], connection: _Connection) -> None:
        now = time.monotonic()
        self._idle.setdefault(origin, []).append((connection, now))
        if now - self._swept_at > 1.0:  # not on every request: a sweep walks every idle connection
            self._swept_at = now
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        """Close idle connections unused for `KEEPALIVE_S` or dropped by the server, and the oldest beyond
        `concurrency` (URLs come and go: more idle connections than requests can run at once are waste)."""
        newest_first = sorted(
            ((since, origin, connection) for origin, idle in self._idle.items() for connection, since in idle),
            key=lambda entry: entry[0],
            reverse=True,
        )
        self._idle = {}
        for rank, (since, origin, connection) in enumerate(newest_first):
            if rank < self.concurrency and connection.open and now - since < KEEPALIVE_S:
                self._idle.setdefault(origin, []).insert(0, (connection, since))
            else:
                connection.close()

    async def _connect(self, origin: tuple[str, str, int]) -> _Connection:
        """A new connection to `origin`: resolve, connect by happy eyeballs, then TLS for https."""
        scheme, host, port = origin
        if scheme == "https" and self._tls is None:
            self._tls = ssl.create_default_context()
        loop = asyncio.get_running_loop()
        try:
            addresses = await self._resolve(host, port)
            if not addresses:
                raise Unreachable(f"{host} has no address")
            sock = await start_connection(addresses, happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY_S)
            try:
                _, connection = await loop.create_connection(
                    _Connection,
                    sock=sock,
                    ssl=self._tls if scheme == "https" else None,
                    server_hostname=host if scheme == "https" else None,
                )
            except BaseException:
                sock.close()
                raise
        except ssl.SSLError as err:  # a subclass of OSError whose strerror is often empty
            raise Unreachable(f"TLS: {err.reason or err}") from err
        except OSError as err:  # also socket.gaierror, and several addresses' errors in one
            raise Unreachable(err.strerror or str(err) or type(err).__name__) from err
        return connection

    async def close(self) -> None:
        """Close every idle connection (requests in flight close theirs when they end)."""
        idle, self._idle = self._idle, {}
        for entries in idle.values():
            for connection, _ in entries:
                connection.close()


async def _system_resolve(host: str, port: int) -> Sequence[AddrInfoType]:
    return await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)


def _origin(url: URL) -> tuple[str, str, int]:
    if not url.is_absolute() or url.scheme not in _DEFAULT_PORTS or not url.raw_host:
        raise InvalidURL(str(url))
    return url.scheme, url.raw_host, url.port or _DEFAULT_PORTS[url.scheme]


def _request_head(url: URL, headers: dict[str, str], length: int) -> bytes:
    """The request line and headers. A line break in a header would start a header of its own: refused.

    `Host` is the URL's host and port alone (IPv6 in brackets, the scheme's default port left out), never its
    user info. Credentials in the URL go as basic auth (RFC 7617, UTF-8), unless `headers` has an Authorization.
    """
    if any("\r" in text or "\n" in text for item in headers.items() for text in item):
        raise InvalidURL("a header holds a line break")
    auth = []
    if (url.raw_user or url.raw_password) and not any(name.lower() == "authorization" for name in headers):
        credentials = f"{url.user or ''}:{url.password or ''}".encode()
        auth = [f"Authorization: Basic {base64.b64encode(credentials).decode('ascii')}"]
    lines = [
        f"POST {url.raw_path_qs or '/'} HTTP/1.1",
        f"Host: {url.host_port_subcomponent}",
        f"User-Agent: {_USER_AGENT}",
        f"Content-Length: {length}",
        *auth,
        *(f"{name}: {value}" for name, value in headers.items()),
        "\r\n",
    ]
    return "\r\n".join(lines).encode("utf-8")


class _Connection(asyncio.Protocol):
    """One connection: one request at a time, its answer parsed as it arrives (httptools' callbacks below)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.open = False
        self._parser = httptools.HttpResponseParser(self)
        self._answer: asyncio.Future[tuple[int, Headers, bytes, bool]] | None = None
        self._headers = Headers()
        self._headers_done = False
        self._head_bytes = 0  # of the answer's status line and headers so far
        self._body = bytearray()
        self._cap = 0

    async def request(self, data: bytes, cap_bytes: int, deadline: float) -> tuple[int, Headers, bytes, bool]:
        """Send `data` (a whole request) and wait for the answer until `deadline` (loop time): status, headers,
        body, whether to keep this connection. Raises TimeoutError or Unreachable."""
        assert self.transport is not None and self._answer is None
        loop = asyncio.get_running_loop()
        self._answer = loop.create_future()
        self._headers = Headers()
        self._headers_done = False
        self._head_bytes = 0
        self._body = bytearray()
        self._cap = cap_bytes
        # A plain timer rather than asyncio.timeout(): it fails the answer instead of cancelling the task, at a
        # third of the cost, and every request has one.
        timer = loop.call_at(deadline, self._time_out)
        self.transport.write(data)
        try:
            return await self._answer
        finally:
            timer.cancel()
            self._answer = None

    def close(self) -> None:
        self.open = False
        if self.transport is not None:
            self.transport.close()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.open = True

    def data_received(self, data: bytes) -> None:
        if self._answer is None:  # nothing was asked: a server that talks out of turn is not reused
            self.close()
            return
        if not self._headers_done:
            self._head_bytes += len(data)  # with any body bytes after the headers: only checked while in them
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as err:
            self._fail(f"the answer is not valid HTTP ({err})")
            self.close()
            return
        if not self._headers_done and self._head_bytes > MAX_HEADER_BYTES:
            self._fail(f"the answer's headers are larger than {MAX_HEADER_BYTES // 1024} KiB")
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        framed = "content-length" in self._headers or "chunked" in self._headers.get("transfer-encoding", "")
        if self._headers_done and not framed:
            self._finish(reusable=False)  # a body that ends with the connection (no length given)
        elif self._headers_done:
            self._fail("the connection closed in the middle of the answer")
        else:
            self._fail("the server closed the connection without answering")

    # httptools.HttpResponseParser callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, chunk: bytes) -> None:
        self._body += chunk[: self._cap - len(self._body)]
        if len(self._body) >= self._cap:
            # Enough to quote an error; the rest is not worth reading (the connection is not reused).
            self._finish(reusable=False)
            self.close()

    def on_message_complete(self) -> None:
        if 100 <= self._parser.get_status_code() < 200:  # an interim answer (103 Early Hints): the real one follows
            self._headers, self._headers_done, self._body, self._head_bytes = Headers(), False, bytearray(), 0
            return
        self._finish(reusable=self._parser.should_keep_alive())

    def _finish(self, *, reusable: bool) -> None:
        if self._answer is not None and not self._answer.done():
            status = self._parser.get_status_code()
            self._answer.set_result((status, self._headers, bytes(self._body), reusable and self.open))

    def _fail(self, reason: str) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(Unreachable(reason))

    def _time_out(self) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(TimeoutError())
