"""The Pushbullet channel: one note push per access token.

`POST {api_url}/v2/pushes` with the token in the `Access-Token` header and `{"type": "note", "title", "body"}`.
Pushbullet answers errors as `{"error": {"type", "message", "code", "cat"}}`; 401/403 mean the token was refused
(permanent), 429 means rate limited until `X-Ratelimit-Reset` (epoch seconds; retryable).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import structlog

from dispatcher.channels.base import Channel, DeliveryError, Message, parse_retry_after, short_hash
from dispatcher.channels.http_session import HttpSession, InvalidURL, Unreachable
from dispatcher.config import redact_url

log = structlog.get_logger(__name__)

# Enough of an error body to show Pushbullet's message; the rest is not worth holding in memory.
_BODY_CAP_BYTES = 64 * 1024
_SNIPPET_CHARS = 200
_WHITESPACE = re.compile(r"\s+")


class PushbulletChannel(Channel):
    """Pushes each message as a note to the Pushbullet account of one access token.

    `config` has `api_url` (`https://api.pushbullet.com`), `timeout_s` and `concurrency`. One HTTP session,
    created on first use, serves every send.
    """

    name = "pushbullet"

    def __init__(self, config: Any, *, hostname: str) -> None:
        super().__init__(config, hostname=hostname)
        self._pushes_url = str(config.api_url).rstrip("/") + "/v2/pushes"
        # For errors: an api_url may carry credentials (a proxy's); the HTTP client sends them as basic auth.
        self._shown_url = redact_url(self._pushes_url)
        self._http = HttpSession(config.concurrency)

    def describe_target(self, target: str) -> str:
        """`pushbullet:` and the first 8 hex digits of the token's SHA-256: tells tokens apart, reveals none."""
        return f"pushbullet:{short_hash(target.strip())}"

    async def send(self, message: Message, target: str) -> None:
        """Push `message` as a note with the access token `target`; raise `DeliveryError` saying whether to retry."""
        token = target.strip()
        if not token or not token.isprintable():
            raise DeliveryError(f"{self.describe_target(target)} is not a usable access token", retryable=False)
        payload = {"type": "note", "title": message.subject, "body": message.text}
        timeout_s = float(self.config.timeout_s)
        try:
            status, headers, body = await self._http.post(
                self._pushes_url,
                timeout_s=timeout_s,
                cap_bytes=_BODY_CAP_BYTES,
                body=json.dumps(payload).encode("utf-8"),
                headers={"Content-Type": "application/json", "Access-Token": token},
            )
        except TimeoutError as err:
            raise DeliveryError(f"Pushbullet did not answer within {timeout_s:g} s", retryable=True) from err
        except InvalidURL as err:
            raise DeliveryError(f"Pushbullet api_url is not a valid URL: {self._shown_url}", retryable=False) from err
        except Unreachable as err:
            raise DeliveryError(f"cannot reach Pushbullet at {self._shown_url}: {err.reason}", retryable=True) from err
        if 200 <= status < 300:
            log.debug("pushbullet_sent", target=self.describe_target(target), event_id=message.event_id)
            return
        raise _status_error(status, headers, body, token)

    async def close(self) -> None:
        """Close the HTTP session, if one was opened."""
        await self._http.close()


def _status_error(status: int, headers: Any, body: bytes, token: str) -> DeliveryError:
    """Classify a non-2xx answer; the message quotes Pushbullet's `error.message`, never the token."""
    detail = _error_message(body, token) or f"HTTP {status}"
    if status in (401, 403):
        return DeliveryError(f"Pushbullet refused the access token ({status}: {detail})", retryable=False)
    if status == 429:
        return DeliveryError(
            f"Pushbullet rate limit reached (429: {detail})",
            retryable=True,
            retry_after_s=_ratelimit_wait_s(headers),
        )
    if status == 408 or status >= 500:
        return DeliveryError(
            f"Pushbullet error ({status}: {detail})",
            retryable=True,
            retry_after_s=parse_retry_after(headers.get("Retry-After"), now_s=time.time()),
        )
    return DeliveryError(f"Pushbullet rejected the push ({status}: {detail})", retryable=False)


def _ratelimit_wait_s(headers: Any) -> float | None:
    """Seconds until `X-Ratelimit-Reset` (epoch seconds), never negative; else `Retry-After`; else None."""
    reset = headers.get("X-Ratelimit-Reset")
    if reset:
        try:
            return max(0.0, float(reset) - time.time())
        except ValueError:
            pass
    return parse_retry_after(headers.get("Retry-After"), now_s=time.time())


def _error_message(body: bytes, token: str) -> str:
    """Pushbullet's `error.message` (else the start of the body), on one line, with the token blanked."""
    text = ""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        error = data["error"]
        text = str(error.get("message") or error.get("code") or error.get("type") or "")
    if not text:
        text = body.decode("utf-8", "replace")
    text = _WHITESPACE.sub(" ", text).strip()[:_SNIPPET_CHARS]
    return text.replace(token, "<token>") if token else text
