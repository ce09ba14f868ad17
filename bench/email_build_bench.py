"""How many emails per second the email channel turns into SMTP DATA bytes, the old way and the new, on one core.

The work `EmailChannel.send()` does per message before aiosmtplib talks to the server: validate the address, build
the message and produce its bytes. Two ways, on the same messages:

- **before**: what the channel did until it wrote the bytes itself: `email.headerregistry.Address` for the address,
  an `EmailMessage` filled header by header (default policy), `set_content()` + `add_alternative()`, then
  aiosmtplib's `flatten_message()` (the `BytesGenerator`), as `send_message()` ran it on an 8BITMIME server;
- **after**: `EmailChannel.build_message()` (and the channel's address check) as the daemon runs it now.

A realistic message: a 60-character subject, a 1.5 KB text part and a 6 KB HTML part (inline styles, as the
shipped templates write them), both with a few non-ASCII characters, to a different address each time. Every
message has its own event id in its text and HTML, as in a burst of events (scenario b): nothing is reused from
one to the next. `fan-out` is the same rendered message to many addresses (scenario c), where the channel encodes
the bodies once.

    .venv/bin/python bench/email_build_bench.py [--messages N] [--rounds R]

Prints messages/s and µs per message for each way; the best of several rounds counts (as with `timeit`), since
other load on a shared machine only slows rounds down. The goal is a few tens of µs per message (the daemon's
goal is 1,500 emails/s end to end).
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from aiosmtplib.email import flatten_message

from dispatcher.channels.base import Message
from dispatcher.channels.email import EmailChannel, _one_line, _parse_address
from dispatcher.config import EmailChannelConfig

HOSTNAME = "server1.example.com"
FROM_ADDR = "Server notices <root@server1.example.com>"
GOAL_US = 100.0

SUBJECT = "[server1.example.com] Nightly backup failed: /backup is full"  # 60 characters
TEXT_PARAGRAPH = (
    "The nightly backup of server1.example.com failed at 03:12 UTC — the destination /backup is full.\n"
    "  • account bob: 12.4 GiB not written\n"
    "  • account carol: 3.1 GiB not written\n"
    "Free some space on /backup or change the destination in WHM › Backup Configuration, then run:\n"
    "    /usr/local/cpanel/bin/backup --force\n\n"
)
HTML_ROW = (
    '<tr>\n<td style="padding:8px 24px;font-size:15px;line-height:22px;border-bottom:1px solid #eaecf0;">'
    "<p>The nightly backup of <strong>server1.example.com</strong> failed at 03:12 UTC — the destination "
    '<code style="font-family:Menlo,Consolas,monospace;background-color:#f2f4f7;">/backup</code> is full.</p>'
    '<p><a href="https://server1.example.com:2087/scripts/backup_config" style="color:#1d4ed8;">WHM › Backup '
    "Configuration</a></p></td>\n</tr>\n"
)


def realistic_message(n: int) -> Message:
    """Message `n`: about 1.5 KB of text and 6 KB of HTML, carrying its own event id."""
    event_id = f"bench-{n:08d}"
    text = f"Event {event_id}\n" + TEXT_PARAGRAPH * 5
    text = text[:1500]
    html = (
        f'<!DOCTYPE html>\n<html>\n<body style="margin:0;padding:0;background-color:#f2f4f7;">\n'
        f'<table role="presentation" width="600" cellpadding="0" cellspacing="0" border="0">\n'
        f"<!-- {event_id} -->\n" + HTML_ROW * 13 + "</table>\n</body>\n</html>\n"
    )
    return Message(
        subject=SUBJECT,
        text=text,
        html=html,
        event_id=event_id,
        event_type="Backup/Failure",
        importance="high",
        hostname=HOSTNAME,
        account="bob",
    )


def old_way(message: Message, target: str) -> bytes:
    """The channel's per-message work as it was: Address, EmailMessage, the generator."""
    address = Address(addr_spec=target.strip()).addr_spec
    email_message = EmailMessage()
    email_message["From"] = _one_line(FROM_ADDR)
    email_message["To"] = address
    email_message["Subject"] = _one_line(message.subject)
    email_message["Date"] = format_datetime(datetime.now(UTC))
    email_message["Message-ID"] = make_msgid(domain=HOSTNAME)
    email_message["Auto-Submitted"] = "auto-generated"
    email_message["X-Dispatcher-Event-Id"] = _one_line(message.event_id)
    email_message["X-Dispatcher-Event-Type"] = _one_line(message.event_type)
    email_message.set_content(message.text, charset="utf-8")
    email_message.add_alternative(message.html, subtype="html", charset="utf-8")
    # What aiosmtplib's send_message() did with it on a server offering 8BITMIME.
    return flatten_message(email_message, utf8=False, cte_type="8bit")


def measure(work: Callable[[int], bytes], count: int, rounds: int) -> float:
    """The best round's seconds per message."""
    best_s = float("inf")
    for _ in range(rounds):
        gc.collect()
        started = time.perf_counter()
        for n in range(count):
            work(n)
        best_s = min(best_s, time.perf_counter() - started)
    return best_s / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=4000, help="messages per round (default 4000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the best counts (default 5)")
    args = parser.parse_args()
    count, rounds = max(1, args.messages), max(1, args.rounds)

    channel = EmailChannel(EmailChannelConfig(from_addr=FROM_ADDR), hostname=HOSTNAME)
    messages = [realistic_message(n) for n in range(count)]
    targets = [f"user{n}@example.com" for n in range(count)]
    sample = channel.build_message(messages[0], targets[0])
    print(
        f"message: subject {len(SUBJECT)} chars, text {len(messages[0].text.encode())} B, "
        f"HTML {len(messages[0].html.encode())} B; on the wire: before {len(old_way(messages[0], targets[0]))} B, "
        f"after {len(sample)} B"
    )

    results = {
        "before (EmailMessage + generator)": measure(lambda n: old_way(messages[n], targets[n]), count // 4, rounds),
        "after (bytes written directly)": measure(
            lambda n: channel.build_message(messages[n], _parse_address(targets[n])), count, rounds
        ),
        "after, fan-out (one message, many addresses)": measure(
            lambda n: channel.build_message(messages[0], _parse_address(targets[n])), count, rounds
        ),
    }
    for name, per_message_s in results.items():
        print(f"{name:46} {1 / per_message_s:9.0f} messages/s  {per_message_s * 1e6:8.1f} µs/message")
    before_s, after_s = results["before (EmailMessage + generator)"], results["after (bytes written directly)"]
    print(f"speed-up: {before_s / after_s:.0f}×")
    if after_s * 1e6 > GOAL_US:
        raise SystemExit(f"after: {after_s * 1e6:.1f} µs/message, above the {GOAL_US:g} µs goal")


if __name__ == "__main__":
    main()
