"""The HTTP channels' own client against aiohttp's `ClientSession`, side by side, on what a far end can do wrong.

Every test runs with both clients against the same real local server (raw asyncio servers that write answers byte
by byte, so that framing is ours to choose). Ours is kept only while it does what `ClientSession` does here:
credentials never in `Host`; endless headers fail the request quickly instead of eating memory; a dead IPv6
address does not hold up a working IPv4 one (happy eyeballs); chunked, close-delimited and 1xx answers; the
connection reused after error answers.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from dispatcher.channels.base import DeliveryError, Message
from dispatcher.channels.http_session import MAX_HEADER_BYTES, HttpSession, Unreachable
from dispatcher.channels.pushbullet import PushbulletChannel
from dispatcher.config import PushbulletChannelConfig

LOCALHOST = "127.0.0.1"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
AddrInfo = tuple[int, int, int, str, tuple[Any, ...]]
Resolve = Callable[[str, int], Awaitable[Sequence[AddrInfo]]]


class Failed(Exception):
    """A client's request failed without an answer (ours: Unreachable or TimeoutError; aiohttp: ClientError)."""


class OurClient:
    """dispatcher's HttpSession."""

    def __init__(self, resolve: Resolve | None = None) -> None:
        self.http = HttpSession(4, resolve=resolve)

    async def post(
        self, url: str, *, headers: dict[str, str] | None = None, timeout_s: float = 10
    ) -> tuple[int, bytes]:
        try:
            status, _, body = await self.http.post(
                url, timeout_s=timeout_s, cap_bytes=65536, body=b"x=1", headers=headers or {}
            )
        except (Unreachable, TimeoutError) as err:
            raise Failed(getattr(err, "reason", "timed out")) from err
        return status, body

    async def close(self) -> None:
        await self.http.close()


class _ScriptedResolver(AbstractResolver):
    """aiohttp's resolver interface over the same `resolve` function our client takes."""

    def __init__(self, resolve: Resolve) -> None:
        self._resolve = resolve

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=address[0], port=address[1], family=family_, proto=proto, flags=0)
            for family_, _, proto, _, address in await self._resolve(host, port)
        ]

    async def close(self) -> None:
        pass


class AiohttpClient:
    """aiohttp's ClientSession as the channels used it: no redirects, the whole answer read."""

    def __init__(self, resolve: Resolve | None = None) -> None:
        resolver = _ScriptedResolver(resolve) if resolve is not None else None
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=4, resolver=resolver))

    async def post(
        self, url: str, *, headers: dict[str, str] | None = None, timeout_s: float = 10
    ) -> tuple[int, bytes]:
        try:
            async with self.session.post(
                url,
                data=b"x=1",
                headers=headers or {},
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as response:
                return response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError) as err:
            raise Failed(str(err)) from err

    async def close(self) -> None:
        await self.session.close()


Client = OurClient | AiohttpClient
CLIENTS = {"ours": OurClient, "aiohttp": AiohttpClient}


@pytest.fixture(params=list(CLIENTS))
def client_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def client(client_kind: str) -> AsyncIterator[Client]:
    made = CLIENTS[client_kind]()
    yield made
    await made.close()


# Given the request's head and body, write the answer with `writer` (as slowly or as much as the test needs);
# return False to close the connection afterwards.
Serve = Callable[[bytes, bytes, asyncio.StreamWriter], Awaitable[bool]]


