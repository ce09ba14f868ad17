"""The email channel: one `multipart/alternative` message per address, over reused SMTP connections.

The only module that imports aiosmtplib. Connections are pooled: a send takes an idle connected client (or
connects a new one), and gives it back afterwards, so a burst of notifications costs a few SMTP sessions rather
than one per message. At most `config.concurrency` sends run at once, which also bounds the connections.

The message bytes are written directly (`build_message`), not through `email.message.EmailMessage`, its header
registry and the generator: those cost about 2 ms a message, which capped the daemon near 200 emails/s. Everything
that is the same for every message (the `From` header, the envelope sender, the Message-ID domain) is worked out
once, in `__init__`; per message only the subject, the two bodies (quoted-printable or base64, in C) and a few
short headers are made. What the stdlib did for us and must still hold: one line per header (no injection from
event data), RFC 2047 encoded-words for non-ASCII, lines of at most 78 columns, CRLF, a boundary absent from the
parts; the tests parse every message back with `email.policy.default`.

Classification: SMTP 4xx replies, connection errors and timeouts are retryable; 5xx replies (a refused
recipient included) are permanent.
"""

from __future__ import annotations

import asyncio
import binascii
import email.policy
import itertools
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.utils import formatdate
from typing import Any

import aiosmtplib
import structlog

from dispatcher.channels.base import Channel, DeliveryError, Message
from dispatcher.errors import ConfigError

log = structlog.get_logger(__name__)

# Servers drop idle sessions (Postfix after 300 s, many relays sooner) and a NAT may forget them silently;
# past this age an idle connection is closed rather than gambled on.
IDLE_MAX_S = 60.0
# 421 is "service closing transmission channel": on a pooled session it means the session is gone, not the server.
_SESSION_GONE_CODE = 421
# SMTP reply codes of a transaction that goes well (RFC 5321 §4.2.2).
_COMPLETED, _WILL_FORWARD, _START_INPUT = 250, 251, 354
# Everything str.splitlines() breaks on, not only CR and LF: a header must stay one line for every parser.
_LINE_BREAKS = re.compile(r"[\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029]+")

# RFC 5322 §2.1.1: header lines SHOULD be at most 78 characters, CRLF excluded.
_MAX_LINE = 78
# A header value may be folded before a run of spaces that follows a non-space: breaking there keeps every
# continuation line non-blank, and unfolding (removing the CRLF) gives back the value exactly.
_FOLD_POINTS = re.compile(r"(?<=[^ ])(?= )")
# RFC 2047 encoded-word: `=?utf-8?b?` + base64 + `?=`, at most 75 characters each.
_EW_PREFIX = "=?utf-8?b?"
_EW_OVERHEAD = len(_EW_PREFIX) + 2
_EW_MAX = 75
# The bytes below 0x80, to count a body's other bytes with one C call (`bytes.translate(None, _ASCII)`).
_ASCII = bytes(range(128))
# A line starting "From " is rewritten to ">From " by mbox deliveries; QP lets it be written so it does not.
_MBOX_FROM = re.compile(rb"^From ", re.MULTILINE)
# The simple, overwhelmingly common shape of an address (dot-atom @ LDH labels): every string it matches is one
# that `Address(addr_spec=…)` accepts and gives back unchanged, so the (50 µs) full parse is only needed for the
# rest (quoted local parts, domain literals, non-ASCII).
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_SIMPLE_ADDRESS = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
# MAIL FROM options for a message whose address (hence its To or From header) is not ASCII (RFC 6531); a server
# offering SMTPUTF8 must also offer 8BITMIME.
_UTF8_MAIL_OPTIONS = ("SMTPUTF8", "BODY=8BITMIME")
# The head of each part, by (subtype, Content-Transfer-Encoding), blank line included.
_PART_HEADS = {
    (subtype, cte): b'Content-Type: text/%s; charset="utf-8"\r\nContent-Transfer-Encoding: %s\r\n\r\n'
    % (subtype.encode(), cte.encode())
    for subtype in ("plain", "html")
    for cte in ("quoted-printable", "base64")
}
# Makes every Message-ID of this process distinct even if the clock and the random part were to repeat.
_SEQUENCE = itertools.count(1)


