"""Senders: where a delivery's attempt runs, rendering its message and handing it to the channel.

The daemon's process receives events, plans them and keeps every record; an attempt needs none of that, only the
config, the catalog and the delivery. Python runs one thread at a time, so `delivery.workers` (default 2) moves
attempts into child processes, and a burst uses more than one core:

    daemon: planner, store, scheduling ──jobs──► sender process: render, Channel.send
                                       ◄─outcomes──

`LocalSender` renders and sends in the process it lives in: the daemon's own with `workers: 0`, each sender
process otherwise. `SenderPool` is the daemon's side of the processes; the pipeline awaits either the same way:
`send(job)` returns once the far end took the message and raises `DeliveryError` otherwise.

A sender process is `python -m dispatcher.senders FD`. The socket FD carries frames both ways (4-byte length, then
a pickle; both ends are this package): the daemon sends ("init", config, catalog), ("config", config) after each
reload, and ("jobs", [(job id, start_by, job), …]); the sender answers ("ready",) once set up, then ("outcomes",
[(job id, None | (message, retryable, retry_after_s)), …]), and ("alive",) every `WATCH_INTERVAL_S`. A side
writes at most one frame per loop iteration, so a burst costs a few writes, not one per delivery. The frames
carry targets (tokens, URLs with passwords) over a socketpair only the two processes hold; nothing is logged.

A sender process ignores SIGINT, SIGTERM and SIGHUP: the daemon decides when it stops (it closes the socket after
its drain), while a terminal's Ctrl-C and systemd's stop signal reach every process of the group. If a sender
process dies, each attempt it held fails as retryable (it may have gone out: a crash can repeat a send, never
lose one), and a new process takes its place.

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
import copyreg
import gc
import os
import pickle
import signal
import socket
import struct
import sys
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import structlog

from .catalog import Catalog
from .channels import Channel, DeliveryError, Message, available_channels
from .events import Event
from .levels import Importance
from .render import Renderer
from .routing.recipients import Recipient

if TYPE_CHECKING:
    from .config import Config

log = structlog.get_logger(__name__)

# Rendered messages kept for reuse: a fan-out renders the same notice for one recipient once.
RENDER_CACHE_SIZE = 128
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
# How often the daemon looks for answers overdue, and a sender process for attempts past their bound. One look a
# second for all instead of a timer each (an `asyncio.timeout` costs ~7 µs, thousands of times a second); the
# bounds are tens of seconds, so a second late is nothing.
WATCH_INTERVAL_S = 1.0

_HEADER = struct.Struct(">I")


def _read_only(mapping: dict[Any, Any]) -> MappingProxyType[Any, Any]:
    return MappingProxyType(mapping)


# The config and catalog hold read-only mappings, which pickle cannot name: send them as the dicts they wrap.
copyreg.pickle(MappingProxyType, lambda proxy: (_read_only, (dict(proxy),)))


@dataclass(frozen=True, slots=True)
class SendJob:
    """One attempt: the delivery's channel, target and recipient, and the event to render."""

    event: Event
    channel: str
    target: str
    importance: str
    recipient_kind: str
    recipient: str


def build_channels(config: Config) -> dict[str, Channel]:
    """One instance of every available channel, built from its config section."""
    sections: Mapping[str, Any] = {
        "email": config.channels.email,
        "pushbullet": config.channels.pushbullet,
        "posturl": config.channels.posturl,
        **config.channels.plugins,
    }
    channels = {}
    for name, channel_class in available_channels().items():
        channels[name] = channel_class(sections.get(name, {}), hostname=config.hostname)
    return channels


def _setting(section: Any, key: str) -> Any:
    """A channel's setting: built-in sections are dataclasses, a plugin's is a mapping."""
    return section.get(key) if isinstance(section, Mapping) else getattr(section, key, None)


def channel_concurrency(channel: Channel) -> int:
    return int(_setting(channel.config, "concurrency") or 8)


def attempt_timeout_s(section: Any) -> float:
    """The bound on one attempt under a channel's config `section`. A channel bounds its own requests (its
    `timeout_s`, after waiting for one of its slots); this catches a channel that does not."""
    return float(_setting(section, "timeout_s") or 30) * 2 + 5


