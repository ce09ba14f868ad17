"""Logging setup: structlog, JSON lines when stdout is not a terminal (systemd), the console renderer when it is."""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

# How logging was last configured: a sender process (senders.py) logs the way the daemon does.
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


def configure_logging(
    *, debug: bool = False, json_lines: bool | None = None, stream: TextIO | None = None, quiet: bool = False
) -> None:
    """Route structlog and the standard library's logging (aiohttp, paho) through one renderer.

    The daemon logs to stdout at INFO; the other commands (`quiet`) log only warnings, on stderr, so their
    stdout holds only their answer.
    """
    stream = stream or _StandardStream("stderr" if quiet else "stdout")  # type: ignore[assignment]
    if json_lines is None:
        json_lines = not stream.isatty()
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    settings.update(debug=debug, json_lines=json_lines, quiet=quiet)
    shared = [
        structlog.contextvars.merge_contextvars,  # event_id / event_type bound per event
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer = structlog.processors.JSONRenderer() if json_lines else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer] if json_lines else [*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream),
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
