"""`Renderer`: one event, one recipient, one channel → a `Message` (subject, text, HTML); and what
`dispatcher check-config` reports about template files (`Renderer.check`, `check_templates`).

It picks the template set (the type's `<App>/<Event>.{subject,text,html}.j2`, or a bridge's, `bridges.py`), falls
back so that rendering never fails (to `Application/base`, then the shipped `Application/base`, then a fixed plain
message; each failure logged as `template_failed` with the template's name), derives a missing `.text.j2` from the
HTML, and does the engine's part of every message: the subject prefix, one clean subject line, the text wrapped.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import structlog

from ..catalog import PREFERENCE_LABELS
from ..events import Event
from ..levels import Importance
from ..message import Message
from .bridges import template_type
from .environment import build_environment, shipped_templates_dir
from .subject import clean_subject, subject_prefix
from .text import html_to_text, wrap_text

if TYPE_CHECKING:
    from ..routing.recipients import Recipient

log = structlog.get_logger(__name__)

FALLBACK_TYPE = "Application/base"
PARTS = ("subject", "text", "html")
# Channels that send only subject + text (SPEC §5): their HTML part is not rendered unless the text is derived
# from it. Any other channel (email, third-party plugins) gets all three parts.
TEXT_ONLY_CHANNELS = frozenset({"pushbullet", "posturl"})


def template_name(event_type: str, part: str) -> str:
    """`("Backup/Failure", "html")` → `"Backup/Failure.html.j2"`."""
    return f"{event_type}.{part}.j2"


@dataclass(frozen=True, slots=True)
class _TemplateSet:
    """The compiled templates one event type renders with (`source` is the type they belong to)."""

    source: str
    subject: jinja2.Template
    text: jinja2.Template | None
    html: jinja2.Template | None


class TemplateFailed(Exception):
    """A template file that exists but does not compile or render: its name and the error."""

    def __init__(self, template: str, error: BaseException) -> None:
        super().__init__(f"{template}: {error}")
        self.template = template
        self.error = error


def describe_template_error(err: BaseException) -> str:
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
        self._env = build_environment(jinja2.FileSystemLoader(search))
        # The last resort when an override breaks Application/base itself.
        self._shipped_env = (
            build_environment(jinja2.FileSystemLoader([str(self.shipped_dir)])) if self.override_dir else self._env
        )
        self._sets: dict[str, _TemplateSet | None] = {}
        self._broken: dict[str, tuple[str, str]] = {}  # type → (template, error) of templates that do not compile
        self._alert_views: dict[str, dict[str, Any]] = {}
        self._fallback: _TemplateSet | None = None

    # -- loading -------------------------------------------------------------------------------------------

    def _load(self, env: jinja2.Environment, event_type: str) -> _TemplateSet | None:
        """The compiled set for `event_type`, None if the type has no subject or no body template.

        Raises `TemplateFailed` when a file exists but does not compile.
        """
        found: dict[str, jinja2.Template | None] = {}
        for part in PARTS:
            name = template_name(event_type, part)
            try:
                found[part] = env.get_template(name)
            except jinja2.TemplateNotFound as err:
                if err.name != name:  # the template exists, but something it extends or imports does not
                    raise TemplateFailed(name, err) from err
                found[part] = None
            except jinja2.TemplateError as err:
                raise TemplateFailed(name, err) from err
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
        except TemplateFailed as failed:
            self._broken[event_type] = (failed.template, describe_template_error(failed.error))
            log.error(
                "template_failed",
                template=failed.template,
                error=describe_template_error(failed.error),
                event_type=event_type,
            )
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
            except TemplateFailed as failed:
                log.error("template_failed", template=failed.template, error=str(failed.error))
            if loaded is None and self._shipped_env is not self._env:
                try:
                    loaded = self._load(self._shipped_env, FALLBACK_TYPE)
                except TemplateFailed as failed:
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
                raise TemplateFailed(template.name or "?", err) from err

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
        except TemplateFailed as failed:
            _, lineno = _error_location(failed.error)
            log.error(
                "template_failed",
                template=failed.template,
                error=describe_template_error(failed.error),
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
            except TemplateFailed:
                shipped = None
            if shipped is not None:
                candidates.append(shipped)
        for templates in candidates:
            try:
                return self._render_set(templates, context, want_html=want_html)
            except TemplateFailed as again:
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
        except TemplateFailed as failed:
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
        except TemplateFailed as failed:
            return [self._issue(failed)]
        return []

    def _issue(self, failed: TemplateFailed) -> str:
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
    env = build_environment(jinja2.DictLoader({}))
    subject = env.from_string("{{ event.type }} on {{ hostname }}")
    text = env.from_string(
        "An event of type {{ event.type }} happened on {{ hostname }} at {{ event.occurred_at|datetime }}.\n\n"
        "{% for key, value in data|dictsort %}{{ key }}: {{ value }}\n{% endfor %}\n"
        "Importance: {{ importance }}. Event id: {{ event.id }}.\n"
    )
    env_html = build_environment(jinja2.DictLoader({}))
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
    from ..catalog import load_catalog

    templates = getattr(config, "templates", None)
    renderer = Renderer(load_catalog(), templates_dir=getattr(templates, "dir", None), hostname=config.hostname)
    return renderer.check() + renderer.missing_templates()
