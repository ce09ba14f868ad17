"""Nothing a client sends over HTTP stops the daemon or gets a 5xx (issue 15).

Every write route (`POST /api/v1/events`, `POST /api/v1/test`, `PUT …/contact-info`, the client and contact
routes, the cPanel and WHMCS dialects) is sent hostile bodies: deep nesting, 5,000-digit numbers, NaN and
Infinity, invalid UTF-8, lone surrogates, NUL characters, dates that overflow in UTC, wrong types, ids beyond
SQLite's integers, very long strings, empty bodies, wrong or hostile Content-Types. Each must be answered in the
route's own way (REST: 4xx `{"error", "details"}`; WHMCS: HTTP 200 `{"result": "error", "message"}`; cPanel:
HTTP 200 with `event.result` 0 and a `reason`), quote bad values cut short in answers and log lines, and leave
the daemon answering good requests.

The app is the daemon's own (`http.server.build_app` on a real `Dispatcher` and store), served on loopback; the
bus is never joined, which these routes do not need.
"""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote as url_quote
from urllib.parse import urlencode

import aiohttp
import pytest
import structlog
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatcher.app import Dispatcher
from dispatcher.config import load_config
from dispatcher.http.server import answer_unexpected, build_app
from dispatcher.senders.channel_set import close_channels

from .servers import WebhookSink

TOKEN = "hostile-test-token-3b9e"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SECRET = "pb-secret-0f7a41c2d9e8"  # a Pushbullet token: it must never come back in an answer or a log line

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
CPANEL_QUERY = (
    "?cpanel_jsonapi_apiversion=2&cpanel_jsonapi_module=CustInfo&cpanel_jsonapi_func=savecontactinfo&username=bob"
)


# -- the routes --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """One write route: where it is, which dialect answers, a body it accepts, and the fields worth corrupting."""

    name: str
    method: str
    path: str
    dialect: str  # "rest", "whmcs" or "cpanel"
    fields: Mapping[str, Any]  # a well-formed body; hostile cases replace one field at a time
    form: bool = False  # the route's good requests are form bodies (the dialects), not JSON

    def good_body(self) -> dict[str, Any]:
        """A body this route accepts now, whatever was sent before (fresh addresses where they must be unique)."""
        unique = f"good-{uuid.uuid4().hex[:10]}@example.com"
        return {
            "events": {"type": "Quota/DiskWarning", "account": "bob", "data": {"used": "95%"}},
            "test": {"recipient": "root", "channel": "posturl"},
            "contact-info": {"email": "bob@example.com", "notify_disk_limit": True},
            "clients": {"email": unique, "firstname": "New"},
            "client-patch": {"firstname": "Alice"},
            "client-contacts": {"email": unique},
            "contact-patch": {"firstname": "Jo"},
            "whmcs-add": {"action": "AddContact", "clientid": "1", "email": unique},
            "whmcs-update": {"action": "UpdateContact", "contactid": "1", "firstname": "Jo"},
            "whmcs-get": {"action": "GetContacts", "clientid": "1"},
            "cpanel": {"email": "bob@example.com", "notify_disk_limit": "1"},
        }[self.name]


ROUTES = [
    Route("events", "POST", "/api/v1/events", "rest", {
        "type": "Quota/DiskWarning", "id": "ev-1", "occurred_at": "2026-11-23T10:00:00Z", "host": "h.example.com",
        "account": "bob", "client_id": 1, "data": {"used": "95%"},
    }),
    Route("test", "POST", "/api/v1/test", "rest", {"recipient": "root", "channel": "posturl"}),
    Route("contact-info", "PUT", "/api/v1/accounts/bob/contact-info", "rest", {
        "account": "bob", "email": "bob@example.com", "second_email": "bob2@example.com",
        "pushbullet_access_token": SECRET, "notify_disk_limit": True, "notify_account_login": False,
    }),
    Route("clients", "POST", "/api/v1/clients", "rest", {
        "id": 77, "email": "carol@example.com", "firstname": "Carol", "companyname": "C Ltd", "accounts": ["carol"],
        "email_preferences": {"domain": True, "invoice": False},
    }),
    Route("client-patch", "PATCH", "/api/v1/clients/1", "rest", {
        "email": "owner@example.com", "lastname": "Owner", "accounts": ["bob"], "email_preferences": {"general": 1},
    }),
    Route("client-contacts", "POST", "/api/v1/clients/1/contacts", "rest", {
        "email": "dave@example.com", "firstname": "Dave", "phonenumber": "+1 555 0100", "postcode": "AB1 2CD",
        "country": "GB", "permissions": ["profile", "invoices"], "email_preferences": {"domain": True},
        "subaccount": False,
    }),
    Route("contact-patch", "PATCH", "/api/v1/contacts/1", "rest", {
        "email": "first@example.com", "city": "Leeds", "country": "GB", "permissions": "profile,tickets",
        "subaccount": 0,
    }),
    Route("whmcs-add", "POST", "/includes/api.php", "whmcs", {
        "action": "AddContact", "clientid": 1, "email": "erin@example.com", "firstname": "Erin",
        "email_preferences[domain]": 1, "domainemails": 1, "permissions": "profile", "subaccount": 0,
    }, form=True),
    Route("whmcs-update", "POST", "/includes/api.php", "whmcs", {
        "action": "UpdateContact", "contactid": 1, "firstname": "Jo", "email_preferences": {"general": 1},
        "generalemails": 1, "country": "DE",
    }, form=True),
    Route("whmcs-get", "POST", "/includes/api.php", "whmcs", {
        "action": "GetContacts", "clientid": 1, "userid": 1, "limitstart": 0, "limitnum": 5, "email": "x@example.com",
        "subaccount": 0,
    }, form=True),
    Route("cpanel", "POST", "/json-api/cpanel" + CPANEL_QUERY, "cpanel", {
        "email": "bob@example.com", "second_email": "", "pushbullet_access_token": SECRET, "notify_disk_limit": "1",
    }, form=True),
]  # fmt: skip
ROUTE_IDS = [route.name for route in ROUTES]

