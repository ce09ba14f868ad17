"""No secret ever leaves through a log line, an API answer, a command's output or a notice we send.

One scenario with secrets everywhere: an SMTP login, a Pushbullet token that works and one that is refused, the
API token, a Post to URL address with `user:pass@` and a `?key=`, a broker password, an account's Pushbullet
token, and a broken config full of inline secrets. The daemon runs as a process with `--debug` (the chattiest
logs); deliveries are sent, retried and failed; every API route and every command is called; then every byte
they produced is searched for every secret, in the clear and in the encodings a protocol would use.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from dispatcher.commands import COMMANDS

from .brokers import Mosquitto, wait_for_port
from .conftest import DaemonProcess, wait_until
from .servers import FakePushbullet, SmtpSink, WebhookSink

# Distinctive values, so a hit can only be a leak. URL-safe, so quoting cannot disguise them.
SMTP_USER = "mailer"
SMTP_PASSWORD = "smtp-pw-Kx7Qw-LEAKCHECK"
PUSHBULLET_GOOD = "o.pbGoodToken-LEAKCHECK-aaaaaaaaaa"
PUSHBULLET_REVOKED = "o.pbRevokedToken-LEAKCHECK-bbbbbbb"
ACCOUNT_PUSHBULLET = "o.pbAccountToken-LEAKCHECK-ccccccc"
API_TOKEN = "api-token-Zr9-LEAKCHECK"
HOOK_USER = "hookuser"
HOOK_PASSWORD = "hookpass-Mn2-LEAKCHECK"
HOOK_KEY = "hookkey-Pq8-LEAKCHECK"
MQTT_USER = "dispatcher"
MQTT_PASSWORD = "mqtt-pw-Vb3-LEAKCHECK"
BAD_CONFIG_SECRETS = [f"badcfg-{n}-LEAKCHECK" for n in range(1, 10)]

SECRETS = [
    SMTP_PASSWORD, PUSHBULLET_GOOD, PUSHBULLET_REVOKED, ACCOUNT_PUSHBULLET, API_TOKEN, HOOK_PASSWORD, HOOK_KEY,
    MQTT_PASSWORD, *BAD_CONFIG_SECRETS,
]  # fmt: skip


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# How the secrets travel on the wire: a log of a request or an SMTP exchange would show these.
ENCODED = {
    "basic auth of the Post to URL credentials": b64(f"{HOOK_USER}:{HOOK_PASSWORD}"),
    "SMTP AUTH PLAIN": b64(f"\0{SMTP_USER}\0{SMTP_PASSWORD}"),
    "SMTP AUTH LOGIN password": b64(SMTP_PASSWORD),
}

BAD_CONFIG = f"""\
# Every secret below sits next to a mistake, so the error messages are about them.
hostname: test.example.com
bus:
  url: mqtt://user:{BAD_CONFIG_SECRETS[0]}@127.0.0.1:1883
  password: {BAD_CONFIG_SECRETS[1]}
  password_file: mqtt.password
http:
  token: [{BAD_CONFIG_SECRETS[2]}]
channels:
  email: {{password: {BAD_CONFIG_SECRETS[3]}}}
contacts:
  root:
    pushbullet: [[{BAD_CONFIG_SECRETS[4]}], {{token: {BAD_CONFIG_SECRETS[5]}, color: red}}]
    posturl: ["hooks.example.com/{BAD_CONFIG_SECRETS[6]}?key={BAD_CONFIG_SECRETS[7]}"]
"""

# A YAML syntax error on the line of a secret: the parser's message must not quote the line.
BAD_SYNTAX = f'http:\n  token: "{BAD_CONFIG_SECRETS[8]}\nbus:\n  url: mqtt://127.0.0.1\n'


class Evidence:
    """Everything the system said, by where it was said."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, where: str, text: str) -> None:
        self.items.append((where, text))

    def leaks(self) -> list[str]:
        found = []
        needles = {secret: secret for secret in SECRETS} | {name: value for name, value in ENCODED.items()}
        for where, text in self.items:
            for name, needle in needles.items():
                for form in {needle, quote(needle, safe="")}:
                    if form in text:
                        at = text.index(form)
                        found.append(f"{name!r} in {where}: …{text[max(0, at - 120) : at + len(form) + 40]}…")
        return found


