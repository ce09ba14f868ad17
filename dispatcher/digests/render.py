"""A digest's message: the events of one group in one `Message`, from the digest's own templates.

    templates/_digest/digest.subject.j2   how many events, and their alert name (the engine adds `[hostname]`)
    templates/_digest/digest.text.j2      every event's subject line, time, host, account and id
    templates/_digest/digest.html.j2      the same in the HTML layout

The config's `templates.dir` overrides them file by file, as any template. The variables are the usual ones (SPEC
§5) for a notice standing for the whole digest, plus the digest's own: `count`; `events`, each with `id`, `type`,
`alert` (its alert name), `subject` (the line its own message would have as subject, without the prefix),
`occurred_at`, `host` and `account`; `names` and `types` (the alert names and types, each once, in order);
`hosts`; `first_at` and `last_at`; `group` (the values the rule groups by); `digest` (`id`, `count`). `event` is
the first event with the type, host and account the events share (the alert's type and the config's hostname
when they differ, no account), and `data` is empty: no one event's data speaks for the digest.

Rendering never fails: a digest template that does not compile or raises falls back to the shipped digest
templates, then to a fixed plain list (the error is logged as `template_failed`). Each event's subject line comes
from its own type's templates through the `Renderer`, with its fallbacks.

`DigestJob` is what a sender is given with the delivery (`senders/local.py`): picklable, since it travels to a
sender process. This module imports nothing of the daemon's side.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import structlog

from ..catalog import load_catalog
from ..events import Event
from ..levels import Importance
from ..message import Message
from ..render import (
    ACCOUNT_SIDE_KINDS,
    TEXT_ONLY_CHANNELS,
    Renderer,
    build_environment,
    clean_subject,
    filter_datetime,
    html_to_text,
    shipped_templates_dir,
    subject_prefix,
    wrap_text,
)
from ..render.renderer import TemplateFailed, describe_template_error

if TYPE_CHECKING:
    from ..config import Config
    from ..routing.recipients import Recipient

log = structlog.get_logger(__name__)

DIGEST_TEMPLATE = "_digest/digest"
PARTS = ("subject", "text", "html")
SECONDS = "%Y-%m-%d %H:%M:%S UTC"


@dataclass(frozen=True, slots=True)
class DigestJob:
    """A digest to render: its id, its events in the order it lists them, and the values its group shares."""

    id: int
    events: tuple[Event, ...]
    group: tuple[tuple[str, str | None], ...] = ()


class DigestRenderer:
    """Renders digests with the digest templates (shipped, or overridden in `templates_dir`) and, for each
    event's subject line, `renderer` (the one the sender renders single events with)."""

    def __init__(self, renderer: Renderer, *, templates_dir: Path | None) -> None:
        self.renderer = renderer
        self._override_dir = Path(templates_dir) if templates_dir else None
        shipped = shipped_templates_dir()
        search = [str(templates_dir)] if templates_dir else []
        search.append(str(shipped))
        self._env = build_environment(jinja2.FileSystemLoader(search))
        # The last resort when an override breaks: the shipped digest templates alone.
        self._shipped_env = build_environment(jinja2.FileSystemLoader([str(shipped)])) if templates_dir else None

    # -- rendering -----------------------------------------------------------------------------------------------

    def render(
        self, job: DigestJob, *, importance: Importance, recipient: Recipient | None, channel: str = "email"
    ) -> Message:
        """The one message `channel` sends to `recipient` for the digest `job`. Never raises for template errors."""
        lead = self._lead(job.events)
        context = self.context(job, lead, importance=importance, recipient=recipient)
        want_html = channel not in TEXT_ONLY_CHANNELS
        try:
            subject, text, html = self._render_with(self._env, context, want_html=want_html)
        except TemplateFailed as failed:
            log.error(
                "template_failed",
                template=failed.template,
                error=describe_template_error(failed.error),
                digest_id=job.id,
            )
            subject, text, html = self._fallback(context, want_html=want_html)
        prefix = self._prefix(lead, recipient, context["hostname"])
        return Message(
            subject=clean_subject(f"{prefix} {subject}"),
            text=text,
            html=html,
            event_id=job.events[0].id,
            event_type=lead.type,
            importance=importance.label,
            hostname=context["hostname"],
            account=lead.account,
            event_ids=tuple(event.id for event in job.events),
        )

    def context(
        self, job: DigestJob, lead: Event, *, importance: Importance, recipient: Recipient | None
    ) -> dict[str, Any]:
        """The digest templates' variables (see the module's docstring)."""
        context = self.renderer.context(lead, importance=importance, recipient=recipient)
        catalog = self.renderer.catalog
        events = [
            {
                "id": event.id,
                "type": event.type,
                "alert": catalog.get(event.type).name,
                "subject": self.subject_line(event, importance=importance, recipient=recipient),
                "occurred_at": event.occurred_at,
                "host": event.host,
                "account": event.account,
            }
            for event in job.events
        ]
        times = [event.occurred_at for event in job.events]
        context.update(
            data={},
            count=len(job.events),
            events=events,
            names=list(dict.fromkeys(str(item["alert"]) for item in events)),
            types=list(dict.fromkeys(event.type for event in job.events)),
            hosts=list(dict.fromkeys(event.host for event in job.events)),
            first_at=min(times),
            last_at=max(times),
            group=dict(job.group),
            digest={"id": job.id, "count": len(job.events)},
        )
        return context

    def subject_line(self, event: Event, *, importance: Importance, recipient: Recipient | None) -> str:
        """The subject `event`'s own message would have, without its `[hostname]` or `[account]` prefix."""
        message = self.renderer.render(event, importance=importance, recipient=recipient, channel="posturl")
        prefix = subject_prefix(event, recipient, event.host or self.renderer.hostname) + " "
        return message.subject[len(prefix) :] if message.subject.startswith(prefix) else message.subject

    def _lead(self, events: tuple[Event, ...]) -> Event:
        """The notice standing for the digest: the first event, with what all share (else the first's type, the
        config's hostname and no account), and no data."""
        first = events[0]
        types = {event.type for event in events}
        hosts = {event.host for event in events}
        accounts = {event.account for event in events}
        return Event(
            id=first.id,
            type=first.type,
            occurred_at=first.occurred_at,
            host=first.host if len(hosts) == 1 else self.renderer.hostname,
            account=first.account if len(accounts) == 1 else None,
            client_id=first.client_id if len(types) == 1 and len(accounts) == 1 else None,
            data={},
            received_at=first.received_at,
        )

    @staticmethod
    def _prefix(lead: Event, recipient: Recipient | None, hostname: str) -> str:
        """`[account]` to the account's own side when every event concerns that account; `[hostname]` otherwise."""
        if getattr(recipient, "kind", None) in ACCOUNT_SIDE_KINDS and lead.account:
            return f"[{lead.account}]"
        return f"[{hostname}]"

    def _render_with(
        self, env: jinja2.Environment, context: dict[str, Any], *, want_html: bool
    ) -> tuple[str, str, str]:
        templates: dict[str, jinja2.Template] = {}
        for part in PARTS:
            name = f"{DIGEST_TEMPLATE}.{part}.j2"
            try:
                templates[part] = env.get_template(name)
            except jinja2.TemplateError as err:
                raise TemplateFailed(name, err) from err

        def run(part: str, ctx: dict[str, Any]) -> str:
            try:
                return templates[part].render(ctx)
            except Exception as err:  # any template bug; the caller falls back
                raise TemplateFailed(f"{DIGEST_TEMPLATE}.{part}.j2", err) from err

        subject = clean_subject(run("subject", context))
        with_subject = {**context, "subject": subject}
        html = run("html", with_subject) if want_html else ""
        return subject, wrap_text(run("text", with_subject)), html

    def _fallback(self, context: dict[str, Any], *, want_html: bool) -> tuple[str, str, str]:
        if self._shipped_env is not None:
            try:
                return self._render_with(self._shipped_env, context, want_html=want_html)
            except TemplateFailed as failed:
                log.error("template_failed", template=failed.template, error=describe_template_error(failed.error))
        return _plain(context, want_html=want_html)

    # -- checking ------------------------------------------------------------------------------------------------

    def check(self, hostname: str) -> list[str]:
        """Render a two-event example digest with the templates in use; one `FILE:LINE: message` line for the
        first problem (compiling every file is `Renderer.check`'s)."""
        now = datetime.now(UTC)
        events = tuple(
            Event(
                id=f"check-{index}",
                type="Backup/Failure",
                occurred_at=now,
                host=hostname,
                account="example",
                client_id=None,
                data={},
                received_at=now,
            )
            for index in (1, 2)
        )
        job = DigestJob(id=1, events=events, group=(("type", "Backup/Failure"),))
        context = self.context(job, self._lead(events), importance=Importance.HIGH, recipient=None)
        try:
            self._render_with(self._env, context, want_html=True)
        except TemplateFailed as failed:
            filename, line = _location(failed.error)
            where = filename or self._path_of(failed.template)
            message = getattr(failed.error, "message", None) or str(failed.error)
            return [f"{where}:{line or 1}: {type(failed.error).__name__}: {message}"]
        return []

    def _path_of(self, name: str) -> str:
        for root in (self._override_dir, shipped_templates_dir()):
            if root is not None and (root / name).is_file():
                return str(root / name)
        return name


