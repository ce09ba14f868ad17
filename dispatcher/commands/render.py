"""`dispatcher render TYPE [-c FILE] [--data K=V]… [--channel C] [--recipient system|account]`: print what a
channel would send for an event of TYPE, rendered with the configured templates, sending nothing.

Fields not given with `--data` take the catalog's example values, so every type can be previewed as it is.
"""

from __future__ import annotations

import argparse
import uuid
from datetime import UTC, datetime
from typing import Any

from ..catalog import load_catalog
from ..errors import UsageError
from ..events import _TYPE_RE, Event
from ..render import TEXT_ONLY_CHANNELS, Renderer
from ..routing.importance import effective_importance
from ..routing.recipients import Recipient
from .common import add_config_option, add_data_option, config_from, parse_data

CHANNELS = ("email", "pushbullet", "posturl")
# The account a preview is about when neither --account nor the example data names one.
PREVIEW_ACCOUNT = "example"


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("render", help="print the rendered subject, text and HTML of an event type")
    parser.add_argument("type", metavar="TYPE", help="the event type, App/Event")
    add_config_option(parser, required=False)
    add_data_option(parser)
    parser.add_argument(
        "--channel", choices=CHANNELS, default="email", help="the channel to render for (default: email)"
    )
    parser.add_argument(
        "--recipient",
        choices=("system", "account"),
        default="system",
        help="render for a system contact (default) or for the account's own contacts",
    )
    parser.add_argument("--account", help="the hosting account the event concerns (default: the example data's user)")
    parser.set_defaults(handler=handle)


def preview_event(event_type: str, data: dict[str, Any], *, account: str | None, host: str) -> Event:
    """An event of `event_type` as a publisher would send it, for previews."""
    now = datetime.now(UTC)
    return Event(
        id=str(uuid.uuid4()),
        type=event_type,
        occurred_at=now,
        host=host,
        account=account,
        client_id=None,
        data=data,
        received_at=now,
    )


def handle(args: argparse.Namespace) -> int:
    if not _TYPE_RE.match(args.type):
        raise UsageError(f"render: {args.type!r} is not an event type of the form App/Event")
    config = config_from(args)
    catalog = load_catalog()
    alert = catalog.get(args.type)
    examples = dict(alert.fields) if args.type in catalog else {}
    data = {**examples, **parse_data(args.data)}
    account = args.account or _str_or_none(data.get("user"))
    if args.recipient == "account" and not account:
        account = PREVIEW_ACCOUNT
    event = preview_event(args.type, data, account=account, host=config.hostname)
    if args.recipient == "account":
        recipient = Recipient(kind="account", name=f"account:{account}", targets={}, thresholds=None)
    else:
        recipient = Recipient(kind="system", name="root", targets={}, thresholds=None)
    renderer = Renderer(catalog, templates_dir=config.templates.dir, hostname=config.hostname)
    importance = effective_importance(args.type, config, catalog)
    message = renderer.render(event, importance=importance, recipient=recipient, channel=args.channel)
    print(f"Subject: {message.subject}")
    print()
    print("--- text " + "-" * 63)
    print(message.text, end="")
    if args.channel not in TEXT_ONLY_CHANNELS:
        print("--- html " + "-" * 63)
        print(message.html)
    return 0


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
