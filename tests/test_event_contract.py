"""The event contract: the catalog says which data each type's templates use, `dispatcher catalog` shows it, the
reference page docs/events.md is the catalog, and `publish` and `render` warn about events that stray from it."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import jinja2
import pytest
from jinja2 import nodes

from dispatcher.catalog import load_catalog
from dispatcher.commands.catalog import catalog_markdown
from dispatcher.commands.common import parse_data
from dispatcher.commands.publish import event_warnings
from dispatcher.events import parse_event
from dispatcher.levels import Importance
from dispatcher.render import NOT_GIVEN, Renderer, shipped_templates_dir
from dispatcher.routing.recipients import Recipient

CATALOG = load_catalog()
REPO = Path(__file__).resolve().parents[1]
REFERENCE_PAGE = REPO / "docs" / "events.md"


def template_reads(event_type: str) -> tuple[set[str], bool]:
    """The `data` fields a type's own templates read (`data.x`, `data["x"]`), and whether they read `event.account`."""
    env = jinja2.Environment()
    fields: set[str] = set()
    account = False
    for part in ("subject", "text", "html"):
        path = shipped_templates_dir() / f"{event_type}.{part}.j2"
        if not path.is_file():
            continue
        tree = env.parse(path.read_text(encoding="utf-8"))
        for node in tree.find_all(nodes.Getattr):
            if isinstance(node.node, nodes.Name) and node.node.name == "data":
                fields.add(node.attr)
            if isinstance(node.node, nodes.Name) and node.node.name == "event" and node.attr == "account":
                account = True
        for node in tree.find_all(nodes.Getitem):
            if isinstance(node.node, nodes.Name) and node.node.name == "data" and isinstance(node.arg, nodes.Const):
                fields.add(node.arg.value)
    return fields, account


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dispatcher", *args], capture_output=True, text=True, timeout=60, check=False, cwd=REPO
    )


def warnings_of(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("dispatcher: warning: ")]


# -- the catalog is what the templates use --------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", CATALOG.keys())
def test_templates_use_exactly_the_catalog_fields(event_type: str) -> None:
    """Each type's templates read exactly the data fields its catalog entry describes, and read the event's
    `account` exactly when the entry says what that account is: the catalog is the contract publishers follow."""
    fields, reads_account = template_reads(event_type)
    alert = CATALOG.get(event_type)
    assert fields == set(alert.fields), f"read but not in the catalog: {fields - set(alert.fields)}, " + (
        f"in the catalog but not read: {set(alert.fields) - fields}"
    )
    assert reads_account == (alert.account is not None)


# -- the reference page -------------------------------------------------------------------------------------------


def test_reference_page_matches_the_catalog() -> None:
    """docs/events.md is exactly what `dispatcher catalog --markdown` makes of the shipped catalog (regenerate it
    with `dispatcher catalog --markdown > docs/events.md` after changing the catalog)."""
    assert REFERENCE_PAGE.read_text(encoding="utf-8") == catalog_markdown(CATALOG), (
        "docs/events.md is out of date: run `dispatcher catalog --markdown > docs/events.md`"
    )


def test_reference_page_shows_every_type_with_its_fields() -> None:
    """Each type has a section with its name, importance, audience, preference, category, account, and a row per
    data field with its meaning and example; the page says how it is made."""
    page = catalog_markdown(CATALOG)
    assert "dispatcher catalog --markdown > docs/events.md" in page.split("\n## ", 1)[0]
    sections = {part.split("\n", 1)[0]: part for part in page.split("\n## ")[1:]}
    assert set(CATALOG.keys()) <= set(sections)
    for alert in CATALOG:
        section = sections[alert.key]
        assert f"**{alert.name}**" in section and f"- Importance: {alert.importance.label}" in section
        assert f"- Preference: {f'`{alert.preference}`' if alert.preference else 'none'}" in section
        if alert.account is not None:
            assert f"- Account: {alert.account.meaning}" in section
        for name, field in alert.data_fields.items():
            assert f"| `{name}` | {field.meaning} | `" in section, (alert.key, name)
    disk = sections["Quota/DiskWarning"]
    assert "| `quota_used_mb` | The disk space the account uses, in MiB. | `9420` |" in disk
    assert '"account": "bob"' in disk


# -- dispatcher catalog --------------------------------------------------------------------------------------------


def test_catalog_type_shows_the_type_with_its_fields() -> None:
    """`dispatcher catalog TYPE` shows one type in full: its settings, what its account is, and each data field its
    templates use with meaning and example, then an example event."""
    result = run_cli("catalog", "Quota/DiskWarning")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "name:       User Disk Usage Warning" in out and "preference: notify_disk_limit" in out
    assert "account:    The account near or over its disk quota." in out
    alert = CATALOG.get("Quota/DiskWarning")
    for name, field in alert.data_fields.items():
        assert f"  {name}" in out and field.meaning in out
        assert f"example: {json.dumps(field.example)}" in out
    example = json.loads(out[out.index("example event:\n") + len("example event:\n") :])
    assert example == {"type": "Quota/DiskWarning", "account": "bob", "data": dict(alert.fields)}


