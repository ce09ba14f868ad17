"""The delivery channels against real servers: wire format, failure classification, connection reuse, plugins."""

from __future__ import annotations

import asyncio
import base64
import email
import email.message
import email.policy
import hashlib
import re
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.headerregistry import Address
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from dispatcher.channels import (
    BUILTIN_CHANNELS,
    Channel,
    DeliveryError,
    EmailChannel,
    Message,
    PostUrlChannel,
    PushbulletChannel,
    available_channels,
    parse_retry_after,
)
from dispatcher.channels.email import _SIMPLE_ADDRESS
from dispatcher.config import EmailChannelConfig, PostUrlChannelConfig, PushbulletChannelConfig, Secret
from dispatcher.errors import ConfigError

from .conftest import wait_until
from .servers import FakePushbullet, SmtpSink, WebhookSink, new_token

HOSTNAME = "server1.example.com"

# --- configs: the real config sections, with test-friendly defaults ---------------------------------------------


def email_config(**changes: Any) -> EmailChannelConfig:
    defaults: dict[str, Any] = {"from_addr": "Server notices <root@server1.example.com>", "timeout_s": 5.0}
    return EmailChannelConfig(**{**defaults, "concurrency": 4, **changes})


def pushbullet_config(**changes: Any) -> PushbulletChannelConfig:
    return PushbulletChannelConfig(**{"timeout_s": 5.0, **changes})


def posturl_config(**changes: Any) -> PostUrlChannelConfig:
    return PostUrlChannelConfig(**{"timeout_s": 5.0, **changes})


def make_message(**changes: Any) -> Message:
    base = Message(
        subject="Backup failed on server1 – “nightly”",
        text="The nightly backup failed.\nReason: disk full ✓",
        html="<p>The nightly backup <b>failed</b>.</p><p>Reason: disk full ✓</p>",
        event_id="7f1c9a2e-0001",
        event_type="Backup/Failure",
        importance="high",
        hostname=HOSTNAME,
        account="bob",
    )
    return replace(base, **changes)


C = TypeVar("C", bound=Channel)


@pytest.fixture
async def make_channel() -> AsyncIterator[Callable[[type[C], Any], C]]:
    """Builds channels and closes them all at teardown."""
    made: list[Channel] = []

    def make(cls: type[C], config: Any) -> C:
        channel = cls(config, hostname=HOSTNAME)
        made.append(channel)
        return channel

    yield make
    for channel in made:
        await channel.close()


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpSink]:
    async with SmtpSink() as sink:
        yield sink


@pytest.fixture
async def webhook() -> AsyncIterator[WebhookSink]:
    async with WebhookSink() as sink:
        yield sink


@pytest.fixture
async def pushbullet() -> AsyncIterator[FakePushbullet]:
    async with FakePushbullet(tokens=[new_token()]) as fake:
        yield fake


async def expect_failure(send: Any) -> DeliveryError:
    with pytest.raises(DeliveryError) as caught:
        await send
    return caught.value


# --- email ------------------------------------------------------------------------------------------------------


async def test_email_wire_format(smtp: SmtpSink, make_channel: Any) -> None:
    """One message to one address: multipart/alternative (text then HTML) in UTF-8, with the dispatcher headers."""
    channel = make_channel(EmailChannel, email_config(port=smtp.port))
    message = make_message()
    await channel.send(message, "admin@example.com")

    [mail] = await smtp.wait_for(1)
    assert mail.mail_from == "root@server1.example.com"
    assert mail.rcpt_tos == ("admin@example.com",)
    parsed = mail.message
    assert parsed["From"] == "Server notices <root@server1.example.com>"
    assert parsed["To"] == "admin@example.com"
    assert parsed["Subject"] == message.subject
    assert parsed["Auto-Submitted"] == "auto-generated"
    assert parsed["X-Dispatcher-Event-Id"] == "7f1c9a2e-0001"
    assert parsed["X-Dispatcher-Event-Type"] == "Backup/Failure"
    assert parsed["Message-ID"].startswith("<") and parsed["Message-ID"].endswith(f"@{HOSTNAME}>")
    sent_at = parsedate_to_datetime(parsed["Date"])
    assert abs((datetime.now(UTC) - sent_at).total_seconds()) < 60
    assert parsed.get_content_type() == "multipart/alternative"
    text_part, html_part = parsed.iter_parts()
    assert text_part.get_content_type() == "text/plain"
    assert html_part.get_content_type() == "text/html"
    assert text_part.get_content_charset() == "utf-8"
    assert html_part.get_content_charset() == "utf-8"
    assert text_part.get_content().rstrip("\n") == message.text
    assert html_part.get_content().rstrip("\n") == message.html


async def test_email_subject_with_line_breaks_adds_no_header(smtp: SmtpSink, make_channel: Any) -> None:
    """CR/LF in the subject or event data is collapsed to spaces: no Bcc or other header is injected."""
    channel = make_channel(EmailChannel, email_config(port=smtp.port))
    message = make_message(
        subject="Disk full\r\nBcc: victim@example.net",
        event_id="id-1\nX-Injected: yes",
        event_type="Quota/DiskWarning\r\n\r\nbody takeover",
    )
    await channel.send(message, "admin@example.com")

    [mail] = await smtp.wait_for(1)
    assert mail.rcpt_tos == ("admin@example.com",)
    assert mail.message["Bcc"] is None
    assert mail.message["X-Injected"] is None
    assert mail.message["Subject"] == "Disk full Bcc: victim@example.net"
    assert mail.message["X-Dispatcher-Event-Id"] == "id-1 X-Injected: yes"
    assert mail.message["X-Dispatcher-Event-Type"] == "Quota/DiskWarning body takeover"
    assert b"\nBcc:" not in mail.data and b"\nX-Injected:" not in mail.data


