"""`dispatcher catalog [TYPE] [-c FILE] [--json | --markdown]`: the alert types, or one in full.

Without TYPE, a table with one line per type: key, effective importance (with the config entry that set it, if one
did), audience, the `notify_*` preference that gates it for accounts, the WHMCS email category, and the alert name.
With TYPE, everything about that type: its trigger, what the event's `account` is, and the data fields its
templates use, each with its meaning and an example, then an example event. Without `-c` the importances are the
catalog's defaults. `--json` prints the same as JSON (a list of objects, or one object for TYPE).

`--markdown` prints the event reference page, docs/events.md, from the catalog's defaults (a config is not read):
`dispatcher catalog --markdown > docs/events.md` regenerates it, and a test fails when the page is out of date.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from typing import Any

from ..catalog import FALLBACK_TYPE, AlertType, Catalog, DataField, load_catalog
from ..config import Config
from ..errors import DispatcherError, UsageError
from ..routing.importance import ImportanceSource, explain_importance
from .common import SubParsers, add_config_option, config_from, print_out, suggest_type

# The order audiences are shown in: the Contact Manager's own first.
_AUDIENCE_ORDER = ("system", "account")
MARKDOWN_COMMAND = "dispatcher catalog --markdown > docs/events.md"


def add_parser(sub: SubParsers) -> None:
    parser = sub.add_parser(
        "catalog",
        help="list the alert types with name, effective importance, audience and preference key, or show one type",
    )
    parser.add_argument(
        "type", metavar="TYPE", nargs="?", help="show this type in full, with the data fields its templates use"
    )
    add_config_option(parser, required=False)
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print JSON instead of a table")
    output.add_argument(
        "--markdown", action="store_true", help="print the event reference page (docs/events.md) for every type"
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    catalog = load_catalog()
    if args.markdown:
        if args.type:
            raise UsageError("catalog: --markdown prints every type; leave out TYPE")
        print_out([catalog_markdown(catalog).removesuffix("\n")])
        return 0
    config = config_from(args)
    if args.type:
        if args.type not in catalog:
            raise DispatcherError(
                f"{args.type} is not a catalog type{suggest_type(catalog, args.type)}; `dispatcher catalog` lists them"
            )
        alert = catalog.get(args.type)
        if args.json:
            print_out([json.dumps(catalog_entry(config, catalog, alert), indent=2, ensure_ascii=False)])
        else:
            print_out(type_details(config, catalog, alert))
        return 0
    if args.json:
        print_out([json.dumps(catalog_entries(config, catalog), indent=2, ensure_ascii=False)])
    else:
        print_out(catalog_table(config, catalog))
    return 0


# -- JSON --------------------------------------------------------------------------------------------------------


def catalog_entries(config: Config, catalog: Catalog) -> list[dict[str, Any]]:
    """One JSON object per alert type, in key order."""
    return [catalog_entry(config, catalog, alert) for alert in catalog]


def catalog_entry(config: Config, catalog: Catalog, alert: AlertType) -> dict[str, Any]:
    """The JSON object of one alert type: what the table shows, its trigger and aliases, what the event's `account`
    is (null when its templates name none), and its data fields (`name`, `meaning`, `example`) in catalog order."""
    source = explain_importance(alert.key, config, catalog)
    return {
        "type": alert.key,
        "name": alert.name,
        "trigger": alert.trigger,
        "importance": source.importance.label,
        "importance_source": source.origin,
        "default_importance": alert.importance.label,
        "audience": _audience(alert),
        "preference": alert.preference,
        "category": alert.category,
        "aliases": [alias.name for alias in alert.aliases],
        "account": _field_json(alert.account) if alert.account is not None else None,
        "fields": [{"name": name, **_field_json(field)} for name, field in alert.data_fields.items()],
    }


def _field_json(field: DataField) -> dict[str, Any]:
    return {"meaning": field.meaning, "example": field.example}


def example_event(alert: AlertType) -> dict[str, Any]:
    """An event of the type as a publisher sends it, with the catalog's examples."""
    event: dict[str, Any] = {"type": alert.key}
    if alert.account is not None:
        event["account"] = alert.account.example
    event["data"] = dict(alert.fields)
    return event


