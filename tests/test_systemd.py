"""systemd integration: the sd_notify protocol on a socket the test listens on, `supervise`, the unit file.

Every notification test runs twice: on a filesystem socket and on an abstract one (`@name`), the two forms
`$NOTIFY_SOCKET` takes.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from dispatcher.systemd import Notifier, notify_reload, notify_stopping, status_line, supervise

from .brokers import Mosquitto
from .conftest import DaemonProcess, wait_until

UNIT_FILE = Path(__file__).resolve().parents[1] / "systemd" / "dispatcher.service"


class NotifyListener:
    """systemd's side of the protocol: a datagram socket read by a thread, so arrival times are real even while
    the test's event loop is blocked on purpose. `messages` holds `(monotonic_s, {key: value})` in order."""

    def __init__(self, kind: str) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if kind == "abstract":
            name = f"dispatcher-test-{uuid.uuid4().hex}"
            self._sock.bind(b"\0" + name.encode())
            self.address = "@" + name
        else:
            # A short directory of our own: AF_UNIX paths are limited to 107 bytes, pytest's tmp_path can be longer.
            self._tmp = tempfile.TemporaryDirectory(prefix="sdnotify-")
            self.address = os.path.join(self._tmp.name, "notify")
            self._sock.bind(self.address)
        self._sock.settimeout(0.05)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self.raw: list[bytes] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._read, name="notify-listener", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._closing.is_set():
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            with self._lock:
                self.raw.append(data)
                self.messages.append((time.monotonic(), fields))

    def snapshot(self) -> list[tuple[float, dict[str, str]]]:
        with self._lock:
            return list(self.messages)

    def times_of(self, key: str) -> list[float]:
        """When each message carrying `key` arrived."""
        return [at for at, fields in self.snapshot() if key in fields]

    def with_key(self, key: str) -> list[dict[str, str]]:
        return [fields for _, fields in self.snapshot() if key in fields]

    async def wait_for(self, key: str, count: int = 1, timeout_s: float = 5.0) -> list[dict[str, str]]:
        """The first `count` messages carrying `key`, once they have arrived."""
        await wait_until(lambda: len(self.with_key(key)) >= count, timeout_s=timeout_s)
        return self.with_key(key)[:count]

    def close(self) -> None:
        self._closing.set()
        self._thread.join(timeout=2)
        self._sock.close()
        if self._tmp is not None:
            self._tmp.cleanup()


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest) -> Iterator[NotifyListener]:
    """A notify socket of the test's own: a filesystem path, then an abstract `@name`."""
    sock = NotifyListener(request.param)
    yield sock
    sock.close()


@pytest.fixture
def make_notifier() -> Iterator[Callable[..., Notifier]]:
    """Build notifiers from an environment mapping; closed after the test."""
    made: list[Notifier] = []

    def make(**environ: str) -> Notifier:
        notifier = Notifier.from_environment(environ)
        assert notifier is not None
        made.append(notifier)
        return notifier

    yield make
    for notifier in made:
        notifier.close()


class StandIn:
    """What `supervise` reads from a Dispatcher: `ready`, `bus_connected`, `standby` and `delivery_counts()`."""

    def __init__(self) -> None:
        self.ready = False
        self.bus_connected = False
        self.standby = False
        self.counts = {"pending": 0, "sent": 0, "failed": 0, "suppressed": 0}
        self.counts_delay_s = 0.0

    async def delivery_counts(self) -> Mapping[str, int]:
        if self.counts_delay_s:
            await asyncio.sleep(self.counts_delay_s)
        return dict(self.counts)


async def run_supervise(notifier: Notifier, dispatcher: Any, **kwargs: Any) -> asyncio.Task[None]:
    return asyncio.create_task(supervise(notifier, dispatcher, **kwargs), name="supervise-under-test")


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# ---------------------------------------------------------------------------------------------------- Notifier


def test_no_notify_socket_means_no_notifier() -> None:
    """Without $NOTIFY_SOCKET (not started by systemd) there is no notifier, and supervise does nothing."""
    assert Notifier.from_environment({}) is None
    assert Notifier.from_environment({"NOTIFY_SOCKET": "", "WATCHDOG_USEC": "1000000"}) is None
    asyncio.run(asyncio.wait_for(supervise(None, StandIn()), 1))