async def test_email_reuses_connections(smtp: SmtpSink, make_channel: Any) -> None:
    """Sequential sends share one SMTP session; concurrent sends open at most `concurrency` sessions."""
    channel = make_channel(EmailChannel, email_config(port=smtp.port, concurrency=2))
    for n in range(5):
        await channel.send(make_message(event_id=f"seq-{n}"), f"user{n}@example.com")
    await smtp.wait_for(5)
    assert smtp.connections == 1

    await asyncio.gather(*(channel.send(make_message(event_id=f"par-{n}"), "a@example.com") for n in range(10)))
    mails = await smtp.wait_for(15)
    assert smtp.connections <= 2
    assert len({mail.connection for mail in mails}) <= 2


async def test_email_reconnects_once_when_a_pooled_session_was_dropped(smtp: SmtpSink, make_channel: Any) -> None:
    """A pooled connection the server closed is replaced by a new one within the same send."""
    channel = make_channel(EmailChannel, email_config(port=smtp.port))
    await channel.send(make_message(event_id="first"), "a@example.com")
    smtp.drop_connections()
    await wait_until(lambda: smtp.open_connections == 0)  # closed on the server's side, and so seen by the client
    await channel.send(make_message(event_id="second"), "a@example.com")

    first, second = await smtp.wait_for(2)
    assert (first.connection, second.connection) == (1, 2)
    assert second.message["X-Dispatcher-Event-Id"] == "second"


async def test_email_reconnects_when_a_pooled_session_breaks_mid_send(smtp: SmtpSink, make_channel: Any) -> None:
    """A pooled session that breaks under the send (the client had not noticed yet) is reconnected once."""
    channel = make_channel(EmailChannel, email_config(port=smtp.port))
    await channel.send(make_message(event_id="first"), "a@example.com")
    with capture_logs() as logs:
        # No await between the drop and the send: the client still believes its pooled session is alive.
        smtp.drop_connections()
        await channel.send(make_message(event_id="second"), "a@example.com")
    assert [entry["event"] for entry in logs if entry["event"] == "smtp_reconnect"] == ["smtp_reconnect"]
    second = (await smtp.wait_for(2))[1]
    assert second.message["X-Dispatcher-Event-Id"] == "second"
    assert (smtp.connections, second.connection) == (2, 2)


async def test_email_reconnects_when_a_pooled_session_is_closed_with_421(smtp: SmtpSink, make_channel: Any) -> None:
    """A 421 ("closing channel") on a pooled session means the session is gone: the send reconnects and succeeds."""
    channel = make_channel(EmailChannel, email_config(port=smtp.port))
    await channel.send(make_message(event_id="first"), "a@example.com")
    smtp.fail_next(1, 421, "4.4.2 Idle timeout, closing connection", stage="mail")
    await channel.send(make_message(event_id="second"), "a@example.com")
    first, second = await smtp.wait_for(2)
    assert (first.connection, second.connection) == (1, 2)


async def test_email_gives_up_after_one_reconnect(smtp: SmtpSink, make_channel: Any) -> None:
    """If the reconnect fails too, the send fails retryably at once instead of trying again."""
    channel = make_channel(EmailChannel, email_config(port=smtp.port))
    await channel.send(make_message(), "a@example.com")
    with capture_logs() as logs:
        smtp.halt()  # the pooled session breaks and the port refuses connections
        started = time.monotonic()
        error = await expect_failure(channel.send(make_message(), "a@example.com"))
    await smtp.stop()
    assert error.retryable
    assert time.monotonic() - started < 1.0
    assert [entry["event"] for entry in logs if entry["event"] == "smtp_reconnect"] == ["smtp_reconnect"]
    assert smtp.connections == 1


async def test_email_server_down_is_retryable_and_recovers(smtp: SmtpSink, make_channel: Any) -> None:
    """While the SMTP server is down a send fails retryably; once it is back on its port, sends succeed again."""
    channel = make_channel(EmailChannel, email_config(port=smtp.port))
    await channel.send(make_message(), "a@example.com")
    await smtp.stop()

    error = await expect_failure(channel.send(make_message(), "a@example.com"))
    assert error.retryable
    assert f"127.0.0.1:{smtp.port}" in str(error)

    await smtp.start()
    await channel.send(make_message(event_id="after"), "a@example.com")
    mails = await smtp.wait_for(2)
    assert mails[1].message["X-Dispatcher-Event-Id"] == "after"