# -- text --------------------------------------------------------------------------------------------------------


def catalog_table(config: Config, catalog: Catalog) -> list[str]:
    """The lines of the table: a header, then one line per alert type in key order."""
    rows = [
        [
            alert.key,
            importance_text(alert.key, explain_importance(alert.key, config, catalog)),
            ",".join(_audience(alert)),
            alert.preference or "-",
            alert.category or "-",
            alert.name,
        ]
        for alert in catalog
    ]
    # The name last: names run long, and a last column needs no padding.
    return format_table(["TYPE", "IMPORTANCE", "AUDIENCE", "PREFERENCE", "CATEGORY", "NAME"], rows)


def type_details(config: Config, catalog: Catalog, alert: AlertType) -> list[str]:
    """Everything about one type, as lines: its settings, its account, its data fields, an example event."""
    source = explain_importance(alert.key, config, catalog)
    default = " (the catalog's default)" if source.origin == "catalog" else ""
    facts = [
        ("type", alert.key),
        ("name", alert.name),
        ("trigger", alert.trigger),
        ("importance", importance_text(alert.key, source) + default),
        ("audience", ", ".join(_audience(alert))),
        ("preference", alert.preference or "- (nothing gates it)"),
        ("category", alert.category or "- (not sent to billing contacts)"),
    ]
    facts += [("also", f"{alias.name}: {alias.trigger}") for alias in alert.aliases]
    if alert.account is not None:
        facts.append(("account", f"{alert.account.meaning} Example: {json.dumps(alert.account.example)}"))
    else:
        facts.append(("account", "- (its messages name no account)"))
    width = max(len(label) for label, _ in facts) + 2
    lines = [f"{label + ':':<{width}}{value}" for label, value in facts]
    lines.append("")
    if alert.data_fields:
        lines.append("data fields its templates use (the event's `data`):")
        name_width = max(len(name) for name in alert.data_fields) + 2
        for name, field in alert.data_fields.items():
            lines.append(f"  {name:<{name_width}}{field.meaning or '(no description)'}")
            lines.append(f"  {'':<{name_width}}example: {json.dumps(field.example, ensure_ascii=False)}")
    else:
        lines.append("data fields: none")
    lines += ["", "example event:", json.dumps(example_event(alert), indent=2, ensure_ascii=False)]
    return lines