class DebugDaemon(DaemonProcess):
    """`python -m dispatcher --debug run -c FILE`: the daemon at its most talkative."""

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "dispatcher", "--debug", "run", "-c", str(self.config_path)],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.config_path.parent,
            )  # fmt: skip
        wait_for_port(self.http_port, timeout_s=20)


@pytest.fixture
def debug_daemon(tmp_path: Path) -> Iterator[Callable[[Path], DebugDaemon]]:
    started: list[DebugDaemon] = []

    def make(config_path: Path) -> DebugDaemon:
        daemon = DebugDaemon(config_path, tmp_path / "daemon.log")
        started.append(daemon)
        daemon.start()
        return daemon

    yield make
    for daemon in started:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait()


@pytest.fixture
async def sinks() -> AsyncIterator[tuple[SmtpSink, FakePushbullet, WebhookSink]]:
    """The far ends: an SMTP server that wants a login, Pushbullet knowing two tokens, and a webhook."""
    async with (
        SmtpSink(credentials={SMTP_USER: SMTP_PASSWORD}) as smtp,
        FakePushbullet([PUSHBULLET_GOOD, ACCOUNT_PUSHBULLET]) as pushbullet,
        WebhookSink() as webhook,
    ):
        yield smtp, pushbullet, webhook


def write_secret_files(directory: Path, webhook: WebhookSink) -> None:
    """Secrets in files, with the trailing newline editors leave, readable by the owner only."""
    files = {
        "smtp.password": SMTP_PASSWORD,
        "pushbullet-good.token": PUSHBULLET_GOOD,
        "pushbullet-revoked.token": PUSHBULLET_REVOKED,
        "secret-api.token": API_TOKEN,
        "hook.url": f"http://{HOOK_USER}:{HOOK_PASSWORD}@127.0.0.1:{webhook.port}/notify?key={HOOK_KEY}&channel=ops",
        "mqtt.password": MQTT_PASSWORD,
    }
    for name, value in files.items():
        path = directory / name
        path.write_text(value + "\n")
        path.chmod(0o600)


async def run_cli(evidence: Evidence, cwd: Path, *args: str) -> tuple[int, str]:
    """Run `python -m dispatcher ARGS` without blocking the loop (the sinks live on it); keep its output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dispatcher", *args, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    output = stdout.decode(errors="replace") + stderr.decode(errors="replace")
    evidence.add(f"`dispatcher {' '.join(args)}` (exit {process.returncode})", output)
    assert process.returncode is not None
    return process.returncode, output


async def call_api(
    evidence: Evidence, http: aiohttp.ClientSession, method: str, url: str, *, token: str | None = API_TOKEN,
    **kwargs: Any,
) -> tuple[int, str]:  # fmt: skip
    """One HTTP call; its status, headers and body are kept as evidence."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with http.request(method, url, headers=headers, **kwargs) as answer:
        body = await answer.text()
        head = "\n".join(f"{key}: {value}" for key, value in answer.headers.items())
        evidence.add(f"{method} {url} → {answer.status}", f"{head}\n\n{body}")
        return answer.status, body