async def test_email_4xx_is_retryable_and_5xx_permanent(smtp: SmtpSink, make_channel: Any) -> None:
    """SMTP 451 after DATA is retryable, 550 is permanent; the error names code, server and the server's text."""
    channel = make_channel(EmailChannel, email_config(port=smtp.port))
    smtp.fail_next(1, 451, "Greylisted, try later")
    smtp.fail_next(1, 550, "Content rejected")

    temporary = await expect_failure(channel.send(make_message(), "a@example.com"))
    assert temporary.retryable
    assert str(temporary) == f"SMTP 451 from 127.0.0.1:{smtp.port}: Greylisted, try later"

    permanent = await expect_failure(channel.send(make_message(), "a@example.com"))
    assert not permanent.retryable
    assert str(permanent) == f"SMTP 550 from 127.0.0.1:{smtp.port}: Content rejected"

    # A refusal leaves the session usable: the next message goes through on the same connection.
    await channel.send(make_message(event_id="ok"), "a@example.com")
    [mail] = await smtp.wait_for(1)
    assert mail.message["X-Dispatcher-Event-Id"] == "ok"
    assert smtp.connections == 1


async def test_email_refused_recipient(smtp: SmtpSink, make_channel: Any) -> None:
    """A recipient refused with 550 is permanent; refused with 450 it is retryable."""
    channel = make_channel(EmailChannel, email_config(port=smtp.port))
    smtp.fail_next(1, 550, "5.1.1 No such user", stage="rcpt")
    smtp.fail_next(1, 450, "4.2.1 Mailbox busy", stage="rcpt")

    unknown = await expect_failure(channel.send(make_message(), "nobody@example.com"))
    assert not unknown.retryable
    assert "SMTP 550" in str(unknown) and "No such user" in str(unknown)

    busy = await expect_failure(channel.send(make_message(), "busy@example.com"))
    assert busy.retryable
    assert smtp.messages == []


async def test_email_refused_sender_resets_and_keeps_the_session(smtp: SmtpSink, make_channel: Any) -> None:
    """MAIL FROM refused with 451 is retryable, with 553 permanent; after either the session is reset and the
    next message goes out on the same connection."""
    channel = make_channel(EmailChannel, email_config(port=smtp.port))
    smtp.fail_next(1, 451, "4.3.0 Sender check deferred", stage="mail")
    smtp.fail_next(1, 553, "5.7.1 Sender not allowed", stage="mail")

    deferred = await expect_failure(channel.send(make_message(), "a@example.com"))
    assert deferred.retryable
    assert str(deferred) == f"SMTP 451 from 127.0.0.1:{smtp.port}: 4.3.0 Sender check deferred"
    refused = await expect_failure(channel.send(make_message(), "a@example.com"))
    assert not refused.retryable and "5.7.1 Sender not allowed" in str(refused)

    await channel.send(make_message(event_id="after"), "a@example.com")
    [mail] = await smtp.wait_for(1)
    assert (mail.message["X-Dispatcher-Event-Id"], mail.rcpt_tos, smtp.connections) == ("after", ("a@example.com",), 1)


async def test_email_announces_the_size_and_a_message_too_large_is_permanent(make_channel: Any) -> None:
    """MAIL FROM carries SIZE= the message's length (RFC 1870), so a server refuses a message over its limit
    before it is sent: a permanent failure, naming the server's reason."""
    async with SmtpSink(size_limit=20_000) as smtp:
        channel = make_channel(EmailChannel, email_config(port=smtp.port))
        await channel.send(make_message(text="fits"), "a@example.com")
        [mail] = await smtp.wait_for(1)
        assert mail.mail_options == (f"SIZE={len(mail.data)}",)

        error = await expect_failure(channel.send(make_message(text="x " * 20_000), "a@example.com"))
        assert not error.retryable
        assert "SMTP 552" in str(error) and "size" in str(error)
        assert len(smtp.messages) == 1


async def test_email_non_ascii_address_without_smtputf8_is_permanent(make_channel: Any) -> None:
    """A non-ASCII address needs SMTPUTF8; a server that does not offer it fails the message permanently and
    clearly, and ASCII addresses still go through it."""
    async with SmtpSink(smtputf8=False) as smtp:
        channel = make_channel(EmailChannel, email_config(port=smtp.port))
        error = await expect_failure(channel.send(make_message(), "admin@exämple.com"))
        assert not error.retryable
        assert str(error) == f"SMTP server 127.0.0.1:{smtp.port}: SMTPUTF8 is not supported by this server"
        await channel.send(make_message(), "admin@example.com")
        [mail] = await smtp.wait_for(1)
        assert mail.rcpt_tos == ("admin@example.com",)


async def test_email_slow_server_times_out_retryably(make_channel: Any) -> None:
    """A server slower than `timeout_s` gives a retryable DeliveryError, not a hang."""
    async with SmtpSink(delay_s=3.0) as slow:
        channel = make_channel(EmailChannel, email_config(port=slow.port, timeout_s=0.3))
        started = time.monotonic()
        error = await expect_failure(channel.send(make_message(), "a@example.com"))
        assert time.monotonic() - started < 2.0
        assert error.retryable
        assert "did not answer within 0.3 s" in str(error)


async def test_email_login(make_channel: Any) -> None:
    """With a username the channel logs in; a refused login is permanent and its error hides the password."""
    async with SmtpSink(credentials={"mailer": "s3cret-pw"}) as sink:
        good = make_channel(EmailChannel, email_config(port=sink.port, username="mailer", password=Secret("s3cret-pw")))
        await good.send(make_message(), "a@example.com")
        [mail] = await sink.wait_for(1)
        assert mail.auth_login == "mailer"

        bad = make_channel(EmailChannel, email_config(port=sink.port, username="mailer", password=Secret("wrong-pw")))
        error = await expect_failure(bad.send(make_message(), "a@example.com"))
        assert not error.retryable
        assert "SMTP 535" in str(error)
        assert "wrong-pw" not in str(error) and "wrong-pw" not in repr(error)


