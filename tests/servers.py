"""Real servers for tests: an SMTP sink, a webhook sink and a fake Pushbullet API.

Each listens on 127.0.0.1 (port 0 unless given), exposes `.port` and `.url`, records what it receives, and is
used as an async context manager or through `start()` / `stop()`. A stopped server can be started again on the
same port, to play "the server is down for a while". All run on the test's own event loop (pytest-asyncio).

    async with SmtpSink() as smtp:
        ...                                  # send to 127.0.0.1:smtp.port
        [mail] = await smtp.wait_for(1)
        assert mail.message["Subject"] == "Hi"

Tests in this folder import them as `from .servers import SmtpSink, WebhookSink, FakePushbullet`.
"""

from __future__ import annotations

import asyncio
import collections
import email
import email.message
import email.policy
import itertools
import json
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Self
from urllib.parse import parse_qsl

from aiohttp import web
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from multidict import CIMultiDict, CIMultiDictProxy

LOCALHOST = "127.0.0.1"


async def _wait_until(condition: Any, changed: asyncio.Event, timeout_s: float, what: Any) -> None:
    """Wait until `condition()` is true, waking on `changed`; AssertionError naming `what()` on timeout."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out after {timeout_s:g} s: {what()}")
        changed.clear()
        try:
            async with asyncio.timeout(remaining):
                await changed.wait()
        except TimeoutError:
            pass


# --------------------------------------------------------------------------------------------------------- SMTP


@dataclass(frozen=True, slots=True)
class ReceivedMail:
    """One message the SMTP sink accepted: the envelope, the raw bytes, and the parsed message."""

    mail_from: str
    mail_options: tuple[str, ...]
    """The MAIL FROM parameters (SIZE=…, SMTPUTF8, BODY=…)."""
    rcpt_tos: tuple[str, ...]
    data: bytes
    message: email.message.EmailMessage
    peer: tuple[str, int] | None
    auth_login: str | None
    connection: int
    """Which connection (1, 2, …, in order of acceptance) carried this message."""


@dataclass(frozen=True, slots=True)
class _SmtpFailure:
    stage: Literal["mail", "rcpt", "data"]
    reply: str


class _SinkSMTP(SMTP):
    """aiosmtpd's SMTP protocol that tells the sink when its connection ends."""

    def __init__(self, handler: Any, *, sink: SmtpSink, connection: int, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.sink = sink
        self.connection = connection

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        self.sink.open_sessions.discard(self)


class _SmtpHandler:
    """aiosmtpd handler hooks: apply the failure script and the delay, then record."""

    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        failure = self.sink.take_failure("mail")
        if failure is not None:
            return failure
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        failure = self.sink.take_failure("rcpt")
        if failure is not None:
            return failure
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.sink.delay_s > 0:
            await asyncio.sleep(self.sink.delay_s)
        failure = self.sink.take_failure("data")
        if failure is not None:
            return failure
        data = envelope.original_content or b""
        if isinstance(envelope.content, bytes) and not data:
            data = envelope.content
        login = session.auth_data if isinstance(session.auth_data, str) else None
        self.sink.record(
            ReceivedMail(
                mail_from=envelope.mail_from or "",
                mail_options=tuple(envelope.mail_options),
                rcpt_tos=tuple(envelope.rcpt_tos),
                data=data,
                # Parsed as a local mailbox would store it: with LF line ends, so decoded parts carry no CR.
                message=email.message_from_bytes(  # type: ignore[arg-type]
                    data.replace(b"\r\n", b"\n"), policy=email.policy.default
                ),
                peer=session.peer if isinstance(session.peer, tuple) else None,
                auth_login=login,
                connection=getattr(server, "connection", 0),
            )
        )
        return "250 Message accepted for delivery"


class SmtpSink:
    """An SMTP server (aiosmtpd) that records every message it accepts.

    - `messages`: what was accepted, in order; `connections`: how many connections were ever accepted.
    - `fail_next(count, code, stage=...)`: answer the next `count` MAIL, RCPT or DATA commands with `code`.
    - `delay_s`: wait this long before answering DATA (a slow server).
    - `credentials`: if given, AUTH is offered (without TLS) and these logins are accepted.
    - `smtputf8`: whether SMTPUTF8 is offered; `size_limit`: the SIZE it announces and enforces (aiosmtpd's
      default, 32 MiB, if None).
    - `drop_connections()`: close every open client connection while still listening.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        credentials: Mapping[str, str] | None = None,
        delay_s: float = 0.0,
        smtputf8: bool = True,
        size_limit: int | None = None,
    ) -> None:
        self.port = port
        self.smtputf8 = smtputf8
        self.size_limit = size_limit
        self.credentials = dict(credentials) if credentials is not None else None
        self.delay_s = delay_s
        self.messages: list[ReceivedMail] = []
        self.connections = 0
        self.auth_attempts: list[str] = []
        self._failures: collections.deque[_SmtpFailure] = collections.deque()
        self.open_sessions: set[_SinkSMTP] = set()
        self._server: asyncio.Server | None = None
        self._changed = asyncio.Event()
        self._handler = _SmtpHandler(self)

    @property
    def url(self) -> str:
        return f"smtp://{LOCALHOST}:{self.port}"

    @property
    def open_connections(self) -> int:
        """Client connections open right now."""
        return len(self.open_sessions)

    async def start(self) -> None:
        """Listen on `port` (a free one the first time if 0; the same one on a restart)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._new_protocol, host=LOCALHOST, port=self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and close every client connection; `start()` listens on the same port again."""
        if self._server is None:
            return
        server = self._server
        self.halt()
        await server.wait_closed()
        self._server = None
        # Let the closed connections run their connection_lost callbacks.
        await asyncio.sleep(0)

    def halt(self) -> None:
        """Stop listening and close every connection now, without yielding to the loop (so clients have not
        noticed yet when this returns); `await stop()` afterwards to finish."""
        if self._server is not None:
            self._server.close()
        self.drop_connections()

    def drop_connections(self) -> None:
        """Close every open client connection abruptly (a restart or an idle timeout, from the client's view)."""
        for protocol in list(self.open_sessions):
            if protocol.transport is not None:
                protocol.transport.close()

    def fail_next(
        self,
        count: int = 1,
        code: int = 451,
        text: str | None = None,
        *,
        stage: Literal["mail", "rcpt", "data"] = "data",
    ) -> None:
        """Answer the next `count` commands of `stage` with `code` instead of accepting."""
        reply = f"{code} {text or ('Try again later' if code < 500 else 'Rejected')}"
        self._failures.extend(_SmtpFailure(stage, reply) for _ in range(count))

    async def wait_for(self, count: int, timeout_s: float = 5.0) -> list[ReceivedMail]:
        """The first `count` messages, once they have arrived; AssertionError after `timeout_s`."""
        await _wait_until(
            lambda: len(self.messages) >= count,
            self._changed,
            timeout_s,
            lambda: f"expected {count} message(s), got {len(self.messages)}",
        )
        return self.messages[:count]

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _new_protocol(self) -> _SinkSMTP:
        self.connections += 1
        kwargs: dict[str, Any] = {}
        if self.credentials is not None:
            kwargs.update(authenticator=self._authenticate, auth_require_tls=False)
        if self.size_limit is not None:
            kwargs.update(data_size_limit=self.size_limit)
        protocol = _SinkSMTP(
            self._handler,
            sink=self,
            connection=self.connections,
            hostname="localhost",
            enable_SMTPUTF8=self.smtputf8,
            loop=asyncio.get_running_loop(),
            **kwargs,
        )
        self.open_sessions.add(protocol)
        return protocol

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword) or self.credentials is None:
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode("utf-8", "replace")
        self.auth_attempts.append(login)
        if self.credentials.get(login) == auth_data.password.decode("utf-8", "replace"):
            return AuthResult(success=True, auth_data=login)
        return AuthResult(success=False, handled=False)

    def take_failure(self, stage: str) -> str | None:
        """The handler asks at each stage: the scripted reply for that stage if it is next, else None."""
        if self._failures and self._failures[0].stage == stage:
            return self._failures.popleft().reply
        return None

    def record(self, mail: ReceivedMail) -> None:
        """The handler's last step: keep a message that was accepted."""
        self.messages.append(mail)
        self._changed.set()


# ------------------------------------------------------------------------------------------------------ HTTP base


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One HTTP request a sink received, with its body parsed by content type."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")

    @property
    def form_items(self) -> list[tuple[str, str]]:
        """The form fields in order (repeats kept); empty unless the body is form-encoded."""
        if not self.content_type.startswith("application/x-www-form-urlencoded"):
            return []
        return parse_qsl(self.body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)

    @property
    def form(self) -> dict[str, str]:
        """The form fields as a dict (the last of repeated names wins)."""
        return dict(self.form_items)

    @property
    def json(self) -> Any:
        """The body parsed as JSON; None unless the content type is JSON."""
        if "json" not in self.content_type:
            return None
        return json.loads(self.body)


