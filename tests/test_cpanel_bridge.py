"""The bridge from cPanel (SPEC §8a): what WHM's own Post to URL sends becomes the event `{application}/{event_name}`,
routed like any event, and its message is cPanel's own subject and body in our layout; the token WHM carries in the
URL is checked, never stored and never logged."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dispatcher.catalog import load_catalog
from dispatcher.events import Event
from dispatcher.levels import Importance
from dispatcher.render import Renderer
from dispatcher.routing.recipients import Recipient

from .brokers import wait_for_port
from .conftest import API_TOKEN, DaemonProcess, RunningDaemon, settled, wait_until
from .servers import SmtpSink

BRIDGE = "/api/v1/ingest/cpanel"
BODY = (
    "The backup of the account bob did not finish.\n"
    "Error: <disk full> & no space left on /backup\n"
    "\n"
    "Read /usr/local/cpanel/logs/cpbackup/1763863200.log for details."
)
# What WHM's Post to URL posts for a failed backup (seeds README: these five fields, form-encoded, UTF-8).
WHM_FORM = {
    "subject": "The backup on “whm1.example.com” failed <again>",
    "body": BODY,
    "application": "Backup",
    "event_name": "Failure",
    "hostname": "whm1.example.com",
}


@pytest.fixture
async def smtp() -> Any:
    async with SmtpSink() as sink:
        yield sink


def email_to_root(smtp: SmtpSink, **receives: str) -> dict[str, Any]:
    """Config sections: the SMTP sink as the email channel, root's address, and root's thresholds if given."""
    root: dict[str, Any] = {"email": ["admin@example.com"]}
    if receives:
        root["receives"] = receives
    return {
        "channels": {"email": {"host": "127.0.0.1", "port": smtp.port, "from": "Server <root@test.example.com>"}},
        "contacts": {"root": root},
    }


async def stored_events(daemon: RunningDaemon) -> list[Event]:
    """Every event in the daemon's store."""
    rows = await daemon.dispatcher.store.run(lambda conn: conn.execute("SELECT body FROM events").fetchall())
    return [Event.from_json(body) for (body,) in rows]


def parts(mail: Any) -> tuple[str, str]:
    """The text and HTML parts of a `multipart/alternative` message."""
    text, html = mail.message.get_payload()
    return text.get_content(), html.get_content()


async def test_a_whm_post_is_delivered_with_cpanels_subject_and_body(
    make_config: Callable[..., Path], start_daemon: Any, http: aiohttp.ClientSession, smtp: SmtpSink
) -> None:
    """WHM's form with `?token=…&site=dc1` in the URL: 202 with the id; the event is `Backup/Failure` from
    `whm1.example.com` with cPanel's subject, body and the extra parameter as data (never the token); the email
    carries cPanel's subject (our `[host]` prefix before it), its body in the text part and, escaped, in the HTML
    part, inside our layout: the catalog's importance (Backup/Failure is high) and our footer."""
    daemon = await start_daemon(make_config(**email_to_root(smtp)))
    response = await http.post(f"{daemon.base_url}{BRIDGE}", params={"token": API_TOKEN, "site": "dc1"}, data=WHM_FORM)
    assert response.status == 202, await response.text()
    event_id = (await response.json())["id"]

    (event,) = await stored_events(daemon)
    assert (event.id, event.type, event.host, event.account) == (event_id, "Backup/Failure", "whm1.example.com", None)
    assert dict(event.data) == {"subject": WHM_FORM["subject"], "body": BODY, "site": "dc1", "_bridge": "cpanel"}

    (mail,) = await smtp.wait_for(1)
    assert mail.rcpt_tos == ("admin@example.com",)
    assert mail.message["Subject"] == f"[whm1.example.com] {WHM_FORM['subject']}"
    assert mail.message["X-Dispatcher-Event-Type"] == "Backup/Failure"
    assert mail.message["X-Dispatcher-Event-Id"] == event_id
    text, html = parts(mail)
    for line in BODY.splitlines():
        assert line in text
    assert "HIGH IMPORTANCE · whm1.example.com" in text
    assert "system contact (root)" in " ".join(text.split())  # our footer (wrapped at 72 columns)
    assert "site:  dc1" in text
    assert "Error: &lt;disk full&gt; &amp; no space left on /backup" in html
    assert "<disk full>" not in html and "&lt;again&gt;" in html
    assert "high importance" in html
    assert API_TOKEN not in mail.data.decode("utf-8", "replace")


