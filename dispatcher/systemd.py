"""Talking to systemd: the `sd_notify` protocol (readiness, watchdog, status lines) and the coroutine that drives it.

The protocol needs no library: a notification is one datagram of `KEY=VALUE` lines sent to the AF_UNIX
SOCK_DGRAM socket named by `$NOTIFY_SOCKET` (a path, or `@name` for an abstract socket, whose address starts
with a NUL byte). See sd_notify(3).

    notifier = Notifier.from_environment()          # None unless started by systemd with Type=notify
    watcher = asyncio.create_task(supervise(notifier, dispatcher), name="systemd-notify")
    notify_stopping(notifier)                        # in the SIGTERM handler, before dispatcher.stop()
    await notify_reload(notifier, dispatcher, dispatcher.reload(path))   # for SIGHUP

Notifications are best effort: a failed send is logged and never stops the daemon.
"""

from __future__ import annotations

import asyncio
import errno
import math
import os
import socket
import time
from collections.abc import Awaitable, Mapping
from typing import Protocol

import structlog

log = structlog.get_logger(__name__)

# How often `supervise` refreshes the STATUS= line an operator sees in `systemctl status`.
STATUS_PERIOD_S = 5.0
# How often `supervise` looks at `dispatcher.ready` before READY=1: short, so systemd learns of readiness promptly.
READY_POLL_S = 0.05
STOPPING_STATUS = "stopping: intake closed, finishing deliveries in flight"


class Supervised(Protocol):
    """What `supervise` reads from the daemon (`dispatcher.app.Dispatcher` provides all four)."""

    @property
    def ready(self) -> bool:
        """Store open and bus subscription in place (or a cluster's standby)."""
        ...

    @property
    def bus_connected(self) -> bool: ...

    @property
    def standby(self) -> bool:
        """In a cluster, another instance runs the intake."""
        ...

    def delivery_counts(self) -> Awaitable[Mapping[str, int]]:
        """`{"pending": n, "sent": n, "failed": n, "suppressed": n}` from the store."""
        ...


class Notifier:
    """Sends notifications to systemd's `$NOTIFY_SOCKET`; build it with `from_environment()`.

    `address` is the socket's path, or `@name` for an abstract socket. `watchdog_usec` is the watchdog timeout
    systemd gave this process (`$WATCHDOG_USEC`), or None when the watchdog is off.
    """

    def __init__(self, address: str, *, watchdog_usec: int | None = None) -> None:
        if not address.startswith(("/", "@")) or len(address) < 2:
            raise ValueError("a notify socket address is an absolute path or @name")
        self.address = address
        self.watchdog_usec = watchdog_usec
        # The kernel takes an abstract name as a leading NUL byte; systemd writes it as '@'.
        self._sockaddr: str | bytes = b"\0" + address[1:].encode() if address.startswith("@") else address
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        # Never block the event loop on a full receive queue: a dropped notification beats a stalled daemon.
        self._sock.setblocking(False)
        self._failing = False
        self.ready_sent = False
        """Whether READY=1 has been sent: before it, a reload must not report RELOADING=1 / READY=1."""
        self.stopping_sent = False
        """Whether STOPPING=1 has been sent: from then on the STATUS= lines say so."""

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Notifier | None:
        """The notifier systemd asked for through `$NOTIFY_SOCKET` (and `$WATCHDOG_USEC`), or None if not asked.

        `$WATCHDOG_USEC` counts only when `$WATCHDOG_PID` is unset or names this process, as sd_watchdog_enabled(3)
        says. An address that is neither a path nor `@name` (such as systemd 254's `vsock:`) is logged and ignored.
        """
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        if not address:
            return None
        if not address.startswith(("/", "@")) or len(address) < 2:
            log.warning("systemd_notify_unsupported", reason="NOTIFY_SOCKET is neither a path nor @name")
            return None
        return cls(address, watchdog_usec=_watchdog_usec(env))

    # -- the messages ------------------------------------------------------------------------------------------

    def notify(self, **fields: str | int) -> bool:
        """Send `KEY=VALUE` lines in one datagram; True if systemd's socket took it.

        A failure is logged once (until a send works again) and otherwise ignored.
        """
        if not fields:
            return True
        payload = "".join(f"{key}={_one_line(str(value))}\n" for key, value in fields.items()).encode()
        try:
            self._sock.sendto(payload, self._sockaddr)
        except OSError as err:
            if not self._failing:
                reason = "receive queue full" if err.errno in (errno.EAGAIN, errno.EWOULDBLOCK) else err.strerror
                log.warning("systemd_notify_failed", socket=self.address, error=reason)
            self._failing = True
            return False
        self._failing = False
        return True

    def ready(self, status: str | None = None) -> bool:
        """`READY=1`: startup (or a reload) is finished; systemd then considers the unit started (or reloaded)."""
        self.ready_sent = True
        return self.notify(READY=1, **_status(status))

    def stopping(self, status: str | None = None) -> bool:
        """`STOPPING=1`: shutting down (sent on SIGTERM, before draining)."""
        self.stopping_sent = True
        return self.notify(STOPPING=1, **_status(status))

    def reloading(self, status: str | None = None) -> bool:
        """`RELOADING=1` with `MONOTONIC_USEC` (which `Type=notify-reload` in systemd ≥ 253 requires); follow with
        `ready()` once the reload is done, whether it was applied or refused."""
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify(RELOADING=1, MONOTONIC_USEC=monotonic_usec, **_status(status))

    def status(self, text: str) -> bool:
        """`STATUS=text`: the line `systemctl status` shows."""
        return self.notify(STATUS=text)

    def watchdog(self) -> bool:
        """`WATCHDOG=1`: the keep-alive ping."""
        return self.notify(WATCHDOG=1)

    def watchdog_interval_s(self) -> float | None:
        """How often to ping: half the watchdog timeout (as sd_watchdog_enabled(3) advises), or None if it is off."""
        if self.watchdog_usec is None:
            return None
        return self.watchdog_usec / 2 / 1_000_000

    def close(self) -> None:
        self._sock.close()

    def __repr__(self) -> str:
        return f"Notifier({self.address!r}, watchdog_usec={self.watchdog_usec!r})"


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    pid_text = env.get("WATCHDOG_PID", "")
    if pid_text:
        try:
            if int(pid_text) != os.getpid():
                return None  # meant for another process (a wrapper that exec'd differently)
        except ValueError:
            return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec if usec > 0 else None


