"""Digests (SPEC §8a, issue 19): the events of one group to one address go out as one message.

The config section and its errors, the grouping, the digest's message on each channel, and the daemon end to end
with real sinks: a burst becomes one email, later events one more at the interval's end, a digest waiting across
SIGKILL arrives once, a failed digest is retried as the same digest, and the store's migration to version 3.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import pytest
from structlog.testing import capture_logs

from dispatcher import contacts, outbox
from dispatcher.catalog import load_catalog
from dispatcher.channels.email import EmailChannel
from dispatcher.channels.posturl import PostUrlChannel
from dispatcher.config import parse_config
from dispatcher.digests.grouping import find_rule, group_key, group_labels
from dispatcher.digests.records import (
    MAX_MEMBERS,
    Joining,
    due_text,
    hold,
    mark_failed,
    mark_sent,
    next_due,
    recover,
    take_due,
)
from dispatcher.digests.render import DigestJob, DigestRenderer
from dispatcher.digests.rules import DigestRule
from dispatcher.digests.schema import SCHEMA as DIGESTS_SCHEMA
from dispatcher.errors import ConfigError
from dispatcher.events import Event
from dispatcher.intake import dead_letters
from dispatcher.levels import Importance
from dispatcher.migrations import MIGRATIONS, SCHEMA_VERSION, upgrade
from dispatcher.outbox import NewDelivery, PendingDelivery
from dispatcher.render import Renderer
from dispatcher.routing.recipients import Recipient
from dispatcher.store import EVENTS_SCHEMA, Store, insert_events

from .conftest import RunningDaemon, connect_store, holds_for, wait_until
from .servers import FakePushbullet, SmtpSink, WebhookSink

CATALOG = load_catalog()
HOST = "test.example.com"
PUSH_TOKEN = "o.digest-token-under-test"
SYSTEM = Recipient(kind="system", name="root", targets={}, thresholds=None)
ACCOUNT = Recipient(kind="account", name="account:bob", targets={}, thresholds=None)
# "in digest 12, due 2026-12-05 10:31:05 UTC"
WAITING_REASON = re.compile(r"^in digest (\d+), due \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$")


def event(event_id: str, event_type: str = "Backup/Failure", **fields: Any) -> Event:
    now = datetime.now(UTC)
    return Event(
        id=event_id,
        type=event_type,
        occurred_at=fields.pop("occurred_at", now),
        host=fields.pop("host", "server1.example.com"),
        account=fields.pop("account", None),
        client_id=None,
        data=fields.pop("data", {}),
        received_at=now,
    )


# -- the config ------------------------------------------------------------------------------------------------


def test_digest_rules_are_read_with_their_defaults() -> None:
    """`match` is the routes' matcher, `group_by` defaults to [type], `wait_s` to 30 and `interval_s` to 300; 0 is
    a valid wait (the first event goes at once) and `[]` a valid grouping (one group)."""
    config = parse_config(
        "digests:\n"
        "  - match: {type: 'Backup/*', min_importance: medium}\n"
        "    group_by: [type, host, data.domain]\n"
        "    wait_s: 5\n"
        "    interval_s: 60\n"
        "  - {}\n"
        "  - {wait_s: 0, group_by: []}\n"
    )
    first, second, third = config.digests
    assert (first.match.type, first.match.min_importance) == ("Backup/*", Importance.MEDIUM)
    assert (first.group_by, first.wait_s, first.interval_s) == (("type", "host", "data.domain"), 5.0, 60.0)
    assert (second.group_by, second.wait_s, second.interval_s) == (("type",), 30.0, 300.0)
    assert (third.group_by, third.wait_s) == ((), 0.0)
    assert parse_config("hostname: h\n").digests == ()


BAD_DIGESTS = """\
hostname: h.example.com
digests:
  - match: {type: "Backup/*", colour: red}
    group_by: [type, nope, type, "data."]
    wait_s: -1
    interval_s: 0
    every: 5
  - group_by: type
  - just a string
  - wait_s: "5"
    interval_s: 100000
