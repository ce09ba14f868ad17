"""`dispatcher routes TYPE -c FILE [--account A] [--client-id N] [--host H] [--data K=V]… [--json]`.

Prints the deliveries an event would make, as the daemon's planner decides them, and the recipients or addresses
that would get nothing with the reason; sends nothing, and needs neither the bus nor the HTTP server. Targets are
shown the way the channel shows them in logs (`describe_target`): email addresses as they are, Pushbullet tokens
as `pushbullet:<8 hex digits of their SHA-256>`, URLs with credentials and query values masked.

The recipients come from `recipient_sources()`: the system contacts of the config, and the account and client
contacts of the store when one is given (the command does not open the store yet).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..catalog import load_catalog
from ..channels import Channel, short_hash
from ..config import Config
from ..errors import UsageError
from ..events import Event, InvalidEvent, parse_event
from ..noise.gate import explain_plan
from ..routing.importance import ImportanceSource, explain_importance
from ..routing.planner import Plan, plan_event
from ..routing.recipients import RecipientSource, SystemContacts
from ..routing.routes import select_contacts
from ..senders.channel_set import build_channels
from ..store import Store, StoreNotCreated, store_exists
from .catalog import format_table, importance_text
from .common import SubParsers, add_config_option, add_data_option, config_from, parse_data

if TYPE_CHECKING:
    from ..catalog import AlertType, Catalog

TargetDescriber = Callable[[str, str], str]


def add_parser(sub: SubParsers) -> None:
    parser = sub.add_parser(
        "routes",
        help="print the deliveries an event would make (recipient, channel, target, or why not); sends nothing",
    )
    parser.add_argument("type", metavar="TYPE", help="the event type, App/Event")
    add_config_option(parser)
    parser.add_argument("--account", help="the hosting account the event concerns")
    parser.add_argument("--client-id", type=int, help="the billing client the event concerns")
    parser.add_argument("--host", help="the host the event comes from (default: the config's hostname)")
    add_data_option(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.set_defaults(handler=handle)


def recipient_sources(config: Config, store: Store | None = None) -> list[RecipientSource]:
    """The sources the planner asks, in the daemon's order: system contacts, then (given a store) accounts and clients.

    The order matters: when two recipients share an address, the first source's recipient keeps the delivery.
    Without a store only the system contacts of `config` are asked.
    """
    sources: list[RecipientSource] = [SystemContacts()]
    if store is not None:
        from ..contacts import recipient_sources as contact_sources

        sources.extend(contact_sources(store))
    return sources


def handle(args: argparse.Namespace) -> int:
    config = config_from(args)
    event = event_from(args, config)
    catalog = load_catalog()
    channels = build_channels(config)  # as the daemon builds them: they decide availability and how targets show
    plan, held = asyncio.run(_plan(event, config, catalog, channels))
    alert = catalog.get(event.type)
    describe = target_describer(channels)
    source = explain_importance(event.type, config, catalog)
    routes = matched_routes(event, alert, plan, config)
    if args.json:
        answer = plan_json(event, alert, plan, source, routes, describe, held)
        print(json.dumps(answer, indent=2, ensure_ascii=False))
    else:
        known = catalog.known(event.type)
        for line in plan_lines(event, alert, plan, source, routes, describe, known=known, held=held):
            print(line)
    return 0


async def _plan(
    event: Event, config: Config, catalog: Catalog, channels: Mapping[str, Channel]
) -> tuple[Plan, list[str | None]]:
    """The plan the daemon would make now, after its silences, repeat rules and quiet hours (`explain_plan`), and
    for each delivery why it would wait, if it would."""
    # The daemon's store, read-only (`routes` must never write to a running daemon's database), when there is one:
    # without it only the config's system contacts can be asked.
    store = Store(config.store.where, readonly=True) if store_exists(config.store.where) else None
    try:
        if store is not None:
            try:
                await store.open()
            except StoreNotCreated:  # a PostgreSQL database the daemon has not created its tables in yet
                store = None
        sources = recipient_sources(config, store)
        plan = await plan_event(event, config=config, catalog=catalog, sources=sources, channels=channels)
        return await explain_plan(plan, event, config, store, time.time())
    finally:
        if store is not None:
            await store.close()
        for channel in channels.values():
            await channel.close()


def event_from(args: argparse.Namespace, config: Config) -> Event:
    """The event the flags describe, validated as the daemon would validate it."""
    payload: dict[str, Any] = {"type": args.type}
    if args.account:
        payload["account"] = args.account
    if args.client_id is not None:
        payload["client_id"] = args.client_id
    if args.host:
        payload["host"] = args.host
    if args.data:
        payload["data"] = parse_data(args.data)
    try:
        return parse_event(payload, topic_type=None, default_host=config.hostname)
    except InvalidEvent as err:
        raise UsageError(f"not a valid event: {err}") from err


def matched_routes(event: Event, alert: AlertType, plan: Plan, config: Config) -> list[int] | None:
    """Indexes of the routing rules that fitted; None when routes do not apply (the type is for accounts alone)."""
    if "system" not in alert.audience:
        return None
    return select_contacts(event, plan.importance, config)[1]


def target_describer(channels: Mapping[str, Channel]) -> TargetDescriber:
    """`describe(channel, target)`: the channel's own safe form of a target (`describe_target`).

    A channel that is not available shows `<channel>:<8 hex digits of the target's SHA-256>`, which reveals nothing.
    """

    def describe(channel: str, target: str) -> str:
        instance = channels.get(channel)
        return instance.describe_target(target) if instance is not None else f"{channel}:{short_hash(target)}"

    return describe


def plan_lines(
    event: Event,
    alert: AlertType,
    plan: Plan,
    source: ImportanceSource,
    routes: list[int] | None,
    describe: TargetDescriber,
    *,
    known: bool,
    held: list[str | None] | None = None,
) -> list[str]:
    """The text answer: a short heading, the deliveries table, then the suppressed table (if anything is).

    `held`: for each delivery, why it would wait (quiet hours), or None; when one would, the deliveries table has a
    WHEN column (`now`, or `deferred: <why>`)."""
    alert_line = (
        f"alert:      {alert.name}" if known else f"alert:      unknown type, sent as {alert.key} ({alert.name})"
    )
    if routes is None:
        routes_line = "routes:     not used (the type goes to the account alone)"
    elif routes:
        routes_line = "routes:     " + ", ".join(f"routes[{index}]" for index in routes)
    else:
        routes_line = "routes:     none matched (every system contact)"
    importance = importance_text(event.type, source)
    lines = [f"event:      {event.type}", alert_line, f"importance: {importance}", routes_line, ""]
    if plan.deliveries:
        rows = [
            [delivery.recipient.name, delivery.channel, describe(delivery.channel, delivery.target)]
            for delivery in plan.deliveries
        ]
        headers = ["RECIPIENT", "CHANNEL", "TARGET"]
        if held and any(held):
            headers.append("WHEN")
            for row, why in zip(rows, held, strict=True):
                row.append(f"deferred: {why}" if why else "now")
        lines.extend(format_table(headers, rows))
    else:
        lines.append("no deliveries")
    if plan.suppressed:
        rows = [
            [
                item.recipient_name,
                item.channel or "-",
                "-" if item.target is None or item.channel is None else describe(item.channel, item.target),
                item.reason,
            ]
            for item in plan.suppressed
        ]
        lines.append("")
        lines.extend(format_table(["SUPPRESSED", "CHANNEL", "TARGET", "REASON"], rows))
    return lines


def plan_json(
    event: Event,
    alert: AlertType,
    plan: Plan,
    source: ImportanceSource,
    routes: list[int] | None,
    describe: TargetDescriber,
    held: list[str | None] | None = None,
) -> dict[str, Any]:
    """The `--json` answer: the event, its alert type, importance, fitting routes, deliveries and suppressions.

    A delivery that would wait (quiet hours, `held`) carries `deferred`: why, and until when."""
    waits = held or [None] * len(plan.deliveries)
    return {
        "event": {
            "type": event.type,
            "host": event.host,
            "account": event.account,
            "client_id": event.client_id,
            "data": dict(event.data),
        },
        "alert": alert.key,
        "importance": plan.importance.label,
        "importance_source": source.origin,
        "routes": routes,
        "deliveries": [
            {
                "recipient": delivery.recipient.name,
                "kind": delivery.recipient.kind,
                "channel": delivery.channel,
                "target": describe(delivery.channel, delivery.target),
                **({"deferred": why} if why else {}),
            }
            for delivery, why in zip(plan.deliveries, waits, strict=True)
        ],
        "suppressed": [
            {
                "recipient": item.recipient_name,
                "channel": item.channel,
                "target": None if item.target is None or item.channel is None else describe(item.channel, item.target),
                "reason": item.reason,
            }
            for item in plan.suppressed
        ],
    }
