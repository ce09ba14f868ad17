"""The email channel: one `multipart/alternative` message per address, over reused SMTP connections.

The only module that imports aiosmtplib. Connections are pooled: a send takes an idle connected client (or
connects a new one), and gives it back afterwards, so a burst of notifications costs a few SMTP sessions rather
than one per message. At most `config.concurrency` sends run at once, which also bounds the connections.

Classification: SMTP 4xx replies, connection errors and timeouts are retryable; 5xx replies (a refused
recipient included) are permanent.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from typing import Any

import aiosmtplib
import structlog

from dispatcher.channels.base import Channel, DeliveryError, Message

log = structlog.get_logger(__name__)

# Servers drop idle sessions (Postfix after 300 s, many relays sooner) and a NAT may forget them silently;
# past this age an idle connection is closed rather than gambled on.
IDLE_MAX_S = 60.0
# 421 is "service closing transmission channel": on a pooled session it means the session is gone, not the server.
_SESSION_GONE_CODE = 421
# Everything str.splitlines() breaks on, not only CR and LF: a header must stay one line for every parser.
_LINE_BREAKS = re.compile(r"[\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029]+")


@dataclass(slots=True)
class _IdleClient:
    client: aiosmtplib.SMTP
    since_monotonic: float


class EmailChannel(Channel):
    """Sends each message to one address through the configured SMTP server.

    `config` has `host`, `port`, `security` (`none` | `starttls` | `tls`), `username`, `password` (a `Secret`
    or None), `from_addr`, `timeout_s` and `concurrency`.
    """

    name = "email"

    def __init__(self, config: Any, *, hostname: str) -> None:
        super().__init__(config, hostname=hostname)
        self._server = f"{config.host}:{config.port}"
        self._envelope_from = parseaddr(config.from_addr)[1]
        self._slots = asyncio.Semaphore(max(1, int(config.concurrency)))
        self._idle: list[_IdleClient] = []
        self._closed = False

    def describe_target(self, target: str) -> str:
        """The address itself: it is what an admin needs to see, and holds no credential."""
        return _one_line(target)

    async def send(self, message: Message, target: str) -> None:
        """Send `message` to the address `target`; raise `DeliveryError` saying whether to retry."""
        if self._closed:
            raise DeliveryError("email channel is closed", retryable=True)
        address = _parse_address(target)
        email_message = self.build_message(message, address)
        timeout_s = float(self.config.timeout_s)
        # Waiting for a free slot is not the server's fault, so it is outside the timeout.
        async with self._slots:
            try:
                async with asyncio.timeout(timeout_s):
                    await self._deliver(email_message, address)
            except TimeoutError as err:
                raise DeliveryError(
                    f"SMTP server {self._server} did not answer within {timeout_s:g} s", retryable=True
                ) from err
            except aiosmtplib.SMTPRecipientsRefused as err:
                refused = err.recipients[0]
                raise self._reply_error(refused.code, refused.message) from err
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

    def build_message(self, message: Message, address: str) -> EmailMessage:
        """The email for `message` to `address`: text part then HTML part, UTF-8, with the dispatcher headers.

        Every header value is collapsed to one line first, so event data cannot add headers.
        """
        email_message = EmailMessage()
        email_message["From"] = _one_line(self.config.from_addr)
        email_message["To"] = address
        email_message["Subject"] = _one_line(message.subject)
        email_message["Date"] = format_datetime(datetime.now(UTC))
        email_message["Message-ID"] = make_msgid(domain=_one_line(self.hostname).replace(" ", ""))
        email_message["Auto-Submitted"] = "auto-generated"
        email_message["X-Dispatcher-Event-Id"] = _one_line(message.event_id)
        email_message["X-Dispatcher-Event-Type"] = _one_line(message.event_type)
        email_message.set_content(message.text, charset="utf-8")
        email_message.add_alternative(message.html, subtype="html", charset="utf-8")
        return email_message

    async def close(self) -> None:
        """Say QUIT on every idle connection; connections in use are closed when their send ends."""
        self._closed = True
        idle, self._idle = self._idle, []
        for entry in idle:
            try:
                async with asyncio.timeout(min(float(self.config.timeout_s), 5.0)):
                    await entry.client.quit()
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                pass  # the session is being dropped anyway
            finally:
                entry.client.close()

    async def _deliver(self, email_message: EmailMessage, address: str) -> None:
        client, fresh = await self._checkout()
        try:
            try:
                await self._transmit(client, email_message, address)
            except (aiosmtplib.SMTPServerDisconnected, ConnectionError, aiosmtplib.SMTPResponseException) as err:
                if fresh or not _session_gone(err):
                    raise
                # A pooled session the server has dropped since: one immediate reconnect, then give up.
                log.info("smtp_reconnect", server=self._server, reason=type(err).__name__)
                client.close()
                client, fresh = await self._connect(), True
                await self._transmit(client, email_message, address)
        except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused):
            # A refusal leaves the session usable (aiosmtplib sent RSET), unless the server hung up.
            self._checkin(client)
            raise
        except BaseException:
            # Timeout, cancellation, broken connection: the session's state is unknown, drop it.
            client.close()
            raise
        self._checkin(client)

    async def _transmit(self, client: aiosmtplib.SMTP, email_message: EmailMessage, address: str) -> None:
        await client.send_message(
            email_message,
            sender=self._envelope_from,
            recipients=[address],
            timeout=float(self.config.timeout_s),
        )

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
        if self._closed or not client.is_connected or len(self._idle) >= int(self.config.concurrency):
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
            timeout=float(config.timeout_s),
            use_tls=config.security == "tls",
            # "none" means plain SMTP: no opportunistic upgrade either.
            start_tls=config.security == "starttls",
            username=config.username or None,
            password=password if config.username else None,
        )
        await client.connect()
        log.debug("smtp_connected", server=self._server, security=config.security)
        return client

    def _reply_error(self, code: int, text: str) -> DeliveryError:
        # 4xx: try again later; 5xx: this will not work however often it is tried.
        return DeliveryError(f"SMTP {code} from {self._server}: {_one_line(text)}", retryable=code < 500)


def _session_gone(err: BaseException) -> bool:
    if isinstance(err, aiosmtplib.SMTPResponseException):
        return err.code == _SESSION_GONE_CODE
    return True


def _parse_address(target: str) -> str:
    """`target` as a bare addr-spec; a permanent `DeliveryError` if it is not one email address."""
    candidate = target.strip()
    try:
        if not candidate or "\r" in candidate or "\n" in candidate:
            raise ValueError("empty or multi-line")
        address = Address(addr_spec=candidate)
        if not address.domain:
            raise ValueError("no domain")
    except (ValueError, IndexError, HeaderParseError) as err:
        raise DeliveryError(f"not an email address: {_one_line(target)!r}", retryable=False) from err
    return address.addr_spec


def _one_line(value: str) -> str:
    """`value` with CR, LF (and other line breaks) turned into spaces, so it cannot start a new header."""
    return _LINE_BREAKS.sub(" ", value).strip()


def _describe(err: BaseException) -> str:
    text = getattr(err, "message", None) or str(err) or type(err).__name__
    return _one_line(str(text))
