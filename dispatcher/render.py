"""Rendering: one event, one recipient, one channel → a `Message` (subject, text, HTML).

Templates live at `templates/<App>/<Event>.{subject,text,html}.j2` (SPEC §5). The config's `templates.dir` overrides
any of them *per file*: a `FileSystemLoader([override_dir, shipped_dir])` finds the override first. Everything runs
in Jinja2's immutable sandbox; only `.html.j2` files are autoescaped.

Rendering never fails: a template that is missing, does not compile or raises while rendering falls back to
`Application/base` (the error is logged with the template's name), and if even that fails, to the shipped
`Application/base`, and finally to a fixed plain message. A missing `.text.j2` is derived from the HTML.

An event a bridge brought in with a message of its own (`data._bridge`, set by `POST /api/v1/ingest/cpanel`) is
rendered with that bridge's templates (`Bridge/cPanel`) whatever its type: cPanel's subject and body in our layout.
Its importance, its recipients and the `alert` its footer names still come from its own type.

The engine, not the templates, adds the subject prefix (`[hostname]` for system contacts, `[account]` for an
account's own contacts), makes the subject one clean line, and wraps the text part at 72 columns.
"""

from __future__ import annotations

import functools
import math
import re
import traceback
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import structlog
from jinja2.environment import TemplateModule
from jinja2.runtime import Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup, escape

import dispatcher

from .catalog import PREFERENCE_LABELS
from .events import Event
from .levels import Importance
from .message import Message

if TYPE_CHECKING:
    from .routing.recipients import Recipient

log = structlog.get_logger(__name__)

FALLBACK_TYPE = "Application/base"
PARTS = ("subject", "text", "html")
TEXT_WIDTH = 72
SUBJECT_MAX_CHARS = 200
NOT_GIVEN = "(not given)"
# Channels that send only subject + text (SPEC §5): their HTML part is not rendered unless the text is derived
# from it. Any other channel (email, third-party plugins) gets all three parts.
TEXT_ONLY_CHANNELS = frozenset({"pushbullet", "posturl"})
# Recipient kinds whose notices about an account are prefixed with the account rather than the hostname.
ACCOUNT_SIDE_KINDS = frozenset({"account", "client", "contact"})
# The data key a bridge marks its events with, and the template set each bridge's events are rendered with: the
# message the bridge's sender wrote (`data.subject`, `data.body`), not the one their type's templates would write.
BRIDGE_KEY = "_bridge"
BRIDGE_TEMPLATES = {"cpanel": "Bridge/cPanel"}


def shipped_templates_dir() -> Path:
    """Where the shipped templates are: inside the installed package, else the source checkout's `templates/`."""
    package_dir = Path(dispatcher.__file__).resolve().parent
    inside = package_dir / "templates"
    return inside if inside.is_dir() else package_dir.parent / "templates"


def template_type(event: Event) -> str:
    """The template set `event` is rendered with: its bridge's (`data._bridge` naming one of `BRIDGE_TEMPLATES`),
    else its type's."""
    bridge = event.data.get(BRIDGE_KEY)
    if type(bridge) is str and bridge in BRIDGE_TEMPLATES:
        return BRIDGE_TEMPLATES[bridge]
    return event.type


def template_name(event_type: str, part: str) -> str:
    """`("Backup/Failure", "html")` → `"Backup/Failure.html.j2"`."""
    return f"{event_type}.{part}.j2"


# -- missing data ----------------------------------------------------------------------------------------------


