"""Silences (SPEC §8a): made over the API or from the command line, stored, and applied by the running daemon.

A silence stops the deliveries planned for the events its matchers fit while it is active: they are recorded
`suppressed`, the reason naming the silence; others go as usual, and once it is expired the same events go again.
The daemon, the API and the command line share the silences through the store. `/metrics` has the active silences
and the suppressions; `dispatcher routes` names the silence that would stop an event.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from dispatcher.events import parse_event
from dispatcher.migrations import MIGRATIONS, SCHEMA_VERSION, upgrade
from dispatcher.noise import silences
from dispatcher.noise.durations import duration_text, parse_duration
from dispatcher.noise.silences import BadSilence, check_glob, new_silence, silence_from_body
from dispatcher.store import Store

from .conftest import RunningDaemon, settled, wait_until
from .servers import SmtpSink

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def event(**fields: Any) -> Any:
    return parse_event({"type": "Backup/Failure", **fields}, topic_type=None, default_host="web1.example.com")


# -- what a silence may be, and what it fits (units) ---------------------------------------------------------------


def test_a_silence_fits_events_as_routes_match_them() -> None:
    """Every matcher must fit: `type` and `account` are globs, `host` ignores case, and an event without an account
    never fits a silence that sets one."""
    silence = new_silence({"type": "Backup/*", "host": "WEB1.*"}, comment="disk swap", now=NOW, duration_s=60)
    assert silence.fits(event())
    assert not silence.fits(event(type="Quota/DiskWarning"))
    assert not silence.fits(event(host="web2.example.com"))
    by_account = new_silence({"account": "b*"}, comment="moving bob", now=NOW, duration_s=60)
    assert by_account.fits(event(account="bob"))
    assert not by_account.fits(event(account="carol"))
    assert not by_account.fits(event())


def test_a_silence_is_active_from_its_creation_until_its_end() -> None:
    silence = new_silence({"type": "*"}, comment="c", now=NOW, duration_s=600)
    assert (silence.created_at, silence.ends_at) == (NOW, NOW + 600)
    assert silence.state(NOW) == "active" and silence.state(NOW + 599) == "active"
    assert silence.state(NOW + 600) == "expired" and silence.state(NOW - 1) == "expired"


def test_the_reason_names_the_silence_and_cuts_a_long_comment() -> None:
    silence = new_silence({"type": "*"}, comment="x" * 200, now=NOW, duration_s=60)
    assert silence.reason == f"silenced by {silence.id} ({'x' * 79}…)"
    short = new_silence({"type": "*"}, comment="  disk swap  ", now=NOW, duration_s=60)
    assert short.reason == f"silenced by {short.id} (disk swap)"


def test_a_body_is_checked_field_by_field() -> None:
    """Every fault of a POST body is listed: unknown fields, unknown matcher keys, bad globs, no matcher, both or
    neither of duration_s and ends_at, an end in the past or too far away, no comment."""
    with pytest.raises(BadSilence) as err:
        silence_from_body({"matchers": {"type": "Backup/[x", "user": "bob"}, "comment": "", "why": 1}, NOW)
    assert err.value.problems == [
        "'why': unknown field (known: matchers, duration_s, ends_at, comment, created_by)",
        "matchers.type: the [ at position 8 is never closed (write [[] for a literal [)",
        "matchers: unknown key 'user' (known: type, account, host)",
        "give either duration_s or ends_at",
        "comment: required, a non-empty string saying why",
    ]
    cases: list[tuple[dict[str, Any], str]] = [
        ({"matchers": {}, "duration_s": 60, "comment": "c"}, "matchers: give at least one of type, account, host"),
        ({"matchers": {"type": ""}, "duration_s": 60, "comment": "c"}, "matchers.type: expected a glob such as"),
        ({"matchers": {"host": 3}, "duration_s": 60, "comment": "c"}, "matchers.host: expected a glob string"),
        ({"matchers": ["type"], "duration_s": 60, "comment": "c"}, "matchers: required, an object"),
        ({"matchers": {"type": "*"}, "duration_s": 0, "comment": "c"}, "duration_s: expected more than 0"),
        ({"matchers": {"type": "*"}, "duration_s": True, "comment": "c"}, "duration_s: expected a number"),
        ({"matchers": {"type": "*"}, "duration_s": 10**9, "comment": "c"}, "duration_s: expected more than 0 and"),
        ({"matchers": {"type": "*"}, "duration_s": 6, "ends_at": "x", "comment": "c"}, "give either duration_s or"),
        ({"matchers": {"type": "*"}, "ends_at": "2027-01-15", "comment": "c"}, "ends_at: not an RFC 3339"),
        ({"matchers": {"type": "*"}, "ends_at": "2027-01-15T07:00:00Z", "comment": "c"}, "ends_at: 2027-01-15T07:00"),
        ({"matchers": {"type": "*"}, "ends_at": "2099-01-01T00:00:00Z", "comment": "c"}, "ends_at: at most 366"),
        ({"matchers": {"type": "*"}, "duration_s": 60, "comment": "a\nb"}, "comment: one line"),
        ({"matchers": {"type": "*"}, "duration_s": 60, "comment": "c", "created_by": ""}, "created_by: a name"),
    ]
    for body, problem in cases:
        with pytest.raises(BadSilence) as err:
            silence_from_body(body, NOW)
        assert any(line.startswith(problem) for line in err.value.problems), (body, err.value.problems)


def test_ends_at_in_any_offset_is_the_same_moment() -> None:
    silence = silence_from_body(
        {"matchers": {"type": "*"}, "ends_at": "2027-01-15T10:30:00+02:00", "comment": "c", "created_by": "ops"}, NOW
    )
    assert silence.ends_at == datetime(2027, 1, 15, 8, 30, tzinfo=UTC).timestamp()
    assert silence.created_by == "ops"
    assert silence.to_json(NOW)["ends_at"] == "2027-01-15T08:30:00Z"


@pytest.mark.parametrize("pattern", ["Backup/*", "web[12].example.com", "[!a]*", "[]]x", "a?c", "[[]literal"])
def test_globs_that_fnmatch_reads_as_meant_are_accepted(pattern: str) -> None:
    assert check_glob(pattern) == pattern


def test_durations_are_read_and_written_as_people_do() -> None:
    assert [parse_duration(text) for text in ("90", "90s", "30m", "2h", "1d", "1h30m", "1d12h", "0.5s")] == [
        90,
        90,
        1800,
        7200,
        86400,
        5400,
        129600,
        0.5,
    ]
    for bad in ("", "0", "-5m", "5x", "30m2h", "1h 30m", "h", "inf"):
        with pytest.raises(ValueError, match="duration such as 90s"):
            parse_duration(bad)
    assert [duration_text(seconds) for seconds in (14400, 5400, 90, 0.5, 86400 + 61)] == [
        "4h",
        "1h30m",
        "1m30s",
        "0.5s",
        "1d1m1s",
    ]


# -- the daemon ----------------------------------------------------------------------------------------------------


def email_config(smtp: SmtpSink) -> dict[str, Any]:
    return {
        "channels": {"email": {"host": "127.0.0.1", "port": smtp.port, "from": "Server <root@test.example.com>"}},
        "contacts": {"root": {"email": ["root@example.com"]}},
    }


async def submit(daemon: RunningDaemon, http: aiohttp.ClientSession, **fields: Any) -> str:
    answer = await http.post(f"{daemon.base_url}/api/v1/events", json=fields, headers=daemon.auth)
    assert answer.status == 202, await answer.text()
    return str((await answer.json())["id"])


async def records(daemon: RunningDaemon, http: aiohttp.ClientSession, event_id: str) -> list[dict[str, Any]]:
    answer = await http.get(f"{daemon.base_url}/api/v1/deliveries", params={"event_id": event_id}, headers=daemon.auth)
    assert answer.status == 200
    return [row for row in (await answer.json())["deliveries"] if row["channel"] == "email"]


async def metric(http: aiohttp.ClientSession, daemon: RunningDaemon, line_start: str) -> float:
    """The value of the one sample of /metrics whose line starts with `line_start`."""
    text = await (await http.get(f"{daemon.base_url}/metrics")).text()
    (value,) = [line.rpartition(" ")[2] for line in text.splitlines() if line.startswith(line_start + " ")]
    return float(value)


async def test_a_silence_on_backups_stops_backup_failures_until_it_is_expired(
    make_config: Callable[..., Path], start_daemon: Any, http: aiohttp.ClientSession
) -> None:
    """POST /api/v1/silences for `Backup/*` answers 201 with an id. While it is active a Backup/Failure is recorded
    suppressed (`silenced by <id> (<comment>)`) and not mailed, while a Quota/DiskWarning is; the silence is listed
    active, `/metrics` counts one active silence and one suppression by a silence, and `dispatcher routes` names
    the silence. After DELETE (200, state expired) a Backup/Failure is mailed again and the gauge is back to 0."""
    async with SmtpSink() as smtp:
        config = make_config(**email_config(smtp))
        daemon = await start_daemon(config)
        answer = await http.post(
            f"{daemon.base_url}/api/v1/silences",
            json={"matchers": {"type": "Backup/*"}, "duration_s": 3600, "comment": "disk swap", "created_by": "ann"},
            headers=daemon.auth,
        )
        assert answer.status == 201
        body = await answer.json()
        assert list(body) == ["id"]
        silence_id = body["id"]

        silenced = await submit(daemon, http, type="Backup/Failure", data={"error": "disk full"})
        other = await submit(daemon, http, type="Quota/DiskWarning", account="bob", data={"domain": "bob.example"})
        (mail,) = await smtp.wait_for(1)
        assert mail.message["X-Dispatcher-Event-Id"] == other
        await settled(daemon)
        (record,) = await records(daemon, http, silenced)
        assert (record["status"], record["reason"]) == ("suppressed", f"silenced by {silence_id} (disk swap)")
        assert (await records(daemon, http, other))[0]["status"] == "sent"

        listed = await (await http.get(f"{daemon.base_url}/api/v1/silences", headers=daemon.auth)).json()
        (shown,) = listed["silences"]
        assert {key: shown[key] for key in ("id", "matchers", "comment", "created_by", "state", "expired_at")} == {
            "id": silence_id,
            "matchers": {"type": "Backup/*"},
            "comment": "disk swap",
            "created_by": "ann",
            "state": "active",
            "expired_at": None,
        }
        await wait_until(lambda: _metric_is(http, daemon, "dispatcher_silences_active", 1.0))
        assert await metric(http, daemon, 'dispatcher_suppressions_total{reason="silence"}') == 1.0
        assert await metric(http, daemon, 'dispatcher_suppressions_total{reason="repeat"}') == 0.0

        routes = await asyncio.to_thread(run_cli, "routes", "Backup/Failure", "-c", str(config))
        assert routes.returncode == 0, routes.stderr
        assert re.search(rf"root +email +root@example\.com +silenced by {silence_id} \(disk swap\)", routes.stdout)

        answer = await http.delete(f"{daemon.base_url}/api/v1/silences/{silence_id}", headers=daemon.auth)
        assert answer.status == 200
        expired = await answer.json()
        assert expired["state"] == "expired" and expired["expired_at"] is not None
        again = await submit(daemon, http, type="Backup/Failure", data={"error": "disk full"})
        mails = await smtp.wait_for(2)
        assert mails[1].message["X-Dispatcher-Event-Id"] == again
        await wait_until(lambda: _metric_is(http, daemon, "dispatcher_silences_active", 0.0))
        one = await (await http.get(f"{daemon.base_url}/api/v1/silences/{silence_id}", headers=daemon.auth)).json()
        assert one["state"] == "expired"


async def _metric_is(http: aiohttp.ClientSession, daemon: RunningDaemon, name: str, value: float) -> bool:
    return await metric(http, daemon, name) == value


async def test_bad_silence_requests_get_4xx(
    make_config: Callable[..., Path], start_daemon: Any, http: aiohttp.ClientSession
) -> None:
    """A body that is not JSON, not an object, or not a valid silence → 400 `{"error", "details"}`; an unknown id →
    404 for GET and DELETE; a bad `state` filter → 400; no token → 401. Nothing is stored by any of them."""
    daemon = await start_daemon(make_config())
    url = f"{daemon.base_url}/api/v1/silences"
    for raw in (b"", b"{", b"[1]", b'{"matchers": {"type": "*"}, "duration_s": NaN, "comment": "c"}'):
        answer = await http.post(url, data=raw, headers={**daemon.auth, "Content-Type": "application/json"})
        assert answer.status == 400, raw
        assert set(await answer.json()) == {"error", "details"}
    answer = await http.post(url, json={"matchers": {"type": "*"}, "comment": "c"}, headers=daemon.auth)
    assert answer.status == 400
    assert await answer.json() == {"error": "bad silence", "details": ["give either duration_s or ends_at"]}
    for method in ("GET", "DELETE"):
        answer = await http.request(method, f"{url}/no-such-silence", headers=daemon.auth)
        assert answer.status == 404
    assert (await http.get(url, params={"state": "sleeping"}, headers=daemon.auth)).status == 400
    assert (await http.post(url, json={"matchers": {"type": "*"}, "duration_s": 5, "comment": "c"})).status == 401
    assert (await (await http.get(url, headers=daemon.auth)).json()) == {"silences": []}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dispatcher", *args], capture_output=True, text=True, timeout=60, check=False
    )


async def test_silences_from_the_command_line_are_seen_by_the_running_daemon(
    make_config: Callable[..., Path], start_daemon: Any, http: aiohttp.ClientSession
) -> None:
    """`dispatcher silence add --match type=Backup/* --for 1h --comment …` writes the store beside the running
    daemon and prints the id; `silence list` shows it active with its matchers; the daemon's next Backup/Failure is
    suppressed naming it; `silence expire ID` prints `expired: ID`, `list` shows it expired, and the next
    Backup/Failure is mailed. A bad matcher is a usage error (exit 2), an unknown id a failure (exit 1)."""
    async with SmtpSink() as smtp:
        config = make_config(**email_config(smtp))
        daemon = await start_daemon(config)
        added = await asyncio.to_thread(
            run_cli, "silence", "add", "-c", str(config), "--match", "type=Backup/*", "--match", "host=test.*",
            "--for", "1h", "--comment", "replacing the backup disk", "--created-by", "ann",
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        silence_id = added.stdout.strip()
        assert re.fullmatch(r"[0-9a-f-]{36}", silence_id)

        listed = await asyncio.to_thread(run_cli, "silence", "list", "-c", str(config))
        assert listed.returncode == 0, listed.stderr
        header, row = listed.stdout.splitlines()
        assert header.split() == ["ID", "STATE", "ENDS", "(UTC)", "MATCHERS", "CREATED", "BY", "COMMENT"]
        assert row.startswith(f"{silence_id}  active ")
        assert row.endswith("type=Backup/* host=test.*  ann         replacing the backup disk")

        stopped = await submit(daemon, http, type="Backup/Failure")
        await settled(daemon)
        (record,) = await records(daemon, http, stopped)
        assert (record["status"], record["reason"]) == (
            "suppressed",
            f"silenced by {silence_id} (replacing the backup disk)",
        )
        assert smtp.messages == []

        expired = await asyncio.to_thread(run_cli, "silence", "expire", "-c", str(config), silence_id)
        assert (expired.returncode, expired.stdout) == (0, f"expired: {silence_id}\n")
        as_json = await asyncio.to_thread(run_cli, "silence", "list", "-c", str(config), "--json")
        assert [(item["id"], item["state"]) for item in __import__("json").loads(as_json.stdout)] == [
            (silence_id, "expired")
        ]
        sent = await submit(daemon, http, type="Backup/Failure")
        (mail,) = await smtp.wait_for(1)
        assert mail.message["X-Dispatcher-Event-Id"] == sent

        bad = await asyncio.to_thread(
            run_cli, "silence", "add", "-c", str(config), "--match", "user=bob", "--for", "1h", "--comment", "c"
        )
        assert bad.returncode == 2
        assert bad.stderr.strip() == (
            "cannot make that silence: --match: unknown key 'user' (known: type, account, host)"
        )
        bad = await asyncio.to_thread(
            run_cli, "silence", "add", "-c", str(config), "--match", "type=*", "--for", "soon", "--comment", "c"
        )
        assert bad.returncode == 2 and "--for:" in bad.stderr
        unknown = await asyncio.to_thread(run_cli, "silence", "expire", "-c", str(config), "nope")
        assert unknown.returncode == 1
        assert unknown.stderr.strip() == "dispatcher: no silence 'nope' (`dispatcher silence list` shows them)"


def test_until_takes_a_time_of_day_a_local_time_or_rfc_3339() -> None:
    """`--until 22:00` is the next 22:00 on this machine's clock; a date and time without offset is local; an RFC
    3339 time is taken as it is."""
    from dispatcher.commands.silence import parse_until

    now = datetime(2027, 1, 15, 8, 0, tzinfo=UTC)
    local_now = now.astimezone()
    later = (local_now + timedelta(hours=1)).strftime("%H:%M")
    assert parse_until(later, now) == (local_now + timedelta(hours=1)).replace(second=0, microsecond=0)
    earlier = (local_now - timedelta(hours=1)).strftime("%H:%M")
    assert parse_until(earlier, now) == (local_now + timedelta(hours=23)).replace(second=0, microsecond=0)
    assert parse_until("2027-01-16T10:00:00Z", now) == datetime(2027, 1, 16, 10, tzinfo=UTC)
    assert parse_until("2027-01-16 10:00", now) == datetime(2027, 1, 16, 10).astimezone()


# -- the store -----------------------------------------------------------------------------------------------------


async def test_a_store_of_the_previous_version_gets_the_silences_table(tmp_path: Path) -> None:
    """A store at the version before silences (its tables, no `silences` or `repeat_marks`) is migrated by the
    next writable open (`store_migrated` from that version to the current one), keeps its rows, and then holds
    silences."""
    from dispatcher import contacts, outbox
    from dispatcher.intake import dead_letters
    from dispatcher.store import EVENTS_SCHEMA

    db = tmp_path / "dispatcher.db"
    previous = MIGRATIONS[:-1]
    conn = sqlite3.connect(db, isolation_level=None)
    upgrade(conn, [EVENTS_SCHEMA, outbox.SCHEMA, contacts.SCHEMA, dead_letters.SCHEMA], shown=db, migrations=previous)
    conn.execute(
        "INSERT INTO events (id, type, body, source, received_at) VALUES ('old', 'Backup/Failure', '{}', 'mqtt', 'x')"
    )
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    conn.close()
    assert "silences" not in tables and int(previous[-1].version) == SCHEMA_VERSION - 1

    with capture_logs() as logs:
        store = Store(db, schemas=[outbox.SCHEMA, silences.SCHEMA])
        await store.open()
        silence = new_silence({"type": "Backup/*"}, comment="c", now=time.time(), duration_s=60)
        await store.run(lambda conn: silences.add_silence(conn, silence))
        active = await store.run(lambda conn: silences.active_silences(conn, time.time()))
        kept = await store.run(lambda conn: conn.execute("SELECT id FROM events").fetchall())
        await store.close()
    assert [(entry["from_version"], entry["to_version"]) for entry in logs if entry["event"] == "store_migrated"] == [
        (SCHEMA_VERSION - 1, SCHEMA_VERSION)
    ]
    assert [item.id for item in active] == [silence.id]
    assert kept == [("old",)]