def test_unsupported_socket_address_is_ignored() -> None:
    """An address that is neither a path nor @name (systemd 254's vsock:) gives no notifier instead of an error."""
    assert Notifier.from_environment({"NOTIFY_SOCKET": "vsock:2:1234"}) is None
    assert Notifier.from_environment({"NOTIFY_SOCKET": "@"}) is None


def test_watchdog_interval_is_half_the_timeout(make_notifier: Callable[..., Notifier]) -> None:
    """WATCHDOG_USEC gives a ping interval of half of it; off when unset, zero, garbage, or meant for another pid."""
    sock = "@dispatcher-test-unused"
    assert make_notifier(NOTIFY_SOCKET=sock, WATCHDOG_USEC="30000000").watchdog_interval_s() == 15.0
    own = make_notifier(NOTIFY_SOCKET=sock, WATCHDOG_USEC="4000000", WATCHDOG_PID=str(os.getpid()))
    assert own.watchdog_interval_s() == 2.0
    other = make_notifier(NOTIFY_SOCKET=sock, WATCHDOG_USEC="4000000", WATCHDOG_PID=str(os.getpid() + 1))
    assert other.watchdog_interval_s() is None
    assert make_notifier(NOTIFY_SOCKET=sock).watchdog_interval_s() is None
    assert make_notifier(NOTIFY_SOCKET=sock, WATCHDOG_USEC="0").watchdog_interval_s() is None
    assert make_notifier(NOTIFY_SOCKET=sock, WATCHDOG_USEC="soon").watchdog_interval_s() is None


async def test_each_message_arrives_as_key_value_lines(
    listener: NotifyListener, make_notifier: Callable[..., Notifier]
) -> None:
    """ready, status, watchdog, reloading and stopping each send one datagram of KEY=VALUE lines."""
    notifier = make_notifier(NOTIFY_SOCKET=listener.address)
    before_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.ready(status="up")
    assert notifier.status("bus connected; deliveries: 1 pending")
    assert notifier.watchdog()
    assert notifier.reloading()
    assert notifier.stopping(status="stopping: draining")
    await wait_until(lambda: len(listener.raw) == 5, timeout_s=5)
    assert listener.raw[0] == b"READY=1\nSTATUS=up\n"
    assert listener.raw[1] == b"STATUS=bus connected; deliveries: 1 pending\n"
    assert listener.raw[2] == b"WATCHDOG=1\n"
    reloading = listener.messages[3][1]
    assert reloading["RELOADING"] == "1"
    after_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert before_usec <= int(reloading["MONOTONIC_USEC"]) <= after_usec
    assert listener.raw[4] == b"STOPPING=1\nSTATUS=stopping: draining\n"


async def test_a_newline_cannot_inject_another_assignment(
    listener: NotifyListener, make_notifier: Callable[..., Notifier]
) -> None:
    """A status text with line breaks stays one STATUS= line; it cannot smuggle in READY=1."""
    notifier = make_notifier(NOTIFY_SOCKET=listener.address)
    notifier.status("first\nREADY=1")
    await wait_until(lambda: listener.raw, timeout_s=5)
    assert listener.raw == [b"STATUS=first READY=1\n"]


def test_a_missing_socket_is_reported_not_raised(tmp_path: Path, make_notifier: Callable[..., Notifier]) -> None:
    """Sending to a socket nobody listens on returns False; notifications never take the daemon down."""
    notifier = make_notifier(NOTIFY_SOCKET=str(tmp_path / "gone"))
    assert notifier.ready() is False
    assert notifier.watchdog() is False


# --------------------------------------------------------------------------------------------------- supervise


async def test_ready_only_once_the_dispatcher_is_ready(
    listener: NotifyListener, make_notifier: Callable[..., Notifier]
) -> None:
    """No READY=1 while `ready` is false (watchdog pings and a `starting` status instead); then READY=1 with the
    delivery counts in STATUS=, exactly once."""
    notifier = make_notifier(NOTIFY_SOCKET=listener.address, WATCHDOG_USEC="200000")
    daemon = StandIn()
    task = await run_supervise(notifier, daemon)
    try:
        await listener.wait_for("WATCHDOG", count=3)
        assert listener.with_key("READY") == []
        assert listener.with_key("STATUS")[0]["STATUS"] == "starting: waiting for the bus subscription"
        daemon.bus_connected = True
        daemon.counts = {"pending": 3, "sent": 120, "failed": 2, "suppressed": 7}
        daemon.ready = True
        [ready] = await listener.wait_for("READY")
        assert ready == {
            "READY": "1",
            "STATUS": "bus connected; deliveries: 3 pending, 120 sent, 2 failed, 7 suppressed",
        }
        await listener.wait_for("WATCHDOG", count=len(listener.with_key("WATCHDOG")) + 3)  # three more rounds
        assert len(listener.with_key("READY")) == 1
    finally:
        await stop(task)