async def test_email_starttls_is_required_when_configured(smtp: SmtpSink, make_channel: Any) -> None:
    """`security: starttls` never falls back to plain text: a server without STARTTLS gets no message."""
    channel = make_channel(EmailChannel, email_config(port=smtp.port, security="starttls"))
    error = await expect_failure(channel.send(make_message(), "a@example.com"))
    assert error.retryable
    assert "STARTTLS" in str(error)
    assert smtp.messages == []


async def test_email_rejects_a_malformed_address_permanently(smtp: SmtpSink, make_channel: Any) -> None:
    """A target that is not one email address fails permanently without touching the server."""
    channel = make_channel(EmailChannel, email_config(port=smtp.port))
    for target in ["not-an-address", "a@example.com\r\nRCPT TO:<b@example.com>", "a@example.com, b@example.com"]:
        error = await expect_failure(channel.send(make_message(), target))
        assert not error.retryable, target
    assert smtp.connections == 0


# --- email: the message bytes ------------------------------------------------------------------------------------

# What the channel does to a header value: every line break (CR, LF and the rest of str.splitlines()'s) becomes
# a space, then the ends are stripped.
LINE_BREAKS = re.compile(r"[\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029]+")


def as_header(value: str) -> str:
    return LINE_BREAKS.sub(" ", value).strip()


def as_body(text: str) -> str:
    """`text` as a reader gets it back from a part: LF line ends, ending with one."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text if text.endswith("\n") else text + "\n"


def parse_mail(data: bytes) -> email.message.EmailMessage:
    """`data` parsed as a mail reader would (the stdlib's modern policy, LF line ends as in a local mailbox)."""
    return email.message_from_bytes(data.replace(b"\r\n", b"\n"), policy=email.policy.default)  # type: ignore[return-value]


def head_lines(data: bytes) -> list[bytes]:
    head, _, _ = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n")


def assert_well_formed(data: bytes) -> None:
    """CRLF only, no line over 78 columns, a head of header lines and folded continuations, no parser defect."""
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"") and b"\r" not in data.replace(b"\r\n", b"")
    long_lines = [line for line in data.split(b"\r\n") if len(line) > 78]
    assert long_lines == []
    for line in head_lines(data):
        assert line[:1] in (b" ", b"\t") or re.fullmatch(rb"[A-Za-z-]+:( .*)?", line), line
    parsed = parse_mail(data)
    assert parsed.defects == []
    assert all(part.defects == [] for part in parsed.walk())
    assert all(parsed[name].defects == () for name in parsed.keys())


def email_channel() -> EmailChannel:
    return EmailChannel(email_config(), hostname=HOSTNAME)


@pytest.mark.parametrize(
    "subject",
    [
        "Disk usage warning for bob",
        "Backup failed on server1 – “nightly”",
        "Sauvegarde échouée : le disque /home est plein à 100 % sur server1.example.com, veuillez agir",
        "The nightly backup of every account on server1.example.com failed because the disk holding /backup is full",
        "x" * 200,
        "Über " * 40,
        "备份失败：磁盘已满" * 6,
        "Emoji 🔥🔥 in a subject 🔥 that is long enough to need more than one encoded word 🔥🔥🔥🔥",
        "Looks encoded =?utf-8?q?hello?= but is not",
        "two  spaces,   three   spaces, and a tab\there",
        "control \x00\x07\x7f characters",
        "",
    ],
)
def test_email_subject_round_trips_and_folds(subject: str) -> None:
    """Any subject (non-ASCII, long, unbreakable, encoded-word look-alike, control characters) reads back exactly,
    in header lines of at most 78 columns; a long ASCII subject with spaces is folded, not encoded."""
    data = email_channel().build_message(make_message(subject=subject), "admin@example.com")
    assert_well_formed(data)
    assert parse_mail(data)["Subject"] == subject.strip()
    if subject.startswith("The nightly backup of every"):
        assert b"=?" not in data.partition(b"\r\n\r\n")[0]


def test_email_line_breaks_in_any_header_value_add_no_header() -> None:
    """Every kind of line break, in a short or long, ASCII or non-ASCII value, is collapsed: no header is added."""
    subject = "Échec\r\nBcc: victim@example.net\u2028X-A: 1\x85X-B: 2\vX-C: 3 " + "long " * 20
    message = make_message(subject=subject, event_id="é\nX-Injected: yes", event_type="A/B\u2029X-Injected: yes")
    data = email_channel().build_message(message, "admin@example.com")
    assert_well_formed(data)
    parsed = parse_mail(data)
    assert [name for name in parsed.keys() if name.startswith("X-") and not name.startswith("X-Dispatcher")] == []
    assert parsed["Bcc"] is None
    assert parsed["Subject"] == as_header(subject)
    assert parsed["X-Dispatcher-Event-Id"] == "é X-Injected: yes"
    assert parsed["X-Dispatcher-Event-Type"] == "A/B X-Injected: yes"


