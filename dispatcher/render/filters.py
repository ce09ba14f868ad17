"""The filters and the test templates use (`FILTERS`, `TESTS`; templates/README.md lists them): moments, sizes,
durations, counts, lists, flags, settings, links, paragraphs, and the rows of the `facts` macros.

A filter never fails on the data it is given: a value it cannot read prints as given, and a missing one stays
missing or says so (`(not given)`, `an unknown number of days`, `#` for a link).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from typing import Any

import jinja2
from markupsafe import Markup, escape

from .values import NOT_GIVEN, finalize, is_missing


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return _as_datetime(int(text))
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def filter_datetime(value: Any, fmt: str = "%Y-%m-%d %H:%M UTC") -> Any:
    """A moment (datetime, RFC 3339 string or epoch seconds) in UTC: `2026-11-23 10:00 UTC`.

    Anything unreadable is printed as given, so a template never fails on a malformed date.
    """
    if is_missing(value):
        return value
    moment = _as_datetime(value)
    if moment is None:
        return value
    if "%f" in fmt:  # microseconds asked for: nothing to share
        return moment.astimezone(UTC).strftime(fmt)
    return _utc_second_formatted(math.floor(moment.timestamp()), fmt)


# Every notice shows a moment or two (the event's time at least), and a burst's events fall in the same seconds:
# `strftime` is the dearest part of a render's filters, so each second is formatted once per format.
@functools.lru_cache(maxsize=256)
def _utc_second_formatted(second: int, fmt: str) -> str:
    return datetime.fromtimestamp(second, UTC).strftime(fmt)


def filter_date(value: Any, fmt: str = "%Y-%m-%d") -> Any:
    """A day (datetime, RFC 3339 string or epoch seconds): `2026-11-23`."""
    return filter_datetime(value, fmt)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or is_missing(value):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def filter_filesize(value: Any, binary: bool = True) -> Any:
    """Bytes as a readable size: `1.5 GiB` (binary, default) or `1.6 GB`; non-numbers print as given."""
    amount = _number(value)
    if amount is None:
        return value
    base = 1024.0 if binary else 1000.0
    units = ["KiB", "MiB", "GiB", "TiB", "PiB"] if binary else ["kB", "MB", "GB", "TB", "PB"]
    if abs(amount) < base:
        return f"{int(amount)} byte" + ("" if int(amount) == 1 else "s")
    for unit in units:
        amount /= base
        if abs(amount) < base or unit == units[-1]:
            return f"{amount:.1f} {unit}"
    return value  # pragma: no cover - the loop always returns


def filter_mib(value: Any, binary: bool = True) -> Any:
    """A size given in MiB (the catalog's `*_mb` fields) as a readable size: `48213` → `47.1 GiB`.

    Only numbers are converted (never `value * 1048576` in a template: a string times a number is a string that
    long); anything else prints as given, and a missing value stays missing.
    """
    amount = _number(value)
    if amount is None:
        return value
    return filter_filesize(amount * 1048576, binary)


def filter_pluralize(count: Any, singular: str, plural: str | None = None) -> str:
    """`3|pluralize("domain")` → `3 domains`; `1|pluralize("entry", "entries")` → `1 entry`.

    A list counts its items. An unknown count reads `an unknown number of domains`.
    """
    if isinstance(count, list | tuple | set | frozenset | Mapping) and not isinstance(count, jinja2.Undefined):
        count = len(count)
    number = _number(count)
    many = plural if plural is not None else singular + "s"
    if number is None:
        return f"an unknown number of {many}"
    shown = int(number) if number == int(number) else number
    return f"{shown} {singular if number == 1 else many}"


def filter_and_list(value: Any, conjunction: str = "and") -> Any:
    """`["a", "b", "c"]` → `a, b and c`; a string or a missing value prints as given."""
    if is_missing(value) or isinstance(value, str) or not isinstance(value, Iterable):
        return value
    items = [str(finalize(item)) for item in value]
    if not items:
        return "(none)"
    if len(items) == 1:
        return items[0]
    return f"{', '.join(items[:-1])} {conjunction} {items[-1]}"


def filter_as_list(value: Any) -> list[Any]:
    """A list for `{% for %}`: a list as is, a comma-separated string split, a single value wrapped, missing → []."""
    if is_missing(value):
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, Mapping):
        return [f"{key}: {item}" for key, item in value.items()]
    if isinstance(value, Iterable):
        return list(value)
    return [value]


def filter_duration(value: Any) -> Any:
    """Seconds as `2 hours 5 minutes` (two largest units); non-numbers print as given."""
    seconds = _number(value)
    if seconds is None:
        return value
    remaining = round(abs(seconds))
    if remaining == 0:
        return "0 seconds"
    parts: list[str] = []
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        amount, remaining = divmod(remaining, size)
        if amount:
            parts.append(filter_pluralize(amount, unit))
    return " ".join(parts[:2])


def filter_percent(value: Any, digits: int = 0) -> Any:
    """`87.25` → `87%` (already a percentage); non-numbers print as given."""
    number = _number(value)
    if number is None:
        return value
    return f"{number:.{digits}f}%"


def filter_yesno(value: Any, yes: str = "yes", no: str = "no", unknown: str = NOT_GIVEN) -> str:
    """A flag as words; `"0"`, `"false"`, `"no"` and `"off"` strings count as false."""
    if is_missing(value):
        return unknown
    if isinstance(value, str):
        return no if value.strip().lower() in {"", "0", "false", "no", "off"} else yes
    return yes if value else no


def filter_article(value: Any) -> Any:
    """The value with its indefinite article: `email` → `an email`, `pushbullet` → `a pushbullet`,
    `SFTP` → `an SFTP`; a missing value stays missing."""
    if is_missing(value):
        return value
    text = str(finalize(value)).strip()
    if not text:
        return value
    word = text.split()[0]
    lower = word.lower()
    if len(word) > 1 and word.isupper():  # an acronym, read letter by letter
        vowel_sound = word[0] in "AEFHILMNORSX"
    elif lower.startswith(("eu", "uni", "use", "usu", "uti", "ura", "one", "once")):
        vowel_sound = False
    elif lower.startswith(("hour", "honest", "honour", "honor", "heir")):
        vowel_sound = True
    else:
        vowel_sound = lower[0] in "aeiou"
    return f"{'an' if vowel_sound else 'a'} {text}"


def filter_setting(value: Any) -> str:
    """A setting's value as a reader says it: true/false as `on`/`off`, empty or missing as `(empty)`."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if is_missing(value) or value == "":
        return "(empty)"
    return str(finalize(value))


def filter_url(value: Any) -> str:
    """A link target from data, only if it is http(s) or mailto: anything else (`javascript:`, missing) gives `#`."""
    if is_missing(value):
        return "#"
    text = str(value).strip()
    return text if re.match(r"(?i)^(https?://|mailto:)[^\s]+$", text) else "#"


def filter_paragraphs(value: Any) -> list[list[str]]:
    """Plain text as paragraphs of lines, for HTML (`<p>` per paragraph, `<br>` between lines, each line escaped):
    blank lines part paragraphs, any line break style is read, trailing spaces go; missing or blank gives []."""
    if is_missing(value):
        return []
    text = str(finalize(value)).replace("\r\n", "\n").replace("\r", "\n")
    paragraphs: list[list[str]] = [[]]
    for line in text.split("\n"):
        line = line.rstrip()
        if line:
            paragraphs[-1].append(line)
        elif paragraphs[-1]:
            paragraphs.append([])
    return [lines for lines in paragraphs if lines]


def filter_show(value: Any) -> str:
    """A value as the text a reader sees: missing as `(not given)`, lists as `a, b, c` (for `|indent` and co.)."""
    return NOT_GIVEN if isinstance(value, jinja2.Undefined) else str(finalize(value))


def filter_fact_lines(rows: Any) -> str:
    """`[("Domain", "example.com"), ("Expires", …)]` as aligned `Label:  value` lines (the text `facts` macro).

    Values print as `{{ }}` prints them (`(not given)` when missing); a value's own line breaks are indented
    under the value column. Done in Python rather than in the macro: it runs for nearly every message.
    """
    pairs = [(str(label), filter_show(value)) for label, value in _rows(rows)]
    if not pairs:
        return ""
    width = max(len(label) for label, _ in pairs) + 3
    lines = []
    for label, value in pairs:
        pad = " " * (width - len(label) - 1)
        lines.append(f"{label}:{pad}" + value.replace("\n", "\n" + " " * width))
    return "\n".join(lines)


_FACT_LABEL_STYLE = "padding:6px 12px 6px 0;border-bottom:1px solid #eaecf0;color:#475467;white-space:nowrap;width:35%;"
_FACT_VALUE_STYLE = "padding:6px 0;border-bottom:1px solid #eaecf0;color:#101828;word-break:break-word;"


def filter_fact_rows(rows: Any) -> Markup:
    """The same rows as HTML table rows (the HTML `facts` macro), labels and values escaped."""
    return Markup("\n").join(
        Markup(
            f'<tr>\n<td valign="top" style="{_FACT_LABEL_STYLE}">{escape(label)}</td>\n'
            f'<td valign="top" style="{_FACT_VALUE_STYLE}">{_escaped(value)}</td>\n</tr>'
        )
        for label, value in _rows(rows)
    )


def _escaped(value: Any) -> Markup:
    return value if isinstance(value, Markup) else escape(filter_show(value))


def _rows(rows: Any) -> list[tuple[Any, Any]]:
    if is_missing(rows) or not isinstance(rows, Iterable):
        return []
    pairs = []
    for row in rows:
        if isinstance(row, list | tuple) and len(row) == 2:
            pairs.append((row[0], row[1]))
    return pairs


FILTERS: dict[str, Any] = {
    "fact_lines": filter_fact_lines,
    "fact_rows": filter_fact_rows,
    "show": filter_show,
    "setting": filter_setting,
    "url": filter_url,
    "datetime": filter_datetime,
    "date": filter_date,
    "filesize": filter_filesize,
    "filesizeformat": filter_filesize,
    "mib": filter_mib,
    "pluralize": filter_pluralize,
    "and_list": filter_and_list,
    "as_list": filter_as_list,
    "duration": filter_duration,
    "percent": filter_percent,
    "yesno": filter_yesno,
    "article": filter_article,
    "paragraphs": filter_paragraphs,
}


def is_given(value: Any) -> bool:
    """`{% if data.days_left is given %}`: the value was sent (not missing, not null, not blank), even if it is 0
    or false."""
    return not is_missing(value)


TESTS: dict[str, Any] = {"given": is_given}