async def test_whm_puts_the_token_of_the_url_into_the_form(
    make_config: Callable[..., Path], start_daemon: Any, http: aiohttp.ClientSession, smtp: SmtpSink
) -> None:
    """WHM moves the URL's query string into the form it posts: the token and the other parameters arrive as form
    fields. The token is accepted there (with the newline a token file may give it) and kept out of the data; an
    `account` field becomes the event's account."""
    daemon = await start_daemon(make_config(**email_to_root(smtp)))
    form = {**WHM_FORM, "token": API_TOKEN + "\n", "site": "dc1", "account": "bob"}
    response = await http.post(f"{daemon.base_url}{BRIDGE}", data=form)
    assert response.status == 202, await response.text()
    (event,) = await stored_events(daemon)
    assert (event.type, event.account) == ("Backup/Failure", "bob")
    assert "token" not in event.data and event.data["site"] == "dc1"
    (mail,) = await smtp.wait_for(1)
    assert mail.message["Subject"] == f"[whm1.example.com] {WHM_FORM['subject']}"


async def test_the_bearer_header_is_accepted_too(
    make_config: Callable[..., Path], start_daemon: Any, http: aiohttp.ClientSession, smtp: SmtpSink
) -> None:
    """A script that can send headers uses `Authorization: Bearer`, as on every other route."""
    daemon = await start_daemon(make_config(**email_to_root(smtp)))
    response = await http.post(f"{daemon.base_url}{BRIDGE}", data=WHM_FORM, headers=daemon.auth)
    assert response.status == 202, await response.text()
    await smtp.wait_for(1)


WRONG = "not-the-token"


@pytest.mark.parametrize(
    ("query", "form_token", "headers"),
    [
        pytest.param({"token": WRONG}, None, {}, id="wrong-in-query"),
        pytest.param({}, WRONG, {}, id="wrong-in-form"),
        pytest.param({}, None, {"Authorization": f"Bearer {WRONG}"}, id="wrong-bearer"),
        pytest.param({}, None, {"Authorization": f"Basic {API_TOKEN}"}, id="other-scheme"),
        pytest.param({}, None, {}, id="none"),
        pytest.param({}, "", {}, id="empty"),
        # The first place that gives a token decides: a right one further on does not save a wrong one.
        pytest.param({"token": WRONG}, API_TOKEN, {}, id="wrong-query-right-form"),
        pytest.param({"token": API_TOKEN}, None, {"Authorization": f"Bearer {WRONG}"}, id="wrong-bearer-right-query"),
    ],
)
async def test_a_wrong_or_missing_token_is_refused_and_nothing_is_stored(
    make_config: Callable[..., Path],
    start_daemon: Any,
    http: aiohttp.ClientSession,
    smtp: SmtpSink,
    query: dict[str, str],
    form_token: str | None,
    headers: dict[str, str],
) -> None:
    """401 with `WWW-Authenticate`, whatever the form holds, nothing stored, nothing sent, and the answer does not
    echo what was given."""
    daemon = await start_daemon(make_config(**email_to_root(smtp)))
    form = WHM_FORM if form_token is None else {**WHM_FORM, "token": form_token}
    response = await http.post(f"{daemon.base_url}{BRIDGE}", params=query, data=form, headers=headers)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="dispatcher"'
    answer = await response.text()
    assert "error" in await response.json() and WRONG not in answer and API_TOKEN not in answer
    assert await stored_events(daemon) == []
    await settled(daemon)
    assert smtp.messages == []