class RawServer:
    """A TCP server reading HTTP/1.1 requests (Content-Length bodies) and answering through `serve`."""

    def __init__(self, serve: Serve, host: str = LOCALHOST, port: int = 0) -> None:
        self.serve = serve
        self.host, self.port = host, port
        self.connections = 0
        self.heads: list[bytes] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lengths = [line[15:] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
                body = await reader.readexactly(int(lengths[0]) if lengths else 0)
                self.heads.append(head)
                if not await self.serve(head, body, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


def answering(*answers: bytes, close_after: bool = False) -> Serve:
    """Answers in turn, then OK for every later request; `close_after`: close once the scripted ones are sent."""
    script = list(answers)

    async def serve(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(script.pop(0) if script else OK)
        await writer.drain()
        return not (close_after and not script)

    return serve


def header_lines(head: bytes) -> dict[str, str]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    return {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines if line)}


# ---------------------------------------------------------------------------------------------------- the Host header


@pytest.mark.parametrize("host", [LOCALHOST, "::1"], ids=["ipv4", "ipv6"])
async def test_host_never_carries_url_credentials(client: Client, host: str) -> None:
    """`http://user:p%40ss@host:port/` sends `Host: host:port` (IPv6 in brackets) and the credentials as basic
    auth, decoded: nowhere else in the request head."""
    async with RawServer(answering(), host=host) as server:
        authority = server.url.removeprefix("http://")
        assert await client.post(f"http://alice:p%40ss-w0rd@{authority}/hook?k=v") == (200, b"ok")
    [head] = server.heads
    headers = header_lines(head)
    assert headers["host"] == authority
    assert headers["authorization"] == "Basic " + base64.b64encode(b"alice:p@ss-w0rd").decode()
    without_auth = head.replace(headers["authorization"].encode(), b"")
    assert b"alice" not in without_auth and b"ss-w0rd" not in without_auth and b"p%40" not in without_auth
    assert head.startswith(b"POST /hook?k=v HTTP/1.1\r\n")


async def test_our_client_keeps_an_authorization_header_it_is_given() -> None:
    """A caller's own Authorization (Post to URL builds it from the URL it strips) wins over the URL's user info."""
    client = OurClient()
    try:
        async with RawServer(answering()) as server:
            url = server.url.replace("http://", "http://u:pw@")
            await client.post(url, headers={"Authorization": "Bearer abc"})
    finally:
        await client.close()
    headers = header_lines(server.heads[0])
    assert headers["authorization"] == "Bearer abc" and headers["host"] == server.url.removeprefix("http://")


# ------------------------------------------------------------------------------------------------- answers, framed


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n",
            (500, b"abcdefg"),
        ),
        (
            b"HTTP/1.1 502 Bad\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n",
            (502, b"abc"),
        ),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", (200, b"until the end")),
        (b"HTTP/1.0 503 Busy\r\n\r\nuntil the end", (503, b"until the end")),
    ],
    ids=["chunked", "chunked-extension-trailer", "close-delimited", "http-1.0"],
)
async def test_bodies_however_framed(client: Client, answer: bytes, expected: tuple[int, bytes]) -> None:
    """Chunked bodies (with extensions and trailers), bodies ended by the close, HTTP/1.0: the same status and
    body with both clients."""
    close = b"chunked" not in answer
    async with RawServer(answering(answer, close_after=close)) as server:
        assert await client.post(server.url) == expected


