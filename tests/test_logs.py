"""Log lines as the journal gets them: JSON, one per line, flushed once per event-loop iteration."""

from __future__ import annotations

import asyncio
import io
import json
import re
import threading
from collections.abc import Iterator

import pytest
import structlog

from dispatcher.logs import configure_logging


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1

    def isatty(self) -> bool:
        return False


@pytest.fixture
def stream() -> Iterator[CountingStream]:
    counting = CountingStream()
    configure_logging(json_lines=True, stream=counting)
    yield counting
    configure_logging()
    structlog.contextvars.clear_contextvars()


def lines(stream: CountingStream) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def test_lines_of_one_loop_iteration_are_flushed_together(stream: CountingStream) -> None:
    log = structlog.get_logger("test")
    structlog.contextvars.bind_contextvars(event_id="e-1")
    for number in range(100):
        log.info("delivery_sent", delivery_id=number)
    assert stream.flushes == 0
    await asyncio.sleep(0)  # the next iteration
    assert stream.flushes == 1
    logged = lines(stream)
    assert [line["delivery_id"] for line in logged] == list(range(100))
    assert {(line["event"], line["level"], line["event_id"]) for line in logged} == {("delivery_sent", "info", "e-1")}
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", str(line["timestamp"])) for line in logged)


def test_outside_a_loop_each_line_is_flushed_at_once(stream: CountingStream) -> None:
    log = structlog.get_logger("test")
    log.warning("from_the_main_thread", value=object.__name__)
    thread = threading.Thread(target=lambda: log.error("from_a_thread", value={1, 2}))
    thread.start()
    thread.join()
    assert stream.flushes == 2
    assert [(line["event"], line["value"]) for line in lines(stream)] == [
        ("from_the_main_thread", "object"),
        ("from_a_thread", "{1, 2}"),  # not JSON: its repr
    ]


def test_a_loop_that_ends_before_its_flush_holds_nothing_back(stream: CountingStream) -> None:
    """A loop interrupted (Ctrl-C) before it ran its flush: the next loop's lines, and those, still get written."""
    log = structlog.get_logger("test")

    async def interrupted() -> None:
        log.info("from_the_first_loop")
        raise KeyboardInterrupt  # leaves the loop at once, its flush still queued

    loop = asyncio.new_event_loop()
    with pytest.raises(KeyboardInterrupt):
        loop.run_until_complete(interrupted())
    loop.close()

    async def next_loop() -> None:
        log.info("from_the_second_loop")
        await asyncio.sleep(0)

    asyncio.run(next_loop())
    assert [line["event"] for line in lines(stream)] == ["from_the_first_loop", "from_the_second_loop"]