@dataclass(slots=True)
class _IdleClient:
    client: aiosmtplib.SMTP
    since_monotonic: float


@dataclass(slots=True)
class _LastBody:
    """The last body encoded, and its encoding: a fan-out sends one rendered message to many addresses in a row,
    and comparing two strings (a memcmp) is far cheaper than encoding one again."""

    source: str | None = None
    encoded: tuple[str, bytes] = ("", b"")

    def encode(self, text: str) -> tuple[str, bytes]:
        if text != self.source:
            self.source, self.encoded = text, _encode_body(text)
        return self.encoded


class EmailChannel(Channel):
    """Sends each message to one address through the configured SMTP server.

    `config` has `host`, `port`, `security` (`none` | `starttls` | `tls`), `username`, `password` (a `Secret`
    or None), `from_addr`, `timeout_s` and `concurrency`. A `from_addr` that is not exactly one address raises
    `ConfigError` (the config loader has already refused such a value).
    """

    name = "email"

    def __init__(self, config: Any, *, hostname: str) -> None:
        super().__init__(config, hostname=hostname)
        self._server = f"{config.host}:{config.port}"
        self._timeout_s = float(config.timeout_s)
        self._concurrency = max(1, int(config.concurrency))
        self._slots = asyncio.Semaphore(self._concurrency)
        self._idle: list[_IdleClient] = []
        self._closed = False
        # Everything below is the same for every message: parsed, encoded and folded once.
        self._envelope_from, self._from_header = _from_header(config.from_addr)
        self._from_is_ascii = self._envelope_from.isascii()
        self._envelope_from_bytes = self._envelope_from.encode("utf-8")
        self._message_id_domain = _message_id_domain(hostname)
        self._pid = os.getpid()
        self._date_epoch_s = -1
        self._date_header = ""
        self._last_text = _LastBody()
        self._last_html = _LastBody()

    def describe_target(self, target: str) -> str:
        """The address itself: it is what an admin needs to see, and holds no credential."""
        return _one_line(target)

    async def send(self, message: Message, target: str) -> None:
        """Send `message` to the address `target`; raise `DeliveryError` saying whether to retry."""
        if self._closed:
            raise DeliveryError("email channel is closed", retryable=True)
        address = _parse_address(target)
        data = self.build_message(message, address)
        # A non-ASCII address goes into the envelope and a header as UTF-8, which needs SMTPUTF8 (RFC 6531).
        mail_options: Sequence[str] = () if self._from_is_ascii and address.isascii() else _UTF8_MAIL_OPTIONS
        timeout_s = self._timeout_s
        # Waiting for a free slot is not the server's fault, so it is outside the timeout.
        async with self._slots:
            try:
                async with asyncio.timeout(timeout_s):
                    await self._deliver(data, address, mail_options)
            except TimeoutError as err:
                raise DeliveryError(
                    f"SMTP server {self._server} did not answer within {timeout_s:g} s", retryable=True
                ) from err
            except aiosmtplib.SMTPResponseException as err:
                raise self._reply_error(err.code, err.message) from err
            except aiosmtplib.SMTPNotSupported as err:
                # The server lacks something this message needs (SMTPUTF8 for a non-ASCII address).
                raise DeliveryError(f"SMTP server {self._server}: {err.message}", retryable=False) from err
            except (aiosmtplib.SMTPException, OSError) as err:
                # Connection refused or dropped, STARTTLS or AUTH not offered: the server, not the message.
                raise DeliveryError(
                    f"cannot talk to SMTP server {self._server}: {_describe(err)}", retryable=True
                ) from err
            except ValueError as err:
                raise DeliveryError(f"cannot send to {address!r}: {err}", retryable=False) from err
        log.debug("email_sent", server=self._server, event_id=message.event_id)

    def build_message(self, message: Message, address: str) -> bytes:
        """The email for `message` to the addr-spec `address`, as the bytes given to SMTP DATA.

        Headers `From`, `To`, `Subject`, `Date`, `Message-ID`, `MIME-Version`, `Auto-Submitted`,
        `X-Dispatcher-Event-Id`, `X-Dispatcher-Event-Type` (and, for a digest, `X-Dispatcher-Event-Count`; its
        event id is the first of its events'), then a `multipart/alternative` body: the text part,
        then the HTML part, each UTF-8 in quoted-printable (base64 when that is shorter). CRLF line ends, no
        header line longer than 78 columns unless one address is. Every header value is collapsed to one line
        first, so event data cannot add headers; a non-ASCII value is written as RFC 2047 encoded-words.
        """
        text_cte, text_body = self._last_text.encode(message.text)
        html_cte, html_body = self._last_html.encode(message.html)
        random_hex = os.urandom(16).hex()
        sequence = next(_SEQUENCE)
        # "=_" can occur in neither quoted-printable ("=" is followed by two hex digits or a line end) nor base64
        # ("=" only pads the end of a line), so this boundary cannot collide; checked anyway, since it is cheap.
        boundary = f"=_{random_hex[16:]}.{sequence}".encode("ascii")
        while boundary in text_body or boundary in html_body:  # pragma: no cover - see above
            boundary = f"=_{os.urandom(16).hex()}.{sequence}".encode("ascii")

        now_s = int(time.time())
        if now_s != self._date_epoch_s:
            # The Date header only changes once a second: format it once a second.
            self._date_epoch_s = now_s
            self._date_header = f"Date: {formatdate(now_s, usegmt=True)}\r\n"
        message_id = f"<{now_s}.{self._pid}.{sequence}.{random_hex[:16]}@{self._message_id_domain}>"
        head = "".join(
            (
                self._from_header,
                f"To: {address}\r\n",
                _unstructured_header("Subject", _one_line(message.subject)),
                self._date_header,
                f"Message-ID: {message_id}\r\n",
                "MIME-Version: 1.0\r\n",
                "Auto-Submitted: auto-generated\r\n",
                _unstructured_header("X-Dispatcher-Event-Id", _one_line(message.event_id)),
                _unstructured_header("X-Dispatcher-Event-Type", _one_line(message.event_type)),
                f"X-Dispatcher-Event-Count: {len(message.event_ids)}\r\n" if message.event_ids else "",
                f'Content-Type: multipart/alternative; boundary="{boundary.decode("ascii")}"\r\n',
                "\r\n",
            )
        )
        # Each body ends with its own CRLF; the CRLF before the next "--boundary" belongs to the delimiter (RFC
        # 2046 §5.1.1), so a part's content keeps its final newline, as EmailMessage.set_content() wrote it.
        return b"".join(
            (
                # Only an address can make the head non-ASCII, and such a message goes with SMTPUTF8.
                head.encode("utf-8", "replace"),
                b"--",
                boundary,
                b"\r\n",
                _PART_HEADS["plain", text_cte],
                text_body,
                b"\r\n--",
                boundary,
                b"\r\n",
                _PART_HEADS["html", html_cte],
                html_body,
                b"\r\n--",
                boundary,
                b"--\r\n",
            )
        )

    async def close(self) -> None:
        """Say QUIT on every idle connection; connections in use are closed when their send ends."""
        self._closed = True
        idle, self._idle = self._idle, []
        for entry in idle:
            try:
                async with asyncio.timeout(min(self._timeout_s, 5.0)):
                    await entry.client.quit()
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                pass  # the session is being dropped anyway
            finally:
                entry.client.close()

    async def _deliver(self, data: bytes, address: str, mail_options: Sequence[str]) -> None:
        client, fresh = await self._checkout()
        try:
            try:
                await self._transmit(client, data, address, mail_options)
            except (aiosmtplib.SMTPServerDisconnected, ConnectionError, aiosmtplib.SMTPResponseException) as err:
                if fresh or not _session_gone(err):
                    raise
                # A pooled session the server has dropped since: one immediate reconnect, then give up.
                log.info("smtp_reconnect", server=self._server, reason=type(err).__name__)
                client.close()
                client, fresh = await self._connect(), True
                await self._transmit(client, data, address, mail_options)
        except aiosmtplib.SMTPResponseException:
            # A refusal leaves the session usable (_transmit() ended the transaction), unless the server hung up.
            self._checkin(client)
            raise
        except BaseException:
            # Timeout, cancellation, broken connection: the session's state is unknown, drop it.
            client.close()
            raise
        self._checkin(client)

    async def _transmit(self, client: aiosmtplib.SMTP, data: bytes, address: str, mail_options: Sequence[str]) -> None:
        """One mail transaction on `client`: MAIL, RCPT, DATA, then the message.

        Written out here rather than left to `sendmail()`, which per message normalises the line ends of the
        whole message twice (once to count its SIZE) and dot-stuffs it, all with regular expressions, and parses
        both addresses twice: a quarter of what a message cost the sender process (500 → 390 µs). `data` has CRLF
        line ends only (every test message is checked for it) and `address` is parsed, so what is left is the
        dot-stuffing, which `bytes.replace` does in 5 µs. No per-reply timeout: `send()` bounds the whole
        transaction, and each reply's timer cost as much as the reply.
        """
        options = [option.encode("ascii") for option in mail_options]
        if options and not client.supports_extension("smtputf8"):
            raise aiosmtplib.SMTPNotSupported("SMTPUTF8 is not supported by this server")
        if client.supports_extension("size"):
            # RFC 1870: the message's size before dot-stuffing, so the server can refuse it before it is sent.
            options.insert(0, b"SIZE=%d" % len(data))
        try:
            reply = await client.execute_command(
                b"MAIL", b"FROM:<%s>" % self._envelope_from_bytes, *options, timeout=None
            )
            if reply.code != _COMPLETED:
                raise aiosmtplib.SMTPSenderRefused(reply.code, reply.message, self._envelope_from)
            reply = await client.execute_command(b"RCPT", b"TO:<%s>" % address.encode(), timeout=None)
            if reply.code not in (_COMPLETED, _WILL_FORWARD):
                raise aiosmtplib.SMTPRecipientRefused(reply.code, reply.message, address)
            reply = await client.execute_command(b"DATA", timeout=None)
            if reply.code != _START_INPUT:
                raise aiosmtplib.SMTPDataError(reply.code, reply.message)
        except aiosmtplib.SMTPResponseException:
            # The session goes back to the pool: end the half-made transaction first, as sendmail() does.
            await _reset_quietly(client)
            raise
        protocol = client.protocol
        if protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        protocol.write(_dot_stuffed(data))
        reply = await protocol.read_response(timeout=None)
        if reply.code != _COMPLETED:
            raise aiosmtplib.SMTPDataError(reply.code, reply.message)

    async def _checkout(self) -> tuple[aiosmtplib.SMTP, bool]:
        """An idle connected client (`fresh=False`) or a newly connected one (`fresh=True`)."""
        now = time.monotonic()
        while self._idle:
            # Most recently used first: the likeliest to still be alive.
            entry = self._idle.pop()
            if entry.client.is_connected and now - entry.since_monotonic < IDLE_MAX_S:
                return entry.client, False
            entry.client.close()
        return await self._connect(), True

    def _checkin(self, client: aiosmtplib.SMTP) -> None:
        if self._closed or not client.is_connected or len(self._idle) >= self._concurrency:
            client.close()
            return
        self._idle.append(_IdleClient(client, time.monotonic()))

    async def _connect(self) -> aiosmtplib.SMTP:
        config = self.config
        password = config.password.reveal() if config.password is not None else None
        client = aiosmtplib.SMTP(
            hostname=config.host,
            port=int(config.port),
            # EHLO with our own name: socket.getfqdn() can block on DNS for seconds.
            local_hostname=self.hostname.strip() or None,
            timeout=self._timeout_s,
            use_tls=config.security == "tls",
            # "none" means plain SMTP: no opportunistic upgrade either.
            start_tls=config.security == "starttls",
            username=config.username or None,
            password=password if config.username else None,
        )
        await client.connect()
        if client.is_ehlo_or_helo_needed:
            # The transaction reads the server's extensions (SIZE, SMTPUTF8) before its first command.
            try:
                await client.ehlo()
            except aiosmtplib.SMTPHeloError:
                await client.helo()  # a server without ESMTP
        log.debug("smtp_connected", server=self._server, security=config.security)
        return client

    def _reply_error(self, code: int, text: str) -> DeliveryError:
        # 4xx: try again later; 5xx: this will not work however often it is tried.
        return DeliveryError(f"SMTP {code} from {self._server}: {_one_line(text)}", retryable=code < 500)


