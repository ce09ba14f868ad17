"""`dispatcher publish TYPE -c FILE`: publish one event on the configured bus (QoS 1, waits for the broker).

Before publishing, one warning line each on stderr (the event is published all the same): a type the catalog does
not know, data fields its templates do not use, and what they use that the event does not give (its `account`,
data fields). The event's id is printed on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from ..catalog import load_catalog
from ..errors import UsageError
from ..events import Event, InvalidEvent, parse_event
from ..intake.mqtt import publish_event
from .common import (
    SubParsers,
    add_config_option,
    add_data_option,
    config_from,
    missing_fields,
    missing_fields_warning,
    parse_data,
    print_out,
    unknown_fields_warning,
    unknown_type_warning,
    warn,
)


def add_parser(sub: SubParsers) -> None:
    parser = sub.add_parser("publish", help="publish one event on the configured bus")
    parser.add_argument("type", metavar="TYPE", help="the event type, App/Event")
    add_config_option(parser)
    parser.add_argument("--account", help="the hosting account the event concerns")
    parser.add_argument("--client-id", type=int, help="the billing client the event concerns")
    parser.add_argument("--id", dest="event_id", help="the idempotency key (default: one is made up)")
    add_data_option(parser)
    parser.add_argument(
        "--json", dest="json_file", metavar="FILE", help="a JSON file with the event object to start from"
    )
    parser.set_defaults(handler=handle)


def build_payload(args: argparse.Namespace) -> dict[str, Any]:
    """The event object: the --json file, then the flags on top."""
    payload: dict[str, Any] = {}
    if args.json_file:
        try:
            payload = json.loads(Path(args.json_file).read_text(encoding="utf-8"))
        except OSError as err:
            raise UsageError(f"--json: cannot read {args.json_file}: {err.strerror}") from err
        except json.JSONDecodeError as err:
            raise UsageError(f"--json: {args.json_file} is not valid JSON: {err}") from err
        if not isinstance(payload, dict):
            raise UsageError(f"--json: {args.json_file} must hold a JSON object")
    payload["type"] = args.type
    if args.account:
        payload["account"] = args.account
    if args.client_id is not None:
        payload["client_id"] = args.client_id
    if args.event_id:
        payload["id"] = args.event_id
    if args.data:
        payload["data"] = {**payload.get("data", {}), **parse_data(args.data)}
    return payload


def handle(args: argparse.Namespace) -> int:
    config = config_from(args)
    payload = build_payload(args)
    try:
        event = parse_event(payload, topic_type=args.type, default_host=config.hostname)
    except InvalidEvent as err:
        raise UsageError(f"not a valid event: {err}") from err
    for warning in event_warnings(event):
        warn(warning)
    payload["id"] = event.id  # so the caller can look the event up afterwards
    asyncio.run(publish_event(config.bus, args.type, payload))
    print_out([event.id])
    return 0


def event_warnings(event: Event) -> list[str]:
    """What is wrong with the event against the catalog's contract for its type, one line per kind of problem."""
    catalog = load_catalog()
    data = event.data
    lines = [
        unknown_type_warning(catalog, event.type),
        unknown_fields_warning(catalog, event.type, data),
        missing_fields_warning(event.type, missing_fields(catalog, event.type, data, event.account)),
    ]
    return [line for line in lines if line]