@pytest.mark.parametrize(
    "from_addr",
    [
        "Équipe serveurs – surveillance <root@server1.example.com>",
        '"Notices, Inc." <root@server1.example.com>',
        "The operations and infrastructure monitoring team of Example Hosting Ltd <root@server1.example.com>",
        '"Überwachung der Server von Example Hosting, Abteilung Betrieb und Wartung" <root@server1.example.com>',
        "root@server1.example.com",
    ],
)
async def test_email_from_display_names(from_addr: str, smtp: SmtpSink, make_channel: Any) -> None:
    """The configured From reads back with its display name (non-ASCII, quoted, long) and address; the envelope
    sender is the bare address."""
    channel = make_channel(EmailChannel, email_config(port=smtp.port, from_addr=from_addr))
    await channel.send(make_message(), "admin@example.com")
    [mail] = await smtp.wait_for(1)
    assert_well_formed(mail.data)
    assert mail.mail_from == "root@server1.example.com"
    [sender] = mail.message["From"].addresses
    assert sender.addr_spec == "root@server1.example.com"
    expected = email.policy.default.header_factory("From", from_addr).addresses[0].display_name
    assert sender.display_name == expected


def test_email_rejects_a_from_that_is_not_one_address() -> None:
    """A From that is not exactly one address is a configuration error, raised when the channel is built."""
    for from_addr in ["a@example.com, b@example.com", "no address here"]:
        with pytest.raises(ConfigError):
            EmailChannel(email_config(from_addr=from_addr), hostname=HOSTNAME)


BODY_TEXT = (
    "Lines a dot would end or mbox would mangle:\n"
    ".\n"
    "..\n"
    ".hidden file removed\n"
    "From here on, nothing works.\n"
    "From \n"
    "From\n"
    "A very long line " + "without breaks " * 300 + "\n"
    "Unbreakable: " + "x" * 3000 + "\n"
    "Trailing spaces and a tab   \t\n"
    "Windows line end\r\n"
    "Old Mac line end\r"
    "Non-ASCII: disk full ✓ – é ü 🔥 = 100 %\n"
    "=3D is not an escape here, nor =?utf-8?q?x?=\n"
    "No newline at the end"
)
BODY_HTML = (
    '<p style="color:#101828">The nightly backup <b>failed</b> – “disk full” ✓</p>\n'
    + "<p>"
    + "word " * 2000
    + "</p>\n.\n.line\nFrom the desk of root\n"
)


@pytest.mark.parametrize(
    ("text", "html", "encoding"),
    [
        (BODY_TEXT, BODY_HTML, "quoted-printable"),
        ("Резервное копирование не удалось: диск заполнен.\n.\nFrom сервер\n" * 20, "<p>备份失败</p>" * 50, "base64"),
        ("", "", "quoted-printable"),
    ],
)
async def test_email_bodies_round_trip(text: str, html: str, encoding: str, smtp: SmtpSink, make_channel: Any) -> None:
    """Text and HTML come back exactly (line ends as LF) through a real SMTP session: lines of only or starting
    with ".", lines starting "From ", very long lines, trailing white space, CR and CRLF line ends, non-ASCII
    (quoted-printable, base64 for mostly non-Latin text). No line of the message exceeds 78 columns or starts with
    "From "."""
    channel = make_channel(EmailChannel, email_config(port=smtp.port))
    await channel.send(make_message(text=text, html=html), "admin@example.com")
    [mail] = await smtp.wait_for(1)
    assert_well_formed(mail.data)
    assert not any(line.startswith(b"From ") for line in mail.data.split(b"\r\n"))
    text_part, html_part = mail.message.iter_parts()
    assert (text_part["Content-Transfer-Encoding"], html_part["Content-Transfer-Encoding"]) == (encoding, encoding)
    assert text_part.get_content() == as_body(text)
    assert html_part.get_content() == as_body(html)


def test_email_message_ids_and_boundaries_are_unique() -> None:
    """No two messages share a Message-ID or a boundary, within a channel or across two; no boundary occurs in
    the parts it separates."""
    channels = [email_channel(), email_channel()]
    ids: set[bytes] = set()
    boundaries: set[bytes] = set()
    count = 0
    for n in range(1000):
        for channel in channels:
            data = channel.build_message(make_message(text=f"same text {n % 3}"), "admin@example.com")
            # Read with regular expressions (parsing 2,000 messages would be slow); checked against the parser once.
            [message_id] = re.findall(rb"^Message-ID: (\S+)\r$", data, re.MULTILINE)
            [boundary] = re.findall(rb'^Content-Type: multipart/alternative; boundary="([^"]+)"\r$', data, re.MULTILINE)
            # In the Content-Type header, the two delimiters and the close delimiter: nowhere else.
            assert data.count(boundary) == 4
            assert data.count(b"\r\n--" + boundary + b"\r\n") == 2 and data.endswith(b"\r\n--" + boundary + b"--\r\n")
            ids.add(message_id)
            boundaries.add(boundary)
            count += 1
    assert len(ids) == len(boundaries) == count
    parsed = parse_mail(data)
    assert (parsed["Message-ID"].encode(), parsed.get_boundary().encode()) == (message_id, boundary)  # type: ignore[union-attr]


async def test_email_non_ascii_domain_goes_with_smtputf8(smtp: SmtpSink, make_channel: Any) -> None:
    """An address with a non-ASCII domain is sent with SMTPUTF8 (the sink offers it) and read back intact."""
    channel = make_channel(EmailChannel, email_config(port=smtp.port))
    await channel.send(make_message(), "admin@exämple.com")
    [mail] = await smtp.wait_for(1)
    assert mail.rcpt_tos == ("admin@exämple.com",)
    assert mail.message["To"] == "admin@exämple.com"