async def test_an_unreadable_body_without_a_token_elsewhere_is_a_401(
    make_config: Callable[..., Path], start_daemon: Any, http: aiohttp.ClientSession, smtp: SmtpSink
) -> None:
    """A body that is not a readable form cannot hold the token: 401, not a 400 that would describe the body to
    someone unknown; with the right token in the query, the same body is a 400."""
    daemon = await start_daemon(make_config(**email_to_root(smtp)))
    bad = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
    body = b"subject=\xff\xfe&token=" + API_TOKEN.encode()  # bytes that are not UTF-8
    response = await http.post(f"{daemon.base_url}{BRIDGE}", data=body, headers=bad)
    assert response.status == 401
    response = await http.post(f"{daemon.base_url}{BRIDGE}", params={"token": API_TOKEN}, data=body, headers=bad)
    assert response.status == 400
    assert await stored_events(daemon) == []


@pytest.mark.parametrize(
    ("change", "reason", "detail"),
    [
        pytest.param({"application": None}, "missing_type", "application: required", id="no-application"),
        pytest.param({"event_name": "  "}, "missing_type", "event_name: required", id="blank-event-name"),
        pytest.param({"application": None, "event_name": None}, "missing_type", "event_name: required", id="neither"),
        pytest.param({"application": "Back up"}, "bad_field", "is not of the form App/Event", id="space-in-type"),
        pytest.param({"event_name": "Failure/x"}, "bad_field", "is not of the form App/Event", id="slash-in-type"),
        pytest.param({"hostname": "whm1\nevil"}, "bad_field", "host:", id="line-break-in-hostname"),
        pytest.param({"account": "b" * 256}, "bad_field", "longer than 255", id="long-account"),
        pytest.param({"body": "x" * (257 * 1024)}, "too_large", "the limit is 262144", id="too-large"),
    ],
)
async def test_a_form_that_is_not_an_event_is_a_400(
    make_config: Callable[..., Path],
    start_daemon: Any,
    http: aiohttp.ClientSession,
    smtp: SmtpSink,
    change: dict[str, str | None],
    reason: str,
    detail: str,
) -> None:
    """Validated as `POST /api/v1/events` validates (the shared `parse_event` and its limits): 400 `{"error",
    "details"}` naming the fault, the refusal counted under its reason in /metrics, nothing stored."""
    daemon = await start_daemon(make_config(**email_to_root(smtp)))
    form = {key: value for key, value in {**WHM_FORM, **change}.items() if value is not None}
    response = await http.post(f"{daemon.base_url}{BRIDGE}", params={"token": API_TOKEN}, data=form)
    assert response.status == 400
    answer = await response.json()
    assert set(answer) == {"error", "details"}
    assert any(detail in line for line in answer["details"]), answer
    assert await stored_events(daemon) == []
    metrics = await (await http.get(f"{daemon.base_url}/metrics")).text()
    assert f'dispatcher_events_rejected_total{{reason="{reason}",source="http"}} 1.0' in metrics


async def test_importance_and_routing_come_from_the_type(
    make_config: Callable[..., Path], start_daemon: Any, http: aiohttp.ClientSession, smtp: SmtpSink
) -> None:
    """Root receives high and medium by email: `Backup/Failure` (high in the catalog) is sent, an unknown type
    (`Application/base`, low) is recorded suppressed, as any event of those types would be."""
    daemon = await start_daemon(make_config(**email_to_root(smtp, email="medium")))
    url = f"{daemon.base_url}{BRIDGE}"
    unknown = {**WHM_FORM, "application": "Custom", "event_name": "NightlyReport", "subject": "Nightly report"}
    low = await http.post(url, params={"token": API_TOKEN}, data=unknown)
    high = await http.post(url, params={"token": API_TOKEN}, data=WHM_FORM)
    assert (low.status, high.status) == (202, 202)
    low_id = (await low.json())["id"]

    async def low_record() -> list[dict[str, Any]]:
        query = {"event_id": low_id}
        answer = await http.get(f"{daemon.base_url}/api/v1/deliveries", params=query, headers=daemon.auth)
        return list((await answer.json())["deliveries"])

    await wait_until(low_record)
    (record,) = await low_record()
    assert record["status"] == "suppressed"
    (mail,) = await smtp.wait_for(1)
    assert mail.message["X-Dispatcher-Event-Type"] == "Backup/Failure"


NOTIFY_SH = Path(__file__).resolve().parents[1] / "docs" / "examples" / "notify.sh"