@pytest.mark.parametrize(
    "interim",
    [b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" * 2],
    ids=["100-continue", "103-early-hints-twice"],
)
async def test_interim_answers_are_skipped_and_the_connection_goes_on(client: Client, interim: bytes) -> None:
    """1xx answers before the real one are skipped; the next request goes over the same connection."""
    final = b"HTTP/1.1 202 Accepted\r\nContent-Length: 4\r\n\r\nthx!"
    async with RawServer(answering(interim + final)) as server:
        assert await client.post(server.url) == (202, b"thx!")
        assert await client.post(server.url) == (200, b"ok")
        assert server.connections == 1


async def test_the_connection_is_reused_after_error_answers(client: Client) -> None:
    """A 500 with a Content-Length body, a 404 with a chunked one, a 429 without a body: each read in full, and
    the following requests go over the same connection."""
    answers = (
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\n\r\noops!",
        b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nnope\r\n0\r\n\r\n",
        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n",
    )
    async with RawServer(answering(*answers)) as server:
        results = [await client.post(server.url) for _ in range(4)]
        assert results == [(500, b"oops!"), (404, b"nope"), (429, b""), (200, b"ok")]
        assert server.connections == 1


# ------------------------------------------------------------------------------------------------- endless headers


def endless_headers(line: Callable[[int], bytes]) -> Serve:
    """After the status line, header bytes from `line(n)` for as long as the client reads (at most 60 s)."""

    async def serve(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\n")
        deadline = time.monotonic() + 60
        n = 0
        with contextlib.suppress(ConnectionError):
            while time.monotonic() < deadline and not writer.is_closing():
                writer.write(b"".join(line(n + i) for i in range(256)))
                n += 256
                await writer.drain()
        return False

    return serve


@pytest.mark.parametrize(
    "line",
    [
        lambda n: b"X-Filler-%d: %s\r\n" % (n, b"a" * 40),
        lambda n: (b"X-Endless: " if n == 0 else b"") + b"a" * 100,
    ],
    ids=["many-headers", "one-endless-header"],
)
async def test_endless_headers_fail_the_request_quickly(client: Client, line: Callable[[int], bytes]) -> None:
    """A server that streams headers without end: the request fails within seconds (not at its 30 s timeout,
    with everything read kept in memory), and the next request, to a sane server, goes through."""
    async with RawServer(endless_headers(line)) as server:
        started = time.monotonic()
        with pytest.raises(Failed) as caught:
            await client.post(server.url, timeout_s=30)
        assert time.monotonic() - started < 5
    if isinstance(client, OurClient):
        assert caught.value.args[0] == f"the answer's headers are larger than {MAX_HEADER_BYTES // 1024} KiB"
    async with RawServer(answering()) as sane:
        assert await client.post(sane.url) == (200, b"ok")


async def test_our_header_cap_bounds_what_is_read() -> None:
    """Our client stops reading a streaming-headers answer within a few chunks of `MAX_HEADER_BYTES` (the server
    can write little more than that plus the sockets' buffers before the connection is gone)."""
    written = [0]
    stopped = asyncio.Event()  # the server has noticed the close and stopped writing

    async def serve(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\n")
        try:
            with contextlib.suppress(ConnectionError):
                while not writer.is_closing() and written[0] < 512 * 1024 * 1024:
                    chunk = b"X-Filler: " + b"b" * 1000 + b"\r\n"
                    writer.write(chunk * 64)
                    written[0] += len(chunk) * 64
                    await writer.drain()
        finally:
            stopped.set()
        return False

    client = OurClient()
    try:
        async with RawServer(serve) as server:
            with pytest.raises(Failed):
                await client.post(server.url, timeout_s=30)
            await asyncio.wait_for(stopped.wait(), 10)
    finally:
        await client.close()
    assert written[0] < 32 * 1024 * 1024, written[0]


# ------------------------------------------------------------------------------------------------- happy eyeballs


@contextlib.contextmanager
def dead_ipv6_port() -> Any:
    """A port on ::1 where connecting hangs, as to an unreachable address: a listening socket whose accept queue
    is full (never accepted), so the kernel drops further SYNs instead of refusing them."""
    listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    fillers: list[socket.socket] = []
    try:
        listener.bind(("::1", 0))
        listener.listen(0)
        for _ in range(4):
            filler = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(listener.getsockname()[:2])
            fillers.append(filler)
        yield listener.getsockname()[1]
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def ipv6_works() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_works(), reason="no IPv6 loopback")
async def test_a_dead_ipv6_address_does_not_hold_up_a_working_ipv4_one(client_kind: str) -> None:
    """A name resolving to an unreachable IPv6 address first and a working IPv4 one: the request is answered
    within a second or two (happy eyeballs tries IPv4 0.25 s later), not after the 10 s timeout."""
    with dead_ipv6_port() as dead_port:
        # Proof that the IPv6 address really hangs, as a dead one does.
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1):
                await asyncio.open_connection("::1", dead_port)
        async with RawServer(answering()) as live:

            async def resolve(host: str, port: int) -> Sequence[AddrInfo]:
                """`dual.example` as a DNS server would give it: AAAA first, then A."""
                assert host == "dual.example"
                return [
                    (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("::1", dead_port, 0, 0)),
                    (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (LOCALHOST, live.port)),
                ]

            client = CLIENTS[client_kind](resolve)
            try:
                started = time.monotonic()
                assert await client.post(f"http://dual.example:{live.port}/", timeout_s=10) == (200, b"ok")
                assert time.monotonic() - started < 2
            finally:
                await client.close()
            assert header_lines(live.heads[0])["host"] == f"dual.example:{live.port}"


# ------------------------------------------------------------------------------------------ the channels' errors


async def test_credentials_in_a_pushbullet_api_url_stay_out_of_its_errors() -> None:
    """An `api_url` with user info (a proxy's) that cannot be reached: the delivery error names the URL without
    the password; the credentials go as basic auth, never in `Host`."""
    async with RawServer(answering()) as server:
        port = server.port
    channel = PushbulletChannel(
        PushbulletChannelConfig(api_url=f"http://proxy:pr0xy-pw@127.0.0.1:{port}", timeout_s=5.0), hostname="h"
    )
    try:
        with pytest.raises(DeliveryError) as caught:
            await channel.send(Message("s", "t", "<p>t</p>", "e-1", "Backup/Failure", "high", "h", None), "o.token")
    finally:
        await channel.close()
    assert caught.value.retryable
    assert str(caught.value).startswith(f"cannot reach Pushbullet at http://127.0.0.1:{port}/v2/pushes: ")
    assert "pr0xy-pw" not in str(caught.value)