class ReadableUndefined(jinja2.ChainableUndefined):
    """What a template sees for data that was not given: prints `(not given)`, is false, empty and chainable.

    `data.cert.domains` on missing data is still undefined rather than an error, comparisons are false and
    arithmetic stays undefined, so a template written for complete data still renders for partial data.
    """

    __slots__ = ()

    def __str__(self) -> str:
        return NOT_GIVEN

    def __html__(self) -> str:
        return NOT_GIVEN

    def _false(self, *args: Any, **kwargs: Any) -> bool:
        return False

    def _self(self, *args: Any, **kwargs: Any) -> ReadableUndefined:
        return self

    __lt__ = __le__ = __gt__ = __ge__ = _false  # type: ignore[assignment]
    __add__ = __radd__ = __sub__ = __rsub__ = _self  # type: ignore[assignment]
    __mul__ = __rmul__ = __truediv__ = __rtruediv__ = _self  # type: ignore[assignment]
    __floordiv__ = __rfloordiv__ = __mod__ = __rmod__ = __pow__ = __rpow__ = _self  # type: ignore[assignment]
    __pos__ = __neg__ = _self  # type: ignore[assignment]

    def __int__(self) -> int:
        return 0

    def __float__(self) -> float:
        return 0.0


def _is_missing(value: Any) -> bool:
    return value is None or isinstance(value, jinja2.Undefined)


def _finalize(value: Any) -> Any:
    """How a bare `{{ value }}` prints: None as `(not given)`, lists as `a, b, c`, mappings as `k: v, …`."""
    kind = type(value)
    if kind is str or kind is int or kind is Markup:  # nearly every value: skip the checks below
        return value
    if value is None:
        return NOT_GIVEN
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(str(_finalize(item)) for item in value) or "(none)"
    if isinstance(value, Mapping) and not isinstance(value, jinja2.Undefined):
        return ", ".join(f"{key}: {_finalize(item)}" for key, item in value.items()) or "(none)"
    return value


# -- filters ---------------------------------------------------------------------------------------------------


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
    if _is_missing(value):
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
    if isinstance(value, bool) or _is_missing(value):
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
    if _is_missing(value) or isinstance(value, str) or not isinstance(value, Iterable):
        return value
    items = [str(_finalize(item)) for item in value]
    if not items:
        return "(none)"
    if len(items) == 1:
        return items[0]
    return f"{', '.join(items[:-1])} {conjunction} {items[-1]}"


def filter_as_list(value: Any) -> list[Any]:
    """A list for `{% for %}`: a list as is, a comma-separated string split, a single value wrapped, missing → []."""
    if _is_missing(value):
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
    if _is_missing(value):
        return unknown
    if isinstance(value, str):
        return no if value.strip().lower() in {"", "0", "false", "no", "off"} else yes
    return yes if value else no


def filter_article(value: Any) -> Any:
    """The value with its indefinite article: `email` → `an email`, `pushbullet` → `a pushbullet`,
    `SFTP` → `an SFTP`; a missing value stays missing."""
    if _is_missing(value):
        return value
    text = str(_finalize(value)).strip()
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
    if _is_missing(value) or value == "":
        return "(empty)"
    return str(_finalize(value))


def filter_url(value: Any) -> str:
    """A link target from data, only if it is http(s) or mailto: anything else (`javascript:`, missing) gives `#`."""
    if _is_missing(value):
        return "#"
    text = str(value).strip()
    return text if re.match(r"(?i)^(https?://|mailto:)[^\s]+$", text) else "#"


def filter_paragraphs(value: Any) -> list[list[str]]:
    """Plain text as paragraphs of lines, for HTML (`<p>` per paragraph, `<br>` between lines, each line escaped):
    blank lines part paragraphs, any line break style is read, trailing spaces go; missing or blank gives []."""
    if _is_missing(value):
        return []
    text = str(_finalize(value)).replace("\r\n", "\n").replace("\r", "\n")
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
    return NOT_GIVEN if isinstance(value, jinja2.Undefined) else str(_finalize(value))


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
    if _is_missing(rows) or not isinstance(rows, Iterable):
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
    return not _is_missing(value)


TESTS: dict[str, Any] = {"given": is_given}


# -- text: wrapping and HTML → text --------------------------------------------------------------------------

# A list item (`- x`, `* x`, `• x`, `1. x`) hangs under its text; a fact line (`Domain:   x`) under its value.
_BULLET_RE = re.compile(r"^(\s*(?:[-*•]|\d{1,3}[.)])\s+)")
_FACT_RE = re.compile(r"^(\s*[^\s:][^:]{0,30}:\s{2,})\S")


