"""The configuration loader (SPEC §8): good files load into the expected values, bad ones give every issue.

Test data lives in `tests/testdata/config/`:

- `good/*.yaml` must load; secrets are read from `good/secrets/`, relative to the file.
- `bad/NAME.yaml` must fail with exactly the lines of `bad/NAME.expected`. The test runs from inside `bad/` and
  loads the file by its bare name, so each line starts `NAME.yaml:LINE:COL:`. Regenerate a file's expectation only
  after reading the new lines: they are the messages an admin will see.
"""

from __future__ import annotations

import dataclasses
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from dispatcher.app import Dispatcher
from dispatcher.config import (
    BusConfig,
    Config,
    Contact,
    Secret,
    default_config,
    load_config,
    parse_config,
    redact_url,
)
from dispatcher.errors import ConfigError, DispatcherError
from dispatcher.levels import Importance, Threshold

REPO = Path(__file__).resolve().parents[1]
TESTDATA = Path(__file__).resolve().parent / "testdata" / "config"
GOOD = TESTDATA / "good"
BAD = TESTDATA / "bad"
EXAMPLE = REPO / "config" / "dispatcher.example.yaml"
# Bad files mark every secret value with this word; it must never reach an issue line.
SECRET_MARK = "TOPSECRET"


def _issues(err: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    return err.value.issues


# --------------------------------------------------------------------------------------------------------------------
# Good files


@pytest.mark.parametrize("path", sorted(GOOD.glob("*.yaml")), ids=lambda p: p.name)
def test_good_config_loads(path: Path) -> None:
    """Every file in good/ loads, and records where it came from."""
    config = load_config(path)
    assert isinstance(config, Config)
    assert config.source == path


def test_full_config_values() -> None:
    """full.yaml: every section is read into typed values; relative paths resolve against the file's directory."""
    config = load_config(GOOD / "full.yaml")
    assert config.hostname == "server1.example.com"

    bus = config.bus
    assert (bus.url, bus.host, bus.port, bus.tls) == ("mqtts://broker.example.com", "broker.example.com", 8883, True)
    assert bus.username == "dispatcher"
    assert bus.password is not None and bus.password.reveal() == "mqtt-pass-456"
    assert bus.ca_file == GOOD / "secrets" / "ca.pem"
    assert (bus.topic_prefix, bus.client_id, bus.shared_group) == ("hosting/events", "dispatcher-7", "dispatchers")
    assert (bus.dead_letter_topic, bus.protocol) == ("hosting/dead-letter", "5")

    assert (config.http.listen_host, config.http.listen_port) == ("0.0.0.0", 9000)
    assert config.http.token is not None and config.http.token.reveal() == "api-token-123"
    assert config.http.token_file == GOOD / "secrets" / "api.token"
    assert config.store.path == GOOD / "state" / "dispatcher.db"
    assert config.templates.dir == GOOD / "templates"

    email = config.channels.email
    assert (email.host, email.port, email.security, email.username) == ("smtp.example.com", 587, "starttls", "mailer")
    assert email.password is not None and email.password.reveal() == "smtp-pass-xyz"
    assert email.from_addr == "Server notices <root@server1.example.com>"
    assert (email.timeout_s, email.concurrency) == (12.5, 2)
    pushbullet = config.channels.pushbullet
    assert (pushbullet.api_url, pushbullet.timeout_s, pushbullet.concurrency) == ("http://127.0.0.1:8999", 3.0, 1)
    posturl = config.channels.posturl
    assert (posturl.timeout_s, posturl.format, posturl.concurrency) == (4.0, "json", 5)
    assert dict(config.channels.plugins) == {}

    delivery = config.delivery
    assert (delivery.max_attempts, delivery.backoff_initial_s, delivery.backoff_max_s) == (3, 0.5, 0.5)
    assert delivery.give_up_after_s == 60.0
    assert isinstance(delivery.give_up_after_s, float)

    assert dict(config.importance) == {
        "AutoSSL/CertificateExpiring": Importance.MEDIUM,
        "Backup/*": Importance.HIGH,
        "Check/Biglog": Importance.DISABLED,
    }

    assert list(config.contacts) == ["root", "night-shift"]
    root = config.contacts["root"]
    assert root.email == ("admin@example.com", "ops+alerts@example.org")
    # The token file ends in spaces and blank lines; they are not part of the token.
    assert root.targets("pushbullet") == ("o.pushbullet-abc",)
    assert root.targets("posturl") == ("https://hooks.example.com/notify?key=hook-key-789",)
    assert root.targets("email") == root.email
    assert root.targets("fax") == ()
    assert dict(root.receives) == {"email": Threshold.ALL, "pushbullet": Threshold.MEDIUM, "posturl": Threshold.HIGH}
    night = config.contacts["night-shift"]
    # Only email is given; the other channels keep SPEC §3's defaults.
    assert dict(night.receives) == {"email": Threshold.HIGH, "pushbullet": Threshold.MEDIUM, "posturl": Threshold.ALL}
    assert night.pushbullet == () and night.posturl == ()

    first, second, third = config.routes
    assert first.match.type == "Backup/*" and first.match.min_importance == Importance.MEDIUM
    assert first.to == ("root", "night-shift") and first.continue_ is True
    assert (second.match.app, second.match.account, second.match.host) == ("cPHulk", "b*", "*.example.com")
    # Data values are globs matched as text, so the YAML string "3" stays a string.
    assert dict(second.match.data) == {"domain": "*.example.com", "count": "3"}
    assert second.continue_ is False and second.match.type is None
    assert third.to == ("root",) and third.match == type(third.match)()


def test_inline_config_values() -> None:
    """inline.yaml: inline secrets, an IPv6 listener on port 0, implicit TLS email on 465, MQTT 3.1.1."""
    config = load_config(GOOD / "inline.yaml")
    assert (config.bus.host, config.bus.port, config.bus.tls, config.bus.protocol) == ("::1", 11883, False, "3.1.1")
    assert config.bus.username == "1234"
    assert config.bus.password == Secret("inline-mqtt-password")
    assert (config.http.listen_host, config.http.listen_port) == ("::1", 0)
    assert config.http.token == Secret("inline-api-token") and config.http.token_file is None
    email = config.channels.email
    assert (email.security, email.port, email.from_addr) == ("tls", 465, "alerts@host-b.example.net")
    ops = config.contacts["ops"]
    assert ops.targets("pushbullet") == ("plain-token", "mapped-token")
    assert ops.targets("posturl") == ("https://user:pw@hooks.example.com/x?key=abc", "http://10.0.0.1:8080/hook")
    # `email: null` keeps the default; `pushbullet: none` switches the channel off.
    assert ops.receives["email"] == Threshold.ALL and ops.receives["pushbullet"] == Threshold.NONE


def test_anchors_and_merge_keys() -> None:
    """Aliases share a mapping and `<<:` merges one, with the local keys added."""
    contacts = load_config(GOOD / "anchors.yaml").contacts
    high = {"email": Threshold.HIGH, "pushbullet": Threshold.HIGH, "posturl": Threshold.ALL}
    assert dict(contacts["alice"].receives) == high
    assert dict(contacts["carol"].receives) == high
    assert dict(contacts["bob"].receives) == {**high, "posturl": Threshold.NONE}


def test_empty_and_minimal_files_give_the_defaults() -> None:
    """A file with only a hostname equals default_config() for that hostname, apart from its source."""
    minimal = load_config(GOOD / "minimal.yaml")
    assert dataclasses.replace(minimal, source=None) == default_config("minimal.example.com")
    assert load_config(GOOD / "empty.yaml").hostname == socket.getfqdn()


def test_default_config() -> None:
    """default_config(): SPEC §8's defaults, no contacts or routes, From derived from the hostname."""
    config = default_config("box.example.com")
    assert config.bus == BusConfig(url="mqtt://127.0.0.1:1883", host="127.0.0.1", port=1883, tls=False)
    assert (config.http.listen_host, config.http.listen_port, config.http.token) == ("127.0.0.1", 8470, None)
    assert config.store.path == Path("/var/lib/dispatcher/dispatcher.db")
    assert config.templates.dir is None
    assert config.channels.email.from_addr == "dispatcher@box.example.com"
    assert (config.channels.email.host, config.channels.email.port) == ("127.0.0.1", 25)
    assert config.channels.pushbullet.api_url == "https://api.pushbullet.com"
    assert config.channels.posturl.format == "form"
    # SPEC §8: no attempt limit by default; the time bound decides when a delivery fails.
    assert (config.delivery.max_attempts, config.delivery.give_up_after_s) == (None, 86400.0)
    assert dict(config.contacts) == {} and config.routes == () and dict(config.importance) == {}
    assert config.source is None
    assert default_config().hostname == socket.getfqdn()


# --------------------------------------------------------------------------------------------------------------------
# The shipped example


def test_example_config_is_valid(tmp_path: Path) -> None:
    """config/dispatcher.example.yaml loads once its /etc/dispatcher/ files exist, and its values are the defaults.

    The example documents each default by using it, so everything but the secrets, `from`, the templates
    directory and the sample importance/contacts/routes must equal default_config().
    """
    etc = tmp_path / "etc"
    text = EXAMPLE.read_text(encoding="utf-8").replace("/etc/dispatcher/", f"{etc}/")
    for name in re.findall(rf"_file: {re.escape(str(etc))}/(\S+)", text):
        (etc / name).parent.mkdir(parents=True, exist_ok=True)
        (etc / name).write_text(f"secret-for-{name}\n" if not name.endswith(".url") else "https://h.example/x?k=v\n")
    (etc / "templates").mkdir()
    path = tmp_path / "dispatcher.yaml"
    path.write_text(text, encoding="utf-8")

    config = load_config(path)
    defaults = default_config(config.hostname)
    assert config.bus == defaults.bus
    assert (config.http.listen_host, config.http.listen_port) == ("127.0.0.1", 8470)
    assert config.http.token == Secret("secret-for-api.token")
    assert config.store == defaults.store
    assert config.templates.dir == etc / "templates"
    assert dataclasses.replace(config.channels.email, from_addr=defaults.channels.email.from_addr) == (
        defaults.channels.email
    )
    assert config.channels.pushbullet == defaults.channels.pushbullet
    assert config.channels.posturl == defaults.channels.posturl
    assert config.delivery == defaults.delivery
    root = config.contacts["root"]
    assert root.targets("pushbullet") == ("secret-for-pushbullet.token",)
    assert root.targets("posturl") == ("https://h.example/x?k=v",)
    assert len(config.routes) == 1 and config.routes[0].to == ("root",)


def test_example_references_secrets_under_etc_dispatcher() -> None:
    """The example names every secret by a `*_file` path under /etc/dispatcher/, never inline."""
    text = EXAMPLE.read_text(encoding="utf-8")
    values = re.findall(r"^\s*-?\s*(\w+_file): (\S+)", text, flags=re.MULTILINE)
    assert values, "the example names no secret files"
    for key, value in values:
        assert value == "null" or value.startswith("/etc/dispatcher/"), (key, value)
    # Inline twins appear only in comments.
    assert not re.search(r"^\s*-?\s*(password|token): ", text, flags=re.MULTILINE)


# --------------------------------------------------------------------------------------------------------------------
# Bad files


BAD_CASES = sorted(BAD.glob("*.yaml"))


def test_enough_bad_cases() -> None:
    """The bad set keeps at least a dozen cases, each with its expectation."""
    assert len(BAD_CASES) >= 12
    assert all(path.with_suffix(".expected").is_file() for path in BAD_CASES)


@pytest.mark.parametrize("path", BAD_CASES, ids=lambda p: p.stem)
def test_bad_config_reports_every_issue(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad file fails with exactly its expected FILE:LINE:COL lines, in file order, and no secret in them."""
    monkeypatch.chdir(BAD)
    expected = path.with_suffix(".expected").read_text(encoding="utf-8").splitlines()
    with pytest.raises(ConfigError) as err:
        load_config(path.name)
    assert _issues(err) == expected
    assert str(err.value) == "\n".join(expected)
    assert SECRET_MARK not in str(err.value)


def test_secret_values_do_not_leak_into_errors() -> None:
    """Wrongly typed or badly formed secrets are reported without their value (the case file really has them)."""
    text = (BAD / "secrets_not_leaked.yaml").read_text(encoding="utf-8")
    assert text.count(SECRET_MARK) >= 5
    with pytest.raises(ConfigError) as err:
        parse_config(text, source="s.yaml", base_dir=BAD)
    assert len(_issues(err)) >= 5
    assert SECRET_MARK not in str(err.value) and SECRET_MARK not in repr(err.value)


def test_max_attempts_null_means_no_limit_and_an_integer_a_limit() -> None:
    """`delivery.max_attempts: null` (or left out) is no attempt limit (None); a positive integer is a limit."""
    assert parse_config("delivery: {max_attempts: null}\n").delivery.max_attempts is None
    assert parse_config("delivery: {}\n").delivery.max_attempts is None
    assert parse_config("delivery: {max_attempts: 12}\n").delivery.max_attempts == 12
    with pytest.raises(ConfigError) as err:
        parse_config("delivery: {max_attempts: 0}\n", source="c.yaml")
    assert _issues(err) == ["c.yaml:1:26: delivery.max_attempts: expected an integer at least 1, got 0"]


def test_retention_days_defaults_to_30_and_null_keeps_everything() -> None:
    """`store.retention_days` left out is 30 days (as cPanel keeps its history); null keeps everything (the one key
    whose null is not its default); a positive integer is the limit; 0, a negative number or text is an error."""
    assert parse_config("store: {}\n").store.retention_days == 30
    assert default_config("h.example.com").store.retention_days == 30
    assert parse_config("store: {retention_days: null}\n").store.retention_days is None
    assert parse_config("store: {retention_days: 7}\n").store.retention_days == 7
    for value, problem in (
        ("0", "expected an integer between 1 and 36500, got 0"),
        ("forever", "expected an integer, got 'forever'"),
        ("-1", "expected an integer between 1 and 36500, got -1"),
    ):
        with pytest.raises(ConfigError) as err:
            parse_config(f"store: {{retention_days: {value}}}\n", source="c.yaml")
        assert _issues(err) == [f"c.yaml:1:25: store.retention_days: {problem}"]


def test_the_store_is_an_sqlite_file_or_a_postgresql_database() -> None:
    """`store.path` (the default) or `store.url` (SPEC §8a: a PostgreSQL database), not both; `where` is what the
    store is opened with. The URL must be a postgresql:// one, and carries no password (libpq reads a password
    file), which no message repeats."""
    sqlite = parse_config("store: {path: /var/lib/d/d.db}\n").store
    assert (sqlite.path, sqlite.url, sqlite.where) == (Path("/var/lib/d/d.db"), None, Path("/var/lib/d/d.db"))
    url = "postgresql://dispatcher@db.example.com:5432/dispatcher?passfile=/etc/dispatcher/pgpass"
    postgres = parse_config(f"store: {{url: '{url}', retention_days: 7}}\n").store
    assert (postgres.path, postgres.url, postgres.where, postgres.retention_days) == (None, url, url, 7)
    replicated = "postgresql://dispatcher@db1:5432,db2:5433/dispatcher?target_session_attrs=read-write"
    assert parse_config(f"store: {{url: '{replicated}'}}\n").store.url == replicated  # libpq's hosts, each its port
    for text, problem in (
        (
            "store: {path: d.db, url: 'postgresql://h/d'}",
            "1:26: store.url: give either path (an SQLite file) or url (a PostgreSQL database), not both",
        ),
        ("store: {url: 'mysql://h/d'}", "1:14: store.url: expected a postgresql:// URL, got 'mysql://h/d'"),
        (
            "store: {url: 'postgresql://u:hunter2@h/d'}",
            "1:14: store.url: a password does not belong in the URL: give libpq a password file"
            " (?passfile=/etc/dispatcher/pgpass, in the format of ~/.pgpass)",
        ),
        (
            "store: {url: 'postgresql://u@h/d?password=hunter2'}",
            "1:14: store.url: a password does not belong in the URL: give libpq a password file"
            " (?passfile=/etc/dispatcher/pgpass, in the format of ~/.pgpass)",
        ),
        ("store: {url: 'postgresql://h:99999/d'}", "1:14: store.url: bad host or port in 'postgresql://h:99999/d'"),
        (
            "store: {url: 'postgresql://db1:5432,db2:x/d'}",
            "1:14: store.url: bad host or port in 'postgresql://db1:5432,db2:x/d'",
        ),
    ):
        with pytest.raises(ConfigError) as err:
            parse_config(text + "\n", source="c.yaml")
        assert _issues(err) == [f"c.yaml:{problem}"]
        assert "hunter2" not in str(err.value)


def test_an_importance_key_that_matches_no_known_type_is_a_warning() -> None:
    """`Foo/*` with no catalog type of application Foo, or an exact type not in the catalog, loads (unknown types
    are allowed) with a `FILE:LINE:COL: warning:` line at the key, suggesting a close name when there is one; keys
    that match catalog types give none."""
    config = parse_config(
        "importance:\n"
        "  Backup/*: high\n"
        "  AutoSSL/CertificateExpiring: medium\n"
        "  Foo/*: low\n"
        "  autossl/*: low\n"
        "  Backup/Failur: medium\n"
        "  Custom/Thing: high\n",
        source="w.yaml",
    )
    assert dict(config.importance)["Foo/*"] == Importance.LOW
    assert config.warnings == (
        "w.yaml:4:3: warning: importance.Foo/*: no type in the catalog has the application 'Foo';"
        " it only applies to events published as Foo/…",
        "w.yaml:5:3: warning: importance.autossl/*: no type in the catalog has the application 'autossl'"
        " (did you mean AutoSSL/*?); it only applies to events published as autossl/…",
        "w.yaml:6:3: warning: importance.Backup/Failur: 'Backup/Failur' is not a type in the catalog"
        " (did you mean Backup/Failure?); it only applies if events of that type are published",
        "w.yaml:7:3: warning: importance.Custom/Thing: 'Custom/Thing' is not a type in the catalog;"
        " it only applies if events of that type are published",
    )
    assert parse_config("importance: {Backup/*: high, Check/Biglog: low}\n").warnings == ()
    # Warnings are not part of what a config means.
    assert config == dataclasses.replace(config, warnings=())


def test_a_shared_group_on_a_postgresql_store_is_warned_about() -> None:
    """A cluster (a PostgreSQL store) elects one intake on the config's one client id: a `shared_group` would spread
    events over sessions where a stopped member's share waits for it. Warned about, not refused; on SQLite (one
    instance a file) nothing is said."""
    cluster = "bus: {shared_group: dispatchers}\nstore: {url: 'postgresql://dispatcher@db/dispatcher'}\n"
    assert parse_config(cluster, source="c.yaml").warnings == (
        "c.yaml:2:8: warning: store: instances on a PostgreSQL store elect one intake with the one bus.client_id;"
        " bus.shared_group spreads events over sessions that wait for a stopped member (set it to null)",
    )
    assert parse_config("bus: {shared_group: dispatchers}\nstore: {path: /tmp/d.db}\n").warnings == ()
    assert parse_config("store: {url: 'postgresql://dispatcher@db/dispatcher'}\n").warnings == ()


def test_check_config_prints_warnings_and_exits_0(tmp_path: Path) -> None:
    """check-config prints an importance key that matches no known type as `FILE:LINE:COL: warning: …` on stderr,
    and still says OK and exits 0."""
    path = tmp_path / "dispatcher.yaml"
    path.write_text("hostname: h.example.com\nimportance:\n  Backup/*: high\n  Bakup/*: low\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "dispatcher", "check-config", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    assert result.stderr.splitlines() == [
        f"{path}:4:3: warning: importance.Bakup/*: no type in the catalog has the application 'Bakup'"
        " (did you mean Backup/*?); it only applies to events published as Bakup/…"
    ]
    assert result.stdout == f"{path}: OK\n"


def test_the_daemon_logs_config_warnings_at_load(tmp_path: Path) -> None:
    """The daemon logs each warning of its config (`config_warning`) when it is built from it, as check-config
    prints them."""
    config = parse_config("importance: {Nope/*: high}\nstore: {path: s.db}\n", source="d.yaml", base_dir=tmp_path)
    with capture_logs() as logs:
        Dispatcher(config)
    assert [entry for entry in logs if entry["event"] == "config_warning"] == [
        {"event": "config_warning", "log_level": "warning", "warning": config.warnings[0]}
    ]
    assert config.warnings[0].startswith("d.yaml:1:14: warning: importance.Nope/*: ")


def test_config_error_is_a_dispatcher_error() -> None:
    """The CLI catches DispatcherError, so ConfigError must be one."""
    with pytest.raises(DispatcherError):
        parse_config("bus: 3\n")


def test_missing_config_file(tmp_path: Path) -> None:
    """A config file that cannot be read is one issue naming the file."""
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as err:
        load_config(missing)
    assert _issues(err) == [f"{missing}: cannot read the config file: No such file or directory"]


def test_non_utf8_file(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 are reported at their line and column."""
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"hostname: a\ncontacts:\n  caf\xe9: {}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert _issues(err) == [f"{path}:3:6: the file is not UTF-8 text"]