@given(st.from_regex(_SIMPLE_ADDRESS, fullmatch=True))
def test_email_simple_address_shortcut_agrees_with_the_full_parse(address: str) -> None:
    """Every address the fast path accepts is one the stdlib's full parse accepts and gives back unchanged."""
    parsed = Address(addr_spec=address)
    assert parsed.domain and parsed.addr_spec == address


HEADER_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=200)


@settings(max_examples=300, deadline=None)
@given(subject=HEADER_TEXT, event_id=HEADER_TEXT, text=HEADER_TEXT, html=HEADER_TEXT)
def test_email_any_message_reads_back(subject: str, event_id: str, text: str, html: str) -> None:
    """Whatever the subject, event id and bodies hold, the message is well formed and reads back to them
    (header values with line breaks collapsed, bodies with LF line ends)."""
    message = make_message(subject=subject, event_id=event_id, text=text, html=html)
    data = email_channel().build_message(message, "admin@example.com")
    assert_well_formed(data)
    parsed = parse_mail(data)
    assert parsed["Subject"] == as_header(subject)
    assert parsed["X-Dispatcher-Event-Id"] == as_header(event_id)
    text_part, html_part = parsed.iter_parts()
    assert text_part.get_content() == as_body(text)
    assert html_part.get_content() == as_body(html)


# --- pushbullet -------------------------------------------------------------------------------------------------


async def test_pushbullet_wire_format(pushbullet: FakePushbullet, make_channel: Any) -> None:
    """POST /v2/pushes with the Access-Token header and the JSON note {type, title, body}."""
    [token] = pushbullet.tokens
    channel = make_channel(PushbulletChannel, pushbullet_config(api_url=pushbullet.api_url + "/"))
    message = make_message()
    await channel.send(message, token)

    [request] = await pushbullet.wait_for(1)
    assert request.method == "POST"
    assert request.path == "/v2/pushes"
    assert request.headers["Access-Token"] == token
    assert request.headers["Content-Type"].startswith("application/json")
    assert request.json == {"type": "note", "title": message.subject, "body": message.text}
    [push] = pushbullet.pushes
    assert push.token == token and push.push["title"] == message.subject


async def test_pushbullet_bad_token_is_permanent_and_secret(pushbullet: FakePushbullet, make_channel: Any) -> None:
    """401 from Pushbullet is permanent, says the token was refused, and never contains the token."""
    channel = make_channel(PushbulletChannel, pushbullet_config(api_url=pushbullet.api_url))
    bad_token = new_token()
    error = await expect_failure(channel.send(make_message(), bad_token))
    assert not error.retryable
    assert str(error) == "Pushbullet refused the access token (401: Access token is missing or invalid.)"
    assert bad_token not in str(error) and bad_token not in repr(error)


async def test_pushbullet_rate_limit_waits_until_reset(pushbullet: FakePushbullet, make_channel: Any) -> None:
    """429 is retryable with retry_after_s = X-Ratelimit-Reset (epoch seconds) minus now."""
    [token] = pushbullet.tokens
    channel = make_channel(PushbulletChannel, pushbullet_config(api_url=pushbullet.api_url))
    pushbullet.rate_limit_next(1, reset_in_s=120)
    error = await expect_failure(channel.send(make_message(), token))
    assert error.retryable
    assert error.retry_after_s is not None and 117 <= error.retry_after_s <= 120
    assert "429" in str(error)

    await channel.send(make_message(), token)
    assert len(pushbullet.pushes) == 1


async def test_pushbullet_server_errors_are_retryable(pushbullet: FakePushbullet, make_channel: Any) -> None:
    """5xx from Pushbullet and an unreachable API are retryable."""
    [token] = pushbullet.tokens
    channel = make_channel(PushbulletChannel, pushbullet_config(api_url=pushbullet.api_url, timeout_s=2))
    pushbullet.fail_next(1, 503)
    error = await expect_failure(channel.send(make_message(), token))
    assert error.retryable and "503" in str(error)

    await pushbullet.stop()
    error = await expect_failure(channel.send(make_message(), token))
    assert error.retryable
    assert token not in str(error)


async def test_pushbullet_describe_target_hides_the_token(make_channel: Any) -> None:
    """describe_target is `pushbullet:` and the first 8 hex digits of the token's SHA-256."""
    channel = make_channel(PushbulletChannel, pushbullet_config())
    token = "o.abcdefghijklmnopqrstuvwxyz123456"
    assert channel.describe_target(token) == "pushbullet:" + hashlib.sha256(token.encode()).hexdigest()[:8]


# --- post to URL ------------------------------------------------------------------------------------------------


def expected_fields(message: Message) -> dict[str, str]:
    return {
        "subject": message.subject,
        "body": message.text,
        "application": "Backup",
        "event_name": "Failure",
        "hostname": HOSTNAME,
        "event_id": message.event_id,
        "event_type": "Backup/Failure",
        "importance": "high",
        "account": message.account or "",
    }


