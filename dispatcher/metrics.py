"""The daemon's Prometheus metrics (SPEC §7), one registry per running daemon so tests stay apart."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .events import REASONS


class Metrics:
    """Every metric the daemon exports; names follow Prometheus conventions with the `dispatcher_` prefix."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.events_received = Counter(
            "dispatcher_events_received_total", "Events accepted and recorded, by intake.", ["source"], registry=r
        )
        self.events_duplicate = Counter(
            "dispatcher_events_duplicate_total",
            "Events whose id was already recorded (acknowledged, not recorded again).",
            ["source"],
            registry=r,
        )
        self.events_rejected = Counter(
            "dispatcher_events_rejected_total",
            "Messages rejected as bad input, by reason.",
            ["source", "reason"],
            registry=r,
        )
        self.deliveries = Counter(
            "dispatcher_deliveries_total",
            "Delivery outcomes by channel: sent, failed, suppressed, retried.",
            ["channel", "outcome"],
            registry=r,
        )
        self.delivery_latency = Histogram(
            "dispatcher_delivery_latency_seconds",
            "Time from an event's receipt to its delivery being sent.",
            ["channel"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
        )
        self.digests_sent = Counter(
            "dispatcher_digests_sent_total",
            "Digest messages sent (several events of one group in one message), by channel.",
            ["channel"],
            registry=r,
        )
        self.digested_events = Counter(
            "dispatcher_digested_events_total",
            "Deliveries sent inside a digest message rather than on their own, by channel.",
            ["channel"],
            registry=r,
        )
        self.pending = Gauge(
            "dispatcher_deliveries_pending", "Deliveries waiting to be sent (outbox depth).", registry=r
        )
        self.bus_connected = Gauge("dispatcher_bus_connected", "1 while subscribed on the MQTT bus.", registry=r)
        self.intake_elected = Gauge(
            "dispatcher_intake_elected",
            "1 while this instance runs its cluster's intake (always 1 on SQLite, where it is alone).",
            registry=r,
        )
        self.taken_over = Counter(
            "dispatcher_deliveries_taken_over_total",
            "Pending deliveries taken over from an instance that is gone: each may have been sent twice.",
            registry=r,
        )
        self.reload_success = Gauge(
            "dispatcher_config_last_reload_successful", "1 if the last configuration reload succeeded.", registry=r
        )
        self.reload_time = Gauge(
            "dispatcher_config_last_reload_success_timestamp_seconds",
            "Time of the last successful configuration load.",
            registry=r,
        )
        self.silences_active = Gauge(
            "dispatcher_silences_active", "Silences in effect now (made over the API or the command line).", registry=r
        )
        self.suppressions = Counter(
            "dispatcher_suppressions_total",
            "Planned deliveries recorded suppressed by noise control: silence (a silence fits the event) or repeat "
            "(the same key went to the same address within the interval).",
            ["reason"],
            registry=r,
        )
        self.deferrals = Counter(
            "dispatcher_deferrals_total",
            "Planned deliveries held back, pending, until later: quiet_hours (the contact's quiet hours).",
            ["reason"],
            registry=r,
        )
        for reason in ("silence", "repeat"):
            self.suppressions.labels(reason)
        self.deferrals.labels("quiet_hours")
        self.reload_success.set(1)
        self.reload_time.set_to_current_time()
        # Export every rejection reason from the start, so a dashboard sees zeros rather than gaps.
        for source in ("mqtt", "http"):
            self.events_received.labels(source)
            for reason in REASONS:
                self.events_rejected.labels(source, reason)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
