"""Rendering: every catalog type's templates, the layout, safety, overrides, fallbacks, and `dispatcher render`."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from dispatcher.catalog import load_catalog
from dispatcher.config import parse_config
from dispatcher.events import Event
from dispatcher.levels import Importance
from dispatcher.render import (
    NOT_GIVEN,
    Renderer,
    check_templates,
    clean_subject,
    filter_datetime,
    html_to_text,
    shipped_templates_dir,
    wrap_text,
)
from dispatcher.routing.recipients import Recipient

HOST = "server1.example.com"
CATALOG = load_catalog()
SYSTEM = Recipient(kind="system", name="root", targets={"email": ("root@example.com",)}, thresholds=None)
ACCOUNT = Recipient(kind="account", name="account:bob", targets={"email": ("bob@example.net",)}, thresholds=None)
CLIENT = Recipient(kind="client", name="client:12", targets={"email": ("billing@example.net",)}, thresholds=None)
TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(CATALOG, templates_dir=None, hostname=HOST)


def make_event(event_type: str, data: Mapping[str, Any], *, account: str | None = None) -> Event:
    now = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    return Event(
        id="7f1c9a2e-test",
        type=event_type,
        occurred_at=now,
        host=HOST,
        account=account,
        client_id=None,
        data=dict(data),
        received_at=now,
    )


def example_event(event_type: str, **overrides: Any) -> Event:
    """An event of the type with the catalog's example data and, where its templates name one, example account."""
    alert = CATALOG.get(event_type)
    data = {**alert.fields, **overrides}
    return make_event(event_type, data, account=alert.account.example if alert.account else None)