async def _reset_quietly(client: aiosmtplib.SMTP) -> None:
    try:
        await client.rset(timeout=None)
    except (aiosmtplib.SMTPException, OSError):
        pass  # a session that cannot reset is closed, and _checkin() drops a closed one


def _dot_stuffed(data: bytes) -> bytes:
    """`data` (CRLF line ends, ending with one) as DATA sends it: a line starting with "." gets another (RFC 5321
    §4.5.2), then the terminating line "."."""
    stuffed = data.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    return stuffed + b".\r\n"


def _session_gone(err: BaseException) -> bool:
    if isinstance(err, aiosmtplib.SMTPResponseException):
        return err.code == _SESSION_GONE_CODE
    return True


def _parse_address(target: str) -> str:
    """`target` as a bare addr-spec; a permanent `DeliveryError` if it is not one email address."""
    candidate = target.strip()
    if _SIMPLE_ADDRESS.fullmatch(candidate):
        return candidate
    try:
        if not candidate or "\r" in candidate or "\n" in candidate:
            raise ValueError("empty or multi-line")
        address = Address(addr_spec=candidate)
        if not address.domain:
            raise ValueError("no domain")
    except (ValueError, IndexError, HeaderParseError) as err:
        raise DeliveryError(f"not an email address: {_one_line(target)!r}", retryable=False) from err
    return address.addr_spec


