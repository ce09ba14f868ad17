"""Durations as people write and read them: `90s`, `30m`, `2h`, `1d12h`, `1h30m` (and a plain number of seconds)."""

from __future__ import annotations

import math
import re

_UNITS_S = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_PART_RE = re.compile(r"(\d+(?:\.\d+)?)([dhms])")


def parse_duration(text: str) -> float:
    """Seconds in `text`: `45` or `45s`, `30m`, `2h`, `1d`, or parts in that order (`1h30m`); ValueError otherwise.

    The result is positive and finite.
    """
    cleaned = text.strip().lower()
    try:
        seconds = float(cleaned)
    except ValueError:
        seconds = _parts(cleaned, text)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"expected a positive duration such as 90s, 30m, 2h or 1d, got {text!r}")
    return seconds


def _parts(cleaned: str, text: str) -> float:
    position, total, last_unit = 0, 0.0, None
    order = list(_UNITS_S)
    for match in _PART_RE.finditer(cleaned):
        unit = match.group(2)
        if match.start() != position or (last_unit is not None and order.index(unit) <= order.index(last_unit)):
            break
        total += float(match.group(1)) * _UNITS_S[unit]
        position, last_unit = match.end(), unit
    if position != len(cleaned) or not cleaned:
        raise ValueError(f"expected a duration such as 90s, 30m, 2h, 1d or 1h30m, got {text!r}")
    return total


def duration_text(seconds: float) -> str:
    """`14400` → `4h`, `5400` → `1h30m`, `90` → `1m30s`, `0.5` → `0.5s`: whole units, largest first."""
    if seconds < 1 or seconds != int(seconds):
        return f"{seconds:g}s"
    rest, parts = int(seconds), []
    for unit, size in _UNITS_S.items():
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts)
