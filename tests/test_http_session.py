"""The HTTP channels' own client (channels/http_session.py) against a raw TCP server whose answers we script byte
by byte: keep-alive and reuse, the ways an answer can be framed, and the ways a server can misbehave."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from dispatcher.channels.http_session import HttpSession, InvalidURL, Unreachable

from .conftest import wait_until

LOCALHOST = "127.0.0.1"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class AndClose(bytes):
    """An answer after which the server closes the connection."""


# Given what the client sent (request line and headers, body), the bytes to answer; None closes the connection.
Answer = Callable[[bytes, bytes], Awaitable[bytes | None]]


class RawHttpServer:
    """Reads requests (Content-Length bodies) and writes whatever `answer` returns; counts connections."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.connections = 0
        self.open_connections = 0
        self.most_open = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://{LOCALHOST}:{self._server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> RawHttpServer:
        self._server = await asyncio.start_server(self._serve, LOCALHOST, 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        self.drop_connections()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=2)

    def drop_connections(self) -> None:
        for writer in self._writers:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        self._handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        self.connections += 1
        self.open_connections += 1
        self.most_open = max(self.most_open, self.open_connections)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lengths = [line[15:] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
                length = int(lengths[0]) if lengths else 0
                body = await reader.readexactly(length)
                self.requests.append((head, body))
                answer = await self.answer(head, body)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if isinstance(answer, AndClose):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open_connections -= 1
            self._writers.discard(writer)
            writer.close()


def answering(*answers: bytes | None) -> Answer:
    """Answers in turn, then `OK` for every later request."""
    queue = list(answers)

    async def answer(head: bytes, body: bytes) -> bytes | None:
        return queue.pop(0) if queue else OK

    return answer


@pytest.fixture
async def session() -> AsyncIterator[HttpSession]:
    http = HttpSession(concurrency=4)
    yield http
    await http.close()


async def post(http: HttpSession, url: str, body: bytes = b"x=1", **options: Any) -> tuple[int, Any, bytes]:
    return await http.post(
        url, timeout_s=5, cap_bytes=options.pop("cap_bytes", 1000), body=body, headers=options.pop("headers", {})
    )


async def test_sends_one_request_with_its_headers_and_body(session: HttpSession) -> None:
    async with RawHttpServer(answering()) as server:
        url = server.url
        status, headers, body = await post(session, f"{url}/hooks/a?b=1", b"hello", headers={"X-Key": "v"})
    assert (status, body, headers.get("content-LENGTH")) == (200, b"ok", "2")
    [(head, sent)] = server.requests
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /hooks/a?b=1 HTTP/1.1"
    assert f"Host: {url.removeprefix('http://')}" in lines
    assert "Content-Length: 5" in lines and "X-Key: v" in lines
    assert sent == b"hello"


async def test_connections_are_kept_alive_and_reused(session: HttpSession) -> None:
    """Twenty requests one after another go over one connection; forty at once over at most `concurrency`."""
    async with RawHttpServer(answering()) as server:
        for _ in range(20):
            assert (await post(session, server.url))[0] == 200
        assert server.connections == 1
        await asyncio.gather(*(post(session, server.url) for _ in range(40)))
        assert len(server.requests) == 60
        assert server.most_open <= 4


async def test_a_connection_the_server_closes_is_not_reused(session: HttpSession) -> None:
    """`Connection: close`, or an idle connection the server dropped: the next request opens a new one."""
    close = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    async with RawHttpServer(answering(close)) as server:
        await post(session, server.url)
        await post(session, server.url)
        assert server.connections == 2

    async with RawHttpServer(answering()) as server:
        await post(session, server.url)
        server.drop_connections()  # the server drops the idle connection
        await wait_until(lambda: server.open_connections == 0)  # closed on its side, and so seen by the client
        assert (await post(session, server.url))[0] == 200
        assert server.connections == 2


@pytest.mark.parametrize(
    ("answer", "body"),
    [
        (b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n", b"abcdefg"),
        (AndClose(b"HTTP/1.1 500 Oops\r\nConnection: close\r\n\r\nuntil the end"), b"until the end"),
        (AndClose(b"HTTP/1.0 500 Oops\r\n\r\nuntil the end"), b"until the end"),
    ],
    ids=["chunked", "until-close", "http-1.0"],
)
async def test_answer_bodies_however_framed(session: HttpSession, answer: bytes, body: bytes) -> None:
    async with RawHttpServer(answering(answer)) as server:
        status, _, received = await post(session, server.url)
    assert (status, received) == (500, body)


async def test_a_long_answer_is_cut_at_the_cap(session: HttpSession) -> None:
    """Only `cap_bytes` of a long answer are kept, and the next request still gets through."""
    big = b"HTTP/1.1 500 Oops\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 1_000_000
    async with RawHttpServer(answering(big)) as server:
        status, _, received = await post(session, server.url, cap_bytes=100)
        assert (status, received) == (500, b"x" * 100)
        assert (await post(session, server.url))[0] == 200


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (None, "the server closed the connection without answering"),
        (b"SMTP ready\r\n\r\n", "the answer is not valid HTTP"),
        (
            AndClose(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"),
            "the connection closed in the middle of the answer",
        ),
    ],
    ids=["no-answer", "not-http", "cut-short"],
)
async def test_a_broken_answer_is_unreachable(session: HttpSession, answer: bytes | None, reason: str) -> None:
    async with RawHttpServer(answering(answer)) as server:
        with pytest.raises(Unreachable) as caught:
            await post(session, server.url)
    assert caught.value.reason.startswith(reason)


async def test_nobody_listening_is_unreachable(session: HttpSession) -> None:
    async with RawHttpServer(answering()) as server:
        url = server.url
    with pytest.raises(Unreachable) as caught:
        await post(session, url)
    assert "Connect call failed" in caught.value.reason


async def test_a_header_with_a_line_break_is_refused_before_sending(session: HttpSession) -> None:
    async with RawHttpServer(answering()) as server:
        with pytest.raises(InvalidURL):
            await post(session, server.url, headers={"Access-Token": "abc\r\nX-Injected: 1"})
        assert server.connections == 0


@pytest.mark.parametrize("url", ["ftp://example.com/x", "/relative", "http:///no-host"])
async def test_only_absolute_http_urls(session: HttpSession, url: str) -> None:
    with pytest.raises(InvalidURL):
        await post(session, url)


async def test_a_slow_server_times_out_and_its_connection_is_dropped() -> None:
    async def slow(head: bytes, body: bytes) -> bytes | None:
        await asyncio.sleep(1)
        return OK

    http = HttpSession(concurrency=1)
    try:
        async with RawHttpServer(slow) as server:
            with pytest.raises(TimeoutError):
                await http.post(server.url, timeout_s=0.2, cap_bytes=100, body=b"", headers={})
            # The late answer must not be taken for the next request's: a new connection serves it.
            assert (await http.post(server.url, timeout_s=5, cap_bytes=100, body=b"", headers={}))[0] == 200
            assert server.connections == 2
    finally:
        await http.close()


async def test_idle_connections_beyond_concurrency_are_closed() -> None:
    """Requests to three receivers, one at a time, with `concurrency` 2: once swept, the oldest idle connection
    is closed, the two most recent stay open."""
    http = HttpSession(concurrency=2)
    try:
        async with RawHttpServer(answering()) as a, RawHttpServer(answering()) as b, RawHttpServer(answering()) as c:
            for server in (a, b, c):
                await post(http, server.url)
            http._sweep(time.monotonic())  # a sweep runs at most once a second after a request
            await wait_until(lambda: a.open_connections == 0)  # closed with any other the sweep closes
            assert (b.open_connections, c.open_connections) == (1, 1)
    finally:
        await http.close()


async def test_an_interim_answer_is_skipped(session: HttpSession) -> None:
    """A 1xx answer (103 Early Hints) comes before the real one, which is what counts."""
    interim = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
    async with RawHttpServer(answering(interim + b"HTTP/1.1 202 Accepted\r\nContent-Length: 4\r\n\r\nthx!")) as server:
        status, headers, body = await post(session, server.url)
        assert (status, body, headers.get("link")) == (202, b"thx!", None)
        assert (await post(session, server.url))[0] == 200  # and the connection goes on
        assert server.connections == 1