"""


def test_check_config_reports_every_bad_digest_key_at_its_line_and_column(tmp_path: Path) -> None:
    """`dispatcher check-config` exits 1 with one `FILE:LINE:COL: message` line per problem of `digests:`, each
    pointing at the offending key or value."""
    config = tmp_path / "bad.yaml"
    config.write_text(BAD_DIGESTS)
    result = subprocess.run(
        [sys.executable, "-m", "dispatcher", "check-config", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{config}:3:31: digests[0].match.colour: unknown key"
        " (expected one of: type, app, min_importance, account, host, data)",
        f"{config}:4:22: digests[0].group_by[1]: expected one of type, app, account, host or data.KEY, got 'nope'",
        f"{config}:4:28: digests[0].group_by[2]: type is named twice",
        f"{config}:4:34: digests[0].group_by[3]: expected data.KEY with a key, got 'data.'",
        f"{config}:5:13: digests[0].wait_s: expected a number of seconds at least 0 and at most 86400, got -1",
        f"{config}:6:17: digests[0].interval_s: expected a number of seconds above 0 and at most 86400, got 0",
        f"{config}:7:5: digests[0].every: unknown key (expected one of: match, group_by, wait_s, interval_s)",
        f"{config}:8:15: digests[1].group_by: expected a list, got 'type'",
        f"{config}:9:5: digests[2]: expected a mapping with match, group_by, wait_s and interval_s",
        f"{config}:10:13: digests[3].wait_s: expected a number of seconds, got '5'",
        f"{config}:11:17: digests[3].interval_s: expected a number of seconds above 0 and at most 86400, got 100000",
    ]


def test_a_bad_digests_section_is_refused_by_parse_config() -> None:
    """The same checks stop `load_config` (and so `run` and a reload): a ConfigError listing the issues."""
    with pytest.raises(ConfigError) as caught:
        parse_config("digests: {type: Backup/*}\n", source="c.yaml")
    assert caught.value.issues == ["c.yaml:1:10: digests: expected a list, got a mapping"]


# -- grouping --------------------------------------------------------------------------------------------------


def test_the_first_rule_that_fits_groups_an_event_by_the_values_it_names() -> None:
    """Rules are tried in order; the group key holds the rule's place and the values of `group_by` (host without
    regard to case, a data value as text, an absent one as none), so events differing elsewhere share a group."""
    config = parse_config(
        "digests:\n"
        "  - match: {type: 'Quota/*'}\n"
        "    group_by: [app, account, data.status]\n"
        "  - match: {type: 'Backup/*'}\n"
        "    group_by: [type, host]\n"
    )
    rules = config.digests
    backup = event("b-1", host="Server1.example.com", data={"error": "disk full"})
    found = find_rule(rules, backup, Importance.HIGH)
    assert found is not None and found[0] == 1
    key = group_key(*found, backup)
    assert group_labels(key) == {"type": "Backup/Failure", "host": "server1.example.com"}
    other = event("b-2", host="server1.example.com", data={"error": "other"})
    assert group_key(*found, other) == key
    assert group_key(*found, event("b-3", host="server2.example.com")) != key

    quota = event("q-1", "Quota/DiskWarning", account="bob", data={"status": 92})
    found = find_rule(rules, quota, Importance.MEDIUM)
    assert found is not None and found[0] == 0
    assert group_labels(group_key(*found, quota)) == {"app": "Quota", "account": "bob", "data.status": "92"}
    assert group_labels(group_key(*found, event("q-2", "Quota/DiskWarning"))) == {
        "app": "Quota",
        "account": None,
        "data.status": None,
    }
    assert find_rule(rules, event("x", "cPHulk/Login"), Importance.LOW) is None


# -- the store's digests ----------------------------------------------------------------------------------------


@pytest.fixture
async def conn(store_where: Path | str) -> AsyncIterator[Any]:
    """A connection (autocommit) to a new store on the engine under test, with the events' and the outbox's tables
    (the digests' come with the outbox's)."""
    store = Store(store_where, schemas=[outbox.SCHEMA])
    await store.open()
    await store.close()
    with connect_store(store_where) as connection:
        if isinstance(connection, sqlite3.Connection):
            connection.execute("PRAGMA synchronous = OFF")  # a statement a transaction: no fsync each
        yield connection


def planned(conn: Any, event_id: str, now: float, target: str = "admin@example.com") -> PendingDelivery:
    """One event recorded and planned to root by email; its pending delivery."""
    recorded = event(event_id)
    insert_events(conn, [recorded], "http")
    row = NewDelivery(recorded, "high", "root", "system", "email", target, target, "pending")
    (delivery,) = outbox.record_plans(conn, [event_id], [row], now)
    return delivery


def joining(delivery: PendingDelivery, key: str = "g", *, wait_s: float = 5, interval_s: float = 60) -> Joining:
    return Joining(
        delivery.id, "root", "system", "email", delivery.target, delivery.target, "high", key, 100, wait_s, interval_s
    )


def test_a_group_collects_until_due_then_waits_an_interval_then_starts_over(conn: Any) -> None:
    """The group's first delivery opens a digest due `wait_s` later; the next ones join it and wait without a due
    time of their own, their reason naming the digest. Once taken, a newcomer opens the next digest, due
    `interval_s` after the first was taken; after that interval, a newcomer waits `wait_s` again. Another group,
    or another address, has a digest of its own."""
    first = planned(conn, "e1", 1000.0)
    second = planned(conn, "e2", 1001.0)
    held = hold(conn, [joining(first), joining(second)], 1001.0)
    assert [(digest_id, due) for _, digest_id, due in held] == [(1, 1006.0), (1, 1006.0)]
    row = conn.execute("SELECT next_attempt_at, reason FROM deliveries WHERE id = ?", (second.id,)).fetchone()
    assert row == (None, f"in digest 1, due {due_text(1006.0)}")
    assert outbox.claim_due(conn, 2000.0, (), 10).deliveries == []  # members are not taken up on their own
    other = planned(conn, "e3", 1002.0, target="ops@example.com")
    assert hold(conn, [joining(other)], 1002.0)[0][1:] == (2, 1007.0)
    assert next_due(conn) == 1006.0

    assert take_due(conn, 1005.0, 10) == []
    (taken,) = take_due(conn, 1006.5, 10)
    assert (taken.id, [m.event.id for m in taken.members]) == (1, ["e1", "e2"])
    late = planned(conn, "e4", 1007.0)
    assert hold(conn, [joining(late)], 1007.0)[0][1:] == (3, 1066.5)
    mark_sent(conn, taken, 1, 1008.0)
    assert conn.execute("SELECT status, reason FROM deliveries WHERE id = ?", (first.id,)).fetchone() == (
        "sent",
        "sent in digest 1 (2 events)",
    )
    (again,) = take_due(conn, 1070.0, 1)
    assert again.id == 2  # the other address's, due first
    much_later = planned(conn, "e5", 1200.0)
    assert hold(conn, [joining(much_later)], 1200.0)[0][1:] == (3, 1066.5)  # digest 3 still collects
    (third,) = take_due(conn, 1200.0, 1)
    newest = planned(conn, "e6", 1300.0)
    assert hold(conn, [joining(newest)], 1300.0)[0][1:] == (4, 1305.0)  # 1200 + 60 has passed: wait_s again
    assert third.id == 3


def test_a_full_digest_starts_another_due_with_it_and_quiet_hours_hold_a_digest(conn: Any) -> None:
    """Past MAX_MEMBERS a group's next delivery opens another digest due at the same time; a delivery that may not
    go before a later time (quiet hours) opens a digest due then, rather than joining one due sooner."""
    deliveries = [planned(conn, f"m{index}", 1000.0) for index in range(MAX_MEMBERS + 1)]
    held = hold(conn, [joining(delivery) for delivery in deliveries], 1000.0)
    assert {digest_id for _, digest_id, _ in held[:MAX_MEMBERS]} == {1}
    assert held[-1][1:] == (2, 1005.0)
    quiet = planned(conn, "q", 1001.0)
    deferred = dataclasses.replace(joining(quiet), not_before=5000.0)
    assert hold(conn, [deferred], 1001.0)[0][1:] == (3, 5000.0)


def test_a_failed_digest_is_put_back_whole_and_a_sending_one_is_taken_up_at_start(conn: Any) -> None:
    """A digest that failed for good fails each member, naming it; retrying one member (`outbox.retry_failed`)
    puts the digest back with all its failed members, due now with a fresh budget. A digest left `sending` by a
    killed daemon waits for a retry, due at once."""
    members = [planned(conn, f"f{index}", 1000.0) for index in range(3)]
    hold(conn, [joining(member) for member in members], 1000.0)
    (taken,) = take_due(conn, 1010.0, 1)
    mark_failed(conn, taken, 2, "HTTP 400", 1011.0, None)
    assert {row[0] for row in conn.execute("SELECT reason FROM deliveries")} == {"digest 1: HTTP 400"}
    assert outbox.retry_failed(conn, delivery_id=members[1].id, now=1100.0) == 3
    assert conn.execute("SELECT DISTINCT status, next_attempt_at FROM deliveries").fetchall() == [("pending", None)]
    (again,) = take_due(conn, 1100.0, 1)
    assert (again.id, again.retries, again.attempts_before, again.budget_from) == (1, 1, 2, 1100.0)
    assert len(again.members) == 3
    assert recover(conn, 1200.0) == 1
    assert take_due(conn, 1200.0, 1)[0].id == 1


# -- the digest's message --------------------------------------------------------------------------------------


@pytest.fixture
def digests() -> DigestRenderer:
    return DigestRenderer(Renderer(CATALOG, templates_dir=None, hostname=HOST), templates_dir=None)


def burst(count: int, **fields: Any) -> tuple[Event, ...]:
    start = datetime(2026, 12, 5, 10, 30, tzinfo=UTC)
    return tuple(
        event(
            f"b-{index}",
            occurred_at=start + timedelta(seconds=index),
            account=f"user{index}",
            data={"error": "No space left on device", "failed_accounts": [f"user{index}"]},
            **fields,
        )
        for index in range(count)
    )


def test_a_digest_lists_every_event_with_its_subject_time_host_account_and_id(digests: DigestRenderer) -> None:
    """Subject: the prefix, the count and the alert name; text and HTML: one item per event with its own subject
    line, time, host, account and id; the message carries every id, the first as its event id."""
    events = burst(3)
    message = digests.render(DigestJob(12, events), importance=Importance.HIGH, recipient=SYSTEM)
    assert message.subject == "[server1.example.com] 3 × Backup Failed To Finish"
    assert message.event_ids == ("b-0", "b-1", "b-2")
    assert (message.event_id, message.event_type, message.importance) == ("b-0", "Backup/Failure", "high")
    for index in range(3):
        item = (
            f"- Backup failed to finish: 1 account not backed up\n"
            f"  event b-{index} · 2026-12-05 10:30:0{index} UTC · server1.example.com · account\n"
            f"  user{index}\n"
        )
        assert item in message.text
        assert f"<code style=\"font-family:Menlo,Consolas,'Courier New',monospace;\">b-{index}</code>" in message.html
        assert f"account user{index}" in message.html
    assert "Digest 12: 3 events" in message.text
    assert "between 2026-12-05 10:30:00 and 2026-12-05 10:30:02 UTC" in " ".join(message.text.split())


def test_a_digest_of_several_types_and_hosts_says_so(digests: DigestRenderer) -> None:
    """Events of two types from two hosts: the subject counts notices and names both alerts, the prefix is the
    config's hostname, and the footer names both types."""
    events = (event("a", host="one.example.com"), event("b", "Quota/DiskWarning", host="two.example.com"))
    message = digests.render(DigestJob(3, events), importance=Importance.MEDIUM, recipient=SYSTEM)
    assert message.subject == f"[{HOST}] 2 notices: Backup Failed To Finish and User Disk Usage Warning"
    assert "Alert types: Backup/Failure and Quota/DiskWarning" in message.text
    assert "one.example.com and two.example.com" in " ".join(message.text.split())


