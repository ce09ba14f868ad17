"""What the noise control tests share: waiting until the embedded daemon has nothing left to do, and checking that
something does not happen for a while."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from .conftest import RunningDaemon, wait_until


def nothing_left(conn: Any) -> bool:
    """Every stored event is planned and no delivery is pending due now: what has not arrived will not (a delivery
    held back until later, by quiet hours, does not count)."""
    unplanned = conn.execute("SELECT count(*) FROM events WHERE planned = 0").fetchone()[0]
    due = conn.execute(
        "SELECT count(*) FROM deliveries WHERE status = 'pending' AND next_attempt_at <= ?", (time.time(),)
    ).fetchone()[0]
    return bool(unplanned == 0 and due == 0)


async def settled(daemon: RunningDaemon, timeout_s: float = 10.0) -> None:
    """Wait until the embedded daemon has planned every event and sent or settled every delivery due now."""
    await wait_until(lambda: daemon.dispatcher.store.run(nothing_left), timeout_s=timeout_s)


async def holds_for(predicate: Callable[[], Any], duration_s: float, interval_s: float = 0.02) -> None:
    """Check `predicate` all through `duration_s`; fail as soon as it is false (for what must not happen yet)."""
    deadline = time.monotonic() + duration_s
    while True:
        assert predicate(), f"stopped holding within {duration_s}s"
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(interval_s)