def test_catalog_json_includes_the_fields() -> None:
    """`catalog --json` gives every type its `account` and its `fields` (name, meaning, example, in catalog order);
    `catalog TYPE --json` gives the one object."""
    result = run_cli("catalog", "--json")
    assert result.returncode == 0, result.stderr
    entries = {entry["type"]: entry for entry in json.loads(result.stdout)}
    assert set(entries) == set(CATALOG.keys())
    for alert in CATALOG:
        fields = entries[alert.key]["fields"]
        assert [field["name"] for field in fields] == list(alert.fields)
        assert all(field["meaning"] and "example" in field for field in fields)
    disk = entries["Quota/DiskWarning"]
    assert disk["account"] == {"meaning": "The account near or over its disk quota.", "example": "bob"}
    assert disk["fields"][1] == {
        "name": "quota_used_mb",
        "meaning": "The disk space the account uses, in MiB.",
        "example": 9420,
    }
    assert entries["Check/Smart"]["account"] is None
    one = run_cli("catalog", "Quota/DiskWarning", "--json")
    assert json.loads(one.stdout) == disk


def test_catalog_of_an_unknown_type_suggests_the_near_one() -> None:
    """`catalog Backup/Failed` fails with one line naming the type and the known type it is close to."""
    result = run_cli("catalog", "Backup/Failed")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "dispatcher: Backup/Failed is not a catalog type (did you mean Backup/Failure?); "
        "`dispatcher catalog` lists them"
    ]


