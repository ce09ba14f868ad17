"""`dispatcher run -c FILE`: the daemon in the foreground, logging to stdout; SIGTERM stops, SIGHUP reloads."""

from __future__ import annotations

import argparse
import asyncio
import signal

import structlog

from ..app import Dispatcher
from ..config import load_config
from ..logs import configure_logging
from .common import add_config_option

log = structlog.get_logger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("run", help="run the daemon (foreground, logs to stdout)")
    add_config_option(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    config = load_config(args.config)  # a bad config fails here, before anything starts
    configure_logging(debug=args.debug)
    asyncio.run(serve(config, args.config))
    return 0


async def serve(config, config_path: str) -> None:  # type: ignore[no-untyped-def]
    dispatcher = Dispatcher(config)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, dispatcher.stop)
    loop.add_signal_handler(signal.SIGINT, dispatcher.stop)
    reloads: set[asyncio.Task[bool]] = set()

    def reload() -> None:
        task = loop.create_task(dispatcher.reload(config_path), name="reload")
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)
    await dispatcher.start()
    await dispatcher.run()