@pytest.mark.slow
async def test_no_secret_leaks_anywhere(
    tmp_path: Path,
    mosquitto: Mosquitto,
    make_config: Callable[..., Path],
    debug_daemon: Callable[[Path], DebugDaemon],
    sinks: tuple[SmtpSink, FakePushbullet, WebhookSink],
    http: aiohttp.ClientSession,
) -> None:
    """Sent, retried and failed deliveries, test notices, every API route, every command and a refused reload
    produce no secret in the daemon's log, the API's answers, the commands' output, or the notices sent."""
    smtp, pushbullet, webhook = sinks
    evidence = Evidence()
    write_secret_files(tmp_path, webhook)
    webhook.respond((503, {}, "busy"))  # the first Post to URL is retried
    config = make_config(
        bus={"username": MQTT_USER, "password_file": "mqtt.password"},
        http={"token_file": "secret-api.token"},
        channels={
            "email": {
                "host": "127.0.0.1", "port": smtp.port, "username": SMTP_USER, "password_file": "smtp.password",
                "from": "Server <root@test.example.com>",
            },
            "pushbullet": {"api_url": pushbullet.api_url},
        },
        delivery={"max_attempts": 3, "backoff_initial_s": 0.1, "backoff_max_s": 0.3, "give_up_after_s": 60},
        contacts={
            "root": {
                "email": ["admin@example.com"],
                "pushbullet": [{"token_file": "pushbullet-good.token"}, {"token_file": "pushbullet-revoked.token"}],
                "posturl": [{"url_file": "hook.url"}],
                "receives": {"email": "all", "pushbullet": "all", "posturl": "all"},
            }
        },
    )  # fmt: skip
    daemon = debug_daemon(config)
    base = f"http://127.0.0.1:{daemon.http_port}"
    await wait_until(lambda: _ready(http, base), timeout_s=20)

    # -- events: over the bus (the CLI logs in to the broker) and over HTTP, for root and for an account
    status, _ = await call_api(
        evidence, http, "PUT", f"{base}/api/v1/accounts/bob/contact-info",
        json={"email": "bob@example.com", "pushbullet_access_token": ACCOUNT_PUSHBULLET},
    )  # fmt: skip
    assert status == 200
    code, _ = await run_cli(evidence, tmp_path, "publish", "Backup/Failure", "-c", str(config), "--data", "error=full")
    assert code == 0
    status, _ = await call_api(
        evidence, http, "POST", f"{base}/api/v1/events",
        json={"type": "Quota/DiskWarning", "account": "bob", "data": {"used": "95%"}},
    )  # fmt: skip
    assert status == 202

    # Sent (email, good token, account token), retried then sent (webhook), failed (revoked token), and the
    # Instant Message Failure notice about it, delivered in turn.
    async def settled() -> bool:
        rows = await _deliveries(http, base)
        statuses = {row["status"] for row in rows}
        types = {row["event_type"] for row in rows}
        return "pending" not in statuses and "failed" in statuses and "iContact/SendIMFailed" in types

    await wait_until(settled, timeout_s=20)
    rows = await _deliveries(http, base)
    assert any(row["channel"] == "posturl" and row["status"] == "sent" and row["attempts"] == 2 for row in rows)
    assert any(push.token == ACCOUNT_PUSHBULLET for push in pushbullet.pushes)

    # -- every API route, with and without the token
    for path in (
        "/api/v1/deliveries", "/api/v1/deliveries?status=failed", "/api/v1/deliveries?status=sent&limit=5",
        "/api/v1/deliveries?status=bogus", "/api/v1/accounts/bob/contact-info",
        "/json-api/cpanel?cpanel_jsonapi_apiversion=2&cpanel_jsonapi_module=CustInfo"
        "&cpanel_jsonapi_func=displaycontactinfo&username=bob",
    ):  # fmt: skip
        await call_api(evidence, http, "GET", base + path)
    for path in ("/metrics", "/readyz", "/healthz"):
        await call_api(evidence, http, "GET", base + path, token=None)
    status, _ = await call_api(evidence, http, "GET", f"{base}/api/v1/deliveries", token=None)
    assert status == 401
    status, _ = await call_api(evidence, http, "GET", f"{base}/api/v1/deliveries", token="not-the-token")
    assert status == 401
    await call_api(evidence, http, "POST", f"{base}/api/v1/events", data=b"{not json")
    for recipient, channel in (("root", "posturl"), ("root", "email"), ("account:bob", "pushbullet")):
        await call_api(evidence, http, "POST", f"{base}/api/v1/test", json={"recipient": recipient, "channel": channel})
    status, _ = await call_api(
        evidence, http, "POST", f"{base}/api/v1/test", json={"recipient": "root", "channel": "pushbullet"}
    )
    assert status == 502, "the revoked token should make the pushbullet test fail"
    await call_api(
        evidence, http, "POST", f"{base}/includes/api.php",
        data={"action": "AddContact", "clientid": "999", "email": "x@example.com"},
    )  # fmt: skip

    # -- every command there is (side by side: each one is a second of interpreter start-up)
    available = {command.__name__.rsplit(".", 1)[-1] for command in COMMANDS}
    good, bad, syntax = str(config), tmp_path / "bad.yaml", tmp_path / "syntax.yaml"
    bad.write_text(BAD_CONFIG)
    syntax.write_text(BAD_SYNTAX)
    calls: list[tuple[list[str], int | None]] = [  # the arguments, and the exit status expected (None: any)
        (["check-config", "-c", good], 0),
        (["check-config", "-c", str(bad)], 1),
        (["check-config", "-c", str(syntax)], 1),
        (["--debug", "run", "-c", str(bad)], 1),  # refused at start, with the traceback --debug asks for
        (["deliveries", "-c", good], None),
        (["deliveries", "-c", good, "--json", "--status", "failed"], None),
        (["test", "root", "pushbullet", "-c", good], 1),  # the revoked token fails
        (["test", "root", "posturl", "-c", good], None),
        (["test", "account:bob", "pushbullet", "-c", good], None),
        (["routes", "Quota/DiskWarning", "-c", good, "--account", "bob"], None),
        (["catalog", "-c", good], None),
        (["render", "iContact/SendIMFailed", "-c", good], None),
    ]
    # Only the commands that exist yet (module check_config is command check-config).
    calls = [(args, expected) for args, expected in calls if args[args[0] == "--debug"].replace("-", "_") in available]
    slots = asyncio.Semaphore(3)

    async def run_one(args: list[str]) -> tuple[int, str]:
        async with slots:
            return await run_cli(evidence, tmp_path, *args)

    results = await asyncio.gather(*(run_one(args) for args, _ in calls))
    for (args, expected), (code, output) in zip(calls, results, strict=True):
        assert expected is None or code == expected, f"dispatcher {' '.join(args)} → {code}:\n{output}"
    for broken, (_, output) in ((bad, results[1]), (syntax, results[2])):
        assert f"{broken}:" in output, output  # the errors are printed, FILE:LINE:COL first

    # -- a reload refused: the daemon logs why, about a file full of secrets
    assert daemon.process is not None
    config.write_text(BAD_CONFIG)
    daemon.process.send_signal(signal.SIGHUP)
    await wait_until(lambda: "config_reload_refused" in daemon.logs(), timeout_s=10)
    # In a thread: the sinks live on this loop, and the daemon says goodbye to them (SMTP QUIT) on its way out.
    assert await asyncio.to_thread(daemon.terminate, 30) == 0

    # -- what was said: the log, and every notice that went out (where only the subject and text may be shown)
    log = daemon.logs()
    assert "delivery_failed" in log and "delivery_retry" in log and "delivery_sent" in log
    evidence.add("the daemon's log (stdout and stderr, --debug)", log)
    for mail in smtp.messages:
        evidence.add(f"email to {mail.rcpt_tos}", mail.data.decode(errors="replace"))
    for push in pushbullet.pushes:
        evidence.add("a Pushbullet note", f"{push.request.get('title')}\n{push.request.get('body')}")
    for request in webhook.requests:
        fields = request.form or {}
        evidence.add("a Post to URL notice", f"{fields.get('subject')}\n{fields.get('body')}")

    leaks = evidence.leaks()
    assert not leaks, "secrets leaked:\n" + "\n\n".join(leaks)
    assert len(evidence.items) > 40  # the search covered what it should


async def _ready(http: aiohttp.ClientSession, base: str) -> bool:
    try:
        async with http.get(f"{base}/readyz") as answer:
            return answer.status == 200
    except aiohttp.ClientError:
        return False


async def _deliveries(http: aiohttp.ClientSession, base: str) -> list[dict[str, Any]]:
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    async with http.get(f"{base}/api/v1/deliveries?limit=1000", headers=auth) as answer:
        assert answer.status == 200
        return list((await answer.json())["deliveries"])


def test_the_search_finds_a_secret() -> None:
    """The leak search is not blind: a secret, a URL-quoted secret, or base64 basic auth is found."""
    evidence = Evidence()
    evidence.add("clean", "nothing to see")
    assert evidence.leaks() == []
    evidence.add("plain", f"token={API_TOKEN}")
    evidence.add("quoted", quote(f"{HOOK_PASSWORD}/", safe=""))
    evidence.add("header", f"Authorization: Basic {ENCODED['basic auth of the Post to URL credentials']}")
    found = evidence.leaks()
    assert len(found) == 3
    assert "in plain" in found[0] and "in quoted" in found[1] and "in header" in found[2]