async def test_posturl_form_fields_and_query_merge(webhook: WebhookSink, make_channel: Any) -> None:
    """Form-encoded UTF-8 POST; the URL's query string leaves the URL and joins the body, before the fields."""
    channel = make_channel(PostUrlChannel, posturl_config())
    message = make_message()
    await channel.send(message, f"{webhook.url}/notify?key=abc&channel=ops")

    [request] = await webhook.wait_for(1)
    assert request.method == "POST"
    assert request.path == "/notify"
    assert request.query == ()
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded; charset=UTF-8"
    assert request.form_items == [("key", "abc"), ("channel", "ops"), *expected_fields(message).items()]
    assert "Authorization" not in request.headers


async def test_posturl_account_none_is_empty(webhook: WebhookSink, make_channel: Any) -> None:
    """An event without an account sends `account` as an empty string; a query parameter cannot replace a field."""
    channel = make_channel(PostUrlChannel, posturl_config())
    await channel.send(make_message(account=None), f"{webhook.url}/?subject=spoofed")
    [request] = await webhook.wait_for(1)
    assert request.form["account"] == ""
    assert [value for key, value in request.form_items if key == "subject"] == [make_message().subject]


async def test_posturl_json_format(webhook: WebhookSink, make_channel: Any) -> None:
    """`format: json` sends the same fields, query parameters included, as one JSON object."""
    channel = make_channel(PostUrlChannel, posturl_config(format="json"))
    message = make_message()
    await channel.send(message, f"{webhook.url}/hook?key=abc&tag=a&tag=b")

    [request] = await webhook.wait_for(1)
    assert request.path == "/hook" and request.query == ()
    assert request.headers["Content-Type"].startswith("application/json")
    assert request.json == {"key": "abc", "tag": ["a", "b"], **expected_fields(message)}


async def test_posturl_url_credentials_become_basic_auth(webhook: WebhookSink, make_channel: Any) -> None:
    """user:pass in the URL is sent as basic auth and never shows in describe_target or errors."""
    channel = make_channel(PostUrlChannel, posturl_config())
    target = f"http://hook-user:p%40ss-w0rd@127.0.0.1:{webhook.port}/notify?key=topsecret"
    await channel.send(make_message(), target)

    [request] = await webhook.wait_for(1)
    expected = base64.b64encode(b"hook-user:p@ss-w0rd").decode()
    assert request.headers["Authorization"] == f"Basic {expected}"
    assert request.path == "/notify"

    shown = channel.describe_target(target)
    assert shown == f"http://127.0.0.1:{webhook.port}/notify?key=***"

    # A receiver that echoes the request back in its error page: the secrets are blanked in our error.
    webhook.respond((400, {}, "bad request from hook-user with p@ss-w0rd and key topsecret"))
    error = await expect_failure(channel.send(make_message(), target))
    assert not error.retryable
    for secret in ("p@ss-w0rd", "p%40ss-w0rd", "topsecret", "hook-user"):
        assert secret not in str(error)
    assert str(error).startswith(f"HTTP 400 from {shown}: bad request from ***")


@pytest.mark.parametrize(
    ("status", "headers", "retryable", "retry_after_s"),
    [
        (503, {}, True, None),
        (500, {}, True, None),
        (408, {}, True, None),
        (429, {"Retry-After": "120"}, True, 120.0),
        (503, {"Retry-After": "7"}, True, 7.0),
        (400, {}, False, None),
        (404, {}, False, None),
        (410, {}, False, None),
    ],
)
async def test_posturl_status_classification(
    webhook: WebhookSink,
    make_channel: Any,
    status: int,
    headers: dict[str, str],
    retryable: bool,
    retry_after_s: float | None,
) -> None:
    """408, 429 and 5xx are retryable (429/503 honour Retry-After seconds); other 4xx are permanent."""
    channel = make_channel(PostUrlChannel, posturl_config())
    webhook.respond((status, headers, "nope"))
    error = await expect_failure(channel.send(make_message(), f"{webhook.url}/x"))
    assert error.retryable is retryable
    assert error.retry_after_s == retry_after_s
    assert str(error) == f"HTTP {status} from {webhook.url}/x: nope"


async def test_posturl_retry_after_http_date(webhook: WebhookSink, make_channel: Any) -> None:
    """A Retry-After given as an HTTP-date becomes the seconds until that date."""
    channel = make_channel(PostUrlChannel, posturl_config())
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
    webhook.respond((429, {"Retry-After": later}, ""))
    error = await expect_failure(channel.send(make_message(), webhook.url))
    assert error.retryable
    assert error.retry_after_s is not None and 85 <= error.retry_after_s <= 90


async def test_posturl_does_not_follow_redirects(webhook: WebhookSink, make_channel: Any) -> None:
    """A 3xx is not followed: permanent, and the message says where it pointed (redacted)."""
    channel = make_channel(PostUrlChannel, posturl_config())
    webhook.respond((302, {"Location": "/elsewhere?token=zzz"}, ""))
    error = await expect_failure(channel.send(make_message(), f"{webhook.url}/hook"))
    assert not error.retryable
    assert f"redirected to {webhook.url}/elsewhere?token=***" in str(error)
    assert "zzz" not in str(error)
    assert len(webhook.requests) == 1  # a redirect followed would have been requested before `send` returned