async def test_watchdog_and_status_keep_coming(
    listener: NotifyListener, make_notifier: Callable[..., Notifier]
) -> None:
    """After READY=1, WATCHDOG=1 comes every half watchdog timeout and STATUS= follows the bus and the counts."""
    notifier = make_notifier(NOTIFY_SOCKET=listener.address, WATCHDOG_USEC="400000")  # ping every 0.2 s
    daemon = StandIn()
    daemon.ready = daemon.bus_connected = True
    task = await run_supervise(notifier, daemon)
    try:
        await listener.wait_for("READY")
        start = len(listener.times_of("WATCHDOG"))
        await listener.wait_for("WATCHDOG", count=start + 6)
        pings = listener.times_of("WATCHDOG")[start : start + 6]
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert max(gaps) < 0.35, gaps  # inside the 0.4 s timeout
        assert 0.14 < statistics.mean(gaps) < 0.34, gaps  # every 0.2 s: not much more often, nor less
        daemon.bus_connected = False
        daemon.counts = {"pending": 5, "sent": 1, "failed": 0, "suppressed": 0}
        expected = "bus disconnected, reconnecting; deliveries: 5 pending, 1 sent, 0 failed, 0 suppressed"
        await wait_until(lambda: listener.with_key("STATUS")[-1]["STATUS"] == expected, timeout_s=2)
    finally:
        await stop(task)


async def test_without_a_watchdog_only_status_is_sent(
    listener: NotifyListener, make_notifier: Callable[..., Notifier]
) -> None:
    """With no WATCHDOG_USEC there are no WATCHDOG=1 pings, only READY=1 and the periodic STATUS= lines."""
    notifier = make_notifier(NOTIFY_SOCKET=listener.address)
    daemon = StandIn()
    daemon.ready = daemon.bus_connected = True
    task = await run_supervise(notifier, daemon, status_period_s=0.05)
    try:
        await listener.wait_for("STATUS", count=4)
        assert listener.with_key("WATCHDOG") == []
    finally:
        await stop(task)


async def test_a_blocked_event_loop_sends_no_watchdog(
    listener: NotifyListener, make_notifier: Callable[..., Notifier]
) -> None:
    """The pings come from the event loop: while it is blocked nothing is sent, so systemd would restart us."""
    notifier = make_notifier(NOTIFY_SOCKET=listener.address, WATCHDOG_USEC="100000")  # ping every 0.05 s
    daemon = StandIn()
    daemon.ready = daemon.bus_connected = True
    task = await run_supervise(notifier, daemon)
    try:
        await listener.wait_for("WATCHDOG", count=3)
        blocked_from = time.monotonic()
        time.sleep(0.6)  # noqa: ASYNC251 - blocking the loop is the point of this test
        blocked_until = time.monotonic()
        await wait_until(lambda: any(at > blocked_until for at in listener.times_of("WATCHDOG")))  # it resumes
        during = [at for at in listener.times_of("WATCHDOG") if blocked_from + 0.01 < at < blocked_until]
        assert during == []
    finally:
        await stop(task)


async def test_a_slow_store_does_not_delay_the_watchdog(
    listener: NotifyListener, make_notifier: Callable[..., Notifier]
) -> None:
    """A store that takes long to count still gets the pings out on time; STATUS= says the store is busy."""
    notifier = make_notifier(NOTIFY_SOCKET=listener.address, WATCHDOG_USEC="400000")  # ping every 0.2 s
    daemon = StandIn()
    daemon.ready = daemon.bus_connected = True
    task = await run_supervise(notifier, daemon)
    try:
        await listener.wait_for("READY")
        daemon.counts_delay_s = 10.0
        start = len(listener.times_of("WATCHDOG"))
        await listener.wait_for("WATCHDOG", count=start + 4)
        pings = listener.times_of("WATCHDOG")[start : start + 4]
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert max(gaps) < 0.35, gaps
        # Each count given up after its round's 0.2 s, just before the next ping.
        assert listener.with_key("STATUS")[-1]["STATUS"] == "bus connected; deliveries: store busy"
    finally:
        await stop(task)