class _HttpSink:
    """An aiohttp server on 127.0.0.1 that records requests; subclasses answer them."""

    def __init__(self, *, port: int = 0) -> None:
        self.port = port
        self.requests: list[ReceivedRequest] = []
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Event()
        self._stopping = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    async def start(self) -> None:
        """Listen on `port` (a free one the first time if 0; the same one on a restart)."""
        app = web.Application()
        self._add_routes(app)
        # A short shutdown: a handler still delaying on purpose must not hold up the test's teardown.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, LOCALHOST, self.port)
        await site.start()
        self._runner = runner
        self.port = runner.addresses[0][1]
        self._stopping.clear()

    async def stop(self) -> None:
        """Stop listening and drop open connections; `start()` listens on the same port again."""
        if self._runner is None:
            return
        self._stopping.set()
        runner, self._runner = self._runner, None
        await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def wait_for(self, count: int, timeout_s: float = 5.0) -> list[ReceivedRequest]:
        """The first `count` requests, once they have arrived; AssertionError after `timeout_s`."""
        await _wait_until(
            lambda: len(self.requests) >= count,
            self._changed,
            timeout_s,
            lambda: f"expected {count} request(s), got {len(self.requests)}",
        )
        return self.requests[:count]

    def _add_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def _record(self, request: web.Request) -> ReceivedRequest:
        received = ReceivedRequest(
            method=request.method,
            path=request.path,
            query=tuple(request.query.items()),
            headers=CIMultiDictProxy(CIMultiDict(request.headers)),
            body=await request.read(),
        )
        self.requests.append(received)
        self._changed.set()
        return received

    async def _delay(self, delay_s: float) -> None:
        """Sleep `delay_s`, cut short if the server is stopping."""
        if delay_s <= 0:
            return
        try:
            async with asyncio.timeout(delay_s):
                await self._stopping.wait()
        except TimeoutError:
            pass


