"""The Post to URL channel: one HTTP POST per URL with the notification's fields.

Fields: `subject`, `body` (the text), `application` and `event_name` (the two halves of the type), `hostname`,
`event_id`, `event_type`, `importance`, `account` (empty if none). A digest (several events in one message) adds
`count`, the number of its events, and `event_ids`, every event's id in the order the body lists them (in a form
the field repeated, once per id; in JSON a list, and `count` a number); its `event_id` is the first of them.

The URL's query string is removed from the URL and merged into the body, its parameters first; a parameter named
like one of these fields is replaced by the field. Credentials in the URL (`https://user:pass@host/...`) are sent
as HTTP basic auth and never appear in logs or errors. `format: form` sends `application/x-www-form-urlencoded;
charset=UTF-8`, `format: json` one JSON object with the same names (a repeated query parameter becomes a list).

2xx is success; 408, 429, 5xx, connection errors and timeouts are retryable (429 and 503 honour `Retry-After`);
other 4xx are permanent; redirects are not followed and are permanent.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import structlog
from yarl import URL

from dispatcher.channels.base import Channel, DeliveryError, Message, parse_retry_after, short_hash
from dispatcher.channels.http_session import HttpSession, InvalidURL, Unreachable
from dispatcher.config import redact_url

log = structlog.get_logger(__name__)

_BODY_CAP_BYTES = 64 * 1024
_SNIPPET_CHARS = 200
_WHITESPACE = re.compile(r"\s+")
_FORM_CONTENT_TYPE = "application/x-www-form-urlencoded; charset=UTF-8"
_JSON_CONTENT_TYPE = "application/json"


@dataclass(frozen=True, slots=True)
class _Endpoint:
    """A configured URL taken apart: where to POST, with what auth, which parameters, and what to hide."""

    url: URL
    params: tuple[tuple[str, str], ...] = field(repr=False)
    authorization: str | None = field(repr=False)
    secrets: tuple[str, ...] = field(repr=False)

    def headers(self, content_type: str) -> dict[str, str]:
        headers = {"Content-Type": content_type}
        if self.authorization is not None:
            headers["Authorization"] = self.authorization
        return headers


def form_encode(pairs: list[tuple[str, str]]) -> bytes:
    """`application/x-www-form-urlencoded` in UTF-8, as every form parser reads it back (WHATWG, `parse_qsl`).

    yarl's query quoter (C) does it several times faster than `urlencode`, which quotes byte by byte in Python:
    a message body is kilobytes, so this is much of what Post to URL costs per message. It leaves the sub-delims
    that need no quoting in a query (`!$'()*,/:?@`) as they are; `&`, `=`, `+`, `;`, `%` and every non-ASCII
    byte are quoted, and a space becomes `+`.
    """
    return URL.build(query=pairs).raw_query_string.encode("ascii")


class PostUrlChannel(Channel):
    """POSTs each message to one URL, form-encoded or as JSON (`config.format`).

    `config` has `timeout_s`, `format` (`form` | `json`) and `concurrency`. One HTTP session, created on first
    use, serves every send.
    """

    name = "posturl"

    def __init__(self, config: Any, *, hostname: str) -> None:
        super().__init__(config, hostname=hostname)
        self._http = HttpSession(config.concurrency)

    def describe_target(self, target: str) -> str:
        """The URL without credentials and with query values masked: `https://host/path?key=***`.

        A target that is not an http(s) URL with a host shows as `<invalid URL …>` with a short hash: how such a
        string splits into parts is guesswork, and a wrong guess could show a password.
        """
        return _describe_target(target)

    async def send(self, message: Message, target: str) -> None:
        """POST `message`'s fields to the URL `target`; raise `DeliveryError` saying whether to retry."""
        endpoint = _parse_endpoint(target)
        shown = _describe_target(target)
        data, content_type = self.encode_body(message, endpoint.params)
        timeout_s = float(self.config.timeout_s)
        try:
            status, headers, body = await self._http.post(
                endpoint.url,
                timeout_s=timeout_s,
                cap_bytes=_BODY_CAP_BYTES,
                body=data,
                headers=endpoint.headers(content_type),
            )
        except TimeoutError as err:
            raise DeliveryError(f"{shown} did not answer within {timeout_s:g} s", retryable=True) from err
        except InvalidURL as err:
            raise DeliveryError(f"{shown} is not a valid URL", retryable=False) from err
        except Unreachable as err:
            reason = _scrub(err.reason, endpoint.secrets)
            raise DeliveryError(f"cannot reach {shown}: {reason}", retryable=True) from err
        if 200 <= status < 300:
            log.debug("posturl_sent", target=shown, event_id=message.event_id)
            return
        raise _status_error(status, headers, body, shown, endpoint)

    def encode_body(self, message: Message, params: tuple[tuple[str, str], ...]) -> tuple[bytes, str]:
        """The request body and its content type: the URL's parameters, then the message's fields."""
        fields = message_fields(message)
        listed = {"event_ids": list(message.event_ids)} if message.event_ids else {}
        kept = [(key, value) for key, value in params if key not in fields and key not in listed]
        if self.config.format == "json":
            merged: dict[str, str | list[str]] = {}
            for key, value in kept:
                previous = merged.get(key)
                if previous is None:
                    merged[key] = value
                elif isinstance(previous, list):
                    previous.append(value)
                else:
                    merged[key] = [previous, value]
            merged.update(fields)
            merged.update(listed)
            document: dict[str, str | int | list[str]] = dict(merged)
            if message.event_ids:
                document["count"] = len(message.event_ids)
            return json.dumps(document, ensure_ascii=False).encode("utf-8"), _JSON_CONTENT_TYPE
        pairs = [*kept, *fields.items(), *(("event_ids", event_id) for event_id in listed.get("event_ids", ()))]
        return form_encode(pairs), _FORM_CONTENT_TYPE

    async def close(self) -> None:
        """Close the HTTP session, if one was opened."""
        await self._http.close()


