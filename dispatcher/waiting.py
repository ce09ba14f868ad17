"""Waiting for an `asyncio.Event` with a bound, without losing a cancellation.

The daemon's loops sleep until woken or until their next pass (`wait_set`). Python 3.11's `asyncio.wait_for`
returns the awaited result when the task is cancelled just as what it awaits completes, and the cancellation is lost
(CPython gh-86296, fixed in 3.12): a loop woken in the same moment as the stop cancelled it went on looping, and the
daemon's stop waited on it for ever. `asyncio.timeout` counts cancellations and never loses one.
"""

from __future__ import annotations

import asyncio


async def wait_set(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait until `event` is set or `timeout_s` has passed (at once if it is not positive); whether it is set."""
    try:
        async with asyncio.timeout(max(0.0, timeout_s)):
            await event.wait()
    except TimeoutError:
        return False
    return True