# Raw JSON fragments put in place of one field's value.
HOSTILE_VALUES: dict[str, bytes] = {
    "lone surrogate": b'"\\ud800"',
    "surrogate in text": b'"bob\\udfff@example.com"',
    "NUL": b'"a\\u0000b"',
    "NUL email": b'"bob\\u0000@example.com"',
    "control": b'"a\\r\\nBcc: x@example.com"',
    "NaN": b"NaN",
    "Infinity": b"Infinity",
    "-Infinity": b"-Infinity",
    "1e999": b"1e999",
    "5,000 digits": b"1" * 5000,
    "101 digits": b"9" * 101,
    "10**30": str(10**30).encode(),
    "2**63": str(2**63).encode(),
    "-1": b"-1",
    "0": b"0",
    "float": b"1.5",
    "true": b"true",
    "null": b"null",
    "empty string": b'""',
    "superscript digit": b'"\\u00b2"',
    "array": b'["a", 1]',
    "object": b'{"a": {"b": 1}}',
    "deep": b"[" * 40 + b"]" * 40,
    "very deep": b"[" * 5000 + b"]" * 5000,
    "10,000 chars": b'"' + b"x" * 10_000 + b'"',
    "10,000-char email": b'"' + b"a" * 10_000 + b'@example.com"',
    "overflowing date": b'"9999-12-31T23:59:59-01:00"',
    "tiny date": b'"0001-01-01T00:00:00+01:00"',
    "invalid UTF-8": b'"\xff\xfe"',
    "overlong UTF-8": b'"\xc0\xaf"',
}

# Whole bodies, each refused by every route.
HOSTILE_BODIES: dict[str, bytes] = {
    "empty": b"",
    "whitespace": b" \r\n\t ",
    "deep arrays": b"[" * 100_000,
    "deep objects": b'{"a":' * 5000 + b"1" + b"}" * 5000,
    "5,000-digit number": b"1" * 5000,
    "NaN": b"NaN",
    "1e999": b"1e999",
    "lone surrogate string": b'"\\ud800"',
    "invalid UTF-8": b"\xff\xfe\xfd",
    "truncated": b'{"type": "A/B", "data": {',
    "null": b"null",
    "array": b"[1, 2]",
    "string": b'"hello"',
    "NUL bytes": b"\x00" * 64,
    "utf-16": '{"type": "A/B"}'.encode("utf-16"),
}

# Content-Types the hostile bodies go with; None sends no Content-Type at all.
CONTENT_TYPES: tuple[str | None, ...] = (
    JSON,
    FORM,
    f"{FORM}; charset=unicode_escape",
    f"{FORM}; charset=no-such-charset",
    "multipart/form-data; boundary=x",
    "multipart/form-data",
    "text/plain",
    None,
)

# Form bodies for the dialects (and as wrong-type bodies for the rest).
HOSTILE_FORMS: dict[str, tuple[bytes, str]] = {
    "invalid UTF-8 value": (b"email=\xff\xfe&notify_disk_limit=1", FORM),
    "invalid UTF-8 name": (b"\xff=1", FORM),
    "percent invalid UTF-8": (b"email=%ff%fe", FORM),
    "percent surrogate": (b"email=%ed%a0%80", FORM),
    "NUL in value": (b"email=bob%00@example.com", FORM),
    "NUL in name": (b"ema%00il=1", FORM),
    "NUL in token": (b"pushbullet_access_token=" + SECRET.encode() + b"%00", FORM),
    "unicode_escape charset": (b"email=\\ud800@example.com", f"{FORM}; charset=unicode_escape"),
    "unknown charset": (b"email=a@example.com", f"{FORM}; charset=klingon"),
    "utf-16 charset": ("email=a@example.com".encode("utf-16"), f"{FORM}; charset=utf-16"),
    "10,000-char value": (b"email=" + b"a" * 10_000 + b"%40example.com", FORM),
    "10,000-char name": (b"x" * 10_000 + b"=1", FORM),
    "many fields": (b"&".join(b"f%d=1" % i for i in range(5000)), FORM),
    "multipart garbage": (b"--x\r\ngarbage\r\n\r\n--x--\r\n", "multipart/form-data; boundary=x"),
    "multipart no boundary": (b"--x\r\n\r\n", "multipart/form-data"),
    "multipart no name": (
        b"--x\r\nContent-Disposition: form-data\r\n\r\nv\r\n--x--\r\n",
        "multipart/form-data; boundary=x",
    ),
    "multipart file": (
        b'--x\r\nContent-Disposition: form-data; name="email"; filename="a.txt"\r\n\r\nhi\r\n--x--\r\n',
        "multipart/form-data; boundary=x",
    ),
    "multipart surrogate charset": (
        b'--x\r\nContent-Disposition: form-data; name="email"\r\nContent-Type: text/plain; charset=unicode_escape'
        b"\r\n\r\n\\ud800@example.com\r\n--x--\r\n",
        "multipart/form-data; boundary=x",
    ),
    "multipart unknown charset": (
        b'--x\r\nContent-Disposition: form-data; name="email"\r\nContent-Type: text/plain; charset=klingon'
        b"\r\n\r\na@example.com\r\n--x--\r\n",
        "multipart/form-data; boundary=x",
    ),
    "multipart invalid UTF-8": (
        b'--x\r\nContent-Disposition: form-data; name="email"\r\n\r\n\xff\xfe\r\n--x--\r\n',
        "multipart/form-data; boundary=x",
    ),
    "multipart NUL": (
        b'--x\r\nContent-Disposition: form-data; name="firstname"\r\n\r\na\x00b\r\n--x--\r\n',
        "multipart/form-data; boundary=x",
    ),
    "multipart nested": (
        b"--x\r\nContent-Type: multipart/mixed; boundary=y\r\n\r\n--y\r\n\r\nz\r\n--y--\r\n--x--\r\n",
        "multipart/form-data; boundary=x",
    ),
}  # fmt: skip