# --------------------------------------------------------------------------------------------------- Webhook sink


Response = tuple[int, Mapping[str, str], bytes | str]


class WebhookSink(_HttpSink):
    """An HTTP server that records every request (any method, any path) and answers from a script.

    `plan` is a list of `(status, headers, body)` answers used in order; once it is empty every request gets
    `200 ok`. `delay_s` makes every answer wait (a slow receiver); the request is recorded before the wait.
    `hold`: every answer also waits until this event is set (an attempt kept in flight for exactly as long as a
    test needs, instead of a delay that bets on timing).
    """

    def __init__(
        self,
        *,
        port: int = 0,
        plan: Iterable[Response] = (),
        delay_s: float = 0.0,
        hold: asyncio.Event | None = None,
    ) -> None:
        super().__init__(port=port)
        self.plan: collections.deque[Response] = collections.deque(plan)
        self.delay_s = delay_s
        self.hold = hold

    def respond(self, *responses: Response) -> None:
        """Add answers to the end of the plan."""
        self.plan.extend(responses)

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self._handle)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        await self._delay(self.delay_s)
        if self.hold is not None:
            stopping = asyncio.ensure_future(self._stopping.wait())
            released = asyncio.ensure_future(self.hold.wait())
            await asyncio.wait({stopping, released}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            released.cancel()
        if not self.plan:
            return web.Response(status=200, text="ok")
        status, headers, body = self.plan.popleft()
        data = body.encode("utf-8") if isinstance(body, str) else body
        return web.Response(status=status, headers=dict(headers), body=data)


# ------------------------------------------------------------------------------------------------ Fake Pushbullet


@dataclass(frozen=True, slots=True)
class ReceivedPush:
    """A push the fake Pushbullet accepted: the token that sent it, the request body, and the push it created."""

    token: str
    request: dict[str, Any]
    push: dict[str, Any]


@dataclass(slots=True)
class _PushbulletScript:
    kind: Literal["ratelimit", "status"]
    status: int = 429
    reset_in_s: float = 30.0


_CAT = "~(=^‥^)"


class FakePushbullet(_HttpSink):
    """`POST /v2/pushes` as Pushbullet documents it, for the tokens in `tokens`.

    Answers carry `X-Ratelimit-Limit`, `X-Ratelimit-Remaining` and `X-Ratelimit-Reset` (epoch seconds). A
    missing or unknown `Access-Token` gets 401 `invalid_access_token`; a body that is not a JSON object with a
    known push `type` gets 400 `invalid_request`. `rate_limit_next()` and `fail_next()` script 429s and 5xx.
    Accepted pushes are in `pushes`; every request, rejected or not, is in `requests`.
    """

    def __init__(self, tokens: Iterable[str] = (), *, port: int = 0, ratelimit_limit: int = 16384) -> None:
        super().__init__(port=port)
        self.tokens = set(tokens)
        self.pushes: list[ReceivedPush] = []
        self.ratelimit_limit = ratelimit_limit
        self._remaining = ratelimit_limit
        self._reset_epoch_s = int(time.time()) + 3600
        self._script: collections.deque[_PushbulletScript] = collections.deque()
        self._idens = (f"ujpah72o0{n:07d}" for n in itertools.count(1))

    @property
    def api_url(self) -> str:
        """What the channel's `api_url` should be set to."""
        return self.url

    def rate_limit_next(self, count: int = 1, *, reset_in_s: float = 30.0) -> None:
        """Answer the next `count` push requests 429, with `X-Ratelimit-Reset` `reset_in_s` from now."""
        self._script.extend(_PushbulletScript("ratelimit", reset_in_s=reset_in_s) for _ in range(count))

    def fail_next(self, count: int = 1, status: int = 503) -> None:
        """Answer the next `count` push requests with `status` and a `server` error."""
        self._script.extend(_PushbulletScript("status", status=status) for _ in range(count))

    async def wait_for_pushes(self, count: int, timeout_s: float = 5.0) -> list[ReceivedPush]:
        """The first `count` accepted pushes, once they have arrived; AssertionError after `timeout_s`."""
        await _wait_until(
            lambda: len(self.pushes) >= count,
            self._changed,
            timeout_s,
            lambda: f"expected {count} push(es), got {len(self.pushes)}",
        )
        return self.pushes[:count]

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v2/pushes", self._create_push)

    def _ratelimit_headers(self) -> dict[str, str]:
        return {
            "X-Ratelimit-Limit": str(self.ratelimit_limit),
            "X-Ratelimit-Remaining": str(max(0, self._remaining)),
            "X-Ratelimit-Reset": str(self._reset_epoch_s),
        }

    def _error(self, status: int, code: str, message: str, *, error_type: str = "invalid_request") -> web.Response:
        body = {"error": {"code": code, "type": error_type, "message": message, "cat": _CAT}}
        return web.json_response(body, status=status, headers=self._ratelimit_headers())

    async def _create_push(self, request: web.Request) -> web.Response:
        received = await self._record(request)
        token = request.headers.get("Access-Token", "")
        if token not in self.tokens:
            return self._error(401, "invalid_access_token", "Access token is missing or invalid.")
        if self._script:
            step = self._script.popleft()
            if step.kind == "ratelimit":
                self._remaining = 0
                self._reset_epoch_s = int(time.time() + step.reset_in_s)
                return self._error(
                    429,
                    "too_many_requests",
                    "You have been ratelimited for making too many requests to the server.",
                )
            return self._error(step.status, "server_error", "Something went wrong on our end.", error_type="server")
        try:
            body = json.loads(received.body)
        except ValueError:
            return self._error(400, "invalid_json_body", "Failed to decode JSON body.")
        if not isinstance(body, dict) or body.get("type") not in ("note", "link", "file"):
            return self._error(400, "invalid_param", "Invalid push type.")
        self._remaining -= 1
        now = time.time()
        push = {
            "active": True,
            "iden": next(self._idens),
            "created": now,
            "modified": now,
            "type": body["type"],
            "dismissed": False,
            "direction": "self",
            "sender_iden": "ujpah72o0",
            "sender_email_normalized": "owner@example.com",
            "receiver_iden": "ujpah72o0",
            "receiver_email_normalized": "owner@example.com",
            **{key: body[key] for key in ("title", "body", "url") if key in body},
        }
        self.pushes.append(ReceivedPush(token=token, request=body, push=push))
        self._changed.set()
        return web.json_response(push, headers=self._ratelimit_headers())


def new_token() -> str:
    """A random token shaped like Pushbullet's (`o.` and 32 characters)."""
    return "o." + secrets.token_urlsafe(24)[:32]


__all__ = [
    "FakePushbullet",
    "ReceivedMail",
    "ReceivedPush",
    "ReceivedRequest",
    "Response",
    "SmtpSink",
    "WebhookSink",
    "new_token",
]
