"""`dispatcher catalog [-c FILE] [--json]`: the alert types with their effective importance, audience and gates.

The table has one line per type: key, effective importance (with the config entry that set it, if one did),
audience, the `notify_*` preference that gates it for accounts, the WHMCS email category, and the alert name. Without
`-c` the importances are the catalog's defaults. `--json` prints a list of objects instead.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from ..catalog import AlertType, Catalog, load_catalog
from ..config import Config
from ..routing.importance import ImportanceSource, explain_importance
from .common import add_config_option, config_from

# The order audiences are shown in: the Contact Manager's own first.
_AUDIENCE_ORDER = ("system", "account")


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "catalog", help="list the alert types with name, effective importance, audience and preference key"
    )
    add_config_option(parser, required=False)
    parser.add_argument("--json", action="store_true", help="print a JSON list of objects instead of a table")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    config = config_from(args)
    catalog = load_catalog()
    if args.json:
        print(json.dumps(catalog_entries(config, catalog), indent=2, ensure_ascii=False))
    else:
        for line in catalog_table(config, catalog):
            print(line)
    return 0


def catalog_entries(config: Config, catalog: Catalog) -> list[dict[str, Any]]:
    """One JSON object per alert type, in key order."""
    entries = []
    for alert in catalog:
        source = explain_importance(alert.key, config, catalog)
        entries.append(
            {
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
            }
        )
    return entries


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