# -- the app -----------------------------------------------------------------------------------------------------


@dataclass
class Answer:
    """One response: status, Content-Type, the body's text, and the body decoded when it is JSON."""

    status: int
    content_type: str
    text: str
    body: Any = None


@dataclass
class HostileApi:
    """The daemon's HTTP app on loopback, a client session, and the webhook the system contact `root` posts to."""

    base_url: str
    session: aiohttp.ClientSession
    dispatcher: Dispatcher
    sink: WebhookSink

    async def send(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        auth: bool = True,
    ) -> Answer:
        """Send `body` as it is, with exactly the Content-Type given (none when None)."""
        all_headers = {**(AUTH if auth else {}), **(headers or {})}
        data: bytes | io.BytesIO | None = body
        if body is not None and len(body) > 64 * 1024:
            data = io.BytesIO(body)  # aiohttp warns that large raw bytes would be written in one go
        skip = ()
        if content_type is None:
            skip = ("Content-Type",)
        else:
            all_headers["Content-Type"] = content_type
        async with self.session.request(
            method, self.base_url + path, data=data, headers=all_headers, skip_auto_headers=skip
        ) as response:
            raw = await response.read()
            text = raw.decode("utf-8", "replace")
            decoded = json.loads(raw) if response.content_type == JSON and raw else None
            return Answer(response.status, response.content_type, text, decoded)

    async def send_route(self, route: Route, body: bytes | None, content_type: str | None) -> Answer:
        """`send` to the route. A WHMCS body without an action gets the route's from the query string."""
        path = route.path
        if route.dialect == "whmcs":
            path += f"?action={route.fields['action']}"
        return await self.send(route.method, path, body, content_type)

    async def good(self, route: Route) -> Answer:
        """The route's good request (`Route.good_body`), as a form for the dialects and JSON for the rest."""
        body = route.good_body()
        if route.form:
            return await self.send(route.method, route.path, urlencode(body).encode(), FORM)
        return await self.send(route.method, route.path, json.dumps(body).encode(), JSON)


def write_config(tmp_path: Path, webhook_url: str) -> Path:
    """A config whose system contact `root` posts to `webhook_url`; the bus URL is never dialled."""
    (tmp_path / "api.token").write_text(TOKEN + "\n")
    config = {
        "hostname": "hostile.example.com",
        "bus": {"url": "mqtt://127.0.0.1:9", "client_id": "hostile-test"},
        "http": {"listen": "127.0.0.1:0", "token_file": "api.token"},
        "store": {"path": "dispatcher.db"},
        "delivery": {"workers": 0},
        "contacts": {"root": {"posturl": [f"{webhook_url}/hook"]}},
    }
    path = tmp_path / "dispatcher.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture
async def hostile_api(tmp_path: Path) -> AsyncIterator[HostileApi]:
    """The daemon's own HTTP app (every route and middleware) on a fresh store, with client 1 (owning account
    `bob`) and its contact 1 already made."""
    async with WebhookSink() as sink:
        dispatcher = Dispatcher(load_config(write_config(tmp_path, sink.url)))
        await dispatcher.store.open()
        server = TestServer(build_app(dispatcher), host="127.0.0.1")
        await server.start_server()
        try:
            async with aiohttp.ClientSession() as session:
                api = HostileApi(f"http://127.0.0.1:{server.port}", session, dispatcher, sink)
                client = await api.send(
                    "POST",
                    "/api/v1/clients",
                    json.dumps({"id": 1, "email": "owner@example.com", "accounts": ["bob"]}).encode(),
                    JSON,
                )
                assert client.status == 201, client.text
                contact = await api.send(
                    "POST", "/api/v1/clients/1/contacts", json.dumps({"email": "first@example.com"}).encode(), JSON
                )
                assert contact.status == 201 and contact.body["id"] == 1, contact.text
                yield api
        finally:
            await server.close()
            await close_channels(list(dispatcher.pipeline.channels.values()))
            await dispatcher.store.close()


# -- what an answer must look like -------------------------------------------------------------------------------


