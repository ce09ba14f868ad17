"""`dispatcher routes` and `dispatcher catalog`: what they print, line by line (SPEC §6)."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from dispatcher import cli, commands
from dispatcher.catalog import load_catalog
from dispatcher.commands import catalog as catalog_command
from dispatcher.commands import routes as routes_command
from dispatcher.config import load_config
from dispatcher.contacts import SCHEMA
from dispatcher.contacts.accounts import save_contact_info
from dispatcher.contacts.model import validate_account_updates
from dispatcher.errors import UsageError
from dispatcher.events import parse_event
from dispatcher.routing import plan_event
from dispatcher.store import Store

TOKEN = "o.TESTTOKEN1234567890"
TOKEN_SHOWN = "pushbullet:" + hashlib.sha256(TOKEN.encode()).hexdigest()[:8]
HOOK = "https://hook:s3cr3tpw@hooks.example.com/notify?key=abc123&team=ops"
HOOK_SHOWN = "https://hooks.example.com/notify?key=***&team=***"

CONFIG = """\
hostname: server1.example.com
importance:
  Backup/*: high
  Check/Biglog: disabled
contacts:
  root:
    email: [admin@example.com]
    pushbullet: [{token_file: pushbullet.token}]
    posturl: ["HOOK"]
    receives: {posturl: high}
  ops:
    email: [ops@example.com, Admin@Example.com]
    receives: {email: medium}
  resellers:
    email: [resellers@example.com]
routes:
  - match: {account: "reseller_*"}
    to: [resellers]
    continue: true
  - match: {type: "Backup/*"}
    to: [root, ops]
  - match: {data: {domain: "*.example.org"}}
    to: [ops]
"""


@pytest.fixture(scope="module", autouse=True)
def warm_catalog() -> None:
    """Load the shipped catalog once up front, so its one-time debug log is not in any command's output."""
    load_catalog()


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    (tmp_path / "pushbullet.token").write_text(TOKEN + "\n")
    path = tmp_path / "dispatcher.yaml"
    path.write_text(CONFIG.replace("HOOK", HOOK))
    return path


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run one of this module's commands through its own parser; return what it printed."""
    parser = argparse.ArgumentParser(prog="dispatcher")
    sub = parser.add_subparsers(dest="command", required=True)
    catalog_command.add_parser(sub)
    routes_command.add_parser(sub)
    args = parser.parse_args(argv)
    assert args.handler(args) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    return captured.out


def cells(line: str) -> list[str]:
    """The cells of a table line (columns are two or more spaces apart)."""
    return re.split(r"\s{2,}", line.strip())


def test_routes_for_a_routed_type(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Backup/Failure: rule 1 sends it to root and ops; ops' copy of root's address is one delivery; safe targets."""
    out = run(["routes", "Backup/Failure", "-c", str(config_file)], capsys)
    assert out.splitlines() == [
        "event:      Backup/Failure",
        f"alert:      {load_catalog().get('Backup/Failure').name}",
        "importance: high (config Backup/*)",
        "routes:     routes[1]",
        "",
        "RECIPIENT  CHANNEL     TARGET",
        "root       email       admin@example.com",
        f"root       pushbullet  {TOKEN_SHOWN}",
        f"root       posturl     {HOOK_SHOWN}",
        "ops        email       ops@example.com",
        "",
        "SUPPRESSED  CHANNEL  TARGET             REASON",
        "ops         email    Admin@Example.com  duplicate of root",
        "resellers   -        -                  not selected by routes (routes[1])",
    ]


def test_routes_with_an_account_and_continue(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--account fits the `continue` rule, so the resellers are added before the Backup rule's contacts."""
    out = run(["routes", "Backup/Success", "-c", str(config_file), "--account", "reseller_ann"], capsys)
    lines = out.splitlines()
    assert lines[2:4] == ["importance: high (config Backup/*)", "routes:     routes[0], routes[1]"]
    assert [cells(line) for line in lines[5:]] == [
        ["RECIPIENT", "CHANNEL", "TARGET"],
        ["resellers", "email", "resellers@example.com"],
        ["root", "email", "admin@example.com"],
        ["root", "pushbullet", TOKEN_SHOWN],
        ["root", "posturl", HOOK_SHOWN],
        ["ops", "email", "ops@example.com"],
        [""],
        ["SUPPRESSED", "CHANNEL", "TARGET", "REASON"],
        ["ops", "email", "Admin@Example.com", "duplicate of root"],
    ]


def test_routes_for_an_unknown_type_with_data(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown type is Low; --data fits the data rule (ops only), whose email is set to medium: nothing is sent."""
    out = run(["routes", "Custom/Thing", "-c", str(config_file), "--data", "domain=shop.example.org"], capsys)
    lines = out.splitlines()
    assert lines[:5] == [
        "event:      Custom/Thing",
        "alert:      unknown type, sent as Application/base (Uncategorized Notifications)",
        "importance: low",
        "routes:     routes[2]",
        "",
    ]
    assert [cells(line) for line in lines[5:]] == [
        ["no deliveries"],
        [""],
        ["SUPPRESSED", "CHANNEL", "TARGET", "REASON"],
        ["ops", "email", "ops@example.com", "below threshold medium"],
        ["ops", "email", "Admin@Example.com", "below threshold medium"],
        ["root", "-", "-", "not selected by routes (routes[2])"],
        ["resellers", "-", "-", "not selected by routes (routes[2])"],
    ]


def test_routes_for_a_type_no_rule_fits(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With no rule fitting every system contact is planned, each channel against its threshold."""
    out = run(["routes", "Custom/Thing", "-c", str(config_file)], capsys)
    lines = out.splitlines()
    assert lines[3] == "routes:     none matched (every system contact)"
    assert [cells(line) for line in lines[5:]] == [
        ["RECIPIENT", "CHANNEL", "TARGET"],
        ["root", "email", "admin@example.com"],
        ["resellers", "email", "resellers@example.com"],
        [""],
        ["SUPPRESSED", "CHANNEL", "TARGET", "REASON"],
        ["root", "pushbullet", TOKEN_SHOWN, "below threshold medium"],
        ["root", "posturl", HOOK_SHOWN, "below threshold high"],
        ["ops", "email", "ops@example.com", "below threshold medium"],
        ["ops", "email", "Admin@Example.com", "below threshold medium"],
    ]


def test_routes_for_a_disabled_type(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A type the config disables is delivered to nobody; every contact is listed as `importance disabled`."""
    out = run(["routes", "Check/Biglog", "-c", str(config_file)], capsys)
    lines = out.splitlines()
    assert lines[2] == "importance: disabled (config)"
    assert [cells(line) for line in lines[5:]] == [
        ["no deliveries"],
        [""],
        ["SUPPRESSED", "CHANNEL", "TARGET", "REASON"],
        ["root", "-", "-", "importance disabled"],
        ["ops", "-", "-", "importance disabled"],
        ["resellers", "-", "-", "importance disabled"],
    ]


def test_routes_for_an_account_only_type(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """ContactInfo/Change goes to the account alone: routes are not consulted and no system contact is listed."""
    out = run(["routes", "ContactInfo/Change", "-c", str(config_file), "--account", "bob"], capsys)
    lines = out.splitlines()
    assert lines[3:] == ["routes:     not used (the type goes to the account alone)", "", "no deliveries"]


def test_routes_host_option(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--host sets the event's host, which is shown in the JSON answer (default: the config's hostname)."""
    out = run(["routes", "Backup/Failure", "-c", str(config_file), "--json", "--host", "web2.example.com"], capsys)
    assert json.loads(out)["event"]["host"] == "web2.example.com"
    out = run(["routes", "Backup/Failure", "-c", str(config_file), "--json"], capsys)
    assert json.loads(out)["event"]["host"] == "server1.example.com"


def test_routes_json(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--json gives one object: the event, importance and its source, fitting routes, deliveries, suppressions."""
    out = run(
        ["routes", "Backup/Failure", "-c", str(config_file), "--json", "--account", "bob", "--client-id", "12"], capsys
    )
    answer: dict[str, Any] = json.loads(out)
    assert answer["event"] == {
        "type": "Backup/Failure",
        "host": "server1.example.com",
        "account": "bob",
        "client_id": 12,
        "data": {},
    }
    assert (answer["alert"], answer["importance"], answer["importance_source"]) == (
        "Backup/Failure",
        "high",
        "config App/*",
    )
    assert answer["routes"] == [1]
    assert answer["deliveries"] == [
        {"recipient": "root", "kind": "system", "channel": "email", "target": "admin@example.com"},
        {"recipient": "root", "kind": "system", "channel": "pushbullet", "target": TOKEN_SHOWN},
        {"recipient": "root", "kind": "system", "channel": "posturl", "target": HOOK_SHOWN},
        {"recipient": "ops", "kind": "system", "channel": "email", "target": "ops@example.com"},
    ]
    assert answer["suppressed"] == [
        {"recipient": "ops", "channel": "email", "target": "Admin@Example.com", "reason": "duplicate of root"},
        {"recipient": "resellers", "channel": None, "target": None, "reason": "not selected by routes (routes[1])"},
    ]


@pytest.mark.parametrize("extra", [[], ["--json"]])
def test_routes_never_print_secrets(config_file: Path, capsys: pytest.CaptureFixture[str], extra: list[str]) -> None:
    """Neither the Pushbullet token nor the URL's password or query values appear in any answer."""
    for event_type in ("Backup/Failure", "Custom/Thing", "Check/Biglog"):
        out = run(["routes", event_type, "-c", str(config_file), *extra], capsys)
        for secret in (TOKEN, "TESTTOKEN", "s3cr3tpw", "abc123"):
            assert secret not in out


def test_routes_rejects_a_bad_event(config_file: Path) -> None:
    """A type that is not App/Event is a usage error, as for `publish`."""
    parser = argparse.ArgumentParser(prog="dispatcher")
    routes_command.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["routes", "NotAType", "-c", str(config_file)])
    with pytest.raises(UsageError, match="not a valid event"):
        args.handler(args)


def test_catalog_table(capsys: pytest.CaptureFixture[str]) -> None:
    """Without a config: one line per alert type in key order with its default importance, audience and gates."""
    catalog = load_catalog()
    lines = run(["catalog"], capsys).splitlines()
    assert cells(lines[0]) == ["TYPE", "IMPORTANCE", "AUDIENCE", "PREFERENCE", "CATEGORY", "NAME"]
    assert len(lines) == len(catalog) + 1
    assert [cells(line)[0] for line in lines[1:]] == list(catalog.keys())
    rows = {cells(line)[0]: cells(line) for line in lines[1:]}
    for key in ("Backup/Failure", "AutoSSL/CertificateExpiring", "ContactInfo/Change", "Application/base"):
        alert = catalog.get(key)
        audience = ",".join(a for a in ("system", "account") if a in alert.audience)
        assert rows[key] == [
            key,
            alert.importance.label,
            audience,
            alert.preference or "-",
            alert.category or "-",
            alert.name,
        ]
    assert rows["AutoSSL/CertificateExpiring"][2:5] == ["system,account", "notify_autossl_expiry", "domain"]


def test_catalog_table_shows_config_overrides(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With -c the importance column is the effective one, naming the config entry that set it."""
    lines = run(["catalog", "-c", str(config_file)], capsys).splitlines()
    rows = {cells(line)[0]: cells(line) for line in lines[1:]}
    assert rows["Backup/Failure"][1] == "high (config Backup/*)"
    assert rows["Backup/Success"][1] == "high (config Backup/*)"
    assert rows["Check/Biglog"][1] == "disabled (config)"
    assert rows["Application/base"][1] == load_catalog().get("Application/base").importance.label


def test_catalog_json(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--json lists one object per type with effective and default importance, audience, preference, category."""
    catalog = load_catalog()
    entries = json.loads(run(["catalog", "-c", str(config_file), "--json"], capsys))
    assert [entry["type"] for entry in entries] == list(catalog.keys())
    by_type = {entry["type"]: entry for entry in entries}
    alert = catalog.get("Check/Biglog")
    assert by_type["Check/Biglog"] == {
        "type": "Check/Biglog",
        "name": alert.name,
        "trigger": alert.trigger,
        "importance": "disabled",
        "importance_source": "config",
        "default_importance": alert.importance.label,
        "audience": ["system"],
        "preference": None,
        "category": None,
        "aliases": [alias.name for alias in alert.aliases],
        "account": None,
        "fields": [
            {"name": name, "meaning": field.meaning, "example": field.example}
            for name, field in alert.data_fields.items()
        ],
    }
    expiring = by_type["AutoSSL/CertificateExpiring"]
    assert (expiring["audience"], expiring["preference"], expiring["category"]) == (
        ["system", "account"],
        "notify_autossl_expiry",
        "domain",
    )
    assert expiring["importance_source"] == "catalog"


@pytest.fixture
def logging_restored() -> Iterator[None]:
    """Put structlog's and the standard library's logging back as they were: `cli.main` configures both."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("logging_restored")
def test_through_the_cli_main(
    config_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through `dispatcher.cli.main`: `routes` and `catalog` answer with status 0, a bad event with status 2."""
    missing = [module for module in (catalog_command, routes_command) if module not in commands.COMMANDS]
    # Until they are registered in dispatcher/commands/__init__.py, add them as that registration will.
    monkeypatch.setattr(cli, "COMMANDS", [*commands.COMMANDS, *missing])
    assert cli.main(["routes", "Backup/Failure", "-c", str(config_file)]) == 0
    assert "root       email       admin@example.com" in capsys.readouterr().out
    assert cli.main(["routes", "NotAType", "-c", str(config_file)]) == 2
    assert "not a valid event" in capsys.readouterr().err
    assert cli.main(["catalog", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["type"] == load_catalog().keys()[0]


async def test_recipient_sources_with_a_store(config_file: Path, tmp_path: Path) -> None:
    """Given a store, the account's contact info is planned after the system contacts, sharing addresses once."""
    config = load_config(config_file)
    store = Store(tmp_path / "contacts.db", schemas=[SCHEMA])
    await store.open()
    try:
        updates = validate_account_updates({"email": "ADMIN@example.com", "second_email": "bob@example.net"})
        await store.run(lambda conn: save_contact_info(conn, "bob", updates))
        sources = routes_command.recipient_sources(config, store)
        assert [source.name for source in sources] == ["system", "account", "client"]
        assert [source.name for source in routes_command.recipient_sources(config)] == ["system"]
        event = parse_event({"type": "Quota/DiskWarning", "account": "bob"}, topic_type=None, default_host="h")
        result = await plan_event(
            event, config=config, catalog=load_catalog(), sources=sources, channels={"email", "pushbullet", "posturl"}
        )
    finally:
        await store.close()
    assert [(d.recipient.name, d.channel, d.target) for d in result.deliveries if d.channel == "email"] == [
        ("root", "email", "admin@example.com"),
        ("ops", "email", "ops@example.com"),
        ("resellers", "email", "resellers@example.com"),
        ("account:bob", "email", "bob@example.net"),
    ]
    assert ("account:bob", "email", "ADMIN@example.com", "duplicate of root") in [
        (s.recipient_name, s.channel, s.target, s.reason) for s in result.suppressed
    ]