class LocalSender:
    """Renders and sends in this process, with the channels of the current config."""

    # Attempts in flight per channel, as a multiple of its concurrency (see SenderPool.lookahead).
    lookahead = 1

    def __init__(self, config: Config, catalog: Catalog, channels: dict[str, Channel] | None = None) -> None:
        self.catalog = catalog
        self.channels: dict[str, Channel] = {}
        self._retired: list[Channel] = []
        self._rendered: OrderedDict[tuple[str, str, str, str], Message] = OrderedDict()
        self.apply_config(config, channels)

    def start(self) -> None:
        """Nothing to start: attempts run in this process."""

    def apply_config(self, config: Config, channels: dict[str, Channel] | None = None) -> None:
        """Render and send with `config` (and `channels`, if given) from now on; channels replaced are closed at
        `close()`, since sends in flight may still use them."""
        self.renderer = Renderer(self.catalog, templates_dir=config.templates.dir, hostname=config.hostname)
        self._rendered.clear()
        self._retired.extend(self.channels.values())  # sends in flight may still use them
        self.channels = channels if channels is not None else build_channels(config)

    def render(self, job: SendJob) -> Message:
        """The message for `job`; rendered once per (event, recipient, channel), so a fan-out renders once."""
        key = (job.event.id, job.recipient_kind, job.recipient, job.channel)
        message = self._rendered.get(key)
        if message is None:
            recipient = Recipient(kind=job.recipient_kind, name=job.recipient, targets={}, thresholds=None)
            message = self.renderer.render(
                job.event, importance=Importance.parse(job.importance), recipient=recipient, channel=job.channel
            )
            self._rendered[key] = message
            if len(self._rendered) > RENDER_CACHE_SIZE:
                self._rendered.popitem(last=False)
        return message

    async def send(self, job: SendJob) -> None:
        """Render and send; raises `DeliveryError`, `TimeoutError` (the attempt's bound) or the channel's bug."""
        async with asyncio.timeout(self.time_limit_s(job)):
            await self.send_unbounded(job)

    async def send_unbounded(self, job: SendJob) -> None:
        """`send` without its bound, for a caller that keeps the time itself (a sender process's watch)."""
        channel = self.channels.get(job.channel)
        if channel is None:
            raise DeliveryError(f"channel {job.channel} is not available", retryable=False)
        message = self.render(job)
        await channel.send(message, job.target)

    def time_limit_s(self, job: SendJob) -> float:
        """How long `job`'s attempt may take: its channel's bound."""
        channel = self.channels.get(job.channel)
        return attempt_timeout_s(channel.config if channel is not None else None)

    async def close(self) -> None:
        await close_channels([*self.channels.values(), *self._retired])


async def close_channels(channels: list[Channel]) -> None:
    """Close each channel; one that fails to close is logged and does not keep the others open."""
    for channel in channels:
        try:
            await channel.close()
        except Exception as err:
            log.warning("channel_close_failed", channel=channel.name, error=str(err))


# -- the daemon's side --------------------------------------------------------------------------------------------


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
        from .logs import settings  # the daemon's logging, for the child to copy

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
                await _read_frame(reader)  # ("ready",)
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
        body = pickle.dumps(frame, protocol=pickle.HIGHEST_PROTOCOL)
        self._writer.write(_HEADER.pack(len(body)) + body)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        """Hand each outcome to the attempt waiting for it, until the process closes its end."""
        try:
            while True:
                frame = await _read_frame(reader)
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


async def _read_frame(reader: asyncio.StreamReader) -> Any:
    (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
    return pickle.loads(await reader.readexactly(size))


# -- the sender process -------------------------------------------------------------------------------------------


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
                frame = await _read_frame(self.reader)
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
            task.uncancel()  # type: ignore[union-attr]
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
            body = pickle.dumps(frame, protocol=pickle.HIGHEST_PROTOCOL)
            self.writer.write(_HEADER.pack(len(body)) + body)


async def _serve_process(fd: int) -> None:
    reader, writer = await asyncio.open_unix_connection(sock=socket.socket(fileno=fd))
    await _SenderService(reader, writer).serve()
    writer.close()


def main(argv: list[str]) -> int:
    from .logs import configure_logging

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    fd, *flags = argv
    options = dict(flag.removeprefix("--").split("=", 1) for flag in flags)
    json_lines = {"True": True, "False": False}.get(options.get("json-lines", "None"))
    configure_logging(debug=options.get("debug") == "True", json_lines=json_lines, quiet=options.get("quiet") == "True")
    structlog.contextvars.bind_contextvars(sender_pid=os.getpid())
    asyncio.run(_serve_process(int(fd)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