class _Balance(HTMLParser):
    """Counts unclosed and stray tags (void elements excepted)."""

    VOID = frozenset({"br", "meta", "img", "hr", "input", "link", "col", "area", "base", "wbr"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
            if tag in self.stack:
                while self.stack.pop() != tag:
                    pass
            return
        self.stack.pop()


def assert_balanced(html: str) -> None:
    parser = _Balance()
    parser.feed(html)
    parser.close()
    assert not parser.errors, parser.errors
    assert not parser.stack, f"unclosed: {parser.stack}"


def leaves(name: str, value: Any) -> Iterator[tuple[str, Any]]:
    """Every scalar inside an example value, with the field name it belongs to."""
    if isinstance(value, Mapping):
        for item in value.values():
            yield from leaves(name, item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from leaves(name, item)
    else:
        yield name, value


def squash(text: str) -> str:
    return " ".join(text.split())


def expected_in_text(name: str, value: Any) -> str | None:
    """What of an example value a reader must find in the text part; None for values shown transformed."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        if TIMESTAMP_RE.match(value):
            moment = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
            return moment.strftime("%Y-%m-%d %H:%M UTC")
        return squash(value).rstrip(".")  # a sentence may be quoted inside another one
    if name.endswith(("_mb", "_s")):  # shown as sizes and durations
        return None
    return str(value)


# -- every catalog type -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", CATALOG.keys())
def test_every_type_renders_its_example(renderer: Renderer, event_type: str) -> None:
    """Each catalog type has its own templates, and with its example data renders a non-empty subject, text and HTML
    without falling back: the HTML is balanced, no template syntax is left, and every example value appears in the
    text part."""
    assert (shipped_templates_dir() / f"{event_type}.subject.j2").is_file(), f"no templates for {event_type}"
    with capture_logs() as logs:
        message = renderer.render(example_event(event_type), importance=Importance.HIGH, recipient=SYSTEM)
    assert [entry for entry in logs if entry["log_level"] in {"error", "warning"}] == []
    assert message.subject.strip() and message.text.strip() and message.html.strip()
    for part in (message.subject, message.text, message.html):
        assert "{{" not in part and "{%" not in part and "}}" not in part
    assert_balanced(message.html)
    text = squash(message.text)
    for name, value in CATALOG.get(event_type).fields.items():
        for leaf_name, leaf in leaves(name, value):
            wanted = expected_in_text(leaf_name, leaf)
            if wanted is not None:
                assert wanted in text, f"{event_type}: {leaf_name}={leaf!r} not in the text part"
    assert "None" not in message.text


@pytest.mark.parametrize("event_type", CATALOG.keys())
def test_every_type_renders_without_data(renderer: Renderer, event_type: str) -> None:
    """With no data at all a type still renders its own templates (no fallback, no crash), and what is missing
    reads as `(not given)` rather than as nothing or `None`."""
    if not (shipped_templates_dir() / f"{event_type}.subject.j2").is_file():
        pytest.fail(f"no templates for {event_type}")
    with capture_logs() as logs:
        message = renderer.render(make_event(event_type, {}), importance=Importance.LOW, recipient=SYSTEM)
    assert [entry for entry in logs if entry["log_level"] in {"error", "warning"}] == []
    assert message.subject.strip() and message.text.strip()
    if CATALOG.get(event_type).fields and event_type != "Application/base":
        assert NOT_GIVEN in message.text or "(none given)" in message.text
    assert "None" not in message.text and "None" not in message.subject


# What a subject may never show: the placeholders of missing data, and the traces of an empty slot.
SUBJECT_PLACEHOLDERS = (NOT_GIVEN, "(none given)", "(none)", "an unknown number of", "None", "()", "(empty)")


@pytest.mark.parametrize("event_type", CATALOG.keys())
@pytest.mark.parametrize("account", [None, "carol"])
def test_no_subject_shows_a_placeholder_for_missing_data(renderer: Renderer, event_type: str, account: str) -> None:
    """With no data at all, and with nothing but the event's `account`, every type's subject reads as a sentence:
    what is missing is left out or rephrased, never shown as `(not given)` or an empty slot; a type whose messages
    name the account names it in the subject when it is given."""
    for recipient in (SYSTEM, ACCOUNT):
        subject = renderer.render(
            make_event(event_type, {}, account=account), importance=Importance.LOW, recipient=recipient
        ).subject
        assert not [mark for mark in SUBJECT_PLACEHOLDERS if mark in subject], subject
        assert not re.search(r"\b(for|of|to|from|at|the|a|an)$|:$", subject), subject
    alert = CATALOG.get(event_type)
    if account and alert.account is not None and event_type != "Application/base":
        assert f"account {account}" in subject.lower(), subject


def test_disk_warning_with_only_an_account_names_it(renderer: Renderer) -> None:
    """`{"type": "Quota/DiskWarning", "account": "carol"}`: root's and carol's messages name carol in the subject
    and the text, and carol's subject starts with her account; nothing in either subject is a placeholder."""
    event = make_event("Quota/DiskWarning", {}, account="carol")
    carol = Recipient(kind="account", name="account:carol", targets={}, thresholds=None)
    root = renderer.render(event, importance=Importance.HIGH, recipient=SYSTEM)
    own = renderer.render(event, importance=Importance.HIGH, recipient=carol)
    assert root.subject == f"[{HOST}] Account carol is near its disk quota"
    assert own.subject == "[carol] Account carol is near its disk quota"
    for message in (root, own):
        assert "The cPanel account carol" in squash(message.text) and "carol" in message.html
        assert "bob" not in message.text + message.html
    full = make_event("Quota/DiskWarning", {"percent_used": 100}, account="carol")
    assert renderer.render(full, importance=Importance.HIGH, recipient=SYSTEM).subject.endswith(
        "Account carol has reached its disk quota"
    )


def test_sizes_from_data_are_never_multiplied_as_strings(renderer: Renderer) -> None:
    """A size in MiB sent as a string is converted when it is a number (`"48213"`) and otherwise printed as given,
    never repeated a million times: sizes go through the `mib` filter, not `value * 1048576`."""
    for size, shown in (("48213", "47.1 GiB"), ("about 47 GB", "about 47 GB"), ("x" * 1000, "x" * 100)):
        message = renderer.render(
            example_event("Backup/Success", size_mb=size), importance=Importance.LOW, recipient=SYSTEM
        )
        assert shown in message.subject and len(message.text) < 20_000 and len(message.html) < 40_000


def test_a_channel_name_gets_the_right_article(renderer: Renderer) -> None:
    """A failed email delivery is reported as "an email notice", a Pushbullet one as "a pushbullet notice"."""
    email = example_event("iContact/SendIMFailed", channel="email")
    assert (
        "Could not deliver an email notice to root"
        in renderer.render(email, importance=Importance.MEDIUM, recipient=SYSTEM).subject
    )
    assert (
        "Could not deliver a pushbullet notice"
        in renderer.render(
            example_event("iContact/SendIMFailed"), importance=Importance.MEDIUM, recipient=SYSTEM
        ).subject
    )


def test_blank_fields_read_as_not_given(renderer: Renderer) -> None:
    """A field sent as an empty string reads like a missing one, never as an empty spot in a sentence."""
    event = example_event("Backup/Transport", error="  ")
    message = renderer.render(event, importance=Importance.MEDIUM, recipient=SYSTEM)
    assert f"The error was: {NOT_GIVEN}" in squash(message.text)
    assert re.search(r"^Error: +\(not given\)$", message.text, re.M)


def test_text_parts_fit_72_columns(renderer: Renderer) -> None:
    """Text parts are wrapped at 72 columns; only single words longer than that (URLs, paths) and indented
    command lines (kept whole for copy and paste) stick out."""
    for alert in CATALOG:
        if not (shipped_templates_dir() / f"{alert.key}.subject.j2").is_file():
            continue
        message = renderer.render(example_event(alert.key), importance=Importance.LOW, recipient=SYSTEM)
        for line in message.text.splitlines():
            if len(line) > 72 and not line.startswith("    "):
                assert " " not in line.strip().split(":  ")[-1].strip(), f"{alert.key}: {line!r}"


# -- layout, subjects, recipients ----------------------------------------------------------------------------------


def test_subject_prefix_depends_on_the_recipient(renderer: Renderer) -> None:
    """System contacts see `[hostname]`; the account's own contacts and its billing contacts see `[account]`;
    a billing notice without an account keeps `[hostname]`."""
    event = example_event("AutoSSL/CertificateInstalled")
    assert renderer.render(event, importance=Importance.LOW, recipient=SYSTEM).subject.startswith(f"[{HOST}] ")
    assert renderer.render(event, importance=Importance.LOW, recipient=ACCOUNT).subject.startswith("[bob] ")
    assert renderer.render(event, importance=Importance.LOW, recipient=CLIENT).subject.startswith("[bob] ")
    no_account = make_event("AutoSSL/CertificateInstalled", CATALOG.get("AutoSSL/CertificateInstalled").fields)
    assert renderer.render(no_account, importance=Importance.LOW, recipient=CLIENT).subject.startswith(f"[{HOST}] ")
    assert renderer.render(event, importance=Importance.LOW, recipient=None).subject.startswith(f"[{HOST}] ")


def test_footer_says_why_and_where_to_change_it(renderer: Renderer) -> None:
    """The footer names the reason the reader gets the notice and where that is really changed: for a system
    contact, its `receives:` thresholds in dispatcher's configuration (not WHM's Contact Manager); for the account's
    contacts, the notify_* preference that stops this type in cPanel's Contact Information (or that nothing does);
    for billing contacts, the email category in the client area."""
    event = example_event("AutoSSL/CertificateInstalled")
    system = renderer.render(event, importance=Importance.LOW, recipient=SYSTEM)
    account = renderer.render(event, importance=Importance.LOW, recipient=ACCOUNT)
    client = renderer.render(event, importance=Importance.LOW, recipient=CLIENT)
    system_text = squash(system.text)
    assert "system contact (root)" in system_text and "configuration file" in system_text
    assert "receives: under contacts: » root" in system_text and "this notice is low" in system_text
    assert "Contact Manager" not in system_text and "Contact Manager" not in system.html
    assert "cPanel account bob" in squash(account.text) and "Contact Information" in squash(account.text)
    assert '"AutoSSL has renewed a certificate" (notify_autossl_renewal)' in squash(account.text)
    assert "billing contact" in squash(client.text) and "client area" in squash(client.text)
    assert "(Domain Emails)" in squash(client.text)
    assert "receives:</code>" in system.html and "notify_autossl_renewal" in account.html
    assert "client area" in client.html
    ungated = renderer.render(example_event("suspendacct/Notify"), importance=Importance.LOW, recipient=ACCOUNT)
    assert "always sent to the account" in squash(ungated.text)


def test_header_shows_hostname_and_importance(renderer: Renderer) -> None:
    """The HTML header and the text's first line show the server and the importance the event was sent at."""
    message = renderer.render(example_event("Backup/Failure"), importance=Importance.MEDIUM, recipient=SYSTEM)
    assert message.text.splitlines()[0] == f"MEDIUM IMPORTANCE · {HOST}"
    assert HOST in message.html and "medium importance" in message.html
    assert message.importance == "medium" and message.hostname == HOST and message.event_type == "Backup/Failure"


def test_html_uses_inline_styles_only(renderer: Renderer) -> None:
    """Mail clients drop style sheets and scripts: the HTML has inline styles, no <style>, <link> or <script>."""
    message = renderer.render(example_event("Check/Smart"), importance=Importance.HIGH, recipient=SYSTEM)
    assert "style=" in message.html
    for tag in ("<style", "<link", "<script"):
        assert tag not in message.html


# -- safety ---------------------------------------------------------------------------------------------------------


def test_markup_in_data_is_escaped_in_html(renderer: Renderer) -> None:
    """`<script>` in event data comes out escaped in the HTML part, in type templates and in the fallback."""
    evil = "<script>alert(1)</script>"
    for event_type in ("AutoSSL/CertificateInstalled", "Unknown/Thing"):
        event = make_event(event_type, {"domain": evil, "message": evil, "certificate_domains": [evil]})
        message = renderer.render(event, importance=Importance.LOW, recipient=SYSTEM)
        assert "<script>" not in message.html
        assert "&lt;script&gt;" in message.html
        assert evil in message.text  # the text part is plain text: nothing to escape


def test_links_from_data_keep_only_web_targets(renderer: Renderer) -> None:
    """A `javascript:` URL in data never becomes a link target."""
    event = example_event("Check/SecurityAdvisorStateChange", advisor_url="javascript:alert(1)")
    message = renderer.render(event, importance=Importance.HIGH, recipient=SYSTEM)
    assert 'href="javascript' not in message.html
    assert 'href="#"' in message.html


@pytest.mark.parametrize("event_type", ["AutoSSL/CertificateInstalled", "cPHulk/Login", "Unknown/Thing"])
def test_newlines_in_data_never_reach_the_subject(renderer: Renderer, event_type: str) -> None:
    """Whatever the data holds, the subject is one line: CR, LF and other separators become spaces."""
    nasty = "example.com\r\nBcc: victim@example.net\n\u2028X-Evil: 1"
    event = make_event(event_type, {"domain": nasty, "user": nasty, "ip": nasty, "subject": nasty}, account="bob")
    for recipient in (SYSTEM, ACCOUNT):
        subject = renderer.render(event, importance=Importance.LOW, recipient=recipient).subject
        assert "\r" not in subject and "\n" not in subject and "\u2028" not in subject
        assert "  " not in subject and subject == subject.strip()


@given(st.text())
def test_clean_subject_is_one_short_line(raw: str) -> None:
    """`clean_subject` of any text is one trimmed line of at most 200 characters, without control characters."""
    subject = clean_subject(raw)
    assert len(subject) <= 200
    assert subject == subject.strip()
    assert not any(ord(char) < 32 or ord(char) == 127 or char in "\u2028\u2029\x85" for char in subject)


def test_recipient_targets_never_reach_templates(tmp_path: Path) -> None:
    """Templates see the recipient's kind and name only, never its targets (they can hold Pushbullet tokens)."""
    (tmp_path / "Custom").mkdir()
    (tmp_path / "Custom" / "Leak.subject.j2").write_text("{{ recipient.targets }} {{ recipient.name }}")
    (tmp_path / "Custom" / "Leak.html.j2").write_text("<p>{{ recipient }}</p>")
    token = Recipient(kind="system", name="root", targets={"pushbullet": ("o.secret-token",)}, thresholds=None)
    renderer = Renderer(CATALOG, templates_dir=tmp_path, hostname=HOST)
    message = renderer.render(make_event("Custom/Leak", {}), importance=Importance.LOW, recipient=token)
    assert "secret-token" not in message.subject + message.text + message.html
    assert message.subject == f"[{HOST}] {NOT_GIVEN} root"


def test_sandbox_blocks_python_internals(tmp_path: Path) -> None:
    """A template cannot reach Python internals: the sandbox stops it and the notice falls back to
    Application/base."""
    (tmp_path / "Custom").mkdir()
    (tmp_path / "Custom" / "Escape.subject.j2").write_text("{{ data.__class__.__mro__[1].__subclasses__() }}")
    (tmp_path / "Custom" / "Escape.text.j2").write_text("x")
    renderer = Renderer(CATALOG, templates_dir=tmp_path, hostname=HOST)
    with capture_logs() as logs:
        message = renderer.render(make_event("Custom/Escape", {}), importance=Importance.LOW, recipient=SYSTEM)
    assert "subclasses" not in message.subject and "<class" not in message.subject
    assert message.subject == f"[{HOST}] Custom notice: Escape"
    assert any(entry["event"] == "template_failed" for entry in logs)


@pytest.mark.parametrize(
    "reach",
    [
        "m._body_stream",
        "m.__class__.__init__.__globals__",
        "m.items.__globals__",
        "m.items._func.__globals__",
        "m.items.__call__.__globals__",
    ],
)
def test_sandbox_blocks_internals_through_an_imported_macro_module(tmp_path: Path, reach: str) -> None:
    """Macros imported from another template (`m.items`) are called and read without the sandbox's per-call
    checks, but nothing behind them is reachable: a name starting with "_" stays refused."""
    (tmp_path / "Custom").mkdir()
    (tmp_path / "Custom" / "Escape.subject.j2").write_text(
        '{% import "_layout/macros.text.j2" as m %}{{ ' + reach + " }}"
    )
    (tmp_path / "Custom" / "Escape.text.j2").write_text(
        '{% import "_layout/macros.text.j2" as m %}{{ m.items(["a"]) }}'
    )
    renderer = Renderer(CATALOG, templates_dir=tmp_path, hostname=HOST)
    message = renderer.render(make_event("Custom/Escape", {}), importance=Importance.LOW, recipient=SYSTEM)
    assert "<function" not in message.subject and "builtins" not in message.subject and "<" not in message.subject
    assert "a" in message.text


# -- overrides and fallbacks ------------------------------------------------------------------------------------------


def test_override_wins_per_file(tmp_path: Path) -> None:
    """A file in `templates.dir` replaces only the shipped file of the same name; the other parts stay shipped."""
    (tmp_path / "AutoSSL").mkdir()
    (tmp_path / "AutoSSL" / "CertificateInstalled.subject.j2").write_text("Custom: {{ data.domain }} is secured")
    shipped = Renderer(CATALOG, templates_dir=None, hostname=HOST)
    overridden = Renderer(CATALOG, templates_dir=tmp_path, hostname=HOST)
    event = example_event("AutoSSL/CertificateInstalled")
    before = shipped.render(event, importance=Importance.LOW, recipient=SYSTEM)
    after = overridden.render(event, importance=Importance.LOW, recipient=SYSTEM)
    assert after.subject == f"[{HOST}] Custom: example.com is secured"
    assert before.subject != after.subject
    # The text and HTML parts are still the shipped ones (but show the overriding subject as their headline).
    assert after.text.replace("Custom: example.com is secured", "") == before.text.replace(
        before.subject.removeprefix(f"[{HOST}] "), ""
    )
    assert "AutoSSL installed a new SSL certificate" in after.html


def test_override_can_replace_the_layout(tmp_path: Path) -> None:
    """Shared layout files are overridable too: an admin's base layout applies to every type's HTML."""
    (tmp_path / "_layout").mkdir()
    (tmp_path / "_layout" / "base.html.j2").write_text(
        "<html><body><p>ACME HOSTING</p>{% block summary %}{% endblock %}</body></html>"
    )
    renderer = Renderer(CATALOG, templates_dir=tmp_path, hostname=HOST)
    message = renderer.render(example_event("Backup/Success"), importance=Importance.LOW, recipient=SYSTEM)
    assert message.html.startswith("<html><body><p>ACME HOSTING</p>")
    assert "The compressed backup finished successfully" in squash(message.html)


def test_broken_override_falls_back_and_is_reported(tmp_path: Path) -> None:
    """An override with a syntax error makes the notice fall back to Application/base, logs the template's name
    (for every notice it affects), and `check()` reports the file with its line."""
    (tmp_path / "AutoSSL").mkdir()
    broken = tmp_path / "AutoSSL" / "CertificateInstalled.html.j2"
    broken.write_text(
        '{% extends "_layout/base.html.j2" %}\n{% block summary %}\n<p>{{ data.domain </p>\n{% endblock %}\n'
    )
    renderer = Renderer(CATALOG, templates_dir=tmp_path, hostname=HOST)
    with capture_logs() as logs:
        message = renderer.render(
            example_event("AutoSSL/CertificateInstalled"), importance=Importance.LOW, recipient=SYSTEM
        )
    failures = [entry for entry in logs if entry["event"] == "template_failed"]
    assert failures and failures[0]["log_level"] == "error"
    assert failures[0]["template"] == "AutoSSL/CertificateInstalled.html.j2"
    assert message.subject == f"[{HOST}] AutoSSL notice: CertificateInstalled"
    assert "AutoSSL reported the event" in squash(message.text)
    assert "example.com" in message.text  # the fallback still shows the data
    with capture_logs() as again:
        renderer.render(example_event("AutoSSL/CertificateInstalled"), importance=Importance.LOW, recipient=SYSTEM)
    assert [entry["template"] for entry in again if entry["event"] == "template_failed"] == [
        "AutoSSL/CertificateInstalled.html.j2"
    ], "every notice that falls back is logged, not only the first"
    issues = renderer.check()
    assert any(issue.startswith(f"{broken}:3: ") for issue in issues), issues


def test_runtime_error_in_override_falls_back_and_is_reported(tmp_path: Path) -> None:
    """A template that compiles but fails while rendering (calling what is not callable) falls back too, and
    `check()` names the file and the line of the failure."""
    (tmp_path / "Backup").mkdir()
    broken = tmp_path / "Backup" / "Success.text.j2"
    broken.write_text("Backup done.\n\n{{ data.size_mb() }}\n")
    renderer = Renderer(CATALOG, templates_dir=tmp_path, hostname=HOST)
    with capture_logs() as logs:
        message = renderer.render(example_event("Backup/Success"), importance=Importance.LOW, recipient=SYSTEM)
    assert any(entry["event"] == "template_failed" for entry in logs)
    assert message.subject == f"[{HOST}] Backup notice: Success"
    issues = renderer.check()
    assert any(issue.startswith(f"{broken}:3: ") for issue in issues), issues


def test_broken_base_override_falls_back_to_the_shipped_base(tmp_path: Path) -> None:
    """Even a broken override of Application/base itself never drops a notice: the shipped base renders it."""
    (tmp_path / "Application").mkdir()
    (tmp_path / "Application" / "base.subject.j2").write_text("{% if %}")
    renderer = Renderer(CATALOG, templates_dir=tmp_path, hostname=HOST)
    with capture_logs():
        message = renderer.render(make_event("Unknown/Thing", {"a": 1}), importance=Importance.LOW, recipient=SYSTEM)
    assert message.subject == f"[{HOST}] Unknown notice: Thing"
    assert message.text.strip() and message.html.strip()


def test_unknown_type_uses_application_base(renderer: Renderer) -> None:
    """An event type without templates renders with Application/base, showing its type and all its data."""
    event = make_event("Custom/DiskCheck", {"volume": "/srv", "free_gb": 3})
    with capture_logs() as logs:
        message = renderer.render(event, importance=Importance.LOW, recipient=SYSTEM)
    assert not [entry for entry in logs if entry["log_level"] == "error"]
    assert message.subject == f"[{HOST}] Custom notice: DiskCheck"
    text = squash(message.text)
    assert "Custom/DiskCheck" in text and "/srv" in text and "free_gb: 3" in text


def test_missing_text_part_is_derived_from_html(tmp_path: Path) -> None:
    """A type with only subject and HTML templates gets a text part made from the HTML: paragraphs, list items and
    links as `text <url>`, wrapped at 72 columns."""
    (tmp_path / "Custom").mkdir()
    (tmp_path / "Custom" / "Notice.subject.j2").write_text("Disk check of {{ data.volume }}")
    (tmp_path / "Custom" / "Notice.html.j2").write_text(
        '{% extends "_layout/base.html.j2" %}{% block summary %}<p>The volume <strong>{{ data.volume }}</strong> '
        "is almost full.<br>Act soon.</p><ul><li>first step</li><li>second step</li></ul>"
        '<p>See <a href="https://docs.example.com/disk">the guide</a>.</p>{% endblock %}'
    )
    renderer = Renderer(CATALOG, templates_dir=tmp_path, hostname=HOST)
    message = renderer.render(
        make_event("Custom/Notice", {"volume": "/srv"}), importance=Importance.HIGH, recipient=SYSTEM
    )
    lines = message.text.splitlines()
    assert "The volume /srv is almost full." in lines and "Act soon." in lines
    assert "- first step" in lines and "- second step" in lines
    assert "See the guide <https://docs.example.com/disk>." in lines
    assert "<" not in message.text.replace("<https://docs.example.com/disk>", "")
    assert all(len(line) <= 72 for line in lines if " " in line.strip())


def test_pushbullet_and_posturl_render_no_html(renderer: Renderer) -> None:
    """Channels that send subject and text only get no HTML part; email gets all three."""
    event = example_event("Backup/Failure")
    assert renderer.render(event, importance=Importance.HIGH, recipient=SYSTEM, channel="pushbullet").html == ""
    assert renderer.render(event, importance=Importance.HIGH, recipient=SYSTEM, channel="posturl").html == ""
    assert renderer.render(event, importance=Importance.HIGH, recipient=SYSTEM, channel="email").html


# -- checking ----------------------------------------------------------------------------------------------------------


def test_shipped_templates_all_compile(renderer: Renderer) -> None:
    """Every shipped template compiles and renders with its example data."""
    assert renderer.check() == []


def test_check_templates_reports_broken_overrides_from_the_config(tmp_path: Path) -> None:
    """`check_templates(config)` (used by check-config) compiles the config's overrides and names the broken file."""
    overrides = tmp_path / "templates"
    (overrides / "Backup").mkdir(parents=True)
    bad = overrides / "Backup" / "Delayed.subject.j2"
    bad.write_text("Backup {{ data.started_at|nosuchfilter }}")
    config = parse_config(f"hostname: {HOST}\ntemplates:\n  dir: {overrides}\n")
    issues = check_templates(config)
    assert any(issue.startswith(f"{bad}:1: ") and "nosuchfilter" in issue for issue in issues), issues


# -- helpers ---------------------------------------------------------------------------------------------------------


def test_wrap_text_hangs_lists_and_facts() -> None:
    """Long list items hang under their text and long `Label:  value` lines under the value."""
    text = wrap_text(
        "- " + "word " * 30 + "\n" + "Domains:   " + ", ".join(f"d{i}.example.com" for i in range(8)) + "\n"
    )
    lines = text.splitlines()
    assert all(len(line) <= 72 for line in lines)
    assert lines[0].startswith("- word") and lines[1].startswith("  word")
    fact_lines = [line for line in lines if "example.com" in line]
    assert fact_lines[0].startswith("Domains:   d0") and fact_lines[1].startswith(" " * 11 + "d")


def test_wrap_text_wraps_a_very_long_line_and_the_same_line_twice_alike() -> None:
    """A line of several thousand characters (a command's output in an event) wraps at 72 like a short one, and
    wrapping the same text again gives the same result."""
    long_line = " ".join(f"word{i}" for i in range(1500))
    paragraph = "Fix the cause named in the error, then start the backup again. " * 3
    for text in (long_line, paragraph):
        first, again = wrap_text(text + "\n"), wrap_text(text + "\n")
        assert first == again
        assert all(len(line) <= 72 for line in first.splitlines())
        assert " ".join(first.split()) == " ".join(text.split())


def test_html_to_text_skips_head_and_keeps_table_rows() -> None:
    """The derived text drops the head (title, styles) and writes table rows as `label: value` lines."""
    text = html_to_text(
        "<html><head><title>T</title><style>p{}</style></head><body><table><tr><td>Disk</td><td>/dev/sda</td></tr>"
        "</table><p>Done &amp; dusted</p></body></html>"
    )
    assert text.splitlines() == ["Disk: /dev/sda", "", "Done & dusted"]


# -- the command ---------------------------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dispatcher", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_render_command_prints_subject_text_and_html(tmp_path: Path) -> None:
    """`dispatcher render TYPE` prints the email a system contact would get, with example data and --data on top;
    `--channel pushbullet` prints subject and text only; `--recipient account` uses the account prefix."""
    config = tmp_path / "dispatcher.yaml"
    config.write_text(f"hostname: {HOST}\n")
    result = run_cli("render", "AutoSSL/CertificateInstalled", "-c", str(config), "--data", "domain=shop.example.org")
    assert result.returncode == 0, result.stderr
    assert f"Subject: [{HOST}] New SSL certificate installed for shop.example.org" in result.stdout
    assert "--- text" in result.stdout and "--- html" in result.stdout and "<!DOCTYPE html>" in result.stdout
    pushed = run_cli("render", "Backup/Failure", "--channel", "pushbullet", "--recipient", "account")
    assert pushed.returncode == 0, pushed.stderr
    assert "--- text" in pushed.stdout and "--- html" not in pushed.stdout and "<html" not in pushed.stdout
    assert "Subject: [example] " in pushed.stdout


def test_render_command_rejects_a_bad_type() -> None:
    """A TYPE that is not `App/Event` is bad usage (exit 2) with one line on stderr."""
    result = run_cli("render", "not-a-type")
    assert result.returncode == 2
    assert "App/Event" in result.stderr and "Traceback" not in result.stderr


def test_indented_command_lines_are_not_wrapped() -> None:
    """A command in the text part, indented by four spaces, stays on one line however long it is."""
    command = "    /usr/local/cpanel/scripts/update_local_rpm_versions --del target_settings.MySQL50 --verbose"
    prose = "word " * 30
    wrapped = wrap_text(f"{prose}\n{command}\n")
    assert command in wrapped.splitlines()
    assert all(len(line) <= 72 for line in wrapped.splitlines() if line != command)


@given(
    moment=st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.timezones()),
    fmt=st.sampled_from(["%Y-%m-%d %H:%M UTC", "%Y-%m-%d", "%H:%M:%S %Z", "%d %b %Y %H:%M:%S.%f", "%s"]),
)
def test_datetime_filter_shows_the_moment_in_utc(moment: datetime, fmt: str) -> None:
    """Seconds formatted once and shared (the filter's cache) read exactly as formatting each moment would."""
    assert filter_datetime(moment, fmt) == moment.astimezone(UTC).strftime(fmt)