def test_an_accounts_own_digest_is_prefixed_with_the_account(digests: DigestRenderer) -> None:
    """To the account's own contacts, a digest whose events all concern that account is prefixed `[bob]`."""
    events = tuple(event(f"q-{index}", "Quota/DiskWarning", account="bob") for index in (1, 2))
    message = digests.render(DigestJob(4, events), importance=Importance.LOW, recipient=ACCOUNT, channel="pushbullet")
    assert message.subject.startswith("[bob] 2 × ")
    assert message.html == ""  # text-only channels get no HTML part


def test_a_broken_digest_override_falls_back_to_the_shipped_one(tmp_path: Path) -> None:
    """An override of the digest's text template that raises is logged (`template_failed`, naming it) and the
    digest goes out with the shipped templates: a notice is never dropped."""
    overrides = tmp_path / "_digest"
    overrides.mkdir()
    (overrides / "digest.text.j2").write_text("{{ count / 0 }}")
    renderer = DigestRenderer(Renderer(CATALOG, templates_dir=tmp_path, hostname=HOST), templates_dir=tmp_path)
    with capture_logs() as logs:
        message = renderer.render(DigestJob(5, burst(2)), importance=Importance.HIGH, recipient=SYSTEM)
    assert "event b-1" in message.text
    failed = [entry for entry in logs if entry["event"] == "template_failed"]
    assert failed and failed[0]["template"] == "_digest/digest.text.j2"


