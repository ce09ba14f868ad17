"""What the benchmarks share: the broker, the daemon as a measured process, the sink process, /proc readings.

Every process here listens on 127.0.0.1 only, is started by the benchmark and is stopped by it (`stop()` or the
context manager), so a benchmark leaves nothing running. The daemon runs as `dispatcher run -c FILE`, exactly as a
user starts it; its CPU time and memory are read from `/proc/PID/stat` and `/proc/PID/status`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from dispatcher.config import DeliveryConfig  # noqa: E402 - after the path is set
from tests.brokers import Mosquitto, free_port, wait_for_port  # noqa: E402 - after the path is set
from tests.postgres import PostgresServer, find_bindir  # noqa: E402 - after the path is set

PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable
DISPATCHER = str(REPO / ".venv" / "bin" / "dispatcher")
BENCH = REPO / "bench"
RESULTS = BENCH / "results"
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")

__all__ = [
    "BENCH",
    "DISPATCHER",
    "PYTHON",
    "REPO",
    "RESULTS",
    "Daemon",
    "Mosquitto",
    "Postgres",
    "ProcessStats",
    "RssSampler",
    "Sinks",
    "free_port",
    "http_get",
    "http_post_json",
    "machine_busy_s",
    "percentile",
    "process_stats",
    "summarize_latencies_ms",
    "trees_stats",
    "wait_for_port",
]


# ----------------------------------------------------------------------------------------------------- /proc


@dataclass(frozen=True, slots=True)
class ProcessStats:
    """A process's CPU time so far and its memory, read from /proc."""

    cpu_s: float
    rss_mb: float
    hwm_mb: float


def process_stats(pid: int) -> ProcessStats:
    """utime+stime of `/proc/PID/stat` in seconds, VmRSS and VmHWM of `/proc/PID/status` in MB."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces; the fields after its closing parenthesis are fixed.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    memory: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            memory[key] = int(value.split()[0]) / 1024
    return ProcessStats(
        cpu_s=(utime + stime) / CLOCK_TICKS_PER_S, rss_mb=memory.get("VmRSS", 0.0), hwm_mb=memory.get("VmHWM", 0.0)
    )


def pss_mb(pid: int) -> float:
    """The proportional set size of `pid` (`/proc/PID/smaps_rollup`): its private pages plus its share of each
    page it shares with other processes."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return 0.0


def child_pids(pid: int) -> list[int]:
    """`pid`'s children, from every thread's `/proc/PID/task/TID/children` (empty if it has exited)."""
    found = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(child) for child in children.read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def tree_stats(pid: int) -> ProcessStats:
    """`process_stats` summed over `pid` and its children (the daemon and its sender processes): CPU and RSS
    are totals; the peak is the sum of each process's own peak, an upper bound of the group's."""
    total = process_stats(pid)
    for child in child_pids(pid):
        try:
            stats = process_stats(child)
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited between the listing and the reading
        total = ProcessStats(
            cpu_s=total.cpu_s + stats.cpu_s, rss_mb=total.rss_mb + stats.rss_mb, hwm_mb=total.hwm_mb + stats.hwm_mb
        )
    return total


def trees_stats(pids: Sequence[int]) -> ProcessStats:
    """`tree_stats` summed over several process trees (the instances of a cluster, each with its senders)."""
    total = ProcessStats(0.0, 0.0, 0.0)
    for pid in pids:
        stats = tree_stats(pid)
        total = ProcessStats(
            cpu_s=total.cpu_s + stats.cpu_s, rss_mb=total.rss_mb + stats.rss_mb, hwm_mb=total.hwm_mb + stats.hwm_mb
        )
    return total


def server_cpu_s(pid: int) -> float:
    """CPU seconds of a server that forks a process per connection (PostgreSQL): its own, its children's still
    running, and those of the children it has already reaped (cutime+cstime), so that a backend that ended
    during the measurement is not lost."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    total = sum(int(value) for value in fields[11:15]) / CLOCK_TICKS_PER_S  # utime, stime, cutime, cstime
    for child in child_pids(pid):
        try:
            total += process_stats(child).cpu_s
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def machine_busy_s() -> float:
    """CPU seconds all CPUs have spent not idle since boot (`/proc/stat`): the whole machine, every process."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS_PER_S