def answer_problem(route: Route, answer: Answer, *, refused: bool) -> str | None:
    """What is wrong with `answer` for this route, or None. `refused`: the request must have been refused.

    REST: below 500; a 4xx other than aiohttp's own 413 is JSON `{"error": str, "details": [str]}`. WHMCS: HTTP
    200 and `{"result": "success"|"error"}`, an error with a string `message`. cPanel: HTTP 200 and a
    `cpanelresult` whose `event.result` is 1, or 0 with a string `reason`. Every message is short.
    """
    if answer.status >= 500:
        return f"HTTP {answer.status}: {answer.text[:200]}"
    if SECRET in answer.text:
        return "the Pushbullet token came back"
    if route.dialect == "rest":
        if answer.status == 413:
            return None
        if refused and not 400 <= answer.status < 500:
            return f"HTTP {answer.status} for a refused request: {answer.text[:200]}"
        if answer.status >= 400:
            body = answer.body
            if not (isinstance(body, dict) and isinstance(body.get("error"), str)):
                return f"HTTP {answer.status} without a JSON error: {answer.text[:200]}"
            if not (isinstance(body.get("details"), list) and all(isinstance(d, str) for d in body["details"])):
                return f"details is not a list of strings: {answer.text[:200]}"
            return _long_message([body["error"], *body["details"]])
        return None
    if answer.status != 200 or not isinstance(answer.body, dict):
        return f"HTTP {answer.status} {answer.content_type} from the {route.dialect} dialect: {answer.text[:200]}"
    if route.dialect == "whmcs":
        result = answer.body.get("result")
        if result == "success" and not refused:
            return None
        if result != "error" or not isinstance(answer.body.get("message"), str):
            return f"not a WHMCS error: {answer.text[:200]}"
        return _long_message(answer.body["message"].split("; "))
    envelope = answer.body.get("cpanelresult")
    event = envelope.get("event") if isinstance(envelope, dict) else None
    if not isinstance(event, dict) or event.get("result") not in (0, 1):
        return f"not a cpanelresult: {answer.text[:200]}"
    if event["result"] == 1 and not refused:
        return None
    if event["result"] != 0 or not isinstance(event.get("reason"), str):
        return f"not a cPanel failure: {answer.text[:200]}"
    if len(envelope.get("func", "")) > 41 or len(envelope.get("module", "")) > 41:
        return f"func or module echoed in full: {answer.text[:200]}"
    return _long_message(event["reason"].split("; "))


def _long_message(messages: list[str]) -> str | None:
    """A message line over 300 characters: a bad value was quoted in full."""
    long = [message for message in messages if len(message) > 300]
    return f"a message of {len(long[0])} characters: {long[0][:120]}…" if long else None


def body_with(route: Route, name: str, fragment: bytes) -> bytes:
    """The route's fields as a JSON object, the field `name` holding the raw JSON `fragment`."""
    parts = [
        json.dumps(key).encode() + b": " + (fragment if key == name else json.dumps(value).encode())
        for key, value in route.fields.items()
    ]
    if name not in route.fields:
        parts.append(json.dumps(name).encode() + b": " + fragment)
    return b"{" + b", ".join(parts) + b"}"


async def assert_still_serving(api: HostileApi, route: Route) -> None:
    """The route's good request succeeds, and `/healthz` answers."""
    answer = await api.good(route)
    if route.dialect == "whmcs":
        assert answer.status == 200 and answer.body["result"] == "success", answer.text
    elif route.dialect == "cpanel":
        assert answer.status == 200 and answer.body["cpanelresult"]["event"]["result"] == 1, answer.text
    else:
        assert answer.status in (200, 201, 202), answer.text
    health = await api.send("GET", "/healthz", auth=False)
    assert health.status == 200


# -- the table ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
async def test_hostile_bodies_are_refused_in_the_routes_own_shape(hostile_api: HostileApi, route: Route) -> None:
    """Every whole-body hostile input (empty, deep, huge numbers, NaN, invalid UTF-8, lone surrogates, NUL bytes,
    not an object) with every Content-Type (JSON, form, hostile charsets, multipart, text, none) is refused: REST
    4xx with `{"error", "details"}`, WHMCS `result: error`, cPanel `event.result` 0; then a good request works."""
    failures = []
    for body_name, body in HOSTILE_BODIES.items():
        for content_type in CONTENT_TYPES:
            answer = await hostile_api.send_route(route, body, content_type)
            problem = answer_problem(route, answer, refused=_refused(route, body, content_type))
            if problem:
                failures.append(f"{body_name} as {content_type}: {problem}")
    assert not failures, "\n".join(failures)
    await assert_still_serving(hostile_api, route)


def _refused(route: Route, body: bytes, content_type: str | None) -> bool:
    """Whether a route must refuse a hostile whole body. A dialect makes the query string's call when the body is
    blank. WHMCS reads a body only as JSON or a form (another type leaves the query's call), and ignores names it
    does not know, which is what JSON text read as a UTF-8 form mostly is."""
    if route.dialect == "rest":
        return True
    if not body.strip():
        return False
    if route.dialect == "whmcs":
        return content_type is not None and content_type != FORM and content_type.startswith((JSON, FORM, "multipart/"))
    return True