async def test_status_line_survives_a_failing_store() -> None:
    """A store that raises gives a status line naming the problem, not an exception."""

    class Broken(StandIn):
        async def delivery_counts(self) -> Mapping[str, int]:
            raise RuntimeError("store closed")

    daemon = Broken()
    assert await status_line(daemon) == "bus disconnected, reconnecting; deliveries: unavailable (RuntimeError)"


async def test_after_stopping_the_status_says_so(
    listener: NotifyListener, make_notifier: Callable[..., Notifier]
) -> None:
    """After STOPPING=1 the periodic STATUS= lines say the daemon is stopping, not that the bus is down."""
    notifier = make_notifier(NOTIFY_SOCKET=listener.address)
    daemon = StandIn()
    daemon.ready = daemon.bus_connected = True
    task = await run_supervise(notifier, daemon, status_period_s=0.05)
    try:
        await listener.wait_for("READY")
        notify_stopping(notifier)
        daemon.bus_connected = False
        daemon.counts["pending"] = 4
        [stopping] = await listener.wait_for("STOPPING")
        assert stopping["STATUS"] == "stopping: intake closed, finishing deliveries in flight"
        expected = (
            "stopping: intake closed, finishing deliveries in flight; "
            "deliveries: 4 pending, 0 sent, 0 failed, 0 suppressed"
        )
        await wait_until(lambda: listener.with_key("STATUS")[-1]["STATUS"] == expected, timeout_s=2)
    finally:
        await stop(task)
    notify_stopping(None)  # without systemd: nothing to do, no error


async def test_reload_is_wrapped_in_reloading_and_ready(
    listener: NotifyListener, make_notifier: Callable[..., Notifier]
) -> None:
    """A reload after startup sends RELOADING=1 (with MONOTONIC_USEC), then READY=1 with a STATUS= saying whether
    the new config was applied; the reload's result is passed through."""
    notifier = make_notifier(NOTIFY_SOCKET=listener.address)
    daemon = StandIn()
    daemon.bus_connected = True
    notifier.ready()
    await listener.wait_for("READY")

    async def reload(applied: bool, nth: int) -> bool:
        await listener.wait_for("RELOADING", count=nth)
        assert len(listener.with_key("READY")) == nth  # the first READY=1 and one per earlier reload: not this one's
        return applied

    assert await notify_reload(notifier, daemon, reload(True, 1)) is True
    [_, applied] = await listener.wait_for("READY", count=2)
    assert applied["STATUS"] == "bus connected; deliveries: 0 pending, 0 sent, 0 failed, 0 suppressed"
    assert "MONOTONIC_USEC" in listener.with_key("RELOADING")[0]

    assert await notify_reload(notifier, daemon, reload(False, 2)) is False
    [_, _, refused] = await listener.wait_for("READY", count=3)
    assert refused["STATUS"].startswith("config reload refused (see the log); bus connected")


async def test_reload_before_ready_announces_nothing(
    listener: NotifyListener, make_notifier: Callable[..., Notifier]
) -> None:
    """A SIGHUP during startup reloads without RELOADING=1 or READY=1: readiness is still supervise's to announce."""
    notifier = make_notifier(NOTIFY_SOCKET=listener.address)

    async def reload() -> bool:
        return True

    assert await notify_reload(notifier, StandIn(), reload()) is True
    assert await notify_reload(None, StandIn(), reload()) is True
    notifier.watchdog()  # a marker: everything sent before it has arrived once it has
    await listener.wait_for("WATCHDOG")
    assert listener.raw == [b"WATCHDOG=1\n"]


# --------------------------------------------------------------------------------------------------- the daemon