# A text line indented this much is a command or a path listing: wrapping it would break copy and paste.
CODE_INDENT = "    "


def wrap_text(text: str, width: int = TEXT_WIDTH) -> str:
    """Wrap every line longer than `width` at word boundaries, keeping indentation and hanging list items.

    Words longer than a line (URLs, paths) are never broken, nor are lines indented by four spaces or more:
    those are commands to copy and paste. Trailing spaces go, runs of blank lines become one, and the text
    ends with exactly one newline.
    """
    out: list[str] = []
    blank = False
    for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        # "-- " (with its space) is the signature separator mail readers recognise: keep it as it is.
        line = raw if raw == "-- " else raw.rstrip()
        if not line:
            if out and not blank:
                out.append("")
            blank = True
            continue
        blank = False
        if len(line) <= width or line.startswith(CODE_INDENT):
            out.append(line)
        elif len(line) <= _CACHED_LINE_MAX:
            out.extend(_wrap_line_cached(line, width))
        else:
            out.extend(_wrap_line(line, width))
    while out and not out[-1]:
        out.pop()
    return "\n".join(out) + "\n"


def _wrap_line(line: str, width: int) -> tuple[str, ...]:
    """One line longer than `width`, wrapped: list items and facts hang, other lines keep their indent."""
    match = _BULLET_RE.match(line) or _FACT_RE.match(line)
    indent = line[: len(line) - len(line.lstrip())]
    hang = " " * len(match.group(1)) if match else indent
    if len(hang) > width // 2:
        hang = indent
    if match:
        return tuple(_fill(line[len(match.group(1)) :], match.group(1), hang, width))
    return tuple(_fill(line.strip(), indent, hang, width))


# Most long lines are a template's own prose (the advice paragraph), the same in every message of a type. Longer
# lines (a command's output in an event's data) are wrapped each time: the cache stays under a few MB.
_CACHED_LINE_MAX = 2000
_wrap_line_cached = functools.lru_cache(maxsize=1024)(_wrap_line)


def _fill(text: str, first: str, hang: str, width: int) -> list[str]:
    """Greedy word wrap of `text` after the prefix `first`, continuing under `hang`; long words stay whole.

    `textwrap` does the same at several times the cost, and the pipeline wraps every text part it sends: this
    cuts at the last space that fits (`str.rfind`), one step per output line.
    """
    words = " ".join(text.split())
    lines: list[str] = []
    prefix = first
    pos, end = 0, len(words)
    while pos < end:
        room = max(1, width - len(prefix))
        if end - pos <= room:
            lines.append(prefix + words[pos:])
            break
        cut = words.rfind(" ", pos, pos + room + 1)
        if cut <= pos:  # a word longer than the line (a URL, a path): keep it whole
            cut = words.find(" ", pos)
            if cut == -1:
                lines.append(prefix + words[pos:])
                break
        lines.append(prefix + words[pos:cut])
        pos = cut + 1
        prefix = hang
    return lines or [first.rstrip()]


_BLOCK_TAGS = frozenset(
    {
        "p",
        "div",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "table",
        "tr",
        "ul",
        "ol",
        "li",
        "pre",
        "blockquote",
        "section",
        "header",
        "footer",
        "hr",
        "dl",
        "dt",
        "dd",
        "body",
    }
)
_SKIP_TAGS = frozenset({"head", "style", "script", "title"})


