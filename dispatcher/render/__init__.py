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

One concept a module; what others use is imported from the package:

- `renderer.py`: `Renderer` (template sets, the fallbacks, the template variables, `check()`), `check_templates`;
- `environment.py`: the sandbox, its loader settings and caches, `shipped_templates_dir`;
- `bridges.py`: which template set a bridged event is rendered with (`BRIDGE_KEY`, `bridge_templates`,
  `template_type`);
- `values.py`: missing data (`ReadableUndefined`, `NOT_GIVEN`) and how a bare value prints;
- `filters.py`: the filters and tests templates use;
- `text.py`: wrapping the text part, and the text derived from HTML;
- `subject.py`: the subject line and its prefix.
"""

from ..message import Message
from .bridges import BRIDGE_KEY, BRIDGE_TEMPLATES, bridge_templates, template_type
from .environment import build_environment, shipped_templates_dir
from .filters import (
    FILTERS,
    TESTS,
    filter_and_list,
    filter_article,
    filter_as_list,
    filter_date,
    filter_datetime,
    filter_duration,
    filter_fact_lines,
    filter_fact_rows,
    filter_filesize,
    filter_mib,
    filter_paragraphs,
    filter_percent,
    filter_pluralize,
    filter_setting,
    filter_show,
    filter_url,
    filter_yesno,
    is_given,
)
from .renderer import FALLBACK_TYPE, PARTS, TEXT_ONLY_CHANNELS, Renderer, check_templates, template_name
from .subject import ACCOUNT_SIDE_KINDS, SUBJECT_MAX_CHARS, clean_subject, subject_prefix
from .text import CODE_INDENT, TEXT_WIDTH, html_to_text, wrap_text
from .values import NOT_GIVEN, ReadableUndefined, finalize, is_missing

__all__ = [
    "ACCOUNT_SIDE_KINDS",
    "BRIDGE_KEY",
    "BRIDGE_TEMPLATES",
    "CODE_INDENT",
    "FALLBACK_TYPE",
    "FILTERS",
    "NOT_GIVEN",
    "PARTS",
    "SUBJECT_MAX_CHARS",
    "TESTS",
    "TEXT_ONLY_CHANNELS",
    "TEXT_WIDTH",
    "Message",
    "ReadableUndefined",
    "Renderer",
    "bridge_templates",
    "build_environment",
    "check_templates",
    "clean_subject",
    "filter_and_list",
    "filter_article",
    "filter_as_list",
    "filter_date",
    "filter_datetime",
    "filter_duration",
    "filter_fact_lines",
    "filter_fact_rows",
    "filter_filesize",
    "filter_mib",
    "filter_paragraphs",
    "filter_percent",
    "filter_pluralize",
    "filter_setting",
    "filter_show",
    "filter_url",
    "filter_yesno",
    "finalize",
    "html_to_text",
    "is_given",
    "is_missing",
    "shipped_templates_dir",
    "subject_prefix",
    "template_name",
    "template_type",
    "wrap_text",
]