@pytest.mark.slow
async def test_daemon_notifies_ready_after_the_bus_and_stopping_on_sigterm(
    listener: NotifyListener,
    mosquitto: Mosquitto,
    make_config: Callable[..., Path],
    daemon_process: Callable[[Path], DaemonProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`dispatcher run` under Type=notify: watchdog pings but no READY=1 while the broker is down (store open,
    HTTP up); READY=1 once the bus is connected (and /readyz agrees); RELOADING=1 then READY=1 on SIGHUP;
    STOPPING=1 on SIGTERM; exit 0."""
    config = make_config()
    mosquitto.stop()
    monkeypatch.setenv("NOTIFY_SOCKET", listener.address)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")  # ping every 0.5 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    daemon = daemon_process(config)
    daemon.start()  # returns once HTTP listens: the store is open
    try:
        await listener.wait_for("WATCHDOG", count=2, timeout_s=10)
    except AssertionError:
        raise AssertionError(f"no WATCHDOG=1 from the daemon; its log:\n{daemon.logs()}") from None
    assert listener.with_key("READY") == [], "READY=1 before the bus was connected"
    # mosquitto speaks sd_notify too: it must not inherit the socket meant for the daemon.
    monkeypatch.delenv("NOTIFY_SOCKET")
    monkeypatch.delenv("WATCHDOG_USEC")
    mosquitto.start()
    [ready] = await listener.wait_for("READY", timeout_s=15)
    assert ready["STATUS"].startswith("bus connected; deliveries: 0 pending")
    assert _readyz(daemon.http_port) == 200
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGHUP)  # `systemctl reload`
    await listener.wait_for("RELOADING", timeout_s=10)
    [_, reloaded] = await listener.wait_for("READY", count=2, timeout_s=10)
    # Applied or refused (the status line says which), the daemon runs on and says so with READY=1.
    assert "bus connected; deliveries:" in reloaded["STATUS"], daemon.logs()
    assert daemon.terminate(timeout_s=30) == 0
    stopping = listener.with_key("STOPPING")
    assert stopping, f"no STOPPING=1 after SIGTERM; log:\n{daemon.logs()}"
    assert listener.times_of("STOPPING")[0] > listener.times_of("READY")[0]


def _readyz(port: int) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


# ---------------------------------------------------------------------------------------------------- the unit


def _systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip("systemd-analyze is missing: install the Debian package `systemd` (scripts/setup does)")
    return found


def _unit_directives() -> dict[str, list[str]]:
    directives: dict[str, list[str]] = {}
    for line in UNIT_FILE.read_text().splitlines():
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            directives.setdefault(key.strip(), []).append(value.strip())
    return directives


def test_unit_file_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts the unit (ExecStart pointed at a real executable) without a warning."""
    analyze = _systemd_analyze()
    unit = tmp_path / "dispatcher.service"
    text = UNIT_FILE.read_text()
    assert "\nExecStart=/opt/dispatcher/bin/dispatcher run -c /etc/dispatcher/dispatcher.yaml\n" in text
    script = Path(sys.executable).with_name("dispatcher")
    executable = script if script.exists() else Path("/bin/true")
    unit.write_text(text.replace("ExecStart=/opt/dispatcher/bin/dispatcher", f"ExecStart={executable}"))
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert not re.search(r"Unknown (key|lvalue|section)|Invalid|Failed to parse|ignoring", output), output


def test_unit_file_has_the_operating_settings() -> None:
    """The unit is Type=notify with a watchdog, reloads with SIGHUP, restarts on failure, runs as its own
    user with state and config directories, and is sandboxed."""
    directives = _unit_directives()
    expected = {
        "Type": "notify",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "Restart": "on-failure",
        "User": "dispatcher",
        "StateDirectory": "dispatcher",
        "ConfigurationDirectory": "dispatcher",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "ProtectKernelTunables": "yes",
        "ProtectControlGroups": "yes",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "CapabilityBoundingSet": "",
    }
    for key, value in expected.items():
        assert directives.get(key, [None])[0] == value, key
    assert "@system-service" in directives["SystemCallFilter"]
    watchdog_s = int(directives["WatchdogSec"][0].removesuffix("s"))
    # The daemon pings every 5 s at most: the timeout must leave room for several missed pings' worth of jitter.
    assert watchdog_s >= 15


def test_state_directory_matches_the_default_store_path() -> None:
    """StateDirectory=dispatcher is /var/lib/dispatcher, where the config's default store lives."""
    from dispatcher.config import DEFAULT_STORE_PATH

    assert DEFAULT_STORE_PATH.parent == Path("/var/lib") / _unit_directives()["StateDirectory"][0]
