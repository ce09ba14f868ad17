"""`wait_set`: a loop's bounded wait for its wake-up never loses the cancellation that stops it (CPython gh-86296:
Python 3.11's `asyncio.wait_for` does, when the event is set in the same moment)."""

from __future__ import annotations

import asyncio

import pytest

from dispatcher.waiting import wait_set


async def test_a_wait_cancelled_as_its_event_is_set_is_cancelled() -> None:
    """The event is set and the waiting task cancelled in the same loop iteration, as a planner woken by new events
    while the daemon stops: the task ends cancelled (a loop around the wait stops), every time."""
    for _ in range(50):
        event = asyncio.Event()
        passes = 0

        async def loop(event: asyncio.Event = event) -> None:
            nonlocal passes
            while True:
                passes += 1
                await wait_set(event, 10.0)
                event.clear()

        task = asyncio.create_task(loop())
        await asyncio.sleep(0)  # the loop is waiting
        event.set()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 2.0)
        assert passes == 1


async def test_a_wait_returns_whether_its_event_was_set() -> None:
    event = asyncio.Event()
    assert await wait_set(event, 0.01) is False
    assert await wait_set(event, 0) is False
    event.set()
    assert await wait_set(event, 0) is True
    assert await wait_set(event, -1.0) is True  # set already: no wait