async def run_notify(args: list[str], stdin: bytes, env: dict[str, str]) -> tuple[int, str, str]:
    """docs/examples/notify.sh, without blocking the loop the embedded daemon runs on."""
    process = await asyncio.create_subprocess_exec(
        "sh",
        str(NOTIFY_SH),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **env},
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.skipif(shutil.which("curl") is None, reason="the example needs curl")
async def test_the_shell_example_sends_a_notice(
    make_config: Callable[..., Path], start_daemon: Any, smtp: SmtpSink, tmp_path: Path
) -> None:
    """docs/examples/notify.sh TYPE SUBJECT - with the text on standard input and the token file the config names
    (with its newline): the event arrives with that type, subject, text and account, and the mail is sent; with a
    wrong token file it fails (curl's 22) and nothing is stored."""
    daemon = await start_daemon(make_config(**email_to_root(smtp)))
    env = {"DISPATCHER_URL": daemon.base_url, "DISPATCHER_TOKEN_FILE": str(tmp_path / "api.token")}
    text = "3 files could not be removed:\n/tmp/a & /tmp/<b>\n"
    status, out, err = await run_notify(
        ["Custom/Cleanup", "Nightly cleanup finished with warnings", "-"],
        text.encode(),
        {**env, "DISPATCHER_ACCOUNT": "bob"},
    )
    assert status == 0, err
    (event,) = await stored_events(daemon)
    assert json.loads(out) == {"id": event.id}
    assert (event.type, event.account) == ("Custom/Cleanup", "bob")
    assert (event.data["subject"], event.data["body"]) == ("Nightly cleanup finished with warnings", text)
    (mail,) = await smtp.wait_for(1)
    assert mail.message["Subject"].endswith("] Nightly cleanup finished with warnings")

    (tmp_path / "wrong.token").write_text("not-the-token\n")
    status, _, _ = await run_notify(
        ["Custom/Cleanup", "again"], b"", {**env, "DISPATCHER_TOKEN_FILE": str(tmp_path / "wrong.token")}
    )
    assert status == 22
    assert len(await stored_events(daemon)) == 1


# -- the message ------------------------------------------------------------------------------------------------

CATALOG = load_catalog()
CAROL = Recipient(kind="account", name="account:carol", targets={}, thresholds=None)
ROOT = Recipient(kind="system", name="root", targets={}, thresholds=None)


def bridged(event_type: str, data: dict[str, Any], *, account: str | None = None) -> Event:
    now = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    return Event("e-1", event_type, now, "whm1.example.com", account, None, data, now)


def test_a_bridged_event_keeps_its_types_footer_for_every_recipient() -> None:
    """The bridge's template replaces the type's own (whose data fields cPanel does not send) for every channel,
    while the footer still speaks of the type: an account's contacts are pointed to the type's `notify_*`
    preference; Pushbullet and Post to URL get subject and text only."""
    renderer = Renderer(CATALOG, templates_dir=None, hostname="test.example.com")
    event = bridged(
        "Quota/DiskWarning",
        {"subject": "Disk quota warning for carol", "body": "carol uses 92% of her quota.", "_bridge": "cpanel"},
        account="carol",
    )
    own = renderer.render(event, importance=Importance.HIGH, recipient=CAROL)
    assert own.subject == "[carol] Disk quota warning for carol"
    assert "carol uses 92% of her quota." in own.text and "carol uses 92% of her quota." in own.html
    assert "notify_disk_limit" in own.text and "notify_disk_limit" in own.html
    assert "(not given)" not in own.text
    push = renderer.render(event, importance=Importance.HIGH, recipient=ROOT, channel="pushbullet")
    assert push.subject == "[whm1.example.com] Disk quota warning for carol" and push.html == ""
    assert "carol uses 92% of her quota." in push.text


def test_only_a_known_bridge_marker_chooses_the_bridge_template() -> None:
    """`_bridge: cpanel` renders cPanel's text; any other value (or none) leaves the type's own templates."""
    renderer = Renderer(CATALOG, templates_dir=None, hostname="test.example.com")
    data = {"subject": "From WHM", "body": "Text from WHM."}
    for marker, bridged_text in [("cpanel", True), ("other", False), (None, False)]:
        extra = {} if marker is None else {"_bridge": marker}
        event = bridged("Backup/Failure", {**data, **extra})
        message = renderer.render(event, importance=Importance.HIGH, recipient=ROOT)
        assert ("Text from WHM." in message.text) is bridged_text, marker