def test_check_config_renders_the_digest_templates_in_use(tmp_path: Path, digests: DigestRenderer) -> None:
    """`check-config` renders an example digest with the templates in use: nothing to say for the shipped ones;
    for an override that compiles but fails when rendered, `FILE:LINE: error` and exit status 1."""
    assert digests.check(HOST) == []
    overrides = tmp_path / "templates" / "_digest"
    overrides.mkdir(parents=True)
    (overrides / "digest.text.j2").write_text(
        "{% extends '_layout/base.text.j2' %}\n{% block summary %}\n{{ count / 0 }}\n{% endblock %}\n"
    )
    config = tmp_path / "dispatcher.yaml"
    config.write_text("hostname: h.example.com\ntemplates: {dir: templates}\n")
    result = subprocess.run(
        [sys.executable, "-m", "dispatcher", "check-config", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"{overrides / 'digest.text.j2'}:3: ZeroDivisionError: division by zero"]


def posturl_channel(body_format: str) -> PostUrlChannel:
    section = parse_config(f"channels: {{posturl: {{format: {body_format}}}}}\n").channels.posturl
    return PostUrlChannel(section, hostname=HOST)


def test_post_to_url_sends_a_digests_count_and_every_id(digests: DigestRenderer) -> None:
    """Form: the fields of SPEC §3 (subject and body the digest's, `event_id` the first id), `count`, and
    `event_ids` once per id, in the digest's order; JSON: the same, `event_ids` a list and `count` a number. A URL
    parameter of the same name gives way."""
    message = digests.render(DigestJob(7, burst(3)), importance=Importance.HIGH, recipient=SYSTEM, channel="posturl")
    body, content_type = posturl_channel("form").encode_body(message, (("key", "k1"), ("event_ids", "x")))
    assert content_type.startswith("application/x-www-form-urlencoded")
    pairs = parse_qsl(body.decode())
    form = dict(pairs)
    assert [value for key, value in pairs if key == "event_ids"] == ["b-0", "b-1", "b-2"]
    assert (form["count"], form["event_id"], form["key"]) == ("3", "b-0", "k1")
    assert (form["application"], form["event_name"], form["event_type"]) == ("Backup", "Failure", "Backup/Failure")
    assert form["subject"] == message.subject and form["body"] == message.text
    body, content_type = posturl_channel("json").encode_body(message, ())
    document = json.loads(body)
    assert content_type == "application/json"
    assert (document["count"], document["event_ids"], document["event_id"]) == (3, ["b-0", "b-1", "b-2"], "b-0")
    single = digests.renderer.render(burst(1)[0], importance=Importance.HIGH, recipient=SYSTEM, channel="posturl")
    assert "count" not in json.loads(posturl_channel("json").encode_body(single, ())[0])


def test_a_digest_email_says_how_many_events_it_carries(digests: DigestRenderer) -> None:
    """The email of a digest has `X-Dispatcher-Event-Count`; its `X-Dispatcher-Event-Id` is the first event's."""
    section = parse_config("channels: {email: {host: 127.0.0.1}}\n").channels.email
    channel = EmailChannel(section, hostname=HOST)
    message = digests.render(DigestJob(8, burst(4)), importance=Importance.HIGH, recipient=SYSTEM)
    raw = channel.build_message(message, "admin@example.com").decode()
    assert "X-Dispatcher-Event-Count: 4\r\n" in raw
    assert "X-Dispatcher-Event-Id: b-0\r\n" in raw


# -- the daemon ------------------------------------------------------------------------------------------------


async def submit(daemon: RunningDaemon, http: aiohttp.ClientSession, **fields: Any) -> str:
    response = await http.post(f"{daemon.base_url}/api/v1/events", json=fields, headers=daemon.auth)
    assert response.status == 202, await response.text()
    return str((await response.json())["id"])


async def records(daemon: RunningDaemon, http: aiohttp.ClientSession, **query: str) -> list[dict[str, Any]]:
    response = await http.get(
        f"{daemon.base_url}/api/v1/deliveries", params={"limit": "1000", **query}, headers=daemon.auth
    )
    assert response.status == 200
    return list((await response.json())["deliveries"])


def email_channel(smtp: SmtpSink) -> dict[str, Any]:
    return {"email": {"host": "127.0.0.1", "port": smtp.port, "from": "Server <root@test.example.com>"}}


def plain_text(message: Any) -> str:
    """The text part of an email."""
    body = message.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@pytest.mark.slow
async def test_a_burst_is_one_email_and_later_events_one_more_at_the_intervals_end(
    make_config: Callable[..., Path], start_daemon: Any, http: aiohttp.ClientSession
) -> None:
    """20 Backup/Failure events in 2 s under a rule with `wait_s: 5`: nothing goes at once, `deliveries` lists each
    pending "in digest N, due …", and one email arrives about 5 s after the first event, listing all 20 ids; each
    record ends sent "in digest N". 5 more events right after it: one more email, `interval_s` after the first
    went, listing exactly those 5. An event no rule fits goes at once. `/metrics` counts 2 digests and 25 events."""
    async with SmtpSink() as smtp:
        config = make_config(
            channels=email_channel(smtp),
            contacts={"root": {"email": ["admin@example.com"]}},
            digests=[{"match": {"type": "Backup/*"}, "group_by": ["type", "host"], "wait_s": 5, "interval_s": 8}],
        )
        daemon = await start_daemon(config)
        started = time.monotonic()
        first_ids = []
        for index in range(20):
            first_ids.append(await submit(daemon, http, type="Backup/Failure", id=f"burst-{index}"))
            await asyncio.sleep(0.1)
        assert time.monotonic() - started < 4
        waiting = [row for row in await records(daemon, http) if row["event_id"].startswith("burst-")]
        assert len(waiting) == 20 and {row["status"] for row in waiting} == {"pending"}
        digest_ids = {WAITING_REASON.match(row["reason"]).group(1) for row in waiting}  # type: ignore[union-attr]
        assert len(digest_ids) == 1
        assert smtp.messages == []

        other = await submit(daemon, http, type="cPHulk/Login", id="not-digested")
        (alone,) = await smtp.wait_for(1, timeout_s=10)
        assert alone.message["X-Dispatcher-Event-Id"] == other

        mails = await smtp.wait_for(2, timeout_s=10)
        first_went = time.monotonic()
        digest = mails[1].message
        assert first_went - started >= 4.5, "the digest went before its wait was over"
        assert digest["Subject"] == "[test.example.com] 20 × Backup Failed To Finish"
        assert digest["X-Dispatcher-Event-Count"] == "20"
        text = plain_text(digest)
        for event_id in first_ids:
            assert f"event {event_id} ·" in text
        (digest_id,) = digest_ids
        await wait_until(
            lambda: _all_sent(daemon, http, "burst-", f"sent in digest {digest_id} (20 events)"), timeout_s=5
        )

        later_ids = [await submit(daemon, http, type="Backup/Failure", id=f"later-{index}") for index in range(5)]
        await holds_for(lambda: len(smtp.messages) == 2, duration_s=5.5)
        mails = await smtp.wait_for(3, timeout_s=6)
        interval_s = time.monotonic() - first_went
        assert 7 <= interval_s <= 9.5, interval_s
        later = mails[2].message
        assert later["Subject"] == "[test.example.com] 5 × Backup Failed To Finish"
        later_text = plain_text(later)
        assert [line.split()[1] for line in later_text.splitlines() if line.startswith("  event ")] == later_ids
        await wait_until(lambda: _all_sent(daemon, http, "later-", "sent in digest"), timeout_s=5)

        scrape = await (await http.get(f"{daemon.base_url}/metrics")).text()
        assert metric(scrape, 'dispatcher_digests_sent_total{channel="email"}') == 2
        assert metric(scrape, 'dispatcher_digested_events_total{channel="email"}') == 25
        assert metric(scrape, 'dispatcher_deliveries_total{channel="email",outcome="sent"}') == 26
        await holds_for(lambda: len(smtp.messages) == 3, duration_s=1)


async def _all_sent(daemon: RunningDaemon, http: aiohttp.ClientSession, prefix: str, reason: str) -> bool:
    rows = [row for row in await records(daemon, http) if row["event_id"].startswith(prefix)]
    return bool(rows) and all(row["status"] == "sent" and (row["reason"] or "").startswith(reason) for row in rows)


@pytest.mark.slow
async def test_pushbullet_and_post_to_url_digests_carry_their_fields(
    make_config: Callable[..., Path], start_daemon: Any, http: aiohttp.ClientSession
) -> None:
    """One group to one contact with a Pushbullet token and a Post to URL address: one push (title the digest's
    subject, body listing every id) and one POST (`subject`, `body`, `count`, `event_id` the first id, `event_ids`
    every id in order, and the other fields of SPEC §3)."""
    async with FakePushbullet([PUSH_TOKEN]) as pushbullet, WebhookSink() as webhook:
        config = make_config(
            channels={"pushbullet": {"api_url": pushbullet.api_url}},
            contacts={
                "root": {
                    "pushbullet": [PUSH_TOKEN],
                    "posturl": [f"{webhook.url}/hook?key=k1"],
                    "receives": {"pushbullet": "all", "posturl": "all"},
                }
            },
            digests=[{"match": {"app": "Backup"}, "wait_s": 1.5}],
        )
        daemon = await start_daemon(config)
        ids = [await submit(daemon, http, type="Backup/Failure", id=f"pb-{index}", account="bob") for index in range(3)]
        (push,) = await pushbullet.wait_for_pushes(1, timeout_s=10)
        (request,) = await webhook.wait_for(1, timeout_s=10)
        assert push.request["type"] == "note"
        assert push.request["title"] == "[test.example.com] 3 × Backup Failed To Finish"
        for event_id in ids:
            assert f"event {event_id} ·" in push.request["body"]
        form = request.form
        assert [value for key, value in request.form_items if key == "event_ids"] == ids
        assert (form["count"], form["event_id"], form["key"]) == ("3", ids[0], "k1")
        assert form["subject"] == push.request["title"]
        assert re.sub(r"Digest \d+", "", form["body"]) == re.sub(r"Digest \d+", "", push.request["body"])
        assert (form["application"], form["event_name"], form["event_type"]) == ("Backup", "Failure", "Backup/Failure")
        assert (form["hostname"], form["importance"], form["account"]) == ("test.example.com", "high", "bob")
        await holds_for(lambda: len(pushbullet.pushes) == 1 and len(webhook.requests) == 1, duration_s=1)


@pytest.mark.slow
async def test_a_failed_attempt_retries_the_same_digest_and_newcomers_wait_for_the_next(
    make_config: Callable[..., Path], start_daemon: Any, http: aiohttp.ClientSession
) -> None:
    """The webhook answers the digest 503 with Retry-After 2: the retry 2 s later carries the same three ids, not
    the event that arrived in between, which goes in the group's next message at the end of `interval_s` (on its
    own: a digest of one event is that event's own message)."""
    async with WebhookSink(plan=[(503, {"Retry-After": "2"}, "busy")]) as webhook:
        config = make_config(
            contacts={"root": {"posturl": [f"{webhook.url}/hook"]}},
            delivery={"backoff_initial_s": 0.05, "backoff_max_s": 0.2},
            digests=[{"match": {"type": "Backup/*"}, "wait_s": 1, "interval_s": 4}],
        )
        daemon = await start_daemon(config)
        ids = [await submit(daemon, http, type="Backup/Failure", id=f"r-{index}") for index in range(3)]
        (refused,) = await webhook.wait_for(1, timeout_s=10)
        newcomer = await submit(daemon, http, type="Backup/Failure", id="r-late")
        await wait_until(lambda: _reason_of(daemon, http, newcomer), timeout_s=5)  # planned, in a digest
        rows = {row["event_id"]: row for row in await records(daemon, http)}
        assert rows["r-0"]["status"] == "pending" and "next attempt due" in rows["r-0"]["reason"]
        late_digest = WAITING_REASON.match(rows["r-late"]["reason"])
        assert late_digest is not None and f"in digest {late_digest.group(1)}," not in rows["r-0"]["reason"]
        retried = (await webhook.wait_for(2, timeout_s=6))[1]
        for request in (refused, retried):
            assert [value for key, value in request.form_items if key == "event_ids"] == ids
        (_, _, alone) = await webhook.wait_for(3, timeout_s=8)
        assert alone.form["event_id"] == newcomer and "event_ids" not in alone.form
        await wait_until(lambda: _all_sent(daemon, http, "r-", ""), timeout_s=5)
        rows = {row["event_id"]: row for row in await records(daemon, http)}
        assert rows["r-0"]["attempts"] == 2


@pytest.mark.slow
async def test_a_digest_that_fails_for_good_is_failed_whole_and_a_retry_sends_it_again(
    make_config: Callable[..., Path], start_daemon: Any, http: aiohttp.ClientSession
) -> None:
    """A 400 (permanent): every event's delivery in the digest is recorded failed, naming the digest, and one
    Instant Message Failure reports it. Retrying one of its events puts the whole digest back ({"retried": 3}),
    and the same three ids go out again in one request."""
    async with WebhookSink(plan=[(400, {}, "no")]) as webhook:
        config = make_config(
            contacts={"root": {"posturl": [f"{webhook.url}/hook"]}},
            digests=[{"match": {"type": "Backup/*"}, "wait_s": 1}],
        )
        daemon = await start_daemon(config)
        ids = [await submit(daemon, http, type="Backup/Failure", id=f"f-{index}") for index in range(3)]
        await webhook.wait_for(2, timeout_s=10)  # the digest, then the failure notice about it
        notice = webhook.requests[1].form
        assert notice["event_type"] == "iContact/SendIMFailed"
        await wait_until(lambda: _statuses_are(daemon, http, ids, {"failed"}), timeout_s=5)
        row = next(row for row in await records(daemon, http) if row["event_id"] == ids[1])
        assert re.match(r"^digest \d+: HTTP 400 from ", row["reason"])

        answer = await http.post(
            f"{daemon.base_url}/api/v1/deliveries/retry", json={"event_id": ids[1]}, headers=daemon.auth
        )
        assert (answer.status, await answer.json()) == (200, {"retried": 3})
        again = (await webhook.wait_for(3, timeout_s=8))[2]
        assert [value for key, value in again.form_items if key == "event_ids"] == ids
        await wait_until(lambda: _statuses_are(daemon, http, ids, {"sent"}), timeout_s=5)
        await holds_for(lambda: len(webhook.requests) == 3, duration_s=1)


async def _reason_of(daemon: RunningDaemon, http: aiohttp.ClientSession, event_id: str) -> str | None:
    rows = await records(daemon, http, event_id=event_id)
    return str(rows[0]["reason"]) if rows and rows[0]["reason"] else None


async def _statuses_are(daemon: RunningDaemon, http: aiohttp.ClientSession, ids: list[str], wanted: set[str]) -> bool:
    return {row["status"] for row in await records(daemon, http) if row["event_id"] in ids} == wanted


# -- SIGKILL ---------------------------------------------------------------------------------------------------


def store_rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db, timeout=5) as conn:
        rows = conn.execute(sql).fetchall()
    conn.close()
    return rows