def _location(err: BaseException) -> tuple[str | None, int | None]:
    """The template file and line an error comes from (Jinja rewrites tracebacks to template frames)."""
    if isinstance(err, jinja2.TemplateSyntaxError):
        return err.filename or err.name, err.lineno
    filename: str | None = None
    line: int | None = None
    for frame, frame_line in traceback.walk_tb(err.__traceback__):
        if frame.f_code.co_filename.endswith(".j2"):
            filename, line = frame.f_code.co_filename, frame_line
    return filename, line


def check_digest_templates(config: Config) -> list[str]:
    """What `dispatcher check-config` reports about the digest templates in use (shipped, or overridden in the
    config's `templates.dir`): a `FILE:LINE: message` line if an example digest does not render."""
    renderer = Renderer(load_catalog(), templates_dir=config.templates.dir, hostname=config.hostname)
    return DigestRenderer(renderer, templates_dir=config.templates.dir).check(config.hostname)


def _plain(context: dict[str, Any], *, want_html: bool) -> tuple[str, str, str]:
    """The fixed digest used only when every digest template is broken: a notice is never dropped."""
    lines = [
        f"- {item['subject']}\n  event {item['id']} · {filter_datetime(item['occurred_at'], SECONDS)} · {item['host']}"
        + (f" · account {item['account']}" if item["account"] else "")
        for item in context["events"]
    ]
    names = ", ".join(context["names"])
    subject = clean_subject(f"{context['count']} × {names}")
    text = wrap_text(f"{subject}\n\n" + "\n".join(lines))
    if not want_html:
        return subject, text, ""
    env = build_environment(jinja2.DictLoader({}))
    env.autoescape = True
    html = env.from_string(
        "<!DOCTYPE html><html><body><p>{{ subject }}</p><ul>{% for e in events %}<li>{{ e.subject }}<br>"
        "event {{ e.id }} · {{ e.occurred_at|datetime('%Y-%m-%d %H:%M:%S UTC') }} · {{ e.host }}"
        "{% if e.account %} · account {{ e.account }}{% endif %}</li>{% endfor %}</ul></body></html>"
    ).render(subject=subject, events=context["events"])
    return subject, text or html_to_text(html), html