def importance_text(event_type: str, source: ImportanceSource) -> str:
    """`high`, or `high (config)` / `high (config Backup/*)` when a config entry set it."""
    if source.origin == "config":
        return f"{source.importance.label} (config)"
    if source.origin == "config App/*":
        return f"{source.importance.label} (config {event_type.partition('/')[0]}/*)"
    return source.importance.label


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns two spaces apart; the last column is not padded, so no line ends in spaces."""
    widths = [max(len(str(row[column])) for row in [headers, *rows]) for column in range(len(headers))]
    lines = []
    for row in [headers, *rows]:
        cells = [str(cell).ljust(width) for cell, width in zip(row[:-1], widths, strict=False)]
        lines.append("  ".join([*cells, str(row[-1])]).rstrip())
    return lines


def _audience(alert: AlertType) -> list[str]:
    return [audience for audience in _AUDIENCE_ORDER if audience in alert.audience]


# -- Markdown: docs/events.md ------------------------------------------------------------------------------------


def catalog_markdown(catalog: Catalog) -> str:
    """The event reference page: how an event looks, then an index and one section per type, from the catalog's
    defaults. Deterministic, so that a test can compare it with docs/events.md."""
    out = [
        "# Event types",
        "",
        "<!-- Generated from dispatcher/catalog/catalog.yaml: do not edit by hand. To regenerate, run",
        f"     `{MARKDOWN_COMMAND}` (tests/test_event_contract.py fails while this page is out of date). -->",
        "",
        "Every event type the daemon knows, with the data its messages use: what a publisher sends for each. It is",
        "generated from the catalog (`dispatcher/catalog/catalog.yaml`); `dispatcher catalog TYPE` shows the same for",
        "one type, and `dispatcher catalog --json` all of it as JSON.",
        "",
        "An event is one JSON object, published on the bus (topic `events/<App>/<Event>`) or posted to",
        "`POST /api/v1/events`:",
        "",
        "```json",
        json.dumps(
            {
                "type": "Quota/DiskWarning",
                "account": "bob",
                "data": {"domain": "example.com", "quota_used_mb": 9420, "quota_limit_mb": 10240, "percent_used": 92},
            },
            indent=2,
        ),
        "```",
        "",
        "- `type`: `App/Event`, one of the types below. A type not listed here is accepted and sent with the generic",
        f"  `{FALLBACK_TYPE}` template (which lists every data field) at low importance unless the configuration's",
        "  `importance:` says otherwise.",
        "- `account`: the hosting account (cPanel user) the event concerns. Messages name it, routing sends the notice",
        "  to the account's own contacts when the type's audience includes `account`, and to its billing client when",
        "  the type has a category. Types whose messages name an account say what it is under **Account**; never put",
        "  the account in `data`.",
        "- `data`: the fields below. A field left out (or null, or blank) is left out of the subject and reads",
        '  "(not given)" in the body; a field a type does not list is not shown. `dispatcher publish` and',
        "  `dispatcher render` warn about both. Times are RFC 3339 (`_at`), sizes MiB (`_mb`), durations seconds",
        "  (`_s`).",
        "- Optional: `id` (the idempotency key), `occurred_at`, `host`, `client_id`.",
        "",
        "Columns of each type: **importance** is the default (the configuration's `importance:` overrides it);",
        "**audience** `system` means root's contacts (`contacts:` in the configuration), `account` the account's own",
        "contacts as well; **preference** is the account's `notify_*` setting that must be on for its contacts to get",
        "it; **category** is the WHMCS email category under which the billing client and its contacts get it.",
        "",
        "## Index",
        "",
        "| type | name | importance | audience |",
        "| --- | --- | --- | --- |",
    ]
    for alert in catalog:
        out.append(
            f"| [{alert.key}](#{_anchor(alert.key)}) | {_cell(alert.name)} | {alert.importance.label} | "
            f"{', '.join(_audience(alert))} |"
        )
    for alert in catalog:
        out += ["", f"## {alert.key}", "", f"**{_cell(alert.name)}**: {_cell(alert.trigger)}", ""]
        for alias in alert.aliases:
            out += [f"Also **{_cell(alias.name)}**: {_cell(alias.trigger)}", ""]
        out += [
            f"- Importance: {alert.importance.label}",
            f"- Audience: {', '.join(_audience(alert))}",
            f"- Preference: {_code_or_none(alert.preference)}",
            f"- Category: {_code_or_none(alert.category)}",
        ]
        if alert.account is not None:
            out.append(f"- Account: {_cell(alert.account.meaning or '')} Example: `{alert.account.example}`")
        else:
            out.append("- Account: none named")
        out.append("")
        if alert.data_fields:
            out += ["| field | meaning | example |", "| --- | --- | --- |"]
            for name, field in alert.data_fields.items():
                example = json.dumps(field.example, ensure_ascii=False)
                out.append(f"| `{name}` | {_cell(field.meaning or '')} | `{_cell(example, code=True)}` |")
            out.append("")
        out += ["Example:", "", "```json", json.dumps(example_event(alert), indent=2, ensure_ascii=False), "```"]
    return "\n".join(out) + "\n"


def _anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation other than `-` and `_` dropped, spaces as `-`."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def _cell(text: str, *, code: bool = False) -> str:
    """Text safe inside a Markdown table cell (pipes escaped); in code spans, backticks become quotes."""
    text = text.replace("|", "\\|")
    return text.replace("`", "'") if code else text


def _code_or_none(value: str | None) -> str:
    return f"`{value}`" if value else "none"