@pytest.mark.slow
@pytest.mark.sqlite_only
async def test_a_digest_waiting_when_the_daemon_is_killed_arrives_once_after_the_restart(
    make_config: Callable[..., Path], daemon_process: Any, http: aiohttp.ClientSession
) -> None:
    """Three events join a digest due in 4 s; the daemon is SIGKILLed before it is due. Nothing has gone. After
    the restart the digest goes out once, listing the three ids; its deliveries end sent, and a further restart
    sends nothing again."""
    async with SmtpSink() as smtp:
        config = make_config(
            channels=email_channel(smtp),
            contacts={"root": {"email": ["admin@example.com"]}},
            digests=[{"match": {"type": "Backup/*"}, "wait_s": 4}],
        )
        db = config.parent / "dispatcher.db"
        daemon = daemon_process(config)
        daemon.start()
        base = f"http://127.0.0.1:{daemon.http_port}"
        auth = {"Authorization": "Bearer test-token-5f2c"}
        ids = []
        for index in range(3):
            response = await http.post(
                f"{base}/api/v1/events", json={"type": "Backup/Failure", "id": f"k-{index}"}, headers=auth
            )
            assert response.status == 202
            ids.append(f"k-{index}")
        await wait_until(lambda: store_rows(db, "SELECT count(*) FROM digest_members") == [(3,)], timeout_s=5)
        daemon.kill()
        assert smtp.messages == []
        assert store_rows(db, "SELECT state FROM digests") == [("collecting",)]

        daemon.start()
        (mail,) = await smtp.wait_for(1, timeout_s=15)
        text = plain_text(mail.message)
        assert all(f"event {event_id} ·" in text for event_id in ids)
        await wait_until(
            lambda: store_rows(db, "SELECT DISTINCT status FROM deliveries WHERE event_id LIKE 'k-%'") == [("sent",)],
            timeout_s=5,
        )
        assert store_rows(db, "SELECT state FROM digests") == [("sent",)]
        assert daemon.terminate() == 0
        daemon.start()
        await holds_for(lambda: len(smtp.messages) == 1, duration_s=3)
        assert daemon.terminate() == 0