class _HtmlToText(HTMLParser):
    """Readable text from an HTML part: paragraphs, line breaks, list items, table rows, `text <url>` links."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.current: list[str] = []
        self.skip_depth = 0
        self.pre_depth = 0
        self.links: list[tuple[str | None, int]] = []
        self.list_stack: list[list[int]] = []  # per list: [is_ordered, counter]
        self.cells_in_row = 0

    def _flush(self, *, paragraph: bool) -> None:
        text = "".join(self.current)
        self.current = []
        if self.pre_depth:
            self.lines.extend(text.split("\n"))
        else:
            text = " ".join(text.split())
            if text:
                self.lines.append(text)
        if paragraph and self.lines and self.lines[-1] != "":
            self.lines.append("")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self.skip_depth += 1
            return
        if tag == "br":
            self._flush(paragraph=False)
        elif tag == "a":
            self.links.append((dict(attrs).get("href"), len("".join(self.current))))
        elif tag in {"ul", "ol"}:
            self._flush(paragraph=not self.list_stack)
            self.list_stack.append([tag == "ol", 0])
        elif tag == "li":
            self._flush(paragraph=False)
            marker = "-"
            if self.list_stack:
                self.list_stack[-1][1] += 1
                if self.list_stack[-1][0]:
                    marker = f"{self.list_stack[-1][1]}."
            self.current.append("  " * max(0, len(self.list_stack) - 1) + marker + " ")
        elif tag == "tr":
            self._flush(paragraph=False)
            self.cells_in_row = 0
        elif tag in {"td", "th"}:
            if self.cells_in_row:
                self.current.append(": " if self.cells_in_row == 1 else "  ")
            self.cells_in_row += 1
        elif tag == "pre":
            self._flush(paragraph=True)
            self.pre_depth += 1
        elif tag in _BLOCK_TAGS:
            self._flush(paragraph=True)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self.skip_depth = max(0, self.skip_depth - 1)
            return
        if tag == "a" and self.links:
            href, start = self.links.pop()
            label = "".join(self.current)[start:].strip()
            if href and not href.startswith(("#", "javascript:")) and href not in {label, f"mailto:{label}"}:
                self.current.append(f" <{href.removeprefix('mailto:')}>")
        elif tag in {"ul", "ol"}:
            self._flush(paragraph=False)
            if self.list_stack:
                self.list_stack.pop()
            if not self.list_stack:
                self._flush(paragraph=True)
        elif tag == "li":
            self._flush(paragraph=False)
        elif tag == "tr":
            self._flush(paragraph=False)
        elif tag == "table":
            self._flush(paragraph=True)
        elif tag == "pre":
            self._flush(paragraph=True)
            self.pre_depth = max(0, self.pre_depth - 1)
        elif tag in _BLOCK_TAGS:
            self._flush(paragraph=True)

    def handle_data(self, data: str) -> None:
        if not self.skip_depth:
            self.current.append(data)

    def text(self) -> str:
        self._flush(paragraph=False)
        return "\n".join(self.lines)


def html_to_text(html: str, width: int = TEXT_WIDTH) -> str:
    """The text part derived from an HTML part (when a type ships no `.text.j2`), wrapped at `width`."""
    parser = _HtmlToText()
    parser.feed(html)
    parser.close()
    return wrap_text(parser.text(), width)


# -- subjects --------------------------------------------------------------------------------------------------


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


# -- the renderer ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _TemplateSet:
    """The compiled templates one event type renders with (`source` is the type they belong to)."""

    source: str
    subject: jinja2.Template
    text: jinja2.Template | None
    html: jinja2.Template | None


class _RenderFailed(Exception):
    def __init__(self, template: str, error: BaseException) -> None:
        super().__init__(f"{template}: {error}")
        self.template = template
        self.error = error


_DICT_ATTRIBUTES = frozenset(dir(dict))


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox, with event data looked up as data first.

    `data.domain` on a plain dict is an item, not an attribute: trying the item first skips the failing attribute
    lookup (and its exception) that Jinja does otherwise, which matters at one lookup per field per message. A
    field named like a dict method (`items`, `keys`) therefore reads the field, and a blank field is missing.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._memo: dict[str, jinja2.Template] = {}

    def get_template(self, name: Any, parent: Any = None, globals: Any = None) -> jinja2.Template:
        # Every `{% extends %}` and `{% import %}` asks again while rendering; templates never change during the
        # life of an environment (auto_reload is off), so a plain dict answers faster than Jinja's LRU cache.
        # (`parent` is ignored by the base environment's `join_path`, as here.)
        if globals is None and isinstance(name, str):
            found = self._memo.get(name)
            if found is None:
                found = self._memo[name] = super().get_template(name)
                # Each render copies the template's globals into a new context; Jinja keeps them as a ChainMap
                # over the environment's, which is slow to copy. They never change here: flatten them once.
                found.globals = dict(found.globals)
            return found
        return super().get_template(name, parent, globals)

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict:
            try:
                value = obj[attribute]
            except KeyError:
                # A missing field: what the sandbox would find too, after failing an attribute and an item lookup
                # (two exceptions), unless the name is one of dict's own (`data.items`).
                if attribute not in _DICT_ATTRIBUTES:
                    return self.undefined(obj=obj, name=attribute)
            else:
                # A blank string says no more than a missing field: let it read `(not given)` and be false.
                if type(value) is str and (not value or value.isspace()):
                    return self.undefined(obj=obj, name=attribute)
                return value
        elif type(obj) is TemplateModule and not attribute.startswith("_"):
            # `m.facts`: what an imported template exports (its macros and top-level values, made in the
            # sandbox). The sandbox would refuse only names starting with "_", as here.
            try:
                return obj.__dict__[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        # A template's own macro is always safe to call; the sandbox's check is for everything else.
        if type(obj) is Macro:
            return context.call(obj, *args, **kwargs)
        return super().call(context, obj, *args, **kwargs)


def _build_environment(loader: jinja2.BaseLoader) -> ImmutableSandboxedEnvironment:
    env = _Environment(
        loader=loader,
        autoescape=lambda name: bool(name) and name.endswith(".html.j2"),
        undefined=ReadableUndefined,
        finalize=_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        # Templates are compiled once and kept: the pipeline renders every delivery, and a reload builds a new
        # Renderer, so there is nothing to gain from checking the files' mtimes on each render.
        auto_reload=False,
        cache_size=-1,
    )
    env.filters.update(FILTERS)
    env.tests.update(TESTS)
    return env


def _describe(err: BaseException) -> str:
    """An error as one log value: its kind, its message and, for template errors, the line."""
    line = getattr(err, "lineno", None)
    message = getattr(err, "message", None) or str(err)
    return f"{type(err).__name__}: {message}" + (f" (line {line})" if line else "")


def _error_location(err: BaseException) -> tuple[str | None, int | None]:
    """The template file and line an error comes from (Jinja rewrites tracebacks to template frames)."""
    if isinstance(err, jinja2.TemplateSyntaxError):
        return err.filename or err.name, err.lineno
    filename: str | None = None
    lineno: int | None = None
    for frame, frame_lineno in traceback.walk_tb(err.__traceback__):
        if frame.f_code.co_filename.endswith(".j2"):
            filename, lineno = frame.f_code.co_filename, frame_lineno
    return filename, lineno


class Renderer:
    """Renders events into `Message`s with the shipped templates and the overrides in `templates_dir`.

    Compiled templates are cached for the life of the Renderer (build a new one to pick up changed files).
    `render()` never raises for template problems; `check()` reports them.
    """

    def __init__(self, catalog: Any, *, templates_dir: Path | None, hostname: str) -> None:
        self.catalog = catalog
        self.hostname = hostname
        self.shipped_dir = shipped_templates_dir()
        self.override_dir = Path(templates_dir) if templates_dir else None
        search = [str(self.override_dir)] if self.override_dir else []
        search.append(str(self.shipped_dir))
        self._env = _build_environment(jinja2.FileSystemLoader(search))
        # The last resort when an override breaks Application/base itself.
        self._shipped_env = (
            _build_environment(jinja2.FileSystemLoader([str(self.shipped_dir)])) if self.override_dir else self._env
        )
        self._sets: dict[str, _TemplateSet | None] = {}
        self._broken: dict[str, tuple[str, str]] = {}  # type → (template, error) of templates that do not compile
        self._alert_views: dict[str, dict[str, Any]] = {}
        self._fallback: _TemplateSet | None = None

    # -- loading -------------------------------------------------------------------------------------------

    def _load(self, env: jinja2.Environment, event_type: str) -> _TemplateSet | None:
        """The compiled set for `event_type`, None if the type has no subject or no body template.

        Raises `_RenderFailed` when a file exists but does not compile.
        """
        found: dict[str, jinja2.Template | None] = {}
        for part in PARTS:
            name = template_name(event_type, part)
            try:
                found[part] = env.get_template(name)
            except jinja2.TemplateNotFound as err:
                if err.name != name:  # the template exists, but something it extends or imports does not
                    raise _RenderFailed(name, err) from err
                found[part] = None
            except jinja2.TemplateError as err:
                raise _RenderFailed(name, err) from err
        subject = found["subject"]
        if subject is None or (found["text"] is None and found["html"] is None):
            return None
        return _TemplateSet(event_type, subject, found["text"], found["html"])

    def _templates_for(self, event_type: str) -> _TemplateSet:
        if event_type in self._sets:
            cached = self._sets[event_type]
            if cached is not None:
                return cached
            broken = self._broken.get(event_type)
            if broken is not None:  # said again for every notice it affects, not only the first
                log.error("template_failed", template=broken[0], error=broken[1], event_type=event_type)
            return self._fallback_set()
        try:
            loaded = self._load(self._env, event_type)
        except _RenderFailed as failed:
            self._broken[event_type] = (failed.template, _describe(failed.error))
            log.error("template_failed", template=failed.template, error=_describe(failed.error), event_type=event_type)
            loaded = None
        else:
            if loaded is None and event_type in self.catalog and event_type != FALLBACK_TYPE:
                log.warning("template_missing", event_type=event_type, fallback=FALLBACK_TYPE)
        self._sets[event_type] = loaded
        return loaded if loaded is not None else self._fallback_set()

    def _fallback_set(self) -> _TemplateSet:
        if self._fallback is None:
            loaded: _TemplateSet | None = None
            try:
                loaded = self._load(self._env, FALLBACK_TYPE)
            except _RenderFailed as failed:
                log.error("template_failed", template=failed.template, error=str(failed.error))
            if loaded is None and self._shipped_env is not self._env:
                try:
                    loaded = self._load(self._shipped_env, FALLBACK_TYPE)
                except _RenderFailed as failed:
                    log.error("template_failed", template=failed.template, error=str(failed.error))
            if loaded is None:
                loaded = _TemplateSet(FALLBACK_TYPE, *_builtin_fallback())
            self._fallback = loaded
        return self._fallback

    # -- rendering -----------------------------------------------------------------------------------------

    def _alert_view(self, event_type: str) -> dict[str, Any]:
        """The `alert` variable: the catalog entry's fields as a plain dict, made once per type.

        A dict rather than the entry itself: the sandbox checks every attribute read of an object, and the
        layout reads `alert.name` in every message.
        """
        view = self._alert_views.get(event_type)
        if view is None:
            alert = self.catalog.get(event_type)
            view = {
                "key": alert.key,
                "name": alert.name,
                "trigger": alert.trigger,
                "importance": alert.importance.label,
                "audience": sorted(alert.audience),
                "preference": alert.preference,
                # The words cPanel shows for the preference in Contact Information, without the final stop.
                "preference_label": PREFERENCE_LABELS.get(alert.preference or "", "").rstrip(".") or None,
                "category": alert.category,
                "fields": dict(alert.fields),
            }
            self._alert_views[event_type] = view
        return view

    def context(self, event: Event, *, importance: Importance, recipient: Recipient | None) -> dict[str, Any]:
        """The template variables of SPEC §5 for one rendering."""
        alert = self._alert_view(event.type)
        hostname = event.host or self.hostname
        view = event.template_view()
        if view["account"] is None:
            # An event without an account reads like a missing data field: false, `(not given)` when printed,
            # also inside `~` concatenations (where None would print as "None").
            view["account"] = self._env.undefined(obj=view, name="account")
        return {
            "event": view,
            "data": event.data,
            "importance": importance.label,
            "alert": alert,
            # Only what a template needs: targets can hold secrets (Pushbullet tokens), so they stay out.
            "recipient": {"kind": getattr(recipient, "kind", "system"), "name": getattr(recipient, "name", None)},
            "hostname": hostname,
        }

    def _render_set(self, templates: _TemplateSet, context: dict[str, Any], *, want_html: bool) -> tuple[str, str, str]:
        def run(template: jinja2.Template, ctx: dict[str, Any]) -> str:
            try:
                return template.render(ctx)
            except Exception as err:  # any template bug; the caller falls back
                raise _RenderFailed(template.name or "?", err) from err

        subject = clean_subject(run(templates.subject, context))
        with_subject = {**context, "subject": subject}
        html = ""
        if templates.html is not None and (want_html or templates.text is None):
            html = run(templates.html, with_subject)
        text = wrap_text(run(templates.text, with_subject)) if templates.text is not None else html_to_text(html)
        return subject, text, html

    def render(
        self, event: Event, *, importance: Importance, recipient: Recipient | None, channel: str = "email"
    ) -> Message:
        """The message `channel` sends to `recipient` about `event`. Never raises for template errors."""
        context = self.context(event, importance=importance, recipient=recipient)
        want_html = channel not in TEXT_ONLY_CHANNELS
        templates = self._templates_for(template_type(event))
        try:
            subject, text, html = self._render_set(templates, context, want_html=want_html)
        except _RenderFailed as failed:
            _, lineno = _error_location(failed.error)
            log.error(
                "template_failed",
                template=failed.template,
                error=_describe(failed.error),
                line=lineno,
                event_type=event.type,
                event_id=event.id,
            )
            subject, text, html = self._render_fallback(templates, context, want_html=want_html)
        prefix = subject_prefix(event, recipient, context["hostname"])
        return Message(
            subject=clean_subject(f"{prefix} {subject}"),
            text=text,
            html=html,
            event_id=event.id,
            event_type=event.type,
            importance=importance.label,
            hostname=context["hostname"],
            account=event.account,
        )

    def _render_fallback(
        self, failed: _TemplateSet, context: dict[str, Any], *, want_html: bool
    ) -> tuple[str, str, str]:
        candidates = []
        fallback = self._fallback_set()
        if fallback is not failed:
            candidates.append(fallback)
        if self._shipped_env is not self._env:
            try:
                shipped = self._load(self._shipped_env, FALLBACK_TYPE)
            except _RenderFailed:
                shipped = None
            if shipped is not None:
                candidates.append(shipped)
        for templates in candidates:
            try:
                return self._render_set(templates, context, want_html=want_html)
            except _RenderFailed as again:
                log.error("template_failed", template=again.template, error=str(again.error))
        subject, text, html = _builtin_fallback()
        return self._render_set(_TemplateSet(FALLBACK_TYPE, subject, text, html), context, want_html=want_html)

    # -- checking ------------------------------------------------------------------------------------------

    def template_files(self) -> list[tuple[Path, str]]:
        """Every template file, overriding and shipped, as (path, template name)."""
        files: list[tuple[Path, str]] = []
        for root in [self.override_dir, self.shipped_dir]:
            if root is None or not root.is_dir():
                continue
            for path in sorted(root.rglob("*.j2")):
                files.append((path, path.relative_to(root).as_posix()))
        return files

    def check(self) -> list[str]:
        """Compile every shipped and overriding template file, and render every type that has templates with
        its catalog example data; one `FILE:LINE: message` line per broken file."""
        issues: list[str] = []
        for path, name in self.template_files():
            try:
                source = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as err:
                issues.append(f"{path}:1: cannot read: {err}")
                continue
            try:
                self._env.compile(source, name=name, filename=str(path))
            except jinja2.TemplateSyntaxError as err:
                issues.append(f"{path}:{err.lineno}: {err.message}")
        if issues:
            return issues
        # What only shows when rendering: a missing layout, a bad call, a filter inside a branch.
        types = {name.rsplit(".", 2)[0] for _, name in self.template_files() if name.count(".") >= 2}
        for event_type in sorted(t for t in types if not t.startswith("_") and "/" in t):
            issues.extend(self._check_render(event_type))
        return issues

    def _check_render(self, event_type: str) -> list[str]:
        try:
            templates = self._load(self._env, event_type)
        except _RenderFailed as failed:
            return [self._issue(failed)]
        if templates is None:
            return []
        alert = self.catalog.get(event_type)
        known = event_type in self.catalog
        examples = dict(getattr(alert, "fields", {}) or {}) if known else {}
        account_field = getattr(alert, "account", None) if known else None
        now = datetime.now(UTC)
        event = Event(
            id="check",
            type=event_type,
            occurred_at=now,
            host=self.hostname,
            account=str(account_field.example) if account_field is not None else "example",
            client_id=None,
            data=examples,
            received_at=now,
        )
        context = self.context(event, importance=Importance.LOW, recipient=None)
        try:
            self._render_set(templates, context, want_html=True)
        except _RenderFailed as failed:
            return [self._issue(failed)]
        return []

    def _issue(self, failed: _RenderFailed) -> str:
        filename, lineno = _error_location(failed.error)
        where = filename or self._path_of(failed.template)
        message = getattr(failed.error, "message", None) or str(failed.error)
        return f"{where}:{lineno or 1}: {type(failed.error).__name__}: {message}"

    def _path_of(self, name: str) -> str:
        for root in [self.override_dir, self.shipped_dir]:
            if root is not None and (root / name).is_file():
                return str(root / name)
        return name

    def missing_templates(self) -> list[str]:
        """One line per catalog type that lacks a subject or a body (HTML or text) template."""
        issues = []
        for alert in self.catalog:
            key = getattr(alert, "key", alert)
            have = {part for part in PARTS if self._exists(template_name(key, part))}
            if "subject" not in have or not have & {"html", "text"}:
                wanted = [p for p in ("subject", "html") if p not in have]
                names = " and ".join(template_name(key, p) for p in wanted)
                where = self.shipped_dir
                issues.append(f"{where / key}.*.j2: catalog type {key} has no template ({names} missing)")
        return issues

    def _exists(self, name: str) -> bool:
        return any(root is not None and (root / name).is_file() for root in [self.override_dir, self.shipped_dir])


def _builtin_fallback() -> tuple[jinja2.Template, jinja2.Template, jinja2.Template]:
    """A fixed message used only when every `Application/base` template is broken: a notice is never dropped."""
    env = _build_environment(jinja2.DictLoader({}))
    subject = env.from_string("{{ event.type }} on {{ hostname }}")
    text = env.from_string(
        "An event of type {{ event.type }} happened on {{ hostname }} at {{ event.occurred_at|datetime }}.\n\n"
        "{% for key, value in data|dictsort %}{{ key }}: {{ value }}\n{% endfor %}\n"
        "Importance: {{ importance }}. Event id: {{ event.id }}.\n"
    )
    env_html = _build_environment(jinja2.DictLoader({}))
    env_html.autoescape = True
    html = env_html.from_string(
        "<!DOCTYPE html><html><body><p>An event of type {{ event.type }} happened on {{ hostname }} at "
        "{{ event.occurred_at|datetime }}.</p><table>{% for key, value in data|dictsort %}<tr><td>{{ key }}</td>"
        "<td>{{ value }}</td></tr>{% endfor %}</table><p>Importance: {{ importance }}. Event id: {{ event.id }}."
        "</p></body></html>"
    )
    return subject, text, html


def check_templates(config: Any) -> list[str]:
    """What `dispatcher check-config` reports about templates: broken files (`FILE:LINE: message`) and catalog
    types without a subject and body template."""
    from .catalog import load_catalog

    templates = getattr(config, "templates", None)
    renderer = Renderer(load_catalog(), templates_dir=getattr(templates, "dir", None), hostname=config.hostname)
    return renderer.check() + renderer.missing_templates()