def test_control_character_is_a_syntax_error() -> None:
    """A character YAML does not allow is reported with its position, as the other syntax errors."""
    with pytest.raises(ConfigError) as err:
        parse_config("hostname: a\nbus: \x07\n", source="c.yaml")
    assert _issues(err) == ["c.yaml:2:6: YAML syntax error: special characters are not allowed (#x0007)"]


def test_parse_config_resolves_paths_against_base_dir(tmp_path: Path) -> None:
    """parse_config() names issues after `source` and reads relative `*_file` paths from `base_dir`."""
    (tmp_path / "tok").write_text("t0ken\n\n")
    config = parse_config("http: {token_file: tok}\n", source="x.yaml", base_dir=tmp_path)
    assert config.http.token == Secret("t0ken") and config.http.token_file == tmp_path / "tok"
    assert config.source is None
    with pytest.raises(ConfigError) as err:
        parse_config("http: {token_file: other}\n", source="x.yaml", base_dir=tmp_path)
    assert _issues(err) == ["x.yaml:1:20: http.token_file: cannot read 'other': No such file or directory"]


# --------------------------------------------------------------------------------------------------------------------
# Channel plugins


@pytest.fixture
def slack_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An installed distribution (a real .dist-info on sys.path) declaring channel entry point `slack`."""
    dist = tmp_path / "site" / "dispatcher_slack-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: dispatcher-slack\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[dispatcher.channels]\nslack = dispatcher_slack:SlackChannel\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return "slack"


def test_plugin_channel_settings_pass_through(slack_plugin: str) -> None:
    """With a `dispatcher.channels` entry point installed, its key is accepted under channels and in contacts."""
    config = parse_config(
        "channels:\n"
        "  slack: {webhook_file: /x, retries: 3, nested: {a: [1, 2]}}\n"
        "contacts:\n"
        "  ops:\n"
        "    slack: ['#ops', '#alerts']\n"
        "  dev:\n"
        "    receives: {slack: high}\n"
    )
    assert dict(config.channels.plugins) == {"slack": {"webhook_file": "/x", "retries": 3, "nested": {"a": [1, 2]}}}
    ops = config.contacts["ops"]
    assert ops.targets("slack") == ("#ops", "#alerts")
    assert ops.receives["slack"] == Threshold.ALL
    assert config.contacts["dev"].receives["slack"] == Threshold.HIGH


def test_plugin_channel_unknown_without_entry_point() -> None:
    """Without the entry point, the same keys are unknown-key errors."""
    with pytest.raises(ConfigError) as err:
        parse_config("channels:\n  slack: {}\ncontacts:\n  ops:\n    slack: ['#ops']\n", source="p.yaml")
    assert [line.split(": ", 2)[:2] for line in _issues(err)] == [
        ["p.yaml:2:3", "channels.slack"],
        ["p.yaml:5:5", "contacts.ops.slack"],
    ]


def test_plugin_channel_settings_must_be_a_mapping(slack_plugin: str) -> None:
    """A plugin's settings are a mapping (or null for none)."""
    assert dict(parse_config("channels:\n  slack:\n").channels.plugins) == {"slack": {}}
    with pytest.raises(ConfigError) as err:
        parse_config("channels:\n  slack: [a]\n", source="p.yaml")
    assert _issues(err) == ["p.yaml:2:10: channels.slack: expected a mapping, got a list"]