# -- the store -------------------------------------------------------------------------------------------------


@pytest.mark.sqlite_only
async def test_a_version_2_store_gains_the_digest_tables_and_keeps_its_pending_deliveries(tmp_path: Path) -> None:
    """A store at version 2 (before digests) opened by today's daemon is migrated to version 3: the digests'
    tables are there and empty, and a delivery it left pending is resumed as before (it has its due time)."""
    db = tmp_path / "dispatcher.db"
    v2_outbox = outbox.SCHEMA.removesuffix(DIGESTS_SCHEMA)
    conn = sqlite3.connect(db, isolation_level=None)
    upgrade(
        conn,
        [EVENTS_SCHEMA, v2_outbox, contacts.SCHEMA, dead_letters.SCHEMA],
        shown=db,
        migrations=[step for step in MIGRATIONS if step.version <= 2],
    )
    conn.execute(
        "INSERT INTO events (id, type, body, source, received_at) VALUES ('e-1', 'Backup/Failure', ?, 'http', ?)",
        (event("e-1").to_json(), "2026-12-05T10:00:00.000000+00:00"),
    )
    conn.execute(
        "INSERT INTO deliveries (event_id, event_type, importance, recipient, recipient_kind, channel, target,"
        " target_label, status, created_at, updated_at, next_attempt_at)"
        " VALUES ('e-1', 'Backup/Failure', 'high', 'root', 'system', 'email', 'a@example.com', 'a@example.com',"
        " 'pending', 1.0, 1.0, 1.0)"
    )
    assert conn.execute("PRAGMA user_version").fetchone() == (2,)
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'digests'").fetchone() is None
    conn.close()

    store = Store(db, schemas=[outbox.SCHEMA, contacts.SCHEMA, dead_letters.SCHEMA])
    await store.open(exclusive=True)
    assert (store.found_version, store.schema_version) == (2, SCHEMA_VERSION)
    assert await store.run(lambda conn: conn.execute("SELECT count(*) FROM digests").fetchone()[0]) == 0
    page = await store.run(lambda conn: outbox.claim_due(conn, 10.0, (), 10).deliveries)
    assert [(delivery.event_id, delivery.next_attempt_at) for delivery, _ in page] == [("e-1", 1.0)]
    await store.close()
    assert SCHEMA_VERSION >= 3


def test_digest_rule_names_its_place_in_the_file() -> None:
    """Each rule knows where it is (`digests[1]`), for logs; it is not part of what the rule means."""
    config = parse_config("digests:\n  - {wait_s: 1}\n  - {wait_s: 2}\n")
    assert [rule.name for rule in config.digests] == ["digests[0]", "digests[1]"]
    assert config.digests[0] == DigestRule(match=config.digests[0].match, wait_s=1, name="elsewhere")