@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
async def test_hostile_values_in_each_field_never_get_a_5xx(hostile_api: HostileApi, route: Route) -> None:
    """Each field of a well-formed body (and one unknown field) holding each hostile value (lone surrogates, NUL,
    NaN, 1e999, 5,000 digits, 10**30, wrong types, nesting, 10,000 characters, an overflowing date, invalid
    UTF-8) is answered below 500 in the route's shape, with short messages; then a good request works."""
    failures = []
    for name in [*route.fields, "surplus"]:
        for value_name, fragment in HOSTILE_VALUES.items():
            body = body_with(route, name, fragment)
            answer = await hostile_api.send_route(route, body, JSON)
            problem = answer_problem(route, answer, refused=False)
            if problem:
                failures.append(f"{name} = {value_name}: {problem}")
    assert not failures, "\n".join(failures)
    await assert_still_serving(hostile_api, route)


@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
async def test_hostile_forms_never_get_a_5xx(hostile_api: HostileApi, route: Route) -> None:
    """Form and multipart bodies that are not UTF-8, declare a hostile or unknown charset, carry NUL or (through
    a charset) lone surrogates, upload a file, or break the multipart framing are answered below 500 in the
    route's shape; the dialects refuse each of them. Then a good request works."""
    failures = []
    for form_name, (body, content_type) in HOSTILE_FORMS.items():
        answer = await hostile_api.send_route(route, body, content_type)
        refused = route.dialect != "rest" and form_name in _FORMS_THE_DIALECTS_REFUSE
        problem = answer_problem(route, answer, refused=refused)
        if problem:
            failures.append(f"{form_name}: {problem}")
    assert not failures, "\n".join(failures)
    await assert_still_serving(hostile_api, route)


# Forms no dialect can use: unreadable, a refused charset, a file, or a NUL or lone surrogate in a name or value.
# The others are readable and merely odd (U+FFFD is a character, WHMCS ignores names it does not know): a dialect
# may take them or refuse them for its own reasons, in its shape either way.
_FORMS_THE_DIALECTS_REFUSE = frozenset(HOSTILE_FORMS) - {
    "percent invalid UTF-8", "percent surrogate", "10,000-char value", "10,000-char name", "many fields",
}  # fmt: skip


# -- specific answers --------------------------------------------------------------------------------------------


async def test_rest_routes_answer_400_for_unreadable_json_and_422_for_bad_fields(hostile_api: HostileApi) -> None:
    """The REST contact routes: a body the decoder refuses is 400 with the decoder's reason; NUL in an email or
    a name and an id beyond SQLite's integers are 422 naming the field; nothing is stored."""
    cases = [
        (b'{"email": "\\ud800@example.com"}', 400, "lone surrogate"),
        (b'{"email": "a@example.com", "firstname": ' + b"[" * 100 + b"]" * 100 + b"}", 400, "nests"),
        (b'{"email": "a@example.com", "id": ' + b"1" * 5000 + b"}", 400, "digits"),
        (b'{"email": "a@example.com", "id": NaN}', 400, "NaN"),
        (b'{"email": "a@example.com", "id": 1e999}', 400, "out of range"),
        (b'{"email": "a\xff@example.com"}', 400, "not UTF-8"),
        (b'{"email": "a\\u0000b@example.com"}', 422, "email: contains control characters"),
        (b'{"email": "a@example.com", "firstname": "a\\u0000b"}', 422, "firstname: contains control characters"),
        (b'{"email": "a@example.com", "id": ' + str(10**30).encode() + b"}", 422, "id: expected an integer"),
        (b'{"email": "a@example.com", "id": ' + str(2**63).encode() + b"}", 422, "id: expected an integer"),
        (b'{"email": "a@example.com", "accounts": ["a\\u0000b"]}', 422, "is not an account name"),
        (b"", 400, "empty"),
    ]
    for body, status, words in cases:
        answer = await hostile_api.send("POST", "/api/v1/clients", body, JSON)
        assert answer.status == status, (body[:80], answer.text)
        assert words in answer.text, (body[:80], answer.text)
    listed = await hostile_api.dispatcher.store.run(lambda conn: conn.execute("SELECT id FROM clients").fetchall())
    assert listed == [(1,)]
    answer = await hostile_api.send("GET", f"/api/v1/clients/{10**30}")
    assert answer.status == 404
    answer = await hostile_api.send("GET", "/api/v1/clients/%C2%B2")  # "²" is a digit to str.isdigit, not to int()
    assert answer.status == 404


async def test_events_with_overflowing_dates_nul_and_huge_ids_are_400(hostile_api: HostileApi) -> None:
    """`POST /api/v1/events`: an `occurred_at` that overflows once converted to UTC, a NUL in `account`, `id` or
    `host`, a `client_id` beyond SQLite's integers and a lone surrogate in `data` are each 400 with details; the
    event after them is accepted."""
    bodies = [
        {"type": "A/B", "occurred_at": "9999-12-31T23:59:59-01:00"},
        {"type": "A/B", "account": "bo\u0000b"},
        {"type": "A/B", "id": "ev\u0000"},
        {"type": "A/B", "host": "h\u0000.example.com"},
        {"type": "A/B", "client_id": 10**30},
        {"type": "A/B", "client_id": 2**63},
    ]
    for body in bodies:
        answer = await hostile_api.send("POST", "/api/v1/events", json.dumps(body).encode(), JSON)
        assert answer.status == 400 and answer.body["details"], (body, answer.text)
    answer = await hostile_api.send("POST", "/api/v1/events", b'{"type": "A/B", "data": {"x": "\\udc00"}}', JSON)
    assert answer.status == 400 and "surrogate" in answer.body["error"], answer.text
    await assert_still_serving(hostile_api, ROUTES[0])