# --------------------------------------------------------------------------------------------------------------------
# Secrets, immutability, redaction


def test_secret_never_renders_its_value() -> None:
    """Secret shows as <secret> in repr, str and f-strings; reveal() gives the value."""
    secret = Secret("hunter2")
    assert repr(secret) == str(secret) == f"{secret}" == "<secret>"
    assert secret.reveal() == "hunter2"
    assert Secret("a") == Secret("a") and Secret("a") != Secret("b")


def test_config_repr_hides_every_secret() -> None:
    """The repr of a whole loaded config (as a log line would show it) holds no secret value."""
    text = repr(load_config(GOOD / "full.yaml")) + repr(load_config(GOOD / "inline.yaml"))
    for secret in (
        "mqtt-pass-456",
        "api-token-123",
        "smtp-pass-xyz",
        "o.pushbullet-abc",
        "hook-key-789",
        "inline-mqtt-password",
        "inline-api-token",
        "inline-smtp",
        "plain-token",
        "mapped-token",
        "user:pw",
    ):
        assert secret not in text
    assert "<secret>" in text


def test_config_is_immutable() -> None:
    """Dataclasses are frozen and the mappings read-only, so a config can be shared across tasks safely."""
    config = load_config(GOOD / "full.yaml")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.hostname = "x"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.bus.port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.contacts["x"] = Contact(name="x")  # type: ignore[index]
    with pytest.raises(TypeError):
        config.contacts["root"].receives["email"] = Threshold.NONE  # type: ignore[index]
    with pytest.raises(TypeError):
        config.importance["A/b"] = Importance.LOW  # type: ignore[index]


def test_loading_twice_gives_equal_configs() -> None:
    """Equal files give equal configs (a reload can tell whether a section changed)."""
    assert load_config(GOOD / "full.yaml") == load_config(GOOD / "full.yaml")
    assert load_config(GOOD / "full.yaml") != load_config(GOOD / "inline.yaml")


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("https://hooks.example.com/notify?key=abc", "https://hooks.example.com/notify?key=***"),
        (
            "https://user:pw@hooks.example.com:8443/n?a=1&b=&c#frag",
            "https://hooks.example.com:8443/n?a=***&b=***&***#***",
        ),
        ("http://[::1]:8080/hook", "http://[::1]:8080/hook"),
        ("https://u@h.example/p", "https://h.example/p"),
        ("http://h:99999/x?k=v", "http://h:99999/x?k=***"),
        ("https://[::1/x?k=v", "***"),
    ],
)
def test_redact_url(url: str, redacted: str) -> None:
    """redact_url() drops user info and hides query values and fragments, keeping scheme, host, port and path."""
    assert redact_url(url) == redacted