def message_fields(message: Message) -> dict[str, str]:
    """The fields Post to URL sends for `message`, in their documented order (a digest's `count` last; its
    `event_ids` list is added by `encode_body`)."""
    fields = {
        "subject": message.subject,
        "body": message.text,
        "application": message.app,
        "event_name": message.event_name,
        "hostname": message.hostname,
        "event_id": message.event_id,
        "event_type": message.event_type,
        "importance": message.importance,
        "account": message.account or "",
    }
    if message.event_ids:
        fields["count"] = str(len(message.event_ids))
    return fields


def _http_url(target: str) -> URL | None:
    """`target` parsed, if it is an absolute http(s) URL with a host; else None."""
    try:
        url = URL(target.strip())
    except (ValueError, TypeError):
        return None
    if url.scheme not in ("http", "https") or not url.host:
        return None
    return url


# Targets are few (the contacts' URLs) and each is sent to many times: parse and redact each once.
@functools.lru_cache(maxsize=1024)
def _describe_target(target: str) -> str:
    if _http_url(target) is None:
        return f"<invalid URL {short_hash(target)}>"
    return redact_url(target.strip())


@functools.lru_cache(maxsize=1024)
def _parse_endpoint(target: str) -> _Endpoint:
    url = _http_url(target)
    if url is None:
        raise DeliveryError(f"<invalid URL {short_hash(target)}> is not an http(s) URL", retryable=False)
    authorization = None
    if url.user is not None or url.password is not None:
        # RFC 7617 basic auth, UTF-8 as its charset parameter recommends.
        credentials = f"{url.user or ''}:{url.password or ''}".encode()
        authorization = "Basic " + base64.b64encode(credentials).decode("ascii")
    params = tuple((str(key), str(value)) for key, value in url.query.items())
    secrets = tuple(
        value for value in (url.user, url.password, url.raw_user, url.raw_password, *(v for _, v in params)) if value
    )
    bare = url.with_user(None).with_password(None).with_query(None).with_fragment(None)
    return _Endpoint(url=bare, params=params, authorization=authorization, secrets=secrets)


def _status_error(status: int, headers: Any, body: bytes, shown: str, endpoint: _Endpoint) -> DeliveryError:
    """Classify a non-2xx answer; the message shows the redacted URL and the start of the body, secrets blanked."""
    snippet = _WHITESPACE.sub(" ", body.decode("utf-8", "replace")).strip()[:_SNIPPET_CHARS]
    snippet = _scrub(snippet, endpoint.secrets)
    if 300 <= status < 400:
        return DeliveryError(
            f"HTTP {status} from {shown}: redirected to {_redirect_target(headers, endpoint)}"
            " (Post to URL does not follow redirects; configure the final URL)",
            retryable=False,
        )
    detail = f"HTTP {status} from {shown}" + (f": {snippet}" if snippet else "")
    if status in (408, 429) or status >= 500:
        retry_after_s = None
        if status in (429, 503):
            retry_after_s = parse_retry_after(headers.get("Retry-After"), now_s=time.time())
        return DeliveryError(detail, retryable=True, retry_after_s=retry_after_s)
    return DeliveryError(detail, retryable=False)


def _redirect_target(headers: Any, endpoint: _Endpoint) -> str:
    location = headers.get("Location")
    if not location:
        return "nowhere (no Location header)"
    try:
        return _scrub(redact_url(str(endpoint.url.join(URL(location)))), endpoint.secrets)
    except (ValueError, TypeError):
        return "an invalid URL"


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    # Longest first, so a secret that contains another is blanked whole.
    for secret in sorted(set(secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
