"""The daemon's side of the sender processes: `SenderPool` hands each job to one of `delivery.workers` processes
and awaits its outcome; each process is supervised, replaced when it exits or stops answering.

If a sender process dies, each attempt it held fails as retryable (it may have gone out: a crash can repeat a send,
never lose one), and a new process takes its place.

A sender process that stops answering without dying (SIGSTOP, a library call that blocks its event loop, a send
that outlives every bound) is killed (SIGKILL) and replaced, once it has been silent for `SILENCE_LIMIT_S` or
an answer is overdue; its attempts fail as retryable at that moment and their retries go to another process.
A killed process cannot wake up and send what it held. A process that stalls for less than that and wakes up
does not start a job the daemon handed it more than `START_GRACE_S` ago (`start_by`, on the monotonic clock all
processes of the machine share): it answers the job as expired, so a send never starts after the daemon may
have given up waiting for it.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from ..catalog import Catalog
from ..channels import Channel, DeliveryError
from .channel_set import attempt_timeout_s
from .local import SendJob
from .protocol import WATCH_INTERVAL_S, frame_bytes, read_frame

if TYPE_CHECKING:
    from ..config import Config

log = structlog.get_logger(__name__)

# A sender process that exits is replaced after this long (a process that cannot start does not spin).
RESTART_DELAY_S = 1.0
# How long a new sender process may take to say it is ready (imports, building channels) before it is killed.
START_TIMEOUT_S = 60.0
# How long `close()` waits for a sender process to finish before killing it.
CLOSE_GRACE_S = 5.0
# Beyond a channel's own timeout, how long the daemon waits for a sender process's answer.
ANSWER_GRACE_S = 5.0
# A job the sender process reads later than this after the daemon handed it over is not started: the process was
# stalled, and starting now could end the send after the daemon stopped waiting for its answer (half the grace
# above leaves room for both sides' watch intervals).
START_GRACE_S = ANSWER_GRACE_S / 2
# A sender process says ("alive",) every WATCH_INTERVAL_S. One silent this long is stuck (stopped, or its event
# loop blocked in a call): the daemon kills and replaces it. Long enough for a reload's template compilation in
# the process (about 2 s), short enough that its attempts are retried elsewhere well within a minute.
SILENCE_LIMIT_S = 10.0
# One silent this long still gets jobs only when no process is heard from more recently.
SUSPECT_AFTER_S = 3.0


class SenderPool:
    """`count` sender processes. A job goes to the one its event id picks, so a fan-out's renders share a cache,
    unless that one is down (being replaced) or has gone quiet: then to the next one that is heard from."""

    def __init__(self, count: int, config: Config, catalog: Catalog) -> None:
        # The pipeline lets twice a channel's concurrency in flight per sender process: the channel's own limit
        # in each process still bounds its connections, and the extra attempts are rendered while the others wait
        # for the far end, instead of after each answer has travelled back to the daemon's process.
        self.lookahead = 2 * count
        self._config = config
        self._some_up = asyncio.Event()  # set while at least one process takes jobs
        self._processes = [
            _SenderProcess(index, config, catalog, on_change=self._state_changed) for index in range(count)
        ]
        self._runs: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start the processes; attempts wait until one is ready."""
        self._runs = [asyncio.create_task(process.run(), name=f"sender-{process.index}") for process in self._processes]

    def apply_config(self, config: Config, channels: dict[str, Channel] | None = None) -> None:
        """Jobs sent after this use `config` (the frame goes before them); each process builds its own channels."""
        self._config = config
        for process in self._processes:
            process.apply_config(config)

    async def send(self, job: SendJob) -> None:
        while (process := self._choose(job)) is None:
            await self._some_up.wait()
        await process.send(job, self._answer_timeout_s(job))

    def _choose(self, job: SendJob) -> _SenderProcess | None:
        """The process for `job`: the one its event id picks if it is up and heard from lately, else the next such
        one; else the next that is up at all; None while every process is down."""
        count = len(self._processes)
        first = zlib.crc32(job.event.id.encode()) % count
        fallback = None
        for step in range(count):
            process = self._processes[(first + step) % count]
            if process.up:
                if not process.quiet:
                    return process
                fallback = fallback or process
        return fallback

    def _state_changed(self) -> None:
        if any(process.up for process in self._processes):
            self._some_up.set()
        else:
            self._some_up.clear()

    def _answer_timeout_s(self, job: SendJob) -> float:
        channels = self._config.channels
        section = channels.plugins.get(job.channel) or getattr(channels, job.channel, None)
        return attempt_timeout_s(section) + ANSWER_GRACE_S

    @property
    def pids(self) -> list[int]:
        """The running sender processes (for tests and `/proc` readings)."""
        return [process.pid for process in self._processes if process.pid is not None]

    async def close(self) -> None:
        await asyncio.gather(*(process.close() for process in self._processes))
        for run in self._runs:
            run.cancel()  # it may be waiting to restart a process
        await asyncio.gather(*self._runs, return_exceptions=True)


