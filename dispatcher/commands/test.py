"""`dispatcher test RECIPIENT CHANNEL -c FILE`: send a test notice now (the Contact Manager's "Test" link).

Sends from this process with the config's channel settings, not through the daemon: it works even when the
daemon is down, which is when an admin most wants to know whether notices can get out.
"""

from __future__ import annotations

import argparse
import asyncio

from ..catalog import load_catalog
from ..probe import resolve_test_recipient, send_test_notice
from ..render import Renderer
from ..routing.recipients import Recipient
from ..senders.channel_set import build_channels
from ..store import Store, store_exists
from .common import SubParsers, add_config_option, config_from


def add_parser(sub: SubParsers) -> None:
    parser = sub.add_parser("test", help="send a test notification now")
    parser.add_argument("recipient", metavar="RECIPIENT", help="a system contact name, or account:NAME")
    parser.add_argument("channel", metavar="CHANNEL", help="email, pushbullet, posturl or a plugin channel")
    add_config_option(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    config = config_from(args)
    return asyncio.run(_send(config, args.recipient, args.channel))


async def _send(config, spec: str, channel_name: str) -> int:  # type: ignore[no-untyped-def]
    store = Store(config.store.where, readonly=True)
    if spec.startswith("account:"):  # only accounts live in the store; system contacts are in the config
        await store.open()
    try:
        recipient: Recipient = await resolve_test_recipient(config, spec, store)
    finally:
        await store.close()
    renderer = Renderer(load_catalog(), templates_dir=config.templates.dir, hostname=config.hostname)
    channels = build_channels(config)
    # Recorded in the daemon's store when there is one (a plain writable open, which a running daemon allows);
    # a first test before the daemon ever ran creates no store.
    record_in = Store(config.store.where) if store_exists(config.store.where) else None
    try:
        if record_in is not None:
            await record_in.open()
        outcomes = await send_test_notice(
            config=config,
            renderer=renderer,
            channels=channels,
            recipient=recipient,
            channel_name=channel_name,
            store=record_in,
        )
    finally:
        for channel in channels.values():
            await channel.close()
        if record_in is not None:
            await record_in.close()
    for outcome in outcomes:
        line = f"{outcome['status']}: {recipient.name} via {outcome['channel']} to {outcome['target']}"
        print(line + (f": {outcome['error']}" if outcome.get("error") else ""))
    return 0 if all(outcome["status"] == "sent" for outcome in outcomes) else 1