async def test_whmcs_answers_its_own_errors_for_unusable_input(hostile_api: HostileApi) -> None:
    """WHMCS: an id beyond SQLite's integers is "Client ID Not Found" / "Contact ID Not Found", a NUL or a
    surrogate (through a form charset) is a message naming the parameter, an unreadable JSON body says why;
    all with HTTP 200."""
    cases: list[tuple[bytes, str, str]] = [
        (urlencode({"action": "AddContact", "clientid": str(10**30), "email": "a@example.com"}).encode(), FORM,
         "Client ID Not Found"),
        (json.dumps({"action": "AddContact", "clientid": 10**30, "email": "a@example.com"}).encode(), JSON,
         "Client ID Not Found"),
        (json.dumps({"action": "UpdateContact", "contactid": 2**63, "firstname": "x"}).encode(), JSON,
         "Contact ID Not Found"),
        (json.dumps({"action": "DeleteContact", "contactid": "\u00b2"}).encode(), JSON, "Contact ID Not Found"),
        (b"action=AddContact&clientid=1&email=a%00b%40example.com", FORM, "email: contains a NUL character"),
        (b"action=AddContact&clientid=1&email=\\ud800", f"{FORM}; charset=unicode_escape", "charset"),
        (b'{"action": "AddContact", "clientid": 1, "email": "\\ud800"}', JSON, "lone surrogate"),
        (b'{"action": "GetContacts", "limitstart": ' + str(10**30).encode() + b"}", JSON, "limitstart"),
        (b"action=GetContacts&limitnum=" + b"9" * 50, FORM, "limitnum"),
        (b"action=AddContact&clientid=1&email=\xff", FORM, "not a readable form"),
    ]  # fmt: skip
    for body, content_type, words in cases:
        answer = await hostile_api.send("POST", "/includes/api.php", body, content_type)
        assert answer.status == 200 and answer.body["result"] == "error", (body[:80], answer.text)
        assert words in answer.body["message"], (body[:80], answer.text)


async def test_cpanel_answers_failures_in_its_envelope(hostile_api: HostileApi) -> None:
    """cPanel: a NUL in a parameter, a lone surrogate through a multipart part's charset, an unreadable form and
    a JSON body are each `event.result` 0 with a reason, HTTP 200; an overlong func is echoed cut short."""
    path = "/json-api/cpanel" + CPANEL_QUERY
    multipart = (
        b'--x\r\nContent-Disposition: form-data; name="email"\r\nContent-Type: text/plain; charset=unicode_escape'
        b"\r\n\r\n\\ud800@example.com\r\n--x--\r\n"
    )
    cases = [
        (b"email=a%00b%40example.com", FORM, "email: contains a NUL character"),
        (multipart, "multipart/form-data; boundary=x", "email: is not valid Unicode"),
        (b"email=\xff", FORM, "not a readable form"),
        (b'{"email": "a@example.com"}', JSON, "query string or as a form body"),
    ]
    for body, content_type, words in cases:
        answer = await hostile_api.send("POST", path, body, content_type)
        assert answer.status == 200, answer.text
        event = answer.body["cpanelresult"]["event"]
        assert event["result"] == 0 and words in event["reason"], (body[:80], answer.text)
    answer = await hostile_api.send(
        "GET", "/json-api/cpanel?cpanel_jsonapi_module=CustInfo&cpanel_jsonapi_func=" + "f" * 5000
    )
    result = answer.body["cpanelresult"]
    assert result["event"]["result"] == 0 and len(result["func"]) <= 40 and len(answer.text) < 600, answer.text


async def test_a_body_over_the_size_limit_is_413_or_the_dialects_error(hostile_api: HostileApi) -> None:
    """A body over the server's 1 MiB limit: aiohttp's 413 on the REST routes (not swallowed into a 500), a
    WHMCS error and a cPanel failure on the dialects."""
    big = b"x" * (1024 * 1024 + 10)
    answer = await hostile_api.send("PUT", "/api/v1/accounts/bob/contact-info", big, JSON)
    assert answer.status == 413
    answer = await hostile_api.send("POST", "/api/v1/events", big, JSON)
    assert answer.status == 413
    answer = await hostile_api.send("POST", "/includes/api.php?action=AddContact", b"email=" + big, FORM)
    assert answer.status == 200 and answer.body["result"] == "error" and "413" in answer.body["message"]
    answer = await hostile_api.send("POST", "/json-api/cpanel" + CPANEL_QUERY, b"email=" + big, FORM)
    assert answer.status == 200 and answer.body["cpanelresult"]["event"]["result"] == 0
    await assert_still_serving(hostile_api, ROUTES[2])


async def test_a_non_utf8_authorization_header_is_401(hostile_api: HostileApi) -> None:
    """A bearer token with bytes that are not UTF-8 (aiohttp hands them over as lone surrogates) is a wrong
    token, 401, not a 500 from encoding it for the comparison."""
    reader, writer = await asyncio.open_connection("127.0.0.1", int(hostile_api.base_url.rsplit(":", 1)[1]))
    try:
        writer.write(
            b"GET /api/v1/deliveries HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe" + TOKEN.encode()
            + b"\r\nConnection: close\r\n\r\n"
        )  # fmt: skip
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    assert response.startswith(b"HTTP/1.1 401"), response[:200]


