"""`dispatcher deliveries -c FILE [--event ID] [--status S] [--limit N] [--json]`: list recorded deliveries.

Opens the store read-only beside the daemon (no instance lock), so it works whether or not the daemon is running.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from ..errors import DispatcherError, StoreError
from ..outbox import STATUSES, list_deliveries
from ..store import Store, store_exists
from .common import SubParsers, add_config_option, config_from


def add_parser(sub: SubParsers) -> None:
    parser = sub.add_parser("deliveries", help="list recorded deliveries")
    add_config_option(parser)
    parser.add_argument("--event", dest="event_id", metavar="ID", help="only the deliveries of this event")
    parser.add_argument("--status", choices=STATUSES, help="only deliveries in this state")
    parser.add_argument("--limit", type=int, default=50, help="at most this many, newest first (default 50)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    config = config_from(args)
    where = config.store.where
    if not store_exists(where):
        raise DispatcherError(f"no store at {where}: the daemon has not run with this config yet")
    store = Store(where, readonly=True)
    try:
        rows = asyncio.run(_list(store, event_id=args.event_id, status=args.status, limit=max(1, args.limit)))
    except StoreError as err:
        raise DispatcherError(f"cannot read the store at {store.shown}: {err}") from err
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    columns = (
        "id",
        "event_id",
        "event_type",
        "recipient",
        "channel",
        "target",
        "status",
        "attempts",
        "updated",
        "next attempt",
        "reason",
    )
    table = [
        (
            str(row["id"]),
            row["event_id"],
            row["event_type"],
            row["recipient"],
            row["channel"] or "-",
            row["target"] or "-",
            row["status"],
            str(row["attempts"]),
            _when(row["updated_at"]),
            _when(row["next_attempt_at"]) if row["status"] == "pending" and row["next_attempt_at"] else "-",
            row["reason"] or "",
        )
        for row in rows
    ]
    widths = [
        max(len(column), *(len(line[i]) for line in table)) if table else len(column)
        for i, column in enumerate(columns)
    ]
    for line in (columns, *table):
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    return 0


async def _list(store: Store, *, event_id: str | None, status: str | None, limit: int) -> list[dict[str, Any]]:
    await store.open()
    try:
        return await store.run(lambda conn: list_deliveries(conn, event_id=event_id, status=status, limit=limit))
    finally:
        await store.close()


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")
