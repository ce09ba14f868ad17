"""How many messages per second the renderer makes (subject + text + HTML), on one core.

Renders a round-robin mix of the catalog types that have templates, each with its catalog example data, for a system
contact and for the account's own contacts, through the same `Renderer.render()` the pipeline calls for every
delivery. Templates are compiled during a warm-up pass, as they are once per daemon (re)load.

    .venv/bin/python bench/render_bench.py [--renders N]

Prints e.g. `render: 12345 messages/s (subject+text+html, 40 types, 20000 renders)`: the renders are shared over
rounds and the best round counts (as with `timeit`), since other load on a shared machine only slows rounds down.
The goal is at least 5,000/s.
"""

from __future__ import annotations

import argparse
import gc
import time
from datetime import UTC, datetime

from dispatcher.catalog import load_catalog
from dispatcher.events import Event
from dispatcher.render import Renderer, shipped_templates_dir
from dispatcher.routing.recipients import Recipient

GOAL_PER_S = 5000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renders", type=int, default=20000, help="messages to render in all (default 20000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds to share them over; the best counts (default 5)")
    args = parser.parse_args()

    catalog = load_catalog()
    renderer = Renderer(catalog, templates_dir=None, hostname="server1.example.com")
    shipped = shipped_templates_dir()
    now = datetime.now(UTC)
    recipients = [
        Recipient(kind="system", name="root", targets={}, thresholds=None),
        Recipient(kind="account", name="account:bob", targets={}, thresholds=None),
    ]
    work = []
    for alert in catalog:
        if not (shipped / f"{alert.key}.subject.j2").is_file():
            continue
        user = alert.fields.get("user")
        event = Event(
            id=f"bench-{alert.key}",
            type=alert.key,
            occurred_at=now,
            host="server1.example.com",
            account=user if isinstance(user, str) else None,
            client_id=None,
            data=dict(alert.fields),
            received_at=now,
        )
        for recipient in recipients:
            work.append((event, alert.importance, recipient))
    types = len(work) // len(recipients)

    for event, importance, recipient in work:  # warm-up: compile and cache every template
        renderer.render(event, importance=importance, recipient=recipient)

    # The best of several rounds, like timeit: other work on a shared machine only ever slows a round down.
    rounds = max(1, args.rounds)
    per_round = max(1, args.renders // rounds)
    best_s = float("inf")
    for _ in range(rounds):
        gc.collect()
        started = time.perf_counter()
        for i in range(per_round):
            event, importance, recipient = work[i % len(work)]
            message = renderer.render(event, importance=importance, recipient=recipient, channel="email")
            if not (message.subject and message.text and message.html):
                raise SystemExit(f"empty part rendering {event.type}")
        best_s = min(best_s, time.perf_counter() - started)
    rate = per_round / best_s
    print(f"render: {rate:.0f} messages/s (subject+text+html, {types} types, {per_round * rounds} renders)")
    if rate < GOAL_PER_S:
        print(f"render: below the goal of {GOAL_PER_S} messages/s")


if __name__ == "__main__":
    main()
