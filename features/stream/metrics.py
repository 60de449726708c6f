"""Prometheus metrics of the ingester: throughput, dead letters, duplicates, write latency, lag.

Each ingester owns a registry (``IngestMetrics.registry``), served over HTTP by
``recsys ingest --metrics-port``; tests read it directly.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from recsys.telemetry import in_process_values

WRITE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class IngestMetrics:
    """The ingester's metrics in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None):
        in_process_values()
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter("recsys_ingest_events", "Events consumed from Kafka", registry=r)
        self.dead_letters = Counter(
            "recsys_ingest_dead_letters", "Events sent to the dead-letter topic", registry=r
        )
        self.skipped = Counter(
            "recsys_ingest_skipped",
            "Duplicate or late events (at or below the watermark)",
            registry=r,
        )
        self.users_written = Counter(
            "recsys_ingest_users_written", "User activity states written", registry=r
        )
        self.batch_seconds = Histogram(
            "recsys_ingest_batch_seconds",
            "Time to check, fold and write one polled batch to the online store",
            buckets=WRITE_BUCKETS,
            registry=r,
        )
        self.store_errors = Counter(
            "recsys_ingest_store_errors",
            "Online-store reads or writes that failed; the batch is retried",
            registry=r,
        )
        self.store_up = Gauge(
            "recsys_ingest_store_up",
            "1 while the last online-store write succeeded, 0 while it is failing",
            registry=r,
        )
        self.lag = Gauge(
            "recsys_ingest_consumer_lag",
            "Messages between the committed position and the end of the log",
            ["partition"],
            registry=r,
        )

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Serves ``/metrics`` on ``host:port`` from a daemon thread."""
        start_http_server(port, addr=host, registry=self.registry)

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0 when absent): ``value("recsys_ingest_events_total")``."""
        return self.registry.get_sample_value(name, labels or None) or 0.0
