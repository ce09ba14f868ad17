"""The sender process (`python -m dispatcher.senders FD`): a `LocalSender` serving the daemon's frames
(protocol.py), each job an attempt of its own, the outcomes answered one frame per loop iteration.

A sender process ignores SIGINT, SIGTERM and SIGHUP: the daemon decides when it stops (it closes the socket after
its drain), while a terminal's Ctrl-C and systemd's stop signal reach every process of the group. It does not
start a job the daemon handed it more than `START_GRACE_S` ago (its `start_by`, see pool.py): it answers the job
as expired, so a send never starts after the daemon may have given up waiting for it.

This side imports nothing of the daemon's (pool.py, the pipeline): a sender process loads only what an attempt
needs.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import socket
import time
from typing import Any

import structlog

from ..channels import DeliveryError
from .local import LocalSender, SendJob
from .protocol import WATCH_INTERVAL_S, frame_bytes, read_frame

log = structlog.get_logger(__name__)


class _SenderService:
    """The sender process's loop: take jobs, attempt each as a task, answer outcomes one frame per iteration, and
    say it is alive every `WATCH_INTERVAL_S`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.sender: LocalSender | None = None
        # Attempts under way, each with its deadline (loop time); those cancelled for being past it.
        self._attempts: dict[asyncio.Task[None], float] = {}
        self._overdue: set[asyncio.Task[None]] = set()
        self._outcomes: list[tuple[int, Any]] = []

    async def serve(self) -> None:
        watch = asyncio.create_task(self._watch_attempts(), name="sender-watch")
        try:
            while True:
                frame = await read_frame(self.reader)
                if frame[0] == "init":
                    _, config, catalog = frame
                    self.sender = LocalSender(config, catalog)
                    gc.freeze()  # as the daemon does (commands/run.py): full GC passes skip what startup built
                    self._write(("ready",))
                elif frame[0] == "config" and self.sender is not None:
                    self.sender.apply_config(frame[1])
                elif frame[0] == "jobs" and self.sender is not None:
                    now = asyncio.get_running_loop().time()
                    for job_id, start_by, job in frame[1]:
                        if time.monotonic() > start_by:
                            # This process was stalled since the daemon handed the job over; the daemon may stop
                            # waiting before a send started now would end. It retries the job instead.
                            self._add_outcome(job_id, ("the sender process took the job too late", True, None))
                            continue
                        task = asyncio.create_task(self._attempt(job_id, job))
                        self._attempts[task] = now + self.sender.time_limit_s(job)
                        task.add_done_callback(self._attempt_done)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the daemon closed its end: it is stopping
        watch.cancel()
        for task in self._attempts:
            task.cancel()  # the daemon already left these pending for its next start
        await asyncio.gather(*self._attempts, return_exceptions=True)
        if self.sender is not None:
            await self.sender.close()

    async def _attempt(self, job_id: int, job: SendJob) -> None:
        assert self.sender is not None
        error: tuple[str, bool, float | None] | None = None
        # A task of its own per job (its own copy of the context): what is bound here ends with it.
        structlog.contextvars.bind_contextvars(event_id=job.event.id, event_type=job.event.type)
        try:
            await self.sender.send_unbounded(job)  # bounded by `_watch_attempts`
        except DeliveryError as err:
            error = (err.message, err.retryable, err.retry_after_s)
        except TimeoutError:
            error = ("timed out", True, None)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task not in self._overdue:
                raise  # the daemon is stopping
            task.uncancel()
            error = ("timed out", True, None)
        except Exception as err:
            log.exception("delivery_crashed", channel=job.channel)
            error = (f"unexpected error: {type(err).__name__}", True, None)
        self._add_outcome(job_id, error)

    def _add_outcome(self, job_id: int, error: tuple[str, bool, float | None] | None) -> None:
        if not self._outcomes:  # the outcomes of one loop iteration leave in one frame
            asyncio.get_running_loop().call_soon(self._answer)
        self._outcomes.append((job_id, error))

    def _attempt_done(self, task: asyncio.Task[None]) -> None:
        self._attempts.pop(task, None)
        self._overdue.discard(task)

    async def _watch_attempts(self) -> None:
        """Say ("alive",), and cancel each attempt past its bound; it answers "timed out" (see `_attempt`)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            # From this loop, so the daemon hears nothing once the event loop is stopped or blocked in a call; from
            # "ready" on, which is the first frame the daemon reads.
            if self.sender is not None:
                self._write(("alive",))
            now = loop.time()
            for task, deadline in list(self._attempts.items()):
                if deadline <= now and task not in self._overdue:
                    self._overdue.add(task)
                    task.cancel()

    def _answer(self) -> None:
        outcomes, self._outcomes = self._outcomes, []
        self._write(("outcomes", outcomes))

    def _write(self, frame: Any) -> None:
        if not self.writer.is_closing():
            self.writer.write(frame_bytes(frame))


async def _serve_process(fd: int) -> None:
    reader, writer = await asyncio.open_unix_connection(sock=socket.socket(fileno=fd))
    await _SenderService(reader, writer).serve()
    writer.close()


def main(argv: list[str]) -> int:
    from ..logs import configure_logging

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    fd, *flags = argv
    options = dict(flag.removeprefix("--").split("=", 1) for flag in flags)
    json_lines = {"True": True, "False": False}.get(options.get("json-lines", "None"))
    configure_logging(debug=options.get("debug") == "True", json_lines=json_lines, quiet=options.get("quiet") == "True")
    structlog.contextvars.bind_contextvars(sender_pid=os.getpid())
    asyncio.run(_serve_process(int(fd)))
    return 0
