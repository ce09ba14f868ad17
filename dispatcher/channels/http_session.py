"""The HTTP client session the HTTP channels (Pushbullet, Post to URL) each keep, made the same way for both."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from dispatcher import __version__


class HttpSession:
    """One `aiohttp.ClientSession` per channel, opened on first use and reused for every request.

    Created lazily: a ClientSession belongs to the running loop, which the channel's constructor may not see.
    No cookies are kept: receivers are unrelated sites, and each Pushbullet token is its own account, so
    nothing one response sets may ride along on another's request.
    """

    def __init__(self, concurrency: int) -> None:
        self.concurrency = max(1, int(concurrency))
        self._slots = asyncio.Semaphore(self.concurrency)
        self._session: aiohttp.ClientSession | None = None

    def get(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.concurrency),
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={"User-Agent": f"dispatcher/{__version__}"},
                # `post()` bounds each request itself; aiohttp's default (5 min in all, 30 s to connect) only
                # added two timers per request (3-4 % of a request's CPU).
                timeout=aiohttp.ClientTimeout(),
            )
        return self._session

    async def post(self, url: Any, *, timeout_s: float, cap_bytes: int, **options: Any) -> tuple[int, Any, bytes]:
        """POST without following redirects: the status, the headers and at most `cap_bytes` of the body.

        At most `concurrency` requests at once; `timeout_s` bounds the request once it has a slot (waiting for a
        slot is not the far end's fault). Raises TimeoutError, aiohttp.ClientError or OSError.
        """
        async with self._slots:
            async with asyncio.timeout(timeout_s):
                async with self.get().post(url, allow_redirects=False, **options) as response:
                    return response.status, response.headers, await read_capped(response, cap_bytes)

    async def close(self) -> None:
        """Close the session, if one was opened."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


async def read_capped(response: aiohttp.ClientResponse, cap_bytes: int) -> bytes:
    """At most `cap_bytes` of a response body: enough to quote an error, never a receiver's whole answer."""
    body = bytearray()
    async for chunk in response.content.iter_chunked(16 * 1024):
        body += chunk[: cap_bytes - len(body)]
        if len(body) >= cap_bytes:
            break
    return bytes(body)