async def test_test_route_quotes_names_cut_short(hostile_api: HostileApi) -> None:
    """`POST /api/v1/test`: an unknown system contact is 404 and an unknown channel 400, each quoting the name
    cut to about 40 characters; a malformed account name or a NUL is 400; the good request still sends."""
    long_name = "n" * 150
    cases = [
        ({"recipient": long_name, "channel": "posturl"}, 404),
        ({"recipient": "root", "channel": long_name}, 400),
        ({"recipient": "account:" + "b" * 150 + "!", "channel": "email"}, 400),
        ({"recipient": "ro\u0000ot", "channel": "email"}, 400),
        ({"recipient": "root", "channel": "x" * 10_000}, 400),
        ({"recipient": ["root"], "channel": {"a": 1}}, 400),
    ]
    for body, status in cases:
        answer = await hostile_api.send("POST", "/api/v1/test", json.dumps(body).encode(), JSON)
        assert answer.status == status, (body, answer.text)
        assert len(answer.text) < 400 and "n" * 60 not in answer.text, answer.text
    answer = await hostile_api.good(ROUTES[1])
    assert answer.status == 200 and answer.body["ok"], answer.text
    assert len(hostile_api.sink.requests) == 1


@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
async def test_long_bad_values_are_quoted_cut_short_in_answers_and_logs(hostile_api: HostileApi, route: Route) -> None:
    """A 10,000-character bad value in any field (or as an unknown field's name) gives error messages under 300
    characters, and no log line quotes more than a couple of hundred characters of it; the Pushbullet token
    appears in neither."""
    bad_values = [
        "x" * 10_000,
        "a" * 10_000 + "@example.com",
        "bad email " + "y" * 10_000,
        "not-a-bool-" + "z" * 10_000,
        "2026-11-23T10:00:00Z" + "0" * 10_000,
    ]
    with structlog.testing.capture_logs() as logs:
        failures = []
        for name in [*route.fields, "u" * 10_000]:
            for value in bad_values:
                fields = {**route.fields, name: value}
                if route.form:
                    body, content_type = urlencode({k: str(v) for k, v in fields.items()}).encode(), FORM
                else:
                    body, content_type = json.dumps(fields).encode(), JSON
                answer = await hostile_api.send_route(route, body, content_type)
                problem = answer_problem(route, answer, refused=False)
                if problem:
                    failures.append(f"{name[:20]} = {value[:20]}…: {problem}")
    assert not failures, "\n".join(failures)
    for entry in logs:
        line = repr(entry)
        assert len(line) < 2000, line[:300]
        assert not any(letter * 250 in line for letter in "xayzu0"), line[:300]
        assert SECRET not in line


async def test_secrets_never_come_back_when_refused(hostile_api: HostileApi) -> None:
    """A Pushbullet token that is refused (a NUL in it, too long, bad characters) is never quoted: not in the
    REST answer, the cPanel reason, the WHMCS message, nor any log line."""
    with structlog.testing.capture_logs() as logs:
        for token in (SECRET + "\u0000", SECRET + "!" * 300, SECRET + " space", SECRET * 20):
            body = json.dumps({"pushbullet_access_token": token}).encode()
            answer = await hostile_api.send("PUT", "/api/v1/accounts/bob/contact-info", body, JSON)
            assert answer.status == 422 and SECRET not in answer.text, answer.text
            form = urlencode({"pushbullet_access_token": token}).encode()
            answer = await hostile_api.send("POST", "/json-api/cpanel" + CPANEL_QUERY, form, FORM)
            assert answer.body["cpanelresult"]["event"]["result"] == 0 and SECRET not in answer.text, answer.text
        form = urlencode({"action": "AddContact", "clientid": "1", "password2": SECRET + "\u0000"}).encode()
        answer = await hostile_api.send("POST", "/includes/api.php", form, FORM)
        assert answer.body["result"] == "error" and SECRET not in answer.text, answer.text
        answer = await hostile_api.send(
            "POST", "/includes/api.php", b'{"action": "AddContact", "clientid": 1, "password2": "' + SECRET.encode()
            + b'\\ud800"}', JSON,
        )  # fmt: skip
        assert answer.body["result"] == "error" and SECRET not in answer.text, answer.text
        body = b'{"pushbullet_access_token": "' + SECRET.encode() + b'\\ud800"}'
        answer = await hostile_api.send("PUT", "/api/v1/accounts/bob/contact-info", body, JSON)
        assert answer.status == 400 and SECRET not in answer.text, answer.text
        assert "pushbullet_access_token" in answer.text, "the refusal names where the bad string is"
    assert not [entry for entry in logs if SECRET in repr(entry)]


async def test_a_limit_that_is_a_digit_but_not_a_number_is_400(hostile_api: HostileApi) -> None:
    """`limit=²` ("²".isdigit() is true, int() refuses it) and an absurdly long limit are bad queries, not 500s."""
    for limit in ("²", "9" * 5000):
        answer = await hostile_api.send("GET", f"/api/v1/deliveries?limit={limit}", b"", JSON)
        assert answer.status == 400, answer.text


