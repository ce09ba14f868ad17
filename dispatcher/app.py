"""The daemon as an object: wires intake, store, pipeline and HTTP together.

On a PostgreSQL store the daemon is one instance of a cluster (`cluster/`): it joins the store's instances, runs
the intake only while elected, wakes the others when it records events, and gives its claims back at a clean stop.
On SQLite the same code runs alone: the intake always runs, no election, no notifications.

`Dispatcher` never touches signals, so tests can embed it; the CLI installs the handlers and calls
`stop()` and `reload()`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from aiohttp import web

from . import contacts, outbox
from .catalog import Catalog, load_catalog
from .cluster.membership import Membership
from .config import Config, load_config
from .delivery.pipeline import Pipeline
from .errors import ConfigError, DispatcherError
from .events import Event
from .http.server import build_app
from .intake import dead_letters
from .intake.mqtt import MqttIntake, Rejection
from .metrics import Metrics
from .noise import repeats, silences
from .noise.watch import SilenceWatch
from .probe import resolve_test_recipient
from .render import check_templates
from .retention import Retention
from .routing.recipients import Recipient, RecipientSource, SystemContacts
from .store import Store

if TYPE_CHECKING:
    from .cluster.election import IntakeElection
    from .cluster.signals import Listener

log = structlog.get_logger(__name__)


class Dispatcher:
    """One running daemon. `await run()` serves until `stop()`; then intake stops first and work in hand is kept."""

    def __init__(self, config: Config, *, catalog: Catalog | None = None) -> None:
        self.config = config
        self.catalog = catalog or load_catalog()
        self.metrics = Metrics()
        self.store = Store(
            config.store.where,
            schemas=[outbox.SCHEMA, contacts.SCHEMA, dead_letters.SCHEMA, silences.SCHEMA, repeats.SCHEMA],
        )
        self.membership = Membership(self.store, config, clock=time.time)
        self.retention = Retention(self.store, config.store.retention_days)
        self.silence_watch = SilenceWatch(self.store, self.metrics.silences_active, config.store.retention_days)
        self.intake = MqttIntake(
            config.bus,
            default_host=config.hostname,
            store=self.store,
            recorded=lambda events, fresh: self._recorded(events, fresh, "mqtt"),
            rejected=self._reject_from_bus,
        )
        self.pipeline = Pipeline(
            store=self.store,
            catalog=self.catalog,
            metrics=self.metrics,
            config=config,
            sources=self.recipient_sources(),
            claimant=self.membership.claimant,
        )
        # A cluster (a PostgreSQL store): the intake runs while this instance is elected; the others are told of new
        # work. Imported here: psycopg is needed only for PostgreSQL.
        self.election: IntakeElection | None = None
        self.listener: Listener | None = None
        if self.store.engine.name == "postgresql":
            from .cluster.election import IntakeElection
            from .cluster.signals import Listener

            self.election = IntakeElection(str(config.store.where))
            self.listener = Listener(str(config.store.where), self._woken)
        self.elected = self.election is None
        self._notifying = False
        self._background: set[asyncio.Task[None]] = set()
        self._stop_requested = asyncio.Event()
        # Held for a whole reload, so that reloads never overlap and apply in the order they were asked for.
        self._reload_lock = asyncio.Lock()
        self._http_runner: web.AppRunner | None = None
        self.http_port: int | None = None
        self._on_recorded: list[Callable[[Sequence[Event]], None]] = [self.pipeline.events_recorded]
        _log_warnings(config)

    # -- wiring points for the other parts -------------------------------------------------------------------

    def recipient_sources(self) -> list[RecipientSource]:
        """Who can receive events: the config's system contacts, then the store's account and client contacts.

        The order matters: when two recipients share an address, the first one's delivery is kept.
        """
        return [SystemContacts(), *contacts.recipient_sources(self.store)]

    def on_recorded(self, callback: Callable[[Sequence[Event]], None]) -> None:
        """Call `callback(new_events)` after each durable commit of new events (the pipeline's wake-up)."""
        self._on_recorded.append(callback)

    async def test_recipient(self, spec: str) -> Recipient:
        """`root` → that system contact; `account:bob` → that account's contact info (the Test link's target)."""
        return await resolve_test_recipient(self.config, spec, self.store)

    async def delivery_counts(self) -> dict[str, int]:
        """Deliveries by state: pending, sent, failed, suppressed (systemd STATUS=, /metrics)."""
        return await self.store.run(outbox.count_by_status)

    # -- intake ------------------------------------------------------------------------------------------------

    async def accept(self, events: Sequence[Event], source: str) -> list[bool]:
        """Record events durably (idempotent by id) and hand the new ones on; True for each new one."""
        fresh = await self.store.add_events(events, source)
        self._recorded(events, fresh, source)
        return fresh

    def _recorded(self, events: Sequence[Event], fresh: Sequence[bool], source: str) -> None:
        """After a commit: log, count and hand on the new events (`fresh`: for each event, whether it is new)."""
        new_events = [event for event, is_new in zip(events, fresh, strict=True) if is_new]
        for event, is_new in zip(events, fresh, strict=True):
            # Debug: `event_planned` follows, with what it led to (at info when nothing is to be sent), then a line
            # per delivery's outcome.
            if is_new:
                log.debug("event_recorded", event_id=event.id, event_type=event.type, source=source)
            else:
                log.info("event_duplicate", event_id=event.id, event_type=event.type, source=source)
        if new_events:
            self.metrics.events_received.labels(source).inc(len(new_events))
            for callback in self._on_recorded:
                callback(new_events)
            self.tell_cluster()
        if len(new_events) < len(events):
            self.metrics.events_duplicate.labels(source).inc(len(events) - len(new_events))

    def deliveries_put_back(self) -> None:
        """Deliveries were put back to pending in the store (`POST /api/v1/deliveries/retry`): take them up now, here
        and on the other instances."""
        self.pipeline.look_for_pending_now()
        self.tell_cluster()

    def tell_cluster(self) -> None:
        """Wake the other instances of a cluster (new events, deliveries put back); one notification at a time:
        those asked for meanwhile are covered by it, since each instance reads the store when woken."""
        if self.listener is None or self._notifying or not self.store.is_open:
            return
        from .cluster.signals import notify

        self._notifying = True

        async def send() -> None:
            try:
                await self.store.run(notify, durable=False)
            except Exception:  # the others' sweeps find the work within seconds anyway
                log.exception("cluster_notify_failed")
            finally:
                self._notifying = False

        task = asyncio.create_task(send(), name="cluster-notify")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _woken(self) -> None:
        """Another instance (or this one) recorded events or put deliveries back."""
        self.pipeline.events_recorded(())
        self.pipeline.look_for_pending_now()

    def _reject_from_bus(self, rejection: Rejection) -> None:
        self.record_rejection("mqtt", rejection.reason, rejection.message, topic=rejection.topic)

    def record_rejection(self, source: str, reason: str, message: str, *, topic: str | None) -> None:
        """Count and log a message refused as bad input."""
        self.metrics.events_rejected.labels(source, reason).inc()
        log.warning("event_rejected", source=source, reason=reason, error=message, topic=topic)

    # -- state -------------------------------------------------------------------------------------------------

    @property
    def bus_connected(self) -> bool:
        return self.intake.connected.is_set()

    @property
    def standby(self) -> bool:
        """In a cluster, another instance runs the intake: this one plans, delivers and answers the API. (Not
        before its first try at the intake lock: a lone instance is elected, and ready once subscribed.)"""
        return self.election is not None and not self.elected and self.election.held_elsewhere

    @property
    def intake_ready(self) -> bool:
        """The bus subscription is in place, or this instance is a standby (its cluster's intake is elsewhere)."""
        return self.bus_connected or self.standby

    @property
    def ready(self) -> bool:
        """Store open and bus subscription in place, or standing by (`/readyz`, systemd READY=1)."""
        return self.store.is_open and self.intake_ready

    async def refresh_gauges(self) -> None:
        """Bring gauges read on scrape up to date."""
        self.metrics.bus_connected.set(1 if self.bus_connected else 0)
        self.metrics.intake_elected.set(1 if self.elected else 0)

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store and start the HTTP server (the bus is joined by `run()`).

        The store is opened first and exclusively: a second daemon on the same store file stops here with
        `StoreInUse`, before it listens, resumes any delivery or joins the bus.
        """
        await self.store.open(exclusive=True)
        try:
            await self.membership.join()
        except BaseException:
            await self.store.close()
            raise
        self._http_runner = web.AppRunner(self._build_http_app(), access_log=None, handler_cancellation=True)
        await self._http_runner.setup()
        site = web.TCPSite(self._http_runner, self.config.http.listen_host, self.config.http.listen_port)
        try:
            await site.start()
        except OSError as err:
            await self._http_runner.cleanup()
            await self.store.close()
            raise DispatcherError(
                f"cannot listen on {self.config.http.listen_host}:{self.config.http.listen_port}: {err.strerror}"
            ) from err
        # The bound address, which tells the port the OS chose for `listen: HOST:0`.
        addresses = self._http_runner.addresses
        self.http_port = int(addresses[0][1]) if addresses else self.config.http.listen_port
        if self.config.http.token is None:
            log.warning("api_disabled", reason="no http.token_file configured; every /api/ request gets 401")
        log.info("http_listening", host=self.config.http.listen_host, port=self.http_port)

    def _build_http_app(self) -> web.Application:
        return build_app(self)

    async def run(self) -> None:
        """Serve until `stop()`: intake, pipeline and HTTP. Then stop intake, keep what is in hand, close."""
        if not self.store.is_open:
            await self.start()
        try:
            async with asyncio.TaskGroup() as tasks:
                intake = tasks.create_task(self._run_intake(), name="mqtt-intake")
                tasks.create_task(self.pipeline.run(), name="pipeline")
                tasks.create_task(self.retention.run(), name="retention")
                tasks.create_task(self.silence_watch.run(), name="silence-watch")
                tasks.create_task(self.membership.run(), name="membership")
                listener = tasks.create_task(self.listener.run(), name="cluster-listen") if self.listener else None
                await self._stop_requested.wait()
                self.retention.stop()
                self.silence_watch.stop()
                log.info("stopping", step="intake")
                self.intake.stop()
                await intake
                log.info("stopping", step="pipeline")
                self.pipeline.stop()
                self.membership.stop()  # its last heartbeat holds the claims until the drain is over (< LEASE_S)
                if listener is not None:
                    listener.cancel()
            # Drained: what is left pending is given back, for the other instances or the next start.
            await self.membership.leave()
        finally:
            await self._shutdown()

    async def _run_intake(self) -> None:
        """The intake: always on SQLite; in a cluster, while this instance holds the intake lock (`election`). A
        term ends when the lock may be lost (the intake stops at once: another instance may be elected) or at
        `stop()`."""
        if self.election is None:
            await self.intake.run()
            return
        stop = asyncio.ensure_future(self._stop_requested.wait())
        try:
            while not stop.done():
                elected = asyncio.ensure_future(self.election.elected())
                await asyncio.wait({elected, stop}, return_when=asyncio.FIRST_COMPLETED)
                if not elected.done():
                    elected.cancel()
                    await asyncio.gather(elected, return_exceptions=True)
                    return
                self.elected = True
                log.info("intake_elected", store=self.election.shown)
                self.intake.rearm()
                consuming = asyncio.ensure_future(self.intake.run())
                lost = asyncio.ensure_future(self.election.lost())
                await asyncio.wait({consuming, lost, stop}, return_when=asyncio.FIRST_COMPLETED)
                self.intake.stop()
                await consuming  # the batch in hand is committed and acknowledged
                lost.cancel()
                self.elected = False
                await self.election.resign()
                if not stop.done():
                    log.warning("intake_standby", reason="the intake lock may be lost; trying to take it again")
        finally:
            stop.cancel()
            await self.election.resign()

    def stop(self) -> None:
        """Ask the daemon to stop (SIGTERM): intake first, then in-flight work is finished or kept."""
        self._stop_requested.set()

    async def _shutdown(self) -> None:
        if self._http_runner is not None:
            await self._http_runner.cleanup()
            self._http_runner = None
        await self.store.close()
        log.info("stopped")

    async def reload(self, path: Path | str) -> bool:
        """Load and validate a new config; swap it in if valid, keep the old one if not. True on success.

        Reading the file and compiling every template (well over a second) run in a worker thread, so the loop
        goes on acknowledging events, sending and answering HTTP meanwhile. Reloads run one at a time, in the
        order they were asked for: of two SIGHUPs in a row, the second reads the file after the first is applied.
        A reload that ends after `stop()` applies nothing.
        """

        def load_and_check() -> Config:
            config = load_config(path)
            template_issues = check_templates(config)
            if template_issues:
                raise ConfigError(template_issues)
            return config

        async with self._reload_lock:
            try:
                new_config = await asyncio.to_thread(load_and_check)
            except ConfigError as err:
                self.metrics.reload_success.set(0)
                log.error("config_reload_refused", path=str(path), errors=err.issues)
                return False
            if self._stop_requested.is_set():
                log.info("config_reload_skipped", path=str(path), reason="stopping")
                return False
            return self._apply_reloaded(new_config, path)

    def _apply_reloaded(self, new_config: Config, path: Path | str) -> bool:
        """Swap in a checked config: what is planned and attempted from now on uses it."""
        if (
            new_config.store != self.config.store
            or new_config.bus != self.config.bus
            or new_config.http != self.config.http
        ):
            log.warning("config_reload_partial", reason="bus, http and store settings take effect at restart")
        _log_warnings(new_config)
        self.config = new_config
        self.pipeline.apply_config(new_config, self.recipient_sources())
        self.membership.apply_config(new_config)  # its hash goes to the store with the next heartbeat
        self.metrics.reload_success.set(1)
        self.metrics.reload_time.set_to_current_time()
        log.info("config_reloaded", path=str(path))
        return True


def _log_warnings(config: Config) -> None:
    """Log what check-config warns about (`FILE:LINE:COL: warning: …`), one line each."""
    for warning in config.warnings:
        log.warning("config_warning", warning=warning)
