"""`dispatcher render TYPE [-c FILE] [--data K=V]… [--account A] [--channel C] [--recipient system|account]
[--no-examples]`: print what a channel would send for an event of TYPE, rendered with the configured templates,
sending nothing.

The event's `account` is `--account`, else the catalog's example account when the type's templates name one. Data
fields not given with `--data` take the catalog's example values, so every type can be previewed as it is;
`--no-examples` renders exactly what was given, as the daemon would. Warnings (stderr, one line each): a type the
catalog does not know, data fields its templates do not use, and, once an event is described (`--data` or
`--account`), what it leaves out.
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

CHANNELS = ("email", "pushbullet", "posturl")
# The account a preview for an account's own contacts is about when neither --account nor the catalog names one.
PREVIEW_ACCOUNT = "example"


def add_parser(sub: SubParsers) -> None:
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
    parser.add_argument(
        "--account", help="the hosting account the event concerns (default: the catalog's example account)"
    )
    parser.add_argument(
        "--no-examples",
        action="store_true",
        help="render only what --data and --account give, as the daemon would (default: examples fill the rest)",
    )
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
    known = args.type in catalog
    given = parse_data(args.data)
    examples = not args.no_examples
    data = {**(dict(alert.fields) if known and examples else {}), **given}
    account = args.account
    if account is None and examples and known and alert.account is not None:
        account = str(alert.account.example)
    if args.recipient == "account" and not account:
        account = PREVIEW_ACCOUNT

    warnings = [unknown_type_warning(catalog, args.type), unknown_fields_warning(catalog, args.type, given)]
    if args.no_examples or given or args.account:
        # An event is being described: say what it leaves to the examples (or, without them, out).
        missing = missing_fields(catalog, args.type, given, args.account)
        warnings.append(missing_fields_warning(args.type, missing, filled_with_examples=examples))
    for warning in warnings:
        if warning:
            warn(warning)

    event = preview_event(args.type, data, account=account, host=config.hostname)
    if args.recipient == "account":
        recipient = Recipient(kind="account", name=f"account:{account}", targets={}, thresholds=None)
    else:
        recipient = Recipient(kind="system", name="root", targets={}, thresholds=None)
    renderer = Renderer(catalog, templates_dir=config.templates.dir, hostname=config.hostname)
    importance = effective_importance(args.type, config, catalog)
    message = renderer.render(event, importance=importance, recipient=recipient, channel=args.channel)
    lines = [f"Subject: {message.subject}", "", "--- text " + "-" * 63, message.text.removesuffix("\n")]
    if args.channel not in TEXT_ONLY_CHANNELS:
        lines += ["--- html " + "-" * 63, message.html]
    print_out(lines)
    return 0
