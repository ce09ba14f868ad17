"""End-to-end benchmark harness (issue 8): the daemon as a user runs it, against real receivers on loopback.

    .venv/bin/python bench/run.py [--quick] [--scenario a,b,c,d,e] [--json out.json] [--profile] [--peer-batch 256]
    .venv/bin/python bench/run.py --store postgresql [--instances 2] [--scenario a]
    .venv/bin/python bench/run.py --cluster [sqlite,postgresql,postgresql:2]     (issue 20: scenario a three ways)

For each scenario: a fresh mosquitto with our configuration (`max_queued_messages 0`, `max_inflight_messages 1000`),
a fresh store, and `dispatcher run -c FILE` with a benchmark config; events come from `bench/publish.py` in a
process of its own (QoS 1, each with its id and its send time kept by id); the receivers are `bench/sinks.py`, in
another process (Post to URL, SMTP, fake Pushbullet, Alertmanager webhook), recording each message's arrival by
event id (the Post-to-URL `event_id` field, the `X-Dispatcher-Event-Id` header).

Scenarios (full size; `--quick` is about a tenth):

    a  burst of 50,000 events, each to one Post-to-URL target        goal >= 3,000/s, ideally Alertmanager's rate
    b  burst of 10,000 events, each to one email address              goal >= 1,500 emails/s
    c  fan-out: 500 events, each to 200 email addresses (one contact) = 100,000 emails
    d  steady 1,000 events/s for 60 s to one Post-to-URL target       goal p99 < 50 ms
    e  1,000,000 events through intake, planner and store, delivered to nobody: one contact whose only channel
       has threshold `none`, so each event is planned into one `suppressed` delivery row without any network.
       VmRSS sampled every second.                                    goal: memory flat

Every scenario: peak memory (VmHWM) < 150 MB. Side by side, in the same run: the ceiling (`bench/ceiling.py`:
aiohttp straight to the same sink with 50 requests in flight; aiosmtplib straight to the same SMTP sink with 8
connections, the email channel's default concurrency) for a, b, c, d; and the peer, Prometheus Alertmanager
(`prometheus-alertmanager`, installed with apt if missing and possible, skipped with a message otherwise), given
the same alerts through `POST /api/v2/alerts`, `--peer-batch` alerts a request (default 256, as Prometheus sends
them; `1,256` runs it fed both ways, the first listed being the peer of the ratios and goals), one webhook POST
per alert (`group_by: ['...']`, `group_wait: 0s`), to the same sink, for a and d. The sink counts the webhooks as
well as the alerts in them, and the report says so if Alertmanager grouped alerts into fewer notifications.

Stores (issue 20): SQLite by default; `--store postgresql` starts a PostgreSQL server of the run's own for each
row (`common.Postgres`: the tests' server with PostgreSQL's default durability), `--instances N` runs N daemons on
it (same config but `http.listen`, same bus client id; the first holds the intake), `--cluster` one row per setup
and a table comparing them (CPU a delivery with PostgreSQL's own, each instance's share).

Figures: deliveries per second at the sink = messages / (last arrival - first publish); latency publish →
arrival p50/p99/max; the daemon's CPU seconds during the scenario (utime+stime of /proc/PID/stat) and its peak
memory (VmHWM of /proc/PID/status). `--profile` runs py-spy on the daemon during scenario a and writes
`bench/results/profile-a.svg` and `profile-a.txt` (collapsed stacks), and prints the top functions.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    BENCH,
    PYTHON,
    REPO,
    RESULTS,
    Daemon,
    Postgres,
    RssSampler,
    Sinks,
    Table,
    child_pids,
    free_port,
    http_get,
    machine_busy_s,
    mosquitto_in,
    need,
    process_stats,
    running,
    server_cpu_s,
    summarize_latencies_ms,
    trees_stats,
)

MEMORY_GOAL_MB = 150.0
# Alerts a request to the peer by default: Prometheus's notifier sends up to this many (`DefaultMaxBatchSize`).
PROMETHEUS_BATCH = 256
# "Flat": the mean RSS of the last tenth of scenario e within this much of the second tenth.
FLAT_TOLERANCE_MB = 10.0
# Scenario e stops early past this RSS: the machine must stay usable (the figure is reported, not hidden).
RSS_ABORT_MB = 2048.0


@dataclass(frozen=True)
class Sizes:
    a: int
    b: int
    c_events: int
    c_fanout: int
    d_rate: float
    d_seconds: float
    e: int


@dataclass(frozen=True)
class Setup:
    """Where the daemon keeps its store, and how many instances share it (SPEC §8a's clusters)."""

    store: str = "sqlite"  # sqlite | postgresql
    instances: int = 1

    @property
    def label(self) -> str:
        engine = "SQLite" if self.store == "sqlite" else "PostgreSQL"
        return engine if self.instances == 1 else f"{engine}, {self.instances} instances"

    @property
    def slug(self) -> str:
        return self.store if self.instances == 1 else f"{self.store}-{self.instances}"

    @classmethod
    def parse(cls, text: str) -> Setup:
        """`sqlite`, `postgresql` (or `pg`), with `:N` for N instances: `postgresql:2`."""
        name, _, count = text.strip().partition(":")
        store = {"sqlite": "sqlite", "postgresql": "postgresql", "postgres": "postgresql", "pg": "postgresql"}.get(
            name.strip().lower()
        )
        if store is None:
            raise ValueError(f"unknown store {name!r}: sqlite or postgresql")
        instances = int(count) if count.strip() else 1
        if instances < 1:
            raise ValueError(f"instances must be at least 1 (got {instances})")
        if store == "sqlite" and instances > 1:
            raise ValueError("one SQLite store serves one instance (SPEC §8a): more instances need postgresql")
        return cls(store, instances)


# --cluster without a list: scenario a three ways, in this order.
CLUSTER_SETUPS = "sqlite,postgresql,postgresql:2"

FULL = Sizes(a=50_000, b=10_000, c_events=500, c_fanout=200, d_rate=1000, d_seconds=60, e=1_000_000)
QUICK = Sizes(a=5_000, b=2_000, c_events=50, c_fanout=200, d_rate=1000, d_seconds=10, e=50_000)


@dataclass
class Measurement:
    """One system in one scenario."""

    scenario: str
    system: str  # dispatcher | ceiling | alertmanager
    expected: int
    arrived: int
    seconds: float
    per_s: float
    latency: dict[str, float]
    cpu_s: float | None
    peak_mb: float | None
    extra: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class Context:
    sizes: Sizes
    workdir: Path
    sinks: Sinks
    profile: set[str]
    protocol: str | None = None
    workers: int | None = None
    # Alerts a request for each Alertmanager run, in order; the first is the peer of the ratios and goals.
    peer_batches: tuple[int, ...] = (256,)
    # The daemon's store and instances, one dispatcher row each, in this order (`--store`, `--instances`,
    # `--cluster`); the default, one instance on SQLite, is the only one scenario e knows.
    setups: tuple[Setup, ...] = (Setup(),)
    keep: bool = False

    @property
    def label_setups(self) -> bool:
        """Whether the dispatcher rows name their setup (anything but the default single SQLite one)."""
        return self.setups != (Setup(),)

    def daemon_extra(self) -> dict[str, Any]:
        """Config beyond contacts and channels: `delivery.workers` when the command line set it."""
        return {} if self.workers is None else {"delivery": {"workers": self.workers}}


# ----------------------------------------------------------------------------------------------------- helpers


def machine_load(busy_s: float, wall_s: float, ours_s: float) -> dict[str, float]:
    """How busy the whole machine was during a measurement, and how much of that was not the benchmark's.

    `others_cpu_s` is CPU time used by processes outside the benchmark (other users' test runs): when it is
    large, the figures are lower than this machine can do alone.
    """
    cpus = os.cpu_count() or 1
    return {
        "busy_share": round(busy_s / (wall_s * cpus), 2) if wall_s > 0 else 0.0,
        "busy_cpu_s": round(busy_s, 1),
        "others_cpu_s": round(max(0.0, busy_s - ours_s), 1),
        "loadavg_1m": float(Path("/proc/loadavg").read_text().split()[0]),
    }


def arrival_figures(
    arrivals: list[tuple[str, float]], times: list[float], prefix: str
) -> tuple[int, float, float, dict[str, float]]:
    """(messages, seconds from first send to last arrival, per second, latency summary) for ids `<prefix>-<n>`."""
    latencies = []
    last = 0.0
    for event_id, arrived_at in arrivals:
        head, _, index = event_id.rpartition("-")
        if head != prefix or not index.isdigit():
            continue
        latencies.append(arrived_at - times[int(index)])
        last = max(last, arrived_at)
    if not latencies:
        return 0, 0.0, 0.0, summarize_latencies_ms([])
    seconds = last - min(times)
    return len(latencies), seconds, len(latencies) / seconds, summarize_latencies_ms(latencies)


# Load generators and clients started by a scenario: killed if the scenario breaks before it collects them.
CHILDREN: list[subprocess.Popen[str]] = []


def spawn(command: list[str]) -> subprocess.Popen[str]:
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    CHILDREN.append(process)
    return process


def reap_children() -> None:
    while CHILDREN:
        process = CHILDREN.pop()
        if process.poll() is None:
            process.kill()
            process.wait()


def publisher(broker_port: int, count: int, rate: float, prefix: str, times_path: Path) -> subprocess.Popen[str]:
    return spawn(
        [
            PYTHON,
            str(BENCH / "publish.py"),
            "mqtt",
            "--port",
            str(broker_port),
            "--count",
            str(count),
            "--rate",
            str(rate),
            "--prefix",
            prefix,
            "--times",
            str(times_path),
        ]
    )


def finish(process: subprocess.Popen[str], timeout_s: float = 600) -> dict[str, Any]:
    out, _ = process.communicate(timeout=timeout_s)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def start_profiler(pid: int, scenario: str) -> list[subprocess.Popen[bytes]]:
    py_spy = shutil.which("py-spy") or str(REPO / ".venv" / "bin" / "py-spy")
    if not Path(py_spy).exists():
        print("profile: py-spy is not installed (.venv/bin/pip install py-spy); not profiling", file=sys.stderr)
        return []
    RESULTS.mkdir(parents=True, exist_ok=True)
    common = ["record", "--pid", str(pid), "--subprocesses", "--rate", "200", "--nonblocking"]
    return [
        subprocess.Popen(
            [py_spy, *common, "-o", str(RESULTS / f"profile-{scenario}.svg")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            [py_spy, *common, "--format", "raw", "-o", str(RESULTS / f"profile-{scenario}.txt")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
    ]


def stop_profiler(profilers: list[subprocess.Popen[bytes]]) -> None:
    for profiler in profilers:
        profiler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    for profiler in profilers:
        try:
            profiler.wait(timeout=60)
        except subprocess.TimeoutExpired:
            profiler.kill()


def summarize_profile(path: Path, top: int = 15) -> dict[str, list[tuple[str, float]]]:
    """From py-spy's collapsed stacks: the functions with the most samples on top (self) and anywhere (total)."""
    own: collections.Counter[str] = collections.Counter()
    anywhere: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        own[frames[-1]] += count
        for frame in set(frames):
            anywhere[frame] += count
    if not total:
        return {"self": [], "total": [], "by_package": []}
    packages: collections.Counter[str] = collections.Counter()
    for name, n in own.items():
        packages[_package_of(name)] += n
    ours = [(name, n) for name, n in anywhere.most_common() if "(dispatcher/" in name and "cli.py" not in name]
    return {
        "samples": [("all", float(total))],
        "self": [(name, round(100 * n / total, 1)) for name, n in own.most_common(top)],
        "total": [(name, round(100 * n / total, 1)) for name, n in ours[:top]],
        "by_package": [(name, round(100 * n / total, 1)) for name, n in packages.most_common(top)],
    }


def _package_of(frame: str) -> str:
    """`f (email/generator.py:115)` → `email`; `f (dispatcher/channels/email.py:9)` → `dispatcher/channels`."""
    _, _, where = frame.rpartition("(")
    path = where.split(":")[0]
    parts = path.split("/")
    if parts[0] == "dispatcher" and len(parts) > 2:
        return "/".join(parts[:2])
    return parts[0] if len(parts) > 1 else path


# --------------------------------------------------------------------------------------------------- dispatcher


def run_dispatcher(
    ctx: Context,
    scenario: str,
    *,
    contacts: dict[str, Any],
    channels: dict[str, Any],
    count: int,
    rate: float,
    expected: int,
    timeout_s: float,
) -> list[Measurement]:
    """The scenario once per setup (`ctx.setups`): a row each. A setup that breaks is a row with its error, and
    the next one still runs."""
    rows = []
    for setup in ctx.setups:
        try:
            rows.append(
                run_setup(
                    ctx,
                    scenario,
                    setup,
                    contacts=contacts,
                    channels=channels,
                    count=count,
                    rate=rate,
                    expected=expected,
                    timeout_s=timeout_s,
                )
            )
        except Exception as err:
            traceback.print_exc()
            reap_children()
            row = failed(scenario, err)
            row.extra["setup"] = asdict(setup) | {"label": setup.label}
            row.extra["label_setup"] = ctx.label_setups
            rows.append(row)
    return rows


def stop_quietly(thing: Any) -> None:
    try:
        thing.stop()
    except Exception as err:
        print(f"warning: stopping {type(thing).__name__}: {err}", file=sys.stderr)


def run_setup(
    ctx: Context,
    scenario: str,
    setup: Setup,
    *,
    contacts: dict[str, Any],
    channels: dict[str, Any],
    count: int,
    rate: float,
    expected: int,
    timeout_s: float,
) -> Measurement:
    """Publish `count` events (at `rate`, 0 = burst) and wait for `expected` messages at the sinks.

    On PostgreSQL, a server of the run's own (`common.Postgres`), fresh for each row as the SQLite file is. With
    several instances, each is `dispatcher run -c FILE` with the same config but `http.listen`: the same store
    URL and the same bus client id; the first is started and ready (bus subscribed: it holds the intake) before
    the others, which start as standbys (no bus connection of their own) and share planning and delivery.
    """
    workdir = ctx.workdir / (f"{scenario}-dispatcher" if setup == Setup() else f"{scenario}-dispatcher-{setup.slug}")
    if workdir.exists():  # a setup listed twice (`--cluster sqlite,postgresql,postgresql,sqlite`): a fresh one
        workdir = next(
            workdir.with_name(f"{workdir.name}-{n}")
            for n in range(2, 100)
            if not workdir.with_name(f"{workdir.name}-{n}").exists()
        )
    times_path = workdir / "times.json"
    notes: list[str] = []
    with contextlib.ExitStack() as stack:
        broker = mosquitto_in(workdir)
        stack.callback(stop_quietly, broker)
        server = None
        if setup.store == "postgresql":
            server = Postgres.create(keep_log=workdir / "postgresql.log" if ctx.keep else None)
            stack.callback(stop_quietly, server)
        daemons = [
            Daemon(
                workdir,
                broker=broker,
                contacts=contacts,
                channels=channels,
                protocol=ctx.protocol,
                extra=ctx.daemon_extra(),
                name="dispatcher" if n == 0 else f"dispatcher-{n + 1}",
                store_url=server.database_url if server else None,
                client_id="dispatcher-bench",
            )
            for n in range(setup.instances)
        ]
        for daemon in daemons:
            stack.callback(stop_quietly, daemon)
        daemons[0].start()
        for daemon in daemons[1:]:
            daemon.start(standby=True)
        pids = [daemon.pid for daemon in daemons]
        ctx.sinks.reset()
        sampler = RssSampler(*pids).start()
        server_sampler = RssSampler(server.pid).start() if server else None
        before = trees_stats(pids)
        each_before = [process_stats(pid).cpu_s for pid in pids]
        trees_before = [trees_stats([pid]).cpu_s for pid in pids]
        server_before = server_cpu_s(server.pid) if server else 0.0
        sinks_before = process_stats(ctx.sinks.pid).cpu_s
        assert broker.process is not None
        broker_before = process_stats(broker.process.pid).cpu_s
        machine_before, wall_before = machine_busy_s(), time.time()
        profilers = start_profiler(pids[0], scenario) if scenario in ctx.profile else []
        process = publisher(broker.port, count, rate, scenario, times_path)
        arrived = ctx.sinks.wait_for(expected, timeout_s=timeout_s, stall_s=30)
        published = finish(process)
        stop_profiler(profilers)
        after = trees_stats(pids)
        each_cpu_s = [process_stats(pid).cpu_s - b for pid, b in zip(pids, each_before, strict=True)]
        trees_cpu_s = [trees_stats([pid]).cpu_s - b for pid, b in zip(pids, trees_before, strict=True)]
        server_cpu = server_cpu_s(server.pid) - server_before if server else None
        peaks_mb = [[round(process_stats(p).hwm_mb, 1) for p in (pid, *child_pids(pid))] for pid in pids]
        sinks_cpu_s = process_stats(ctx.sinks.pid).cpu_s - sinks_before
        broker_cpu_s = process_stats(broker.process.pid).cpu_s - broker_before
        machine_s, wall_s = machine_busy_s() - machine_before, time.time() - wall_before
        sampler.stop()
        if server_sampler is not None:
            server_sampler.stop()
        each_metrics: list[dict[str, float]] = []
        for daemon in daemons:
            try:
                each_metrics.append(daemon.metrics(timeout_s=30))
            except OSError as err:
                each_metrics.append({})
                notes.append(f"/metrics of {daemon.name} did not answer: {err}")
        database_mb = None
        if server is not None:
            try:
                database_mb = server.database_mb()
            except Exception as err:
                notes.append(f"the database's size could not be read: {err}")
        statuses = [daemon.stop() for daemon in reversed(daemons)][::-1]
        if arrived < expected:
            notes.append(f"only {arrived} of {expected} messages arrived")
        for daemon, status in zip(daemons, statuses, strict=True):
            errors = daemon.log_lines_matching('"level": "error"', limit=3)
            who = "daemon" if len(daemons) == 1 else daemon.name
            if errors:
                notes.append(f"{who} errors: " + " | ".join(errors))
            if status not in (0, None):
                notes.append(f"{who} exited with {status} on SIGTERM")
    times = json.loads(times_path.read_text())
    arrivals = ctx.sinks.arrivals()
    messages, seconds, per_s, latency = arrival_figures(arrivals, times, scenario)
    ids = [event_id for event_id, _ in arrivals if event_id.startswith(f"{scenario}-")]
    duplicates = len(ids) - len(set(ids))
    if duplicates:  # at-least-once: a cluster may send a delivery twice (counted in msg/s, as the sink saw it)
        notes.append(f"{duplicates:,} messages arrived more than once ({len(set(ids)):,} distinct events)")
    deliveries: dict[str, float] = {}
    for sample in each_metrics:
        for key, value in sample.items():
            if key.startswith("dispatcher_deliveries_total") and value:
                deliveries[key] = deliveries.get(key, 0.0) + value
    instances = [
        {
            "name": daemon.name,
            "received": metric_sum(sample, "dispatcher_events_received_total"),
            "sent": metric_sum(sample, "dispatcher_deliveries_total", outcome="sent"),
            "intake_elected": bool(metric_sum(sample, "dispatcher_intake_elected")),
            "taken_over": metric_sum(sample, "dispatcher_deliveries_taken_over_total"),
            "cpu_s": round(tree_cpu, 2),
            "daemon_process_cpu_s": round(own_cpu, 2),
            "peak_mb": round(sum(peaks), 1),
        }
        for daemon, sample, tree_cpu, own_cpu, peaks in zip(
            daemons, each_metrics, trees_cpu_s, each_cpu_s, peaks_mb, strict=True
        )
    ]
    ours_s = after.cpu_s - before.cpu_s + sinks_cpu_s + broker_cpu_s + float(published.get("cpu_s") or 0)
    extra: dict[str, Any] = {
        "setup": asdict(setup) | {"label": setup.label},
        "label_setup": ctx.label_setups,
        "published": published.get("acked"),
        "daemon_process_cpu_s": round(sum(each_cpu_s), 2),
        "peak_mb_by_process": peaks_mb[0] if len(peaks_mb) == 1 else peaks_mb,
        "sinks_cpu_s": round(sinks_cpu_s, 2),
        "broker_cpu_s": round(broker_cpu_s, 2),
        "publisher_cpu_s": published.get("cpu_s"),
        "machine": machine_load(machine_s, wall_s, ours_s + (server_cpu or 0.0)),
        "deliveries": dict(deliveries),
        "rss": sampler.summary(),
        "pss_peak_mb": round(sampler.pss_peak_mb, 1),
        "duplicates": duplicates,
    }
    if len(daemons) > 1:
        extra["instances"] = instances
        extra["peak_mb_by_instance"] = [i["peak_mb"] for i in instances]
    if server is not None and server_sampler is not None:
        extra["postgresql"] = {
            "cpu_s": round(server_cpu or 0.0, 2),
            "pss_peak_mb": round(server_sampler.pss_peak_mb, 1),
            "database_mb": database_mb,
            "version": server.version(),
        }
    return Measurement(
        scenario=scenario,
        system="dispatcher",
        expected=expected,
        arrived=messages,
        seconds=round(seconds, 2),
        per_s=round(per_s, 1),
        latency=latency,
        cpu_s=round(after.cpu_s - before.cpu_s, 2),
        peak_mb=round(after.hwm_mb, 1),
        extra=extra,
        notes=notes,
    )


def run_volume(ctx: Context) -> Measurement:
    """Scenario e: many events planned into suppressed rows (threshold `none`), memory sampled every second."""
    count = ctx.sizes.e
    workdir = ctx.workdir / "e-dispatcher"
    broker = mosquitto_in(workdir)
    contacts = {"root": {"email": ["root@example.com"], "receives": {"email": "none"}}}
    daemon = Daemon(workdir, broker=broker, contacts=contacts, protocol=ctx.protocol, extra=ctx.daemon_extra())
    times_path = workdir / "times.json"
    notes: list[str] = []
    with running(broker, daemon):
        daemon.start()
        sampler = RssSampler(daemon.pid, interval_s=1.0).start()
        before = daemon.stats()
        start = time.time()
        machine_before = machine_busy_s()
        assert broker.process is not None
        broker_before = process_stats(broker.process.pid).cpu_s
        process = publisher(broker.port, count, 0, "e", times_path)
        deadline = time.monotonic() + max(300, count / 300)
        planned = received = 0.0
        last_change, last_planned = time.monotonic(), -1.0
        curve: list[tuple[float, float, float, float]] = []  # (s since start, RSS MB, recorded, planned)
        unanswered = 0
        while time.monotonic() < deadline:
            try:
                sample = daemon.metrics(timeout_s=10)
            except OSError:  # timeouts too: the daemon did not answer /metrics within 10 s
                unanswered += 1
                sample = None
            if sample is not None:
                received = metric_sum(sample, "dispatcher_events_received_total")
                planned = metric_sum(sample, "dispatcher_deliveries_total", outcome="suppressed")
            rss_mb = daemon.stats().rss_mb
            curve.append((round(time.time() - start, 1), round(rss_mb, 1), received, planned))
            if planned != last_planned:
                last_planned, last_change = planned, time.monotonic()
            if planned >= count or time.monotonic() - last_change > 60:
                break
            if rss_mb > RSS_ABORT_MB:
                notes.append(f"stopped early: RSS {rss_mb:.0f} MB passed {RSS_ABORT_MB:.0f} MB")
                break
            time.sleep(1.0)
        done = time.time()
        if process.poll() is None and planned < count:
            process.kill()  # stopped early: the rest of the burst is of no use
        published = finish(process)
        after = daemon.stats()
        assert broker.process is not None
        ours_s = after.cpu_s - before.cpu_s + float(published.get("cpu_s") or 0)
        ours_s += process_stats(broker.process.pid).cpu_s - broker_before
        machine = machine_load(machine_busy_s() - machine_before, time.time() - start, ours_s)
        sampler.stop()
        store_live_mb = sum(p.stat().st_size for p in workdir.glob(f"{daemon.db_path.name}*")) / 2**20
        status = daemon.stop()
        store_mb = sum(p.stat().st_size for p in workdir.glob(f"{daemon.db_path.name}*")) / 2**20
        if planned < count:
            notes.append(f"only {planned:.0f} of {count} events planned ({received:.0f} recorded) before giving up")
        if unanswered:
            notes.append(f"/metrics did not answer within 10 s {unanswered} time(s)")
        if status not in (0, None):
            notes.append(f"daemon exited with {status} on SIGTERM")
    seconds = done - start
    rss = sampler.summary()
    flat = rss.get("growth_after_warmup_mb", 0.0) <= FLAT_TOLERANCE_MB
    return Measurement(
        scenario="e",
        system="dispatcher",
        expected=count,
        arrived=int(planned),
        seconds=round(seconds, 1),
        per_s=round(planned / seconds, 1),
        latency=summarize_latencies_ms([]),
        cpu_s=round(after.cpu_s - before.cpu_s, 1),
        peak_mb=round(after.hwm_mb, 1),
        extra={
            "received": received,
            "published": published.get("acked"),
            "rss": rss,
            "pss_peak_mb": round(sampler.pss_peak_mb, 1),
            "memory_flat": flat,
            "machine": machine,
            "metrics_unanswered": unanswered,
            "store_mb_running": round(store_live_mb, 1),
            "store_mb_after_stop": round(store_mb, 1),
            "curve": curve,
            "backlog_max": max((r - p for _, _, r, p in curve), default=0),
        },
        notes=notes,
    )


# ------------------------------------------------------------------------------------------------------ ceiling


def run_ceiling(ctx: Context, scenario: str, kind: str, count: int, rate: float) -> Measurement:
    times_path = ctx.workdir / f"{scenario}-ceiling-times.json"
    ctx.sinks.reset()
    machine_before, wall_before = machine_busy_s(), time.time()
    sinks_before = process_stats(ctx.sinks.pid).cpu_s
    target = ["--url", f"{ctx.sinks.http_url}/hook"] if kind == "http" else ["--port", str(ctx.sinks.smtp_port)]
    process = spawn(
        [
            PYTHON,
            str(BENCH / "ceiling.py"),
            kind,
            *target,
            "--count",
            str(count),
            "--rate",
            str(rate),
            "--prefix",
            scenario,
            "--times",
            str(times_path),
        ]
    )
    result = finish(process)
    ctx.sinks.wait_for(count, timeout_s=30, stall_s=5)
    ours_s = result.get("cpu_s", 0.0) + process_stats(ctx.sinks.pid).cpu_s - sinks_before
    machine = machine_load(machine_busy_s() - machine_before, time.time() - wall_before, ours_s)
    times = json.loads(times_path.read_text())
    messages, seconds, per_s, latency = arrival_figures(ctx.sinks.arrivals(), times, scenario)
    notes = [f"{result['errors']} send errors"] if result.get("errors") else []
    what = "aiohttp, 50 in flight" if kind == "http" else "aiosmtplib, 8 connections"
    return Measurement(
        scenario=scenario,
        system="ceiling",
        expected=count,
        arrived=messages,
        seconds=round(seconds, 2),
        per_s=round(per_s, 1),
        latency=latency,
        cpu_s=round(result.get("cpu_s", 0.0), 2),
        peak_mb=None,
        extra={"client": what, "machine": machine},
        notes=notes,
    )


# ------------------------------------------------------------------------------------------------- Alertmanager

# One notification per alert, the unit the daemon delivers (one per event): `group_by: ['...']` groups by every
# label, and each alert has its own `event_id`, so each is a group of one however many alerts a request carries;
# `group_wait: 0s` sends a new group's notification at once. `group_interval` only delays a group that gets a new
# alert, which none does. The sink counts the webhooks, so a report shows it if this ever stops holding.
ALERTMANAGER_CONFIG = """\
route:
  receiver: sink
  group_by: ['...']
  group_wait: 0s
  group_interval: 5m
  repeat_interval: 4h
receivers:
  - name: sink
    webhook_configs:
      - url: {url}
        send_resolved: false
"""


def alertmanager_binary() -> str | None:
    """The Alertmanager binary; installed with apt if missing and we are root. None (with a message) if not."""
    found = need("prometheus-alertmanager") or need("alertmanager")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        print(
            "peer: prometheus-alertmanager is not installed and cannot be installed here; peer skipped", file=sys.stderr
        )
        return None
    print("peer: installing prometheus-alertmanager with apt-get …", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    result = subprocess.run(
        ["apt-get", "install", "-y", "-q", "prometheus-alertmanager"], env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        result = subprocess.run(
            ["apt-get", "install", "-y", "-q", "prometheus-alertmanager"], env=env, capture_output=True, text=True
        )
    found = need("prometheus-alertmanager")
    if found is None:
        print(
            f"peer: apt-get could not install prometheus-alertmanager; peer skipped:\n{result.stderr[-500:]}",
            file=sys.stderr,
        )
    return found


class Alertmanager:
    """An Alertmanager on loopback: no cluster, its own storage in `workdir`, a webhook to the sink."""

    def __init__(self, binary: str, workdir: Path, webhook_url: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config = workdir / "alertmanager.yml"
        config.write_text(ALERTMANAGER_CONFIG.format(url=webhook_url))
        self.command = [
            binary,
            f"--config.file={config}",
            f"--storage.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ]
        self.log_path = workdir / "alertmanager.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Alertmanager:
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(self.command, stdout=log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if http_get(f"{self.url}/-/ready", timeout_s=1)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"Alertmanager was not ready: see {self.log_path}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.process = None


def alertmanager_version(binary: str) -> str:
    """The first line of `--version` (e.g. `alertmanager, version 0.25.0 (…)`), or what kept us from it."""
    try:
        result = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"unknown ({err})"
    lines = (result.stdout or result.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"


def run_alertmanager(ctx: Context, scenario: str, count: int, rate: float, binary: str, batch: int) -> Measurement:
    """Alertmanager fed `count` alerts, `batch` a request (at `rate`, 0 = burst), until they reach the sink."""
    workdir = ctx.workdir / f"{scenario}-alertmanager-{batch}"
    manager = Alertmanager(binary, workdir, f"{ctx.sinks.http_url}/am")
    times_path = workdir / "times.json"
    notes: list[str] = []
    with running(manager):
        manager.start()
        assert manager.process is not None
        pid = manager.process.pid
        ctx.sinks.reset()
        before = process_stats(pid)
        machine_before, wall_before = machine_busy_s(), time.time()
        sinks_before = process_stats(ctx.sinks.pid).cpu_s
        process = spawn(
            [
                PYTHON,
                str(BENCH / "publish.py"),
                "alertmanager",
                "--url",
                manager.url,
                "--count",
                str(count),
                "--rate",
                str(rate),
                "--prefix",
                scenario,
                "--times",
                str(times_path),
                "--batch",
                str(batch),
            ]
        )
        arrived = ctx.sinks.wait_for(count, timeout_s=max(120, count / 100), stall_s=30)
        published = finish(process)
        after = process_stats(pid)
        webhooks, largest_webhook = ctx.sinks.webhooks()
        ours_s = (
            after.cpu_s
            - before.cpu_s
            + process_stats(ctx.sinks.pid).cpu_s
            - sinks_before
            + float(published.get("cpu_s") or 0)
        )
        machine = machine_load(machine_busy_s() - machine_before, time.time() - wall_before, ours_s)
        if published.get("errors"):
            notes.append(f"{published['errors']} of {published.get('requests')} alert requests refused")
        if arrived < count:
            notes.append(f"only {arrived} of {count} alerts arrived")
    times = json.loads(times_path.read_text())
    messages, seconds, per_s, latency = arrival_figures(ctx.sinks.arrivals(), times, scenario)
    if webhooks != messages:
        # Grouped: msg/s counts alerts, while the daemon's counts notifications (one per event).
        notes.append(
            f"{webhooks:,} webhooks carried the {messages:,} alerts (up to {largest_webhook:,} in one): Alertmanager"
            f" grouped them, so its msg/s counts alerts, not notifications; {webhooks / seconds:,.0f} webhooks/s"
            if seconds
            else f"{webhooks:,} webhooks for {messages:,} alerts"
        )
    feed_s = float(published.get("acked_at") or 0) - float(published.get("first_publish") or 0)
    return Measurement(
        scenario=scenario,
        system="alertmanager",
        expected=count,
        arrived=messages,
        seconds=round(seconds, 2),
        per_s=round(per_s, 1),
        latency=latency,
        cpu_s=round(after.cpu_s - before.cpu_s, 2),
        peak_mb=round(after.hwm_mb, 1),
        extra={
            "version": alertmanager_version(binary),
            "batch": batch,
            "requests": published.get("requests"),
            "feed_s": round(feed_s, 2),
            "webhooks": webhooks,
            "largest_webhook": largest_webhook,
            "publisher_cpu_s": published.get("cpu_s"),
            "machine": machine,
        },
        notes=notes,
    )


# ---------------------------------------------------------------------------------------------------- scenarios


def scenario_a(ctx: Context, peer: str | None) -> list[Measurement]:
    count = ctx.sizes.a
    results = [
        *run_dispatcher(
            ctx,
            "a",
            contacts={"hook": {"posturl": [f"{ctx.sinks.http_url}/hook"]}},
            channels={"posturl": {"concurrency": 50}},
            count=count,
            rate=0,
            expected=count,
            timeout_s=max(120, count / 50),
        ),
        run_ceiling(ctx, "a", "http", count, 0),
    ]
    if peer:
        results += [run_alertmanager(ctx, "a", count, 0, peer, batch) for batch in ctx.peer_batches]
    return results


def email_channel(ctx: Context) -> dict[str, Any]:
    sender = "Server notices <root@bench.example.com>"
    return {"email": {"host": "127.0.0.1", "port": ctx.sinks.smtp_port, "from": sender}}


def scenario_b(ctx: Context, peer: str | None) -> list[Measurement]:
    count = ctx.sizes.b
    return [
        *run_dispatcher(
            ctx,
            "b",
            contacts={"ops": {"email": ["ops@example.com"]}},
            channels=email_channel(ctx),
            count=count,
            rate=0,
            expected=count,
            timeout_s=max(120, count / 50),
        ),
        run_ceiling(ctx, "b", "smtp", count, 0),
    ]


def scenario_c(ctx: Context, peer: str | None) -> list[Measurement]:
    events, fanout = ctx.sizes.c_events, ctx.sizes.c_fanout
    addresses = [f"user{n:03d}@example.com" for n in range(fanout)]
    return [
        *run_dispatcher(
            ctx,
            "c",
            contacts={"list": {"email": addresses}},
            channels=email_channel(ctx),
            count=events,
            rate=0,
            expected=events * fanout,
            timeout_s=max(120, events * fanout / 50),
        ),
        run_ceiling(ctx, "c", "smtp", events * fanout, 0),
    ]


def scenario_d(ctx: Context, peer: str | None) -> list[Measurement]:
    rate, seconds = ctx.sizes.d_rate, ctx.sizes.d_seconds
    count = int(rate * seconds)
    results = [
        *run_dispatcher(
            ctx,
            "d",
            contacts={"hook": {"posturl": [f"{ctx.sinks.http_url}/hook"]}},
            channels={"posturl": {"concurrency": 50}},
            count=count,
            rate=rate,
            expected=count,
            timeout_s=seconds + 120,
        ),
        run_ceiling(ctx, "d", "http", count, rate),
    ]
    if peer:
        results += [run_alertmanager(ctx, "d", count, rate, peer, batch) for batch in ctx.peer_batches]
    return results


def scenario_e(ctx: Context, peer: str | None) -> list[Measurement]:
    return [run_volume(ctx)]


SCENARIOS = {"a": scenario_a, "b": scenario_b, "c": scenario_c, "d": scenario_d, "e": scenario_e}
TITLES = {
    "a": "burst → Post to URL",
    "b": "burst → email",
    "c": "fan-out 1 event → 200 emails",
    "d": "steady 1,000/s → Post to URL",
    "e": "volume: planner + store, no network",
}


# ------------------------------------------------------------------------------------------------------ report


def failed(scenario: str, err: BaseException) -> Measurement:
    """A scenario that broke: reported as a row with nothing measured and the error."""
    return Measurement(
        scenario=scenario,
        system="dispatcher",
        expected=0,
        arrived=0,
        seconds=0.0,
        per_s=0.0,
        latency=summarize_latencies_ms([]),
        cpu_s=None,
        peak_mb=None,
        notes=[f"scenario failed: {type(err).__name__}: {err}"],
    )


def metric_sum(sample: dict[str, float], name: str, **labels: str) -> float:
    """The sum of the samples of `name` (in a `Daemon.metrics()` answer) whose labels include `labels`."""
    total = 0.0
    for key, value in sample.items():
        base, _, label_text = key.partition("{")
        if base == name and all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            total += value
    return total


def goals(measurement: Measurement, peer: Measurement | None) -> list[str]:
    """Each goal of the brief this measurement is held to, with ✔ or ✘."""
    marks = []

    def check(ok: bool, text: str) -> None:
        marks.append(f"{'✔' if ok else '✘'} {text}")

    by_instance = measurement.extra.get("peak_mb_by_instance")
    if by_instance:  # the goal is each daemon's: the peak of the largest instance
        check(max(by_instance) < MEMORY_GOAL_MB, f"peak < {MEMORY_GOAL_MB:.0f} MB each")
    elif measurement.peak_mb is not None:
        check(measurement.peak_mb < MEMORY_GOAL_MB, f"peak < {MEMORY_GOAL_MB:.0f} MB")
    if measurement.scenario == "a":
        check(measurement.per_s >= 3000, "≥ 3,000/s")
        if peer is not None:
            check(measurement.per_s >= peer.per_s, "≥ Alertmanager")
    if measurement.scenario == "b":
        check(measurement.per_s >= 1500, "≥ 1,500/s")
    if measurement.scenario == "d":
        check(measurement.latency["p99_ms"] < 50, "p99 < 50 ms")
    if measurement.scenario == "e":
        check(bool(measurement.extra.get("memory_flat")), f"RSS flat (±{FLAT_TOLERANCE_MB:.0f} MB)")
    if measurement.arrived < measurement.expected:
        check(False, "all delivered")
    return marks


def ratio(value: float, base: float | None) -> str:
    if not base or value != value or base != base:
        return "–"
    return f"{value / base:.2f}×"


def system_label(m: Measurement) -> str:
    """The system column: Alertmanager's row says how it was fed, the daemon's its store and instances when the
    run had any but the default (one instance on SQLite)."""
    setup = m.extra.get("setup")
    if m.system == "dispatcher" and setup and m.extra.get("label_setup"):
        return f"dispatcher ({setup['label']})"
    batch = m.extra.get("batch")
    if m.system != "alertmanager" or batch is None:
        return m.system
    return f"alertmanager ({batch} alert{'s' if batch != 1 else ''} a POST)"


def per_delivery_ms(cpu_s: float | None, messages: int) -> str | None:
    """CPU milliseconds a delivery, to two places (the figure that compares best across runs)."""
    return f"{1000 * cpu_s / messages:.2f}" if cpu_s is not None and messages else None


def setups_table(results: list[Measurement]) -> str:
    """The dispatcher's rows of each scenario side by side, one per setup (store and instances), with what the
    main table leaves out: CPU a delivery with and without PostgreSQL's own, and each instance's share."""
    table = Table(
        [
            "scenario",
            "setup",
            "messages",
            "s",
            "msg/s",
            "÷ SQLite",
            "p50 ms",
            "p99 ms",
            "max ms",
            "daemons' CPU s",
            "ms a delivery",
            "PostgreSQL CPU s",
            "ms a delivery with PostgreSQL",
            "peak MB",
            "PSS MB",
            "others' CPU s",
            "events taken in / sent, by instance",
        ]
    )
    rows = [m for m in results if m.system == "dispatcher" and "setup" in m.extra]
    sqlite: dict[str, Measurement] = {}
    for m in rows:  # the base of `÷ SQLite`: the scenario's first SQLite row
        if m.extra["setup"]["store"] == "sqlite" and m.per_s:
            sqlite.setdefault(m.scenario, m)
    for m in rows:
        setup = m.extra["setup"]
        server = m.extra.get("postgresql", {})
        server_cpu = server.get("cpu_s")
        with_server = None if m.cpu_s is None else m.cpu_s + (server_cpu or 0.0)
        base = sqlite.get(m.scenario)
        instances = m.extra.get("instances")
        if instances:
            split = (
                " / ".join(f"{i['received']:,.0f}" for i in instances)
                + "; "
                + " / ".join(f"{i['sent']:,.0f}" for i in instances)
            )
        else:
            split = "–"
        arrived = f"{m.arrived:,}" if m.arrived == m.expected else f"{m.arrived:,} of {m.expected:,}"
        table.add(
            m.scenario,
            setup["label"],
            arrived,
            m.seconds,
            m.per_s,
            ratio(m.per_s, base.per_s) if base and m.arrived else "–",
            m.latency["p50_ms"],
            m.latency["p99_ms"],
            m.latency["max_ms"],
            m.cpu_s,
            per_delivery_ms(m.cpu_s, m.arrived),
            server_cpu,
            per_delivery_ms(with_server, m.arrived) if server_cpu is not None else None,
            m.peak_mb,
            m.extra.get("pss_peak_mb"),
            m.extra.get("machine", {}).get("others_cpu_s"),
            split,
        )
    lines = [table.markdown()]
    for m in rows:
        for n, instance in enumerate(m.extra.get("instances") or [], start=1):
            senders = instance["cpu_s"] - instance["daemon_process_cpu_s"]
            lines.append(
                f"- {m.scenario}/{m.extra['setup']['label']}: instance {n} ({instance['name']}): CPU"
                f" {instance['cpu_s']:.1f} s (daemon process {instance['daemon_process_cpu_s']:.1f} s, senders"
                f" {senders:.1f} s), {instance['received']:,.0f} events taken in, {instance['sent']:,.0f} sent,"
                f" peak {instance['peak_mb']:.1f} MB"
                + (", held the intake at the end" if instance["intake_elected"] else "")
            )
        server = m.extra.get("postgresql")
        if server:
            lines.append(
                f"- {m.scenario}/{m.extra['setup']['label']}: PostgreSQL PSS peak {server['pss_peak_mb']} MB,"
                f" database {server['database_mb']} MB after the run"
            )
    return "\n".join(lines)


def report(results: list[Measurement]) -> tuple[str, dict[str, Any]]:
    table = Table(
        [
            "scenario",
            "system",
            "messages",
            "s",
            "msg/s",
            "÷ ceiling",
            "÷ peer",
            "p50 ms",
            "p99 ms",
            "max ms",
            "CPU s",
            "peak MB",
            "PSS MB",
            "others' CPU s",
            "goals",
        ]
    )
    by_key: dict[tuple[str, str], Measurement] = {}
    for m in results:
        by_key.setdefault((m.scenario, m.system), m)  # the first Alertmanager run of a scenario is its peer
    peers: dict[str, list[Measurement]] = collections.defaultdict(list)
    for m in results:
        if m.system == "alertmanager":
            peers[m.scenario].append(m)
    rows = []
    for m in results:
        ceiling = by_key.get((m.scenario, "ceiling"))
        peer = by_key.get((m.scenario, "alertmanager"))
        ceiling_ratio = ratio(m.per_s, ceiling.per_s) if ceiling and m.system != "ceiling" else "–"
        peer_ratio = ratio(m.per_s, peer.per_s) if peer and m.system != "alertmanager" else "–"
        marks = goals(m, peer) if m.system == "dispatcher" else []
        arrived = f"{m.arrived:,}" if m.arrived == m.expected else f"{m.arrived:,} of {m.expected:,}"
        table.add(
            f"{m.scenario}: {TITLES[m.scenario]}",
            system_label(m),
            arrived,
            m.seconds,
            m.per_s,
            ceiling_ratio,
            peer_ratio,
            m.latency["p50_ms"],
            m.latency["p99_ms"],
            m.latency["max_ms"],
            m.cpu_s,
            m.peak_mb,
            m.extra.get("pss_peak_mb", "–"),
            m.extra.get("machine", {}).get("others_cpu_s"),
            " ".join(marks),
        )
        row = asdict(m)
        row["of_ceiling"] = round(m.per_s / ceiling.per_s, 3) if ceiling and ceiling.per_s else None
        row["of_peer"] = round(m.per_s / peer.per_s, 3) if peer and peer.per_s else None
        if m.system == "dispatcher" and len(peers[m.scenario]) > 1:
            row["of_peer_by_batch"] = {
                str(p.extra.get("batch")): round(m.per_s / p.per_s, 3) for p in peers[m.scenario] if p.per_s
            }
        if peer and m.system == "dispatcher" and m.scenario == "d":
            row["p99_of_peer"] = round(m.latency["p99_ms"] / peer.latency["p99_ms"], 3)
        if ceiling and m.system == "dispatcher" and m.scenario == "d":
            row["p99_of_ceiling"] = round(m.latency["p99_ms"] / ceiling.latency["p99_ms"], 3)
        row["goals"] = marks
        rows.append(row)
    lines = [table.markdown()]
    for m in results:
        others = peers[m.scenario][1:]
        if m.system == "dispatcher" and others:
            lines.append(
                f"- {m.scenario}: {system_label(m)} ÷ each Alertmanager run: "
                + ", ".join(f"{ratio(m.per_s, p.per_s)} (fed {p.extra.get('batch')} a POST)" for p in peers[m.scenario])
            )
        for note in m.notes:
            lines.append(f"- {m.scenario}/{system_label(m)}: {note}")
        if m.scenario == "e" and "rss" in m.extra:
            rss = m.extra["rss"]
            lines.append(
                f"- e: RSS first {rss.get('first_mb')} MB, max {rss.get('max_mb')} MB, last {rss.get('last_mb')} MB;"
                f" means per tenth of the run {rss.get('decile_means_mb')}; growth after warm-up"
                f" {rss.get('growth_after_warmup_mb')} MB. Store: {m.extra['store_mb_running']} MB while running"
                f" (with WAL), {m.extra['store_mb_after_stop']} MB after stop."
            )
    labelled = [m for m in results if m.system == "dispatcher" and m.extra.get("label_setup")]
    if labelled:
        lines += ["", "By setup (store, instances):", "", setups_table(labelled)]
    return "\n".join(lines), {"results": rows}


def git_commit() -> str:
    """The checkout measured: HEAD, with `+changes` if the working tree differs from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "dispatcher"], cwd=REPO, capture_output=True, text=True
        )
    except OSError:
        return "unknown"
    if head.returncode != 0:
        return "unknown"  # not a git checkout (e.g. a `git archive` of the commit measured)
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="about a tenth of the full sizes (a few minutes)")
    parser.add_argument(
        "--scenario", default=None, help="comma-separated subset of a,b,c,d,e (default: all; a with --cluster)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument(
        "--profile", nargs="?", const="a", default="", help="py-spy the daemon during these scenarios (default: a)"
    )
    parser.add_argument("--no-peer", action="store_true", help="skip Alertmanager")
    parser.add_argument(
        "--peer-batch",
        default=str(PROMETHEUS_BATCH),
        help=f"alerts a request to Alertmanager (default {PROMETHEUS_BATCH}, as Prometheus sends them); a comma-"
        "separated list (e.g. 256,1) runs it once per size, the first being the peer of the ratios and goals",
    )
    parser.add_argument("--protocol", choices=["3.1.1", "5"], default=None, help="the daemon's bus.protocol")
    parser.add_argument("--workers", type=int, default=None, help="the daemon's delivery.workers (sender processes)")
    parser.add_argument(
        "--keep", type=Path, default=None, help="run in this directory and keep it (stores, logs, send times)"
    )
    parser.add_argument(
        "--store",
        choices=["sqlite", "postgresql"],
        default="sqlite",
        help="the daemon's store: an SQLite file (default) or a PostgreSQL server the run starts (initdb in a temp"
        " dir, Debian's server binaries)",
    )
    parser.add_argument(
        "--instances",
        type=int,
        default=1,
        help="daemon instances sharing the store (PostgreSQL only): same config but http.listen, the first holds"
        " the intake",
    )
    parser.add_argument(
        "--cluster",
        nargs="?",
        const=CLUSTER_SETUPS,
        default=None,
        help=f"one dispatcher row per setup, in this order (default {CLUSTER_SETUPS}: SQLite, PostgreSQL with one"
        " instance, with two), side by side in a table of their own; scenario a unless --scenario, no peer",
    )
    args = parser.parse_args()
    if args.scenario is None:
        args.scenario = "a" if args.cluster else "a,b,c,d,e"
    chosen = [name.strip() for name in args.scenario.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}: choose from {', '.join(SCENARIOS)}")
    try:
        if args.cluster:
            if args.store != "sqlite" or args.instances != 1:
                parser.error("--cluster names its setups itself: leave out --store and --instances")
            setups = tuple(Setup.parse(text) for text in args.cluster.split(",") if text.strip())
        else:
            setups = (Setup.parse(f"{args.store}:{args.instances}"),)
    except ValueError as err:
        parser.error(str(err))
    if not setups:
        parser.error("--cluster wants setups, e.g. sqlite,postgresql,postgresql:2")
    if "e" in chosen and setups != (Setup(),):
        parser.error("scenario e measures one instance's SQLite file: leave out --store, --instances and --cluster")
    try:
        peer_batches = tuple(int(size) for size in args.peer_batch.split(",") if size.strip())
    except ValueError:
        peer_batches = ()
    if not peer_batches or min(peer_batches) < 1:
        parser.error(f"--peer-batch wants positive whole numbers, e.g. 256 or 256,1 (got {args.peer_batch!r})")
    sizes = QUICK if args.quick else FULL
    peer = None if args.no_peer or args.cluster or not ({"a", "d"} & set(chosen)) else alertmanager_binary()
    results: list[Measurement] = []
    place = contextlib.nullcontext(str(args.keep)) if args.keep else tempfile.TemporaryDirectory(prefix="bench-run-")
    with place as tmp:
        workdir = Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        sinks = Sinks(workdir).start()
        profiled = {name.strip() for name in args.profile.split(",") if name.strip()}
        ctx = Context(
            sizes=sizes,
            workdir=workdir,
            sinks=sinks,
            profile=profiled,
            protocol=args.protocol,
            workers=args.workers,
            peer_batches=peer_batches,
            setups=setups,
            keep=args.keep is not None,
        )
        with running(sinks):
            for name in chosen:
                print(f"scenario {name}: {TITLES[name]} …", file=sys.stderr, flush=True)
                started = time.monotonic()
                try:
                    results.extend(SCENARIOS[name](ctx, peer))
                except Exception as err:  # reported, and the other scenarios still run
                    traceback.print_exc()
                    results.append(failed(name, err))
                finally:
                    reap_children()
                print(f"scenario {name}: done in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
                # Written after every scenario, so a long run that breaks later keeps what it measured.
                partial, _ = report(results)
                print(partial, file=sys.stderr, flush=True)
                RESULTS.mkdir(parents=True, exist_ok=True)
                (RESULTS / "partial.json").write_text(json.dumps([asdict(m) for m in results], indent=2))
    text, data = report(results)
    data.update(
        mode="quick" if args.quick else "full",
        sizes=asdict(sizes),
        cpus=os.cpu_count(),
        command=" ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        when=time.strftime("%Y-%m-%d %H:%M:%S"),
        commit=git_commit(),
        protocol=args.protocol or "the config's default",
        workers=args.workers if args.workers is not None else "the config's default",
        peer_batches=list(peer_batches) if peer else None,
        setups=[setup.label for setup in setups],
    )
    for name in sorted(profiled & set(chosen)):
        if not (RESULTS / f"profile-{name}.txt").exists():
            continue
        profile = summarize_profile(RESULTS / f"profile-{name}.txt")
        data[f"profile_{name}"] = profile
        text += f"\n\nprofile (scenario {name}), share of samples — self:\n" + "\n".join(
            f"  {share:5.1f}%  {function}" for function, share in profile["self"]
        )
        text += "\ninclusive (dispatcher's own functions):\n" + "\n".join(
            f"  {share:5.1f}%  {function}" for function, share in profile["total"]
        )
        text += "\nself, by package:\n" + "\n".join(
            f"  {share:5.1f}%  {package}" for package, share in profile["by_package"]
        )
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"run-{data['mode']}.json").write_text(json.dumps(data, indent=2))
    if args.json:
        args.json.write_text(json.dumps(data, indent=2))


if __name__ == "__main__":
    main()