def _from_header(from_addr: str) -> tuple[str, str]:
    """The envelope sender and the whole `From:` header line (CRLF included) for the configured `from_addr`.

    Made once per channel, so the stdlib's header registry does the quoting, RFC 2047 encoding of a non-ASCII
    display name and folding; an address that is itself non-ASCII is left as UTF-8 (the send uses SMTPUTF8).
    """
    value = _one_line(from_addr)
    header = email.policy.default.header_factory("From", value)
    if len(header.addresses) != 1 or "@" not in header.addresses[0].addr_spec:
        raise ConfigError([f"email channel: from must be one address like root@example.com, got {value!r}"])
    envelope = header.addresses[0].addr_spec
    policy = email.policy.SMTP if envelope.isascii() else email.policy.SMTPUTF8
    # The header object's own fold(): policy.fold("From", str) would pass a short value through unencoded.
    return envelope, header.fold(policy=policy)


def _message_id_domain(hostname: str) -> str:
    """The right-hand side of our Message-IDs: `hostname` reduced to dot-atom characters (IDNA if non-ASCII)."""
    name = _one_line(hostname).replace(" ", "")
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            pass  # whatever is left after the filter below still names this host well enough
    labels = (re.sub(r"[^A-Za-z0-9_-]", "", label) for label in name.split("."))
    return ".".join(label for label in labels if label) or "localhost"


