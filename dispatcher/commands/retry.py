"""`dispatcher retry -c FILE (--delivery ID | --event ID | --failed)`: put failed deliveries back to pending now.

Writes the store directly, beside a running daemon (no instance lock: this change is meant for it); the
daemon's scheduler finds the rows at its next sweep, within a few seconds, and attempts them with a fresh retry
budget. Prints how many were put back (`retried: N`); 0 when none matched, which is not an error.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from .. import outbox
from ..errors import DispatcherError
from ..store import Store, store_exists
from .common import SubParsers, add_config_option, config_from


def add_parser(sub: SubParsers) -> None:
    parser = sub.add_parser("retry", help="put failed deliveries back to pending now")
    add_config_option(parser)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--delivery", dest="delivery_id", metavar="ID", type=int, help="the failed delivery ID")
    which.add_argument("--event", dest="event_id", metavar="ID", help="the failed deliveries of event ID")
    which.add_argument("--failed", action="store_true", help="every failed delivery")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    config = config_from(args)
    where = config.store.where
    if not store_exists(where):
        raise DispatcherError(f"no store at {where}: the daemon has not run with this config yet")
    retried = asyncio.run(
        retry(Store(where, schemas=[outbox.SCHEMA]), delivery_id=args.delivery_id, event_id=args.event_id)
    )
    print(f"retried: {retried}")
    return 0


async def retry(store: Store, *, delivery_id: int | None, event_id: str | None) -> int:
    """Open `store`, put the matching failed deliveries back to pending (every one if neither is given), close it."""
    await store.open()
    try:
        now = time.time()
        return await store.run(
            lambda conn: outbox.retry_failed(conn, delivery_id=delivery_id, event_id=event_id, now=now)
        )
    finally:
        await store.close()
