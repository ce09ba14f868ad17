"""The text part: lines wrapped at 72 columns (`wrap_text`), and the text derived from an HTML part
(`html_to_text`) for a type that ships no `.text.j2`.

What a reader copies and pastes stays whole: lines indented as commands, words longer than a line (URLs, paths),
the signature separator. List items and fact lines hang under their text.
"""

from __future__ import annotations

import functools
import re
from html.parser import HTMLParser

TEXT_WIDTH = 72

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