def _unstructured_header(name: str, value: str) -> str:
    """`name: value` and CRLF, folded to 78 columns, for a one-line `value`.

    Printable ASCII goes as it is, folded before spaces if the line is too long; anything else (non-ASCII,
    control characters, a word too long to fold, or "=?", which a reader would take for an encoded-word) as
    UTF-8 base64 encoded-words (RFC 2047), one per line.
    """
    if value.isascii() and value.isprintable() and "=?" not in value:
        if len(name) + 2 + len(value) <= _MAX_LINE:
            return f"{name}: {value}\r\n"
        folded = _fold_at_spaces(name, value)
        if folded is not None:
            return folded
    return _encoded_words_header(name, value)


def _fold_at_spaces(name: str, value: str) -> str | None:
    """`name: value` folded into lines of at most 78 columns, or None if a word is too long for that."""
    pieces = _FOLD_POINTS.split(value)
    lines: list[str] = []
    current = f"{name}: {pieces[0]}"
    for piece in pieces[1:]:
        if len(current) + len(piece) <= _MAX_LINE:
            current += piece
        else:
            lines.append(current)
            current = piece  # starts with its spaces, so it is a continuation line
    lines.append(current)
    if any(len(line) > _MAX_LINE for line in lines):
        return None
    return "\r\n".join(lines) + "\r\n"


