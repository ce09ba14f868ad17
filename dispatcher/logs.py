"""Logging setup: structlog, JSON lines when stdout is not a terminal (systemd), the console renderer when it is."""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import sys
import threading
import time
from collections.abc import MutableMapping
from typing import Any, TextIO, cast

import structlog

# How logging was last configured: a sender process (dispatcher/senders/child.py) logs the way the daemon does.
settings: dict[str, Any] = {"debug": False, "json_lines": None, "quiet": False}


class _StandardStream:
    """`sys.stdout` or `sys.stderr` looked up at each write, so that a stream swapped later (pytest's capture,
    a daemonising wrapper) is followed instead of writing to a closed file."""

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def stream(self) -> TextIO:
        return getattr(sys, self.name)  # type: ignore[no-any-return]

    def write(self, text: str) -> int:
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()


class _LineWriter:
    """structlog's logger: collects the lines of one event-loop iteration and writes them in one go at its end,
    so a burst's thousands of lines cost a few writes instead of a system call each (the unit runs with
    PYTHONUNBUFFERED=1: every write to stdout is one). In the daemon's busiest moments a sixth of its own
    process's CPU went to log lines, a third of that to the writes. Outside a running loop (the store thread,
    the CLI's commands) a line is written at once, with any still waiting."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()  # the store thread logs too
        self._pending: list[str] = []
        # The loop a flush is scheduled on; a loop that ended before running it does not hold later lines back.
        self._flush_on: asyncio.AbstractEventLoop | None = None

    def msg(self, message: str) -> None:
        with self._lock:
            self._pending.append(message)
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self._write_pending()
                return
            if self._flush_on is loop:
                return
            self._flush_on = loop
        loop.call_soon(self.flush)

    def flush(self) -> None:
        with self._lock:
            self._write_pending()

    def _write_pending(self) -> None:
        self._flush_on = None
        if self._pending:
            lines, self._pending = self._pending, []
            self._stream.write("\n".join(lines) + "\n")
            self._stream.flush()

    log = debug = info = warn = warning = error = critical = exception = fatal = failure = err = msg


_writer: _LineWriter | None = None


@atexit.register
def _flush_at_exit() -> None:
    """Lines of a last loop iteration that never ran."""
    if _writer is not None:
        _writer.flush()


class _TimeStamper:
    """`timestamp`: the time in ISO 8601, UTC, to the microsecond (`2026-11-24T03:10:00.123456Z`), with the
    date and time of the current second formatted once per second, not once per line."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, logger: Any, name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second, self._prefix = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        event_dict["timestamp"] = f"{self._prefix}.{int((now - second) * 1_000_000):06d}Z"
        return event_dict


# One encoder for every line (`json.dumps(…, default=…)` builds a new one each call); what JSON cannot hold is
# shown as its repr, as structlog's renderer does.
_encode_json = json.JSONEncoder(default=repr).encode


def configure_logging(
    *, debug: bool = False, json_lines: bool | None = None, stream: TextIO | None = None, quiet: bool = False
) -> None:
    """Route structlog and the standard library's logging (aiohttp, paho) through one renderer.

    The daemon logs to stdout at INFO; the other commands (`quiet`) log only warnings, on stderr, so their
    stdout holds only their answer.
    """
    if stream is None:
        # Duck-typed: it writes, flushes and answers isatty() like the TextIO it stands for.
        stream = cast(TextIO, _StandardStream("stderr" if quiet else "stdout"))
    if json_lines is None:
        json_lines = not stream.isatty()
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    settings.update(debug=debug, json_lines=json_lines, quiet=quiet)
    global _writer
    if _writer is not None:
        _writer.flush()  # what the old configuration logged goes where it was meant to
    _writer = writer = _LineWriter(stream)
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,  # event_id / event_type bound per event
        structlog.processors.add_log_level,
        _TimeStamper(),
    ]
    renderer = (
        structlog.processors.JSONRenderer(serializer=lambda event_dict, **_: _encode_json(event_dict))
        if json_lines
        else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer] if json_lines else [*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=lambda *args: writer,  # one for all: its flush is per stream
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Library chatter (aiohttp access lines) only when debugging.
    root.setLevel(level if debug else logging.WARNING)