@pytest.mark.parametrize("args", [("catalog",), ("catalog", "--json"), ("catalog", "--markdown")])
def test_catalog_into_a_closed_pipe_ends_quietly(args: tuple[str, ...]) -> None:
    """`dispatcher catalog | head -1`: when the reader closes the pipe early, the command ends with status 0 and
    nothing on stderr (it printed a BrokenPipeError traceback)."""
    with subprocess.Popen(
        [sys.executable, "-m", "dispatcher", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        assert process.stdout.readline()
        process.stdout.close()  # what `head -1` does once it has its line
        stderr = process.stderr.read().decode()
        assert process.wait(timeout=60) == 0
    assert stderr == ""


# -- warnings of render and publish ----------------------------------------------------------------------------------


def test_render_names_the_account_it_is_given() -> None:
    """`render Quota/DiskWarning --account carol` names carol (never the example account) in the subject and the
    text, and warns once that the data shown is the catalog's examples."""
    result = run_cli("render", "Quota/DiskWarning", "--account", "carol", "--channel", "pushbullet")
    assert result.returncode == 0, result.stderr
    subject = result.stdout.splitlines()[0]
    assert subject.startswith("Subject: ") and "carol" in subject and NOT_GIVEN not in subject
    assert "The cPanel account carol" in " ".join(result.stdout.split())
    assert "bob" not in result.stdout
    assert warnings_of(result) == [
        "dispatcher: warning: Quota/DiskWarning: not given, shown with the catalog's example values: domain, "
        "quota_used_mb, quota_limit_mb, percent_used, status"
    ]


def test_render_without_examples_shows_what_the_daemon_would_send() -> None:
    """`--no-examples` renders only what was given: with only an account the subject is a sentence naming it, and
    the warning says the rest is left out."""
    result = run_cli("render", "Quota/DiskWarning", "--account", "carol", "--no-examples", "--channel", "posturl")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "Subject: [localhost] Account carol is near its disk quota"
    (warning,) = warnings_of(result)
    assert 'leave them out or show "(not given)": domain, quota_used_mb' in warning


def test_render_warns_about_fields_the_type_does_not_use() -> None:
    """`--data reason=…` for Backup/Failure (whose templates read `error`) renders, with a warning naming the unused
    field and the type's own; a `user` field for a type that names the account points to `--account`."""
    result = run_cli("render", "Backup/Failure", "--data", "reason=disk full", "--channel", "pushbullet")
    assert result.returncode == 0, result.stderr
    unused = warnings_of(result)[0]
    assert "Backup/Failure does not use the data field reason" in unused
    assert "(its fields: started_at, error, failed_accounts, log_file)" in unused
    user = run_cli("render", "Quota/DiskWarning", "--data", "user=carol", "--channel", "pushbullet")
    assert "the account goes in the event's `account` (--account), not in data" in warnings_of(user)[0]
    quiet = run_cli("render", "Backup/Failure", "--channel", "pushbullet")
    assert warnings_of(quiet) == [], "a plain preview of a type warns about nothing"


def test_render_warns_about_an_unknown_type() -> None:
    """A type outside the catalog renders with the generic template and one warning naming the near known type."""
    result = run_cli("render", "Backup/Failed", "--channel", "pushbullet")
    assert result.returncode == 0, result.stderr
    (warning,) = warnings_of(result)
    assert "Backup/Failed is not a catalog type (did you mean Backup/Failure?)" in warning


def test_a_bridged_event_is_not_warned_about_the_fields_its_bridge_shows() -> None:
    """An event the cPanel bridge brought in (`data._bridge: cpanel`) is written with Bridge/cPanel whatever its type,
    which shows its subject, its body and every other field: neither `publish` nor `render` warns that those go
    unused, or that the type's own fields are missing. The same data without the mark is warned about."""
    data = {"subject": "Backup failed on server1", "body": "3 accounts were not backed up.", "_bridge": "cpanel"}
    bridged = parse_event({"type": "Backup/Failure", "data": data}, topic_type=None, default_host="server1")
    assert event_warnings(bridged) == []
    unmarked = {key: value for key, value in data.items() if key != "_bridge"}
    plain = parse_event({"type": "Backup/Failure", "data": unmarked}, topic_type=None, default_host="server1")
    unused, missing = event_warnings(plain)
    assert "Backup/Failure does not use the data fields subject, body" in unused
    assert "not given" in missing
    pairs = [f"--data={key}={value}" for key, value in data.items()]
    result = run_cli("render", "Backup/Failure", *pairs, "--no-examples", "--channel", "pushbullet")
    assert result.returncode == 0, result.stderr
    assert warnings_of(result) == []
    assert result.stdout.splitlines()[0] == "Subject: [localhost] Backup failed on server1"


def test_publish_warns_and_publishes(make_config: Callable[..., Path]) -> None:
    """`publish` sends the event all the same, prints its id, and warns (one line each) about data fields the type
    does not use and about what its templates use that the event lacks, the account included."""
    config = make_config()
    result = run_cli("publish", "Quota/DiskWarning", "-c", str(config), "--data", "reason=full", "--id", "e-1")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "e-1\n"
    unused, missing = warnings_of(result)
    assert "Quota/DiskWarning does not use the data field reason" in unused
    assert missing == (
        'dispatcher: warning: Quota/DiskWarning: not given, so its messages leave them out or show "(not given)": '
        "account (--account), domain, quota_used_mb, quota_limit_mb, percent_used, status"
    )
    complete = run_cli(
        "publish",
        "Quota/DiskWarning",
        "-c",
        str(config),
        "--account",
        "carol",
        "--json",
        str(write_event(config.parent, dict(CATALOG.get("Quota/DiskWarning").fields))),
    )
    assert complete.returncode == 0, complete.stderr
    assert warnings_of(complete) == []


def write_event(folder: Path, data: object) -> Path:
    path = folder / "event.json"
    path.write_text(json.dumps({"data": data}))
    return path


# -- the README's own examples -------------------------------------------------------------------------------------


def readme_quick_start() -> str:
    """The shell block of the README's quick start that publishes events."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```sh\n(.*?)```", readme, re.S)
    return next(block for block in blocks if "dispatcher publish" in block)


def test_readme_examples_make_complete_messages() -> None:
    """The README's quick-start events (a `publish` command line and a `curl` body) give exactly the fields their
    templates read: no warning, and neither the subject nor the text shows `(not given)`; the quota warning names
    the account it was sent for."""
    block = readme_quick_start().replace("\\\n", " ")
    publish = shlex.split(next(line for line in block.splitlines() if "dispatcher publish" in line))
    event_type = publish[2]
    pairs = [publish[i + 1] for i, word in enumerate(publish) if word == "--data"]
    account = next((publish[i + 1] for i, word in enumerate(publish) if word == "--account"), None)
    body = re.search(r"-d '(.*?)'", readme_quick_start(), re.S)
    assert body is not None
    payloads = [
        {"type": event_type, "data": parse_data(pairs), **({"account": account} if account else {})},
        json.loads(body.group(1)),
    ]
    renderer = Renderer(CATALOG, templates_dir=None, hostname="server1.example.com")
    root = Recipient(kind="system", name="root", targets={}, thresholds=None)
    for payload in payloads:
        event = parse_event(payload, topic_type=None, default_host="server1.example.com")
        assert event_warnings(event) == [], payload
        message = renderer.render(event, importance=Importance.HIGH, recipient=root)
        assert NOT_GIVEN not in message.subject + message.text, (payload, message.text)
        if event.account:
            assert event.account in message.subject
    assert {payload["type"] for payload in payloads} == {"Backup/Failure", "Quota/DiskWarning"}