async def test_posturl_slow_or_absent_receiver_is_retryable(make_channel: Any) -> None:
    """A receiver slower than `timeout_s`, or not listening, gives a retryable DeliveryError; once it is back,
    sends succeed again."""
    channel = make_channel(PostUrlChannel, posturl_config(timeout_s=0.3))
    async with WebhookSink(delay_s=3.0) as slow:
        started = time.monotonic()
        error = await expect_failure(channel.send(make_message(), f"{slow.url}/x?key=k1234"))
        assert time.monotonic() - started < 2.0
        assert error.retryable
        assert str(error) == f"{slow.url}/x?key=*** did not answer within 0.3 s"
        await slow.stop()
        error = await expect_failure(channel.send(make_message(), f"{slow.url}/x"))
        assert error.retryable
        assert str(error).startswith(f"cannot reach {slow.url}/x: ")

        # Back on the same port and answering promptly: the same channel delivers again.
        slow.delay_s = 0.0
        await slow.start()
        await channel.send(make_message(event_id="back"), f"{slow.url}/x")
        assert slow.requests[-1].form["event_id"] == "back"


async def test_posturl_rejects_non_http_targets(make_channel: Any) -> None:
    """A target that is not an http(s) URL fails permanently."""
    channel = make_channel(PostUrlChannel, posturl_config())
    for target in ["ftp://example.com/x", "not a url", "mailto:a@example.com", "user:password@example.com/x"]:
        error = await expect_failure(channel.send(make_message(), target))
        assert not error.retryable, target
        assert "password" not in str(error)


def test_posturl_describe_target_hides_credentials_and_query_values() -> None:
    """describe_target keeps scheme, host, port and path; drops credentials; masks query values."""
    channel = PostUrlChannel(posturl_config(), hostname=HOSTNAME)
    shown = channel.describe_target("https://u:pw@hooks.example.com:8443/a/b?key=abc&x=1")
    assert shown == "https://hooks.example.com:8443/a/b?key=***&x=***"
    # Not an http(s) URL: nothing of it is shown, since "user:password@host" has no scheme to split on.
    assert channel.describe_target("user:password@hooks.example.com/x").startswith("<invalid URL ")
    assert "password" not in channel.describe_target("user:password@hooks.example.com/x")


def test_parse_retry_after() -> None:
    """Retry-After is delay-seconds or an HTTP-date; past dates and negatives give 0, garbage gives None."""
    now_s = datetime(2026, 11, 23, 10, 0, tzinfo=UTC).timestamp()
    assert parse_retry_after("30", now_s=now_s) == 30.0
    assert parse_retry_after("-5", now_s=now_s) == 0.0
    assert parse_retry_after("Mon, 23 Nov 2026 10:01:00 GMT", now_s=now_s) == 60.0
    assert parse_retry_after("Mon, 23 Nov 2026 09:00:00 GMT", now_s=now_s) == 0.0
    assert parse_retry_after("soon", now_s=now_s) is None
    assert parse_retry_after(None, now_s=now_s) is None


def test_message_app_and_event_name() -> None:
    """`app` and `event_name` are the two halves of the event type."""
    message = make_message(event_type="AutoSSL/CertificateInstalled")
    assert (message.app, message.event_name) == ("AutoSSL", "CertificateInstalled")
    assert (make_message(event_type="Odd").app, make_message(event_type="Odd").event_name) == ("Odd", "")


# --- registry ---------------------------------------------------------------------------------------------------


def test_builtin_channels() -> None:
    """The three built-ins are registered under their names."""
    assert BUILTIN_CHANNELS == {"email": EmailChannel, "pushbullet": PushbulletChannel, "posturl": PostUrlChannel}
    assert all(cls.name == name for name, cls in BUILTIN_CHANNELS.items())


PLUGIN_MODULE = """
from dispatcher.channels.base import Channel

SENT = []


class SmsChannel(Channel):
    name = "sms"

    async def send(self, message, target):
        SENT.append((target, message.subject, self.hostname))


class NotAChannel:
    pass
"""


async def test_entry_point_plugin_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A channel declared in entry point group `dispatcher.channels` is available; built-ins win clashes;
    broken or non-Channel entries are skipped."""
    module = f"dispatcher_sms_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{module}.py").write_text(PLUGIN_MODULE)
    dist_info = tmp_path / "dispatcher_sms-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: dispatcher-sms\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(
        "[dispatcher.channels]\n"
        f"sms = {module}:SmsChannel\n"
        f"email = {module}:SmsChannel\n"
        f"notachannel = {module}:NotAChannel\n"
        "broken = dispatcher_no_such_module_xyz:Thing\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        channels = available_channels()
        assert channels["email"] is EmailChannel
        assert {"email", "pushbullet", "posturl", "sms"} <= set(channels)
        assert "notachannel" not in channels and "broken" not in channels

        sms = channels["sms"](None, hostname=HOSTNAME)
        await sms.send(make_message(), "+15550100")
        assert sys.modules[module].SENT == [("+15550100", make_message().subject, HOSTNAME)]
        assert sms.describe_target("+15550100").startswith("sms:")
        assert "15550100" not in sms.describe_target("+15550100")
    finally:
        sys.modules.pop(module, None)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=12), st.text(max_size=60)), max_size=5))
def test_form_encoding_reads_back_as_the_same_fields(pairs: list[tuple[str, str]]) -> None:
    """Whatever the text, a form parser reads back exactly the fields Post to URL encoded, in order."""
    from urllib.parse import parse_qsl

    from dispatcher.channels.posturl import form_encode

    body = form_encode(pairs).decode("ascii")
    assert parse_qsl(body, keep_blank_values=True, strict_parsing=bool(body)) == pairs