class _SenderProcess:
    """One sender process and the attempts it holds; `run()` keeps one going, replacing it when it exits and
    killing it when it stops answering."""

    def __init__(self, index: int, config: Config, catalog: Catalog, on_change: Callable[[], None]) -> None:
        self.index = index
        self._config = config
        self._catalog = catalog
        self._on_change = on_change  # told when the process starts or stops taking jobs
        self._process: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        # Attempts waiting for the process's answer: job id → (the answer to come, its deadline on the monotonic
        # clock).
        self._waiting: dict[int, tuple[asyncio.Future[Any], float]] = {}
        self._outgoing: list[tuple[int, float, SendJob]] = []
        self._next_id = 0
        self._up = asyncio.Event()  # set while a process is ready for jobs
        self._heard_at = 0.0  # when the process last wrote a frame (monotonic)
        self._closing = False

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._up.is_set() and self._process is not None else None

    @property
    def up(self) -> bool:
        """A process is running and takes jobs."""
        return self._up.is_set()

    @property
    def quiet(self) -> bool:
        """Not heard from for `SUSPECT_AFTER_S`: perhaps stuck, not yet known to be."""
        return time.monotonic() - self._heard_at > SUSPECT_AFTER_S

    async def run(self) -> None:
        """Start the process, serve it until it exits, and start another, until `close()`."""
        watch = asyncio.create_task(self._watch(), name=f"sender-{self.index}-watch")
        try:
            await self._keep_running()
        finally:
            watch.cancel()

    async def _keep_running(self) -> None:
        while not self._closing:
            try:
                reader = await self._start()
            except (OSError, EOFError) as err:
                log.error("sender_start_failed", sender=self.index, error=str(err), retry_in_s=RESTART_DELAY_S)
            else:
                await self._read(reader)
                held = await self._exited()
                if self._closing:
                    break
                code = self._process.returncode if self._process is not None else None
                log.error("sender_exited", sender=self.index, code=code, attempts_to_retry=held)
            await asyncio.sleep(RESTART_DELAY_S)

    async def _start(self) -> asyncio.StreamReader:
        """A new process, given the config and catalog; returns once it said it is ready (its signals ignored)."""
        from ..logs import settings  # the daemon's logging, for the child to copy

        ours, theirs = socket.socketpair()
        flags = [f"--{key.replace('_', '-')}={value}" for key, value in settings.items()]
        try:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "dispatcher.senders",
                str(theirs.fileno()),
                *flags,
                pass_fds=[theirs.fileno()],
                stdin=asyncio.subprocess.DEVNULL,
            )
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        reader, self._writer = await asyncio.open_unix_connection(sock=ours)
        self._write(("init", self._config, self._catalog))
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                await read_frame(reader)  # ("ready",)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError) as err:
            self._writer.close()
            if self._process.returncode is None:
                self._process.kill()  # it hung while starting
            code = await self._process.wait()
            raise EOFError(f"the sender process did not start (exit code {code})") from err
        self._heard_at = time.monotonic()
        self._up.set()
        self._on_change()
        log.info("sender_started", sender=self.index, pid=self._process.pid)
        return reader

    def apply_config(self, config: Config) -> None:
        self._config = config  # for a process started later
        self._flush()  # jobs handed over before the reload go out under the old config
        # Also to a process still starting: it was given the old config, and reads this frame right after it.
        self._write(("config", config))

    async def send(self, job: SendJob, answer_timeout_s: float) -> None:
        await self._up.wait()
        self._next_id += 1
        job_id = self._next_id
        loop = asyncio.get_running_loop()
        answer = loop.create_future()
        now = time.monotonic()
        self._waiting[job_id] = (answer, now + answer_timeout_s)
        if not self._outgoing:  # the jobs of one loop iteration leave in one frame
            loop.call_soon(self._flush)
        self._outgoing.append((job_id, now + START_GRACE_S, job))
        try:
            error = await answer
        finally:
            self._waiting.pop(job_id, None)
        if error is not None:
            message, retryable, retry_after_s = error
            raise DeliveryError(message, retryable=retryable, retry_after_s=retry_after_s)

    async def _watch(self) -> None:
        """Kill the process once it is silent for `SILENCE_LIMIT_S` or one of its answers is overdue: stuck
        without exiting (stopped, or blocked in a call). Its attempts are failed as retryable right away."""
        last_look = time.monotonic()
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            now = time.monotonic()
            # When this loop itself was held up (a long pause in the daemon), the process's frames may be waiting
            # unread in the socket: judge it at the next look, after they have been read.
            ours_late = now - last_look > WATCH_INTERVAL_S + SILENCE_LIMIT_S / 2
            last_look = now
            if ours_late or self._closing or not self._up.is_set():
                continue
            if now - self._heard_at > SILENCE_LIMIT_S:
                self._kill(f"silent for {now - self._heard_at:.0f} s")
            elif any(deadline <= now and not answer.done() for answer, deadline in self._waiting.values()):
                self._kill("an answer is overdue")

    def _kill(self, reason: str) -> None:
        """SIGKILL the stuck process and fail what it held as retryable; `_read` then sees it gone and `run()`
        starts another. Its held jobs die with it: a killed process cannot wake up and send them."""
        process = self._process
        held = [answer for answer, _ in self._waiting.values() if not answer.done()]
        log.error(
            "sender_killed",
            sender=self.index,
            pid=process.pid if process is not None else None,
            reason=reason,
            attempts_to_retry=len(held),
        )
        self._up.clear()
        self._on_change()
        self._outgoing.clear()  # never sent; their attempts fail below
        if process is not None and process.returncode is None:
            process.kill()
        for answer in held:
            answer.set_result(("the sender process did not answer", True, None))
        if self._writer is not None:
            self._writer.close()

    def _flush(self) -> None:
        if self._outgoing:
            jobs, self._outgoing = self._outgoing, []
            self._write(("jobs", jobs))

    def _write(self, frame: Any) -> None:
        if self._writer is None or self._writer.is_closing():
            return  # the process is gone; its attempts fail in `_exited` and are retried
        self._writer.write(frame_bytes(frame))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        """Hand each outcome to the attempt waiting for it, until the process closes its end."""
        try:
            while True:
                frame = await read_frame(reader)
                self._heard_at = time.monotonic()
                if frame[0] != "outcomes":
                    continue  # ("alive",)
                for job_id, error in frame[1]:
                    waiting = self._waiting.get(job_id)
                    if waiting is not None and not waiting[0].done():
                        waiting[0].set_result(error)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    async def _exited(self) -> int:
        """The process is gone: each attempt it held fails as retryable. Returns how many it held."""
        if self._up.is_set():
            self._up.clear()
            self._on_change()
        self._outgoing.clear()  # never sent; their attempts fail below
        if self._writer is not None:
            self._writer.close()
        code = await self._process.wait() if self._process is not None else None
        held = [answer for answer, _ in self._waiting.values() if not answer.done()]
        for answer in held:
            answer.set_result((f"the sender process exited (code {code}) during the attempt", True, None))
        return len(held)

    async def close(self) -> None:
        """Close the socket (the process finishes and exits), wait for it, kill it if it lingers."""
        self._closing = True
        self._flush()
        if self._writer is not None:
            self._writer.close()
        process = self._process
        if process is not None and process.returncode is None:
            try:
                async with asyncio.timeout(CLOSE_GRACE_S):
                    await process.wait()
            except TimeoutError:
                log.warning("sender_killed", sender=self.index, reason=f"still running {CLOSE_GRACE_S:g} s after close")
                process.kill()
                await process.wait()