def test_a_bridged_event_without_subject_or_body_still_reads_well() -> None:
    """WHM always sends both, but a hand-made post may not: the subject names the event, the text says none came."""
    renderer = Renderer(CATALOG, templates_dir=None, hostname="test.example.com")
    message = renderer.render(bridged("Custom/Thing", {"_bridge": "cpanel"}), importance=Importance.LOW, recipient=ROOT)
    assert message.subject == "[whm1.example.com] Custom notice: Thing"
    assert "whm1.example.com posted this notice without a text." in message.text
    assert "(not given)" not in message.text and "(not given)" not in message.html


# -- the token in logs -----------------------------------------------------------------------------------------


class DebugDaemon(DaemonProcess):
    """`python -m dispatcher --debug run -c FILE`: the daemon at its most talkative."""

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "dispatcher", "--debug", "run", "-c", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.config_path.parent,
            )
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


async def raw_request(port: int, request: bytes) -> bytes:
    """Send `request` as it is (aiohttp's client would refuse to send a malformed one) and read the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(5):
            return await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()


# Requests aiohttp's parser refuses, each with the token in the part its error message quotes.
MALFORMED = [
    f"POST {BRIDGE}?token={API_TOKEN}\x01 HTTP/1.1\r\nHost: x\r\n\r\n",  # a control character in the query
    f"POST {BRIDGE}?token={API_TOKEN} HTTP/9.9\r\nHost: x\r\n\r\n",  # a bad version: the whole request line
    f"POST {BRIDGE}?token={API_TOKEN}{'a' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n",  # a request line too long
    f"POST {BRIDGE} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_TOKEN}\x01\r\n\r\n",  # a bad header value
]


@pytest.mark.slow
async def test_the_token_never_reaches_a_log_line(
    make_config: Callable[..., Path], debug_daemon: Callable[[Path], DebugDaemon], smtp: SmtpSink
) -> None:
    """The daemon as a process with `--debug`: a post accepted and delivered, posts refused for their token and for
    their form, and requests too malformed for aiohttp (whose server logger quotes the bytes around the fault) with
    the token in the quoted part. Nothing it logged holds the token; the malformed requests are still logged, with
    the parser's reason only."""
    config = make_config(**email_to_root(smtp))
    daemon = debug_daemon(config)
    base = f"http://127.0.0.1:{daemon.http_port}"
    async with aiohttp.ClientSession() as http:
        await wait_until(lambda: _ready(http, base), timeout_s=20)
        url = f"{base}{BRIDGE}"
        accepted = await http.post(url, params={"token": API_TOKEN, "site": "dc1"}, data=WHM_FORM)
        assert accepted.status == 202
        await smtp.wait_for(1, timeout_s=10)
        assert (await http.post(url, params={"token": API_TOKEN + "x"}, data=WHM_FORM)).status == 401
        no_type = {"subject": "s", "body": "b", "token": API_TOKEN}
        assert (await http.post(url, data=no_type)).status == 400
        bad_host = {**WHM_FORM, "hostname": "a\nb", "token": API_TOKEN}
        assert (await http.post(url, params={"token": API_TOKEN}, data=bad_host)).status == 400
        assert (await http.get(url, params={"token": API_TOKEN})).status == 401  # the route takes only POST
    for request in MALFORMED:
        answer = await raw_request(daemon.http_port, request.encode("latin-1"))
        assert answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(b"\r\n", 1)[0]
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.process.wait(timeout=30) == 0
    log = daemon.logs()
    assert "event_rejected" in log and "Invalid char in url query" in log
    assert API_TOKEN not in log


async def _ready(http: aiohttp.ClientSession, base: str) -> bool:
    try:
        async with http.get(f"{base}/readyz") as answer:
            return answer.status == 200
    except aiohttp.ClientError:
        return False
