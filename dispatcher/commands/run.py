"""`dispatcher run -c FILE`: the daemon in the foreground, logging to stdout; SIGTERM stops, SIGHUP reloads.

Signals and systemd live here, not in `Dispatcher`, so that tests can embed the daemon.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import signal

import structlog

from ..app import Dispatcher
from ..config import Config, load_config
from ..logs import configure_logging
from ..systemd import Notifier, notify_reload, notify_stopping, supervise
from .common import SubParsers, add_config_option

log = structlog.get_logger(__name__)


def add_parser(sub: SubParsers) -> None:
    parser = sub.add_parser("run", help="run the daemon (foreground, logs to stdout)")
    add_config_option(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    config = load_config(args.config)  # a bad config fails here, before anything starts
    configure_logging(debug=args.debug)
    asyncio.run(serve(config, args.config))
    return 0


async def serve(config: Config, config_path: str) -> None:
    """Run the daemon until SIGTERM or SIGINT, reloading on SIGHUP and keeping systemd informed."""
    dispatcher = Dispatcher(config)
    notifier = Notifier.from_environment()
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task[bool]] = set()
    # One reload at a time from RELOADING=1 to READY=1: a second SIGHUP during a reload must not let systemd
    # see READY=1 from the first while the second is still reading the file.
    reloading = asyncio.Lock()

    def stop() -> None:
        notify_stopping(notifier)
        dispatcher.stop()

    async def reload_once() -> bool:
        async with reloading:
            return await notify_reload(notifier, dispatcher, dispatcher.reload(config_path))

    def reload() -> None:
        task = loop.create_task(reload_once(), name="reload")
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGTERM, stop)
    loop.add_signal_handler(signal.SIGINT, stop)
    loop.add_signal_handler(signal.SIGHUP, reload)
    await dispatcher.start()
    # What startup built (modules, catalog, templates, config) lives as long as the process: keep it out of the
    # garbage collector's full passes, whose pauses grow with every object they scan.
    gc.freeze()
    supervisor = asyncio.create_task(supervise(notifier, dispatcher), name="systemd-notify")
    try:
        await dispatcher.run()
    finally:
        supervisor.cancel()
        for task in (supervisor, *reloads):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if notifier is not None:
            notifier.close()