async def test_the_last_line_of_defence_answers_500_and_lets_aiohttps_4xx_through() -> None:
    """`answer_unexpected`: an exception a handler did not expect is a JSON 500 and one `http_request_failed` log
    line with the error cut short and a file:line stack, never the request's data; aiohttp's own 400 and 413
    pass through unchanged."""

    async def boom(request: web.Request) -> web.Response:
        raise ValueError("v" * 10_000)

    async def too_big(request: web.Request) -> web.Response:
        raise web.HTTPRequestEntityTooLarge(max_size=1, actual_size=2)

    async def bad(request: web.Request) -> web.Response:
        raise web.HTTPBadRequest(text="bad request")

    app = web.Application(middlewares=[answer_unexpected])
    app.router.add_post("/boom", boom)
    app.router.add_post("/too-big", too_big)
    app.router.add_post("/bad", bad)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            with structlog.testing.capture_logs() as logs:
                async with session.post(server.make_url("/boom"), data=SECRET) as response:
                    assert response.status == 500
                    assert await response.json() == {
                        "error": "internal error: the request was not completed", "details": [],
                    }  # fmt: skip
            (entry,) = [entry for entry in logs if entry["event"] == "http_request_failed"]
            assert entry["error_type"] == "ValueError" and len(entry["error"]) <= 200
            assert entry["path"] == "'/boom'" and any("boom" in frame for frame in entry["frames"])
            assert "v" * 250 not in repr(entry) and SECRET not in repr(entry)
            # Through structlog's own renderer too (its console renderer gives some keys a meaning of its own).
            async with session.post(server.make_url("/boom")) as response:
                assert response.status == 500 and (await response.json())["error"].startswith("internal error")
            async with session.post(server.make_url("/too-big")) as response:
                assert response.status == 413
            async with session.post(server.make_url("/bad")) as response:
                assert response.status == 400 and await response.text() == "bad request"
    finally:
        await server.close()


# -- properties --------------------------------------------------------------------------------------------------

FIELD_NAMES = sorted({name for route in ROUTES for name in route.fields} | {"id", "client_id", "recipient"})
_hostile_text = st.one_of(
    st.text(max_size=30),
    st.text(st.characters(codec=None, categories=["Cs", "Cc", "Lu", "Nd", "No", "Zs"]), max_size=10),
    st.sampled_from(["\ud800", "\x00", "bob@example.com", "1", "0", "on", "9999-12-31T23:59:59-01:00", "A/B", "²"]),
    st.text(min_size=300, max_size=2000),
)
_json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**200), max_value=10**200),
    st.floats(allow_nan=True, allow_infinity=True),
    _hostile_text,
)
_json_value = st.recursive(
    _json_leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_hostile_text, inner, max_size=4)),
    max_leaves=12,
)
_json_object = st.dictionaries(st.one_of(st.sampled_from(FIELD_NAMES), _hostile_text), _json_value, max_size=8)
_content_type = st.sampled_from(CONTENT_TYPES)
_PROPERTY_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _json_bytes(value: Any) -> bytes:
    """JSON text of `value` as Python writes it: NaN and Infinity as such, lone surrogates as `\\udXXX` escapes."""
    return json.dumps(value, allow_nan=True).encode("ascii")


def _form_bytes(value: Mapping[str, Any]) -> bytes:
    """A form body of `value`'s keys and `str()` of its values, lone surrogates percent-encoded as their bytes."""
    return "&".join(
        f"{url_quote(str(k).encode('utf-8', 'surrogatepass'))}={url_quote(str(v).encode('utf-8', 'surrogatepass'))}"
        for k, v in value.items()
    ).encode()


async def _run_property(api: HostileApi, check: Any) -> None:
    """Run a hypothesis test in a worker thread; its examples send their requests on this test's loop."""
    await asyncio.to_thread(check)
    for route in ROUTES:
        await assert_still_serving(api, route)


async def test_arbitrary_bytes_never_get_a_5xx(hostile_api: HostileApi) -> None:
    """Arbitrary bytes with any of the Content-Types, to every write route: always below 500, in the route's
    shape; afterwards every route still takes its good request."""
    loop = asyncio.get_running_loop()

    @_PROPERTY_SETTINGS
    @given(body=st.binary(max_size=512), content_type=_content_type)
    def check(body: bytes, content_type: str | None) -> None:
        for route in ROUTES:
            answer = asyncio.run_coroutine_threadsafe(hostile_api.send_route(route, body, content_type), loop).result(
                30
            )
            problem = answer_problem(route, answer, refused=False)
            assert problem is None, f"{route.name}: {problem}"

    await _run_property(hostile_api, check)


async def test_arbitrary_json_and_forms_never_get_a_5xx(hostile_api: HostileApi) -> None:
    """Arbitrary JSON values and objects (field names the routes know, hostile strings, NaN, huge integers, deep
    values), sent as JSON to every route and as a form to the dialects: always below 500, in the route's
    shape; afterwards every route still takes its good request."""
    loop = asyncio.get_running_loop()

    @_PROPERTY_SETTINGS
    @given(value=st.one_of(_json_object, _json_value), as_form=st.booleans())
    def check(value: Any, as_form: bool) -> None:
        for route in ROUTES:
            if as_form and isinstance(value, dict):
                if not route.form:
                    continue
                body, content_type = _form_bytes(value), FORM
            else:
                body, content_type = _json_bytes(value), JSON
            answer = asyncio.run_coroutine_threadsafe(hostile_api.send_route(route, body, content_type), loop).result(
                30
            )
            problem = answer_problem(route, answer, refused=False)
            assert problem is None, f"{route.name}: {problem}"

    await _run_property(hostile_api, check)
