"""The subject line: one clean line whatever the data held (`clean_subject`), and the prefix the engine, not
the template, puts before it (`subject_prefix`: `[account]` for the account's own side, `[hostname]` otherwise).
"""

from __future__ import annotations

import unicodedata
from typing import TYPE_CHECKING

from ..events import Event

if TYPE_CHECKING:
    from ..routing.recipients import Recipient

SUBJECT_MAX_CHARS = 200
# Recipient kinds whose notices about an account are prefixed with the account rather than the hostname.
ACCOUNT_SIDE_KINDS = frozenset({"account", "client", "contact"})


def clean_subject(subject: str, max_chars: int = SUBJECT_MAX_CHARS) -> str:
    """One line whatever the data held: whitespace (CR, LF, tabs, Unicode separators) collapsed to single spaces,
    other control characters dropped, trimmed, and cut at `max_chars` with an ellipsis."""
    if subject.isprintable():  # the usual case: at most runs of spaces to fold
        line = " ".join(subject.split())
    else:
        printable = "".join(
            " " if char.isspace() else char
            for char in subject
            if char.isspace() or unicodedata.category(char) not in {"Cc", "Cf", "Zl", "Zp"}
        )
        line = " ".join(printable.split())
    if len(line) > max_chars:
        line = line[: max_chars - 1].rstrip() + "…"
    return line


def subject_prefix(event: Event, recipient: Recipient | None, hostname: str) -> str:
    """`[account]` for notices about an account to that account's own side (its contacts, its billing client and
    the client's contacts); `[hostname]` for everything else (system contacts, notices without an account)."""
    kind = getattr(recipient, "kind", None)
    if kind in ACCOUNT_SIDE_KINDS and event.account:
        return f"[{event.account}]"
    return f"[{hostname}]"
