"""What keeps a secret out of logs and error messages: `Secret`, whose repr is `<secret>`, and `redact_url()`."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True, repr=False)
class Secret:
    """A secret string: `reveal()` gives it, `repr()` and `str()` give `<secret>`, so logs and errors cannot leak it.

    Note that `dataclasses.asdict()` copies the value out; never serialise config objects that way.
    """

    _value: str

    def reveal(self) -> str:
        """The secret itself, for the one place that needs it (an HTTP header, an SMTP login)."""
        return self._value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__


def redact_url(url: str) -> str:
    """`url` safe for logs: user info removed, every query value (and any fragment) replaced by `***`.

    `https://u:p@hooks.example.com/n?key=abc&x` → `https://hooks.example.com/n?key=***&***`. A string that does not
    parse as a URL gives `***`.
    """
    try:
        parts = urlsplit(url)
    except ValueError:  # unbalanced IPv6 brackets
        return "***"
    netloc = parts.netloc.rpartition("@")[2]
    text = f"{parts.scheme}://{netloc}{parts.path}" if parts.scheme or netloc else parts.path
    if parts.query:
        # A bare item (`?abc123`) may be a key on its own, so it is hidden too.
        items = (f"{item.partition('=')[0]}=***" if "=" in item else "***" for item in parts.query.split("&") if item)
        text += "?" + "&".join(items)
    if parts.fragment:
        text += "#***"
    return text
