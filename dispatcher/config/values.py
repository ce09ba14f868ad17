"""Value checks shared by several keys: each takes the text of a value and returns it, or raises ValueError with
the message of the issue (`Reader.parsed` records it at the value's position)."""

from __future__ import annotations

import email.policy
import re
from collections.abc import Callable
from urllib.parse import urlsplit

from .secret import redact_url

TYPE_KEY_RE = re.compile(r"^[A-Za-z0-9_.\-]+/(?:\*|[A-Za-z0-9_.\-]+)$")  # App/Event (as events.py) or App/*
_TOPIC_FORBIDDEN = set("+#\0")
_LABEL = r"[^\W_](?:[\w-]{0,61}[^\W_])?"
_DOMAIN_RE = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_LOCAL_RE = re.compile(r"^[^\s@<>()\[\],;:\\\"]+$")
LISTEN_RE = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.%\w]+)\]|(?P<host>[^\s:\[\]]+)):(?P<port>[0-9]+)$")


def _is_addr_spec(text: str) -> bool:
    """Whether `text` is a plain address `local@domain` (no display name)."""
    local, at, domain = text.rpartition("@")
    return bool(at) and bool(_LOCAL_RE.match(local)) and bool(_DOMAIN_RE.match(domain))


def email_address(text: str) -> str:
    if not _is_addr_spec(text):
        raise ValueError(f"expected an email address like admin@example.com, got {text!r}")
    return text


def from_address(text: str) -> str:
    """`root@host` or `Name <root@host>`: exactly one address, no header-breaking characters."""
    bad = ValueError(f'expected an address like "Server notices <root@example.com>", got {text!r}')
    if "\r" in text or "\n" in text:
        raise bad
    header = email.policy.default.header_factory("From", text)
    if header.defects or len(header.addresses) != 1 or not _is_addr_spec(header.addresses[0].addr_spec):
        raise bad
    return text


def http_url(text: str, *, secret: bool) -> str:
    """An http(s) URL with a host. A secret URL is not quoted back, since it may carry a key."""
    shown = "" if secret else f", got {redact_url(text)!r}"
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise ValueError(f"expected an http:// or https:// URL with a valid port{shown}") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL{shown}")
    return text


def topic(text: str) -> str:
    if not text or text.startswith("/") or text.endswith("/") or _TOPIC_FORBIDDEN & set(text):
        raise ValueError(f"expected an MQTT topic without wildcards or leading/trailing '/', got {text!r}")
    return text


def name_without_spaces(what: str) -> Callable[[str], str]:
    def check(text: str) -> str:
        if not text or any(ch.isspace() for ch in text):
            raise ValueError(f"expected a {what} without spaces, got {text!r}")
        return text

    return check
