"""The channel contract: send one rendered message to one target, or say why not.

A channel is Alertmanager's `Notify` in Python: `send()` returns when the target accepted the message and raises
`DeliveryError` otherwise, saying whether the failure is worth retrying (`retryable`) and, when the far end said so,
how long to wait (`retry_after_s`). Retries, backoff and bookkeeping live in the pipeline, never in a channel; a
channel only bounds each attempt by its own `timeout_s`, so that a hung server becomes a retryable failure.
"""

from __future__ import annotations

import abc
import hashlib
import math
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

from dispatcher.errors import DispatcherError

# What a channel sends, made by the renderer: channels name it from here (re-exported for plugins).
from dispatcher.message import Message as Message


class DeliveryError(DispatcherError):
    """A send failed. `retryable` says whether another attempt may succeed.

    `retry_after_s` is the wait the far end asked for (HTTP `Retry-After`, Pushbullet's `X-Ratelimit-Reset`),
    or None. The message never holds a secret (tokens, passwords, URL credentials).
    """

    def __init__(self, message: str, *, retryable: bool, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.retry_after_s = retry_after_s

    def __repr__(self) -> str:
        return f"DeliveryError({self.message!r}, retryable={self.retryable!r}, retry_after_s={self.retry_after_s!r})"


class Channel(abc.ABC):
    """A way of delivering a `Message` to a target (an address, a token, a URL).

    Built from the channel's config section and the dispatcher's hostname. `send()` may be called concurrently;
    `close()` releases connections and is called once, when the channel is no longer used.
    """

    name: ClassVar[str]

    def __init__(self, config: Any, *, hostname: str) -> None:
        self.config = config
        self.hostname = hostname

    @abc.abstractmethod
    async def send(self, message: Message, target: str) -> None:
        """Deliver `message` to `target`; raise `DeliveryError` on failure. Never retries."""

    def describe_target(self, target: str) -> str:
        """A form of `target` safe for logs and the API.

        This default shows only a short hash, so a plugin that forgets to override it leaks nothing; channels
        whose targets hold no secret override it to show more.
        """
        return f"{self.name}:{short_hash(target)}"

    async def close(self) -> None:  # noqa: B027 - a no-op default on purpose: most plugins hold nothing
        """Release connections and sessions. The default holds nothing and does nothing."""


def short_hash(secret: str) -> str:
    """The first 8 hex digits of the SHA-256 of `secret`: tells targets apart without revealing them."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()[:8]


def parse_retry_after(value: str | None, *, now_s: float) -> float | None:
    """Seconds to wait from an HTTP `Retry-After` value (delay-seconds or an HTTP-date), never negative.

    `now_s` is the current epoch time. None when the header is absent or unreadable.
    """
    if not value or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        # RFC 9110 HTTP-dates are GMT; a naive result means the zone was "-0000" or missing.
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now_s)