def _status(status: str | None) -> dict[str, str]:
    return {} if status is None else {"STATUS": status}


def _one_line(value: str) -> str:
    # A newline would start a new KEY=VALUE assignment inside the datagram.
    return " ".join(value.splitlines())


# ------------------------------------------------------------------------------------------------------- supervise


async def status_line(dispatcher: Supervised, *, timeout_s: float = STATUS_PERIOD_S, stopping: bool = False) -> str:
    """The operator's one-line summary: bus state and delivery counts, e.g.
    `bus connected; deliveries: 3 pending, 120 sent, 2 failed, 7 suppressed`
    (`stopping: finishing deliveries in flight; deliveries: …` once stopping).

    The counts come from the store; if it does not answer within `timeout_s` (or fails), the line says so.
    """
    if stopping:
        bus = STOPPING_STATUS
    else:
        bus = (
            "standby (another instance runs the intake)"
            if dispatcher.standby
            else "bus connected"
            if dispatcher.bus_connected
            else "bus disconnected, reconnecting"
        )
    try:
        async with asyncio.timeout(timeout_s):
            counts = await dispatcher.delivery_counts()
    except TimeoutError:
        return f"{bus}; deliveries: store busy"
    except Exception as err:  # a status line must never take the daemon down
        return f"{bus}; deliveries: unavailable ({type(err).__name__})"
    parts = ", ".join(f"{counts.get(key, 0)} {key}" for key in ("pending", "sent", "failed", "suppressed"))
    return f"{bus}; deliveries: {parts}"


async def supervise(
    notifier: Notifier | None, dispatcher: Supervised, *, status_period_s: float = STATUS_PERIOD_S
) -> None:
    """Keep systemd informed until cancelled: `READY=1` once `dispatcher.ready`, then `WATCHDOG=1` and `STATUS=`.

    Runs on the daemon's event loop, so a blocked loop sends no `WATCHDOG=1` and systemd restarts the daemon.
    Pings every `min(watchdog_interval_s, status_period_s)`, also while waiting to be ready (systemd's watchdog
    may already be running then). Returns at once when `notifier` is None (not started by systemd).
    """
    if notifier is None:
        return
    watchdog_s = notifier.watchdog_interval_s()
    period_s = min(watchdog_s if watchdog_s is not None else math.inf, status_period_s)
    loop = asyncio.get_running_loop()

    def ping() -> None:
        if watchdog_s is not None:
            notifier.watchdog()

    next_ping = loop.time()
    while not dispatcher.ready:
        if loop.time() >= next_ping:
            ping()
            waiting_for = "the store" if dispatcher.bus_connected else "the bus subscription"
            notifier.status(f"starting: waiting for {waiting_for}")
            next_ping = loop.time() + period_s
        await asyncio.sleep(min(READY_POLL_S, period_s))
    ping()
    notifier.ready(status=await status_line(dispatcher, timeout_s=period_s))
    log.info("systemd_ready")
    # Deadline-based: a slow status query does not stretch the gap between two pings.
    next_ping = loop.time() + period_s
    while True:
        await asyncio.sleep(max(0.0, next_ping - loop.time()))
        next_ping = loop.time() + period_s
        ping()  # first, and on its own: the ping says the loop runs, whatever the store is doing
        notifier.status(await status_line(dispatcher, timeout_s=period_s, stopping=notifier.stopping_sent))


def notify_stopping(notifier: Notifier | None) -> None:
    """`STOPPING=1` (call it in the SIGTERM handler); a no-op without a notifier."""
    if notifier is not None:
        notifier.stopping(status=STOPPING_STATUS)


async def notify_reload(notifier: Notifier | None, dispatcher: Supervised, reload: Awaitable[bool]) -> bool:
    """Await `reload` (the config reload, True if applied) between `RELOADING=1` and `READY=1`; returns its result.

    systemd shows the unit as `reloading` in between. Both are sent only after the first READY=1, since a
    reload during startup must not announce readiness early. A refused config also ends with READY=1: the
    daemon runs on with the old one, and the STATUS= line says the reload was refused.
    """
    if notifier is None or not notifier.ready_sent:
        return await reload
    notifier.reloading(status="reloading the configuration")
    applied = False
    try:
        applied = await reload
        return applied
    finally:
        line = await status_line(dispatcher)
        notifier.ready(status=line if applied else f"config reload refused (see the log); {line}")