class RssSampler:
    """Samples the VmRSS of a process and its children (or of several such trees: `RssSampler(pid1, pid2)`, the
    instances of a cluster) every `interval_s` in a thread, until `stop()`; `samples` holds (t, MB), the sum of
    every tree. Also keeps the highest sum of their PSS seen (`pss_peak_mb`): each page shared between them
    (libraries, the interpreter) counted once, as the machine holds it."""

    def __init__(self, *pids: int, interval_s: float = 1.0) -> None:
        self.pids = pids
        self.pid = pids[0]
        self.interval_s = interval_s
        self.samples: list[tuple[float, float]] = []
        self.pss_peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> list[tuple[float, float]]:
        self._stop.set()
        self._thread.join()
        return self.samples

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.time(), trees_stats(self.pids).rss_mb))
                every = [pid for root in self.pids for pid in (root, *child_pids(root))]
                self.pss_peak_mb = max(self.pss_peak_mb, sum(pss_mb(pid) for pid in every))
            except (FileNotFoundError, ProcessLookupError):
                return
            self._stop.wait(self.interval_s)

    def summary(self) -> dict[str, Any]:
        """The curve in a few numbers: first, min, max, last, and the mean of each tenth of the run."""
        values = [mb for _, mb in self.samples]
        if not values:
            return {}
        tenth = max(1, len(values) // 10)
        deciles = [round(statistics.fmean(values[i : i + tenth]), 1) for i in range(0, len(values), tenth)][:10]
        # Growth between the second tenth and the last: the start-up ramp (caches, pools) is left out.
        settled = deciles[1] if len(deciles) > 2 else deciles[0]
        return {
            "samples": len(values),
            "first_mb": round(values[0], 1),
            "min_mb": round(min(values), 1),
            "max_mb": round(max(values), 1),
            "last_mb": round(values[-1], 1),
            "decile_means_mb": deciles,
            "growth_after_warmup_mb": round(deciles[-1] - settled, 1),
        }


# ------------------------------------------------------------------------------------------------------- stats


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


def summarize_latencies_ms(latencies_s: Sequence[float]) -> dict[str, float]:
    """p50, p99 and max of latencies given in seconds, in milliseconds."""
    ordered = sorted(latencies_s)
    if not ordered:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    return {
        "p50_ms": round(percentile(ordered, 0.50) * 1000, 1),
        "p99_ms": round(percentile(ordered, 0.99) * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


# -------------------------------------------------------------------------------------------------------- HTTP


def http_get(url: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def http_post_json(url: str, body: Any, timeout_s: float = 30.0) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


# -------------------------------------------------------------------------------------------------------- sinks


class Sinks:
    """`bench/sinks.py` in a process of its own: Post-to-URL, Alertmanager webhook, fake Pushbullet and SMTP.

    Each records (event id, arrival time) per message; `arrivals()` fetches them, `reset()` forgets them.
    """

    def __init__(self, workdir: Path) -> None:
        self.http_port = free_port()
        self.smtp_port = free_port()
        self.log_path = workdir / "sinks.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> Sinks:
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                [
                    PYTHON,
                    str(BENCH / "sinks.py"),
                    "--http-port",
                    str(self.http_port),
                    "--smtp-port",
                    str(self.smtp_port),
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        wait_for_port(self.http_port)
        wait_for_port(self.smtp_port)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def count(self) -> int:
        _, body = http_get(f"{self.http_url}/_bench/count", timeout_s=30)
        return int(json.loads(body)["count"])

    def webhooks(self) -> tuple[int, int]:
        """(Alertmanager webhook POSTs since the last reset, the most alerts one of them carried)."""
        _, body = http_get(f"{self.http_url}/_bench/count", timeout_s=30)
        data = json.loads(body)
        return int(data["webhooks"]), int(data["largest_webhook"])

    def reset(self) -> None:
        http_post_json(f"{self.http_url}/_bench/reset", {})

    def arrivals(self) -> list[tuple[str, float]]:
        """Every message received since the last reset, as (event id, arrival epoch seconds), in arrival order."""
        _, body = http_get(f"{self.http_url}/_bench/arrivals", timeout_s=60)
        data = json.loads(body)
        return list(zip(data["ids"], data["t"], strict=True))

    def wait_for(self, expected: int, *, timeout_s: float, stall_s: float = 15.0, poll_s: float = 0.2) -> int:
        """Wait until `expected` messages arrived, or none arrived for `stall_s`, or `timeout_s`; the count seen."""
        deadline = time.monotonic() + timeout_s
        last_count, last_change = -1, time.monotonic()
        while True:
            try:
                count = self.count()
            except OSError:  # a timeout too: the sinks are swamped, which is no reason to stop measuring
                count = last_count
            now = time.monotonic()
            if count != last_count:
                last_count, last_change = count, now
            if count >= expected or now > deadline or now - last_change > stall_s:
                return count
            time.sleep(poll_s)


# ------------------------------------------------------------------------------------------------------- daemon


def _yaml(value: Any) -> str:
    # JSON is YAML: a config written this way needs no YAML library and has no quoting surprises.
    return json.dumps(value, indent=2)


class Daemon:
    """`dispatcher run -c FILE` as a child process, with a benchmark config and its own store in `workdir` (an
    SQLite file), or the PostgreSQL database `store_url`.

    The instances of a cluster are Daemons with the same arguments but `name` (their config and log files), so
    their configs differ only in `http.listen`: same store URL, same bus client id (`client_id`).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        broker: Mosquitto,
        contacts: dict[str, Any] | None = None,
        channels: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        name: str = "dispatcher",
        protocol: str | None = None,
        store_url: str | None = None,
        client_id: str | None = None,
    ) -> None:
        self.workdir = workdir
        self.name = name
        self.http_port = free_port()
        self.config_path = workdir / f"{name}.yaml"
        self.log_path = workdir / f"{name}.log"
        self.db_path = workdir / f"{name}.db"
        token_path = workdir / "api.token"
        token_path.write_text("bench-token\n")
        config: dict[str, Any] = {
            "hostname": "bench.example.com",
            "bus": {
                "url": broker.url,
                "topic_prefix": "events",
                "client_id": client_id or f"{name}-bench",
                **({"protocol": protocol} if protocol else {}),
            },
            "http": {"listen": f"127.0.0.1:{self.http_port}", "token_file": str(token_path)},
            "store": {"url": store_url} if store_url else {"path": str(self.db_path)},
            "channels": channels or {},
            "contacts": contacts or {},
            **(extra or {}),
        }
        self.config_path.write_text(_yaml(config) + "\n")
        self.senders = int(config.get("delivery", {}).get("workers", DeliveryConfig.workers))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout_s: float = 30.0, *, standby: bool = False) -> Daemon:
        """Start it and wait for /readyz (store open, bus subscribed) and for its sender processes.

        /readyz does not wait for the senders (SPEC: events are accepted before they can go out); a scenario
        measures a running daemon, so the second or so a sender takes to start is left out.

        On PostgreSQL every instance starts as a standby of its cluster (/readyz 200 with `"intake": "standby"`)
        until it wins the intake's lock: unless `standby`, it is started only once /readyz no longer says so, i.e.
        it holds the intake and is subscribed. `standby`: an instance started after another one that holds the
        intake; it is started once /readyz answers 200 (or, from a daemon older than clusters, its store is open).
        """
        with self.log_path.open("ab") as log_file:
            # Logs go to a file, as under systemd they go to the journal: the daemon pays for writing them,
            # unbuffered as the unit runs it (systemd/dispatcher.service).
            self.process = subprocess.Popen(
                [DISPATCHER, "run", "-c", str(self.config_path)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                last = self.log_lines_matching('"level": "error"', limit=1) or self.last_log_lines(1)
                raise RuntimeError(
                    f"the daemon {self.name} exited with {self.process.returncode}: see {self.log_path}"
                    + (f": {last[0]}" if last else "")
                )
            try:
                status, body = http_get(f"{self.url}/readyz", timeout_s=1)
                if standby:
                    ready = status == 200 or _store_open(body)
                else:
                    ready = status == 200 and _readyz_field(body, "intake") != "standby"
                if ready and self.log_path.read_bytes().count(b'"sender_started"') >= self.senders:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"the daemon {self.name} was not ready after {timeout_s}s: see {self.log_path}")

    def stats(self) -> ProcessStats:
        """The daemon with its sender processes (`delivery.workers`)."""
        return tree_stats(self.pid)

    def metrics(self, timeout_s: float = 5.0) -> dict[str, float]:
        """/metrics as {'name{labels}': value} (samples only, comments left out)."""
        _, body = http_get(f"{self.url}/metrics", timeout_s=timeout_s)
        values = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                values[key] = float(value)
        return values

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` whose labels include `labels`."""
        total = 0.0
        for key, value in self.metrics().items():
            base, _, label_text = key.partition("{")
            if base != name:
                continue
            if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
                total += value
        return total

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not exit within `timeout_s`. The exit status."""
        if self.process is None:
            return None
        process, self.process = self.process, None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def last_log_lines(self, count: int) -> list[str]:
        lines = self.log_path.read_text(errors="replace").splitlines() if self.log_path.exists() else []
        return [line.strip()[:400] for line in lines[-count:]]

    def log_lines_matching(self, word: str, limit: int = 5) -> list[str]:
        """The first `limit` log lines containing `word` (errors to quote in a report)."""
        found = []
        with self.log_path.open(errors="replace") as log_file:
            for line in log_file:
                if word in line:
                    found.append(line.strip()[:400])
                    if len(found) >= limit:
                        break
        return found


def _readyz_field(readyz_body: bytes, key: str) -> Any:
    """A field of a /readyz answer (`{"ready": …, "checks": {…}, "intake": "standby"}`), None if absent."""
    try:
        answer = json.loads(readyz_body)
    except ValueError:
        return None
    return answer.get(key) if isinstance(answer, dict) else None


def _store_open(readyz_body: bytes) -> bool:
    """Whether a /readyz answer says the store is open (`{"checks": {"store": true, ...}}`)."""
    checks = _readyz_field(readyz_body, "checks")
    return bool(checks.get("store")) if isinstance(checks, dict) else False


# --------------------------------------------------------------------------------------------------- PostgreSQL


class Postgres(PostgresServer):
    """The tests' PostgreSQL server (`tests/postgres.py`: `initdb` into a temporary directory with Debian's server
    binaries, a free loopback port, run as `postgres` when we are root), started as a production server runs:
    the tests' server turns `fsync` and `full_page_writes` off, this one keeps PostgreSQL's defaults, so that its
    commits reach the disk as the SQLite store's durable commits do (`synchronous=FULL`) and the two engines are
    compared doing the same work. Everything else is PostgreSQL's default (`shared_buffers` 128 MB).

    `Postgres.create()` finds the binaries, starts the server and makes a database for the daemon; `stop()` keeps
    the server's log at `keep_log` (if given) before removing its directory.
    """

    SETTINGS = ("listen_addresses=127.0.0.1", "max_connections=100")  # PostgresServer.start starts it with these

    def __init__(self, bindir: Path, keep_log: Path | None = None) -> None:
        super().__init__(bindir)
        self.keep_log = keep_log
        self.database_url = ""

    @classmethod
    def create(cls, keep_log: Path | None = None) -> Postgres:
        bindir = find_bindir()
        if bindir is None:
            raise RuntimeError(
                "PostgreSQL's server is not installed (initdb, postgres): apt-get install postgresql (scripts/setup"
                " does)"
            )
        server = cls(bindir, keep_log)
        server.start()
        server.database_url = server.create_database()
        return server

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def version(self) -> str:
        result = subprocess.run([str(self.bindir / "postgres"), "--version"], capture_output=True, text=True)
        return result.stdout.strip()

    def database_mb(self) -> float:
        import psycopg

        with psycopg.connect(self.database_url, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        return round(int(row[0]) / 2**20, 1) if row else 0.0

    def stop(self) -> None:
        if self.keep_log is not None and (self.base / "server.log").exists():
            with contextlib.suppress(OSError):
                self.keep_log.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self.base / "server.log", self.keep_log)
        super().stop()


# ----------------------------------------------------------------------------------------------------- helpers


@contextmanager
def running(*things: Any) -> Iterator[None]:
    """Stop every started thing (anything with `stop()`) on the way out, last started first."""
    try:
        yield
    finally:
        for thing in reversed(things):
            try:
                thing.stop()
            except Exception as err:
                print(f"warning: stopping {type(thing).__name__}: {err}", file=sys.stderr)


def mosquitto_in(workdir: Path) -> Mosquitto:
    """A fresh broker with our configuration (max_queued_messages 0, max_inflight_messages 1000)."""
    state = workdir / "broker"
    state.mkdir(parents=True, exist_ok=True)
    broker = Mosquitto(state)
    broker.start()
    return broker


def need(binary: str) -> str | None:
    """The path of `binary`, or None."""
    return shutil.which(binary) or (f"/usr/sbin/{binary}" if Path(f"/usr/sbin/{binary}").exists() else None)


@dataclass
class Table:
    """A plain text table for the terminal and the README."""

    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)

    def add(self, *cells: Any) -> None:
        self.rows.append([_cell(cell) for cell in cells])

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.headers) + " |", "|" + "|".join(" --- " for _ in self.headers) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if value != value:  # NaN
            return "–"
        return f"{value:,.1f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