def _encoded_words_header(name: str, value: str) -> str:
    """`name:` then `value` as UTF-8 base64 encoded-words, each on its own line of at most 78 columns.

    A reader joins adjacent encoded-words without the folding white space between them (RFC 2047 §6.2), so the
    value is split anywhere, except inside a UTF-8 sequence: each word must decode on its own.
    """
    data = value.encode("utf-8", "replace")
    lines: list[str] = []
    prefix = f"{name}: "
    start = 0
    while True:
        room = min(_MAX_LINE - len(prefix), _EW_MAX) - _EW_OVERHEAD
        # Whole base64 quanta: 4 characters carry 3 bytes. At least 4 bytes, so a character always fits.
        end = start + max(4, room // 4 * 3)
        if end >= len(data):
            end = len(data)
        else:
            while data[end] & 0xC0 == 0x80:  # a continuation byte: back up to the start of its character
                end -= 1
        encoded = binascii.b2a_base64(data[start:end], newline=False).decode("ascii")
        lines.append(f"{prefix}{_EW_PREFIX}{encoded}?=")
        start = end
        if start >= len(data):
            return "\r\n".join(lines) + "\r\n"
        prefix = " "


def _encode_body(text: str) -> tuple[str, bytes]:
    """`text` as a MIME part body: (Content-Transfer-Encoding, bytes with CRLF line ends and a final CRLF).

    UTF-8 in quoted-printable, readable and 7-bit whatever the text; base64 instead when it is shorter (text
    mostly outside Latin script, where quoted-printable triples every byte). Both encoders are C.
    """
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.endswith("\n"):
        text += "\n"
    data = text.encode("utf-8", "replace")
    # Bytes quoted-printable writes as "=XX": those above 0x7F, and "=" itself.
    escaped = len(data.translate(None, _ASCII)) + data.count(b"=")
    if escaped * 6 > len(data):
        encoded = binascii.b2a_base64(data, newline=False)
        # RFC 2045 §6.8: lines of at most 76 characters.
        return "base64", b"".join([encoded[i : i + 76] + b"\r\n" for i in range(0, len(encoded), 76)])
    # istext: "\n" ends a line; lines stay within 76 columns with soft breaks; trailing white space and a line
    # holding only "." are escaped.
    encoded = binascii.b2a_qp(data, istext=True)
    if b"From " in encoded:
        # Split "From " at a line start with a soft line break ("From=" + newline + " ..."): same text once
        # decoded, but no mbox delivery will turn it into ">From ".
        encoded = _MBOX_FROM.sub(b"From=\n ", encoded)
    return "quoted-printable", encoded.replace(b"\n", b"\r\n")


def _one_line(value: str) -> str:
    """`value` with CR, LF (and other line breaks) turned into spaces, so it cannot start a new header."""
    return _LINE_BREAKS.sub(" ", value).strip()


def _describe(err: BaseException) -> str:
    text = getattr(err, "message", None) or str(err) or type(err).__name__
    return _one_line(str(text))
