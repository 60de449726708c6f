"""Prometheus metrics of the Recommend server: requests by path, errors by status code,
latency overall and per stage, the batch sizes served and the CPU they took, the process's
CPU time, the loaded versions, swaps and refused reloads, and the catalog feed's changes
(applied, skipped, and how old each was when applied) and overlay size.

One registry per server process, served by ``serving.metrics_port``; tests read it directly.
The histograms' buckets reach down to 25 µs, below the cheapest stage's cost.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    start_http_server,
)

from recsys.telemetry import in_process_values
from serving.answers import Recommendation, ServingPath, Stages
from serving.catalog_feed import CatalogBatch
from serving.recommender import Recommender

BUCKETS = (
    25e-6, 50e-6, 100e-6, 150e-6, 250e-6, 500e-6,
    1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3,
)  # fmt: skip
STAGES = Stages._fields[:-1]
"""The hot path's stages, in order (``Stages`` less the batch size)."""
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
AGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class ServingMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        in_process_values()
        self.registry = r = registry or CollectorRegistry()
        self.requests = Counter(
            "recsys_recommend_requests", "Answered Recommend requests", ["path"], registry=r
        )
        self.errors = Counter(
            "recsys_recommend_errors", "Recommend requests answered with an error", ["code"],
            registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "recsys_recommend_seconds",
            "Server-side Recommend latency, request in to answer out (excluding the gRPC stack)",
            buckets=BUCKETS,
            registry=r,
        )
        stage = Histogram(
            "recsys_recommend_stage_seconds",
            "Time per hot-path stage, per batch (a batch reads, embeds and searches once)",
            ["stage"],
            buckets=BUCKETS,
            registry=r,
        )
        self.batch = Histogram(
            "recsys_recommend_batch_size",
            "Requests served together in one batch (those that arrived while the last one ran)",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.cpu = Counter(
            "recsys_recommend_cpu_seconds",
            "CPU time the batches took in the thread that ran them (over requests answered: "
            "the hot path's CPU per request; the whole process's, gRPC stack included, is "
            "process_cpu_seconds_total over requests)",
            registry=r,
        )
        ProcessCollector(registry=r)
        self._stages = [stage.labels(s) for s in STAGES]
        self._paths = {p.name.lower(): self.requests.labels(p.name.lower()) for p in ServingPath}
        self.loaded = Gauge(
            "recsys_serving_pair_info",
            "The model and index versions serving (value 1)",
            ["model_version", "index_version"],
            registry=r,
        )
        self.swaps = Counter("recsys_serving_swaps", "Model+index pairs swapped in", registry=r)
        self.refused = Counter(
            "recsys_serving_reloads_refused",
            "New pairs that failed to load or verify (the old one kept serving)",
            registry=r,
        )
        changes = Counter(
            "recsys_catalog_changes",
            "Catalog-topic events the catalog feed read: applied, or skipped (no server can "
            "use them)",
            ["result"],
            registry=r,
        )
        self.applied, self.skipped = changes.labels("applied"), changes.labels("skipped")
        self.change_age = Histogram(
            "recsys_catalog_change_age_seconds",
            "From an item change's event time to its overlay serving it",
            buckets=AGE_BUCKETS,
            registry=r,
        )
        self.feed_lag = Gauge(
            "recsys_catalog_feed_lag",
            "Catalog-topic records past the catalog feed's last batch (by the broker's "
            "high-water marks): how far behind the topic this server's catalog is",
            registry=r,
        )
        self.overlay = Gauge(
            "recsys_catalog_overlay_rows",
            "The catalog overlay beside the serving index: items it adds, and index rows it hides",
            ["kind"],
            registry=r,
        )

    def observe(self, answer: Recommendation, seconds: float) -> None:
        """One answered request: its path and its server-side latency."""
        self._paths[answer.path.name.lower()].inc()
        self.latency.observe(seconds)

    def observe_batch(self, stages: Stages, cpu_seconds: float) -> None:
        """One batch: its stage times, how many requests it held, and its CPU time."""
        for child, value in zip(self._stages, stages[:-1], strict=True):
            if value:  # a batch of popular-items answers runs no tower and no search
                child.observe(value)
        self.batch.observe(stages.batch)
        self.cpu.inc(cpu_seconds)

    def catalog(self, batch: CatalogBatch) -> None:
        """One batch of the catalog feed, applied."""
        self.applied.inc(len(batch.ages_s))
        self.skipped.inc(batch.skipped)
        for age in batch.ages_s:
            self.change_age.observe(age)
        if batch.lag is not None:
            self.feed_lag.set(batch.lag)
        self.overlay.labels("added").set(len(batch.overlay.ids))
        self.overlay.labels("hidden").set(int(batch.overlay.hidden.sum()))

    def serving(self, recommender: Recommender) -> None:
        """Records the pair now serving (called by ``Live`` at start and on every swap)."""
        b = recommender.bundle
        with warnings.catch_warnings():
            # It warns whenever PROMETHEUS_MULTIPROC_DIR is set (Feast sets it), but our
            # values are in-process (``in_process_values``), where clearing works.
            warnings.simplefilter("ignore", UserWarning)
            self.loaded.clear()
        self.loaded.labels(b.model_version, b.index_version).set(1)

    def serve(self, port: int, host: str = "127.0.0.1") -> Callable[[], None]:
        """Serves ``/metrics`` on ``host:port`` from a daemon thread.

        Returns:
            What stops it (and frees the port).
        """
        httpd, _ = start_http_server(port, addr=host, registry=self.registry)

        def stop() -> None:
            httpd.shutdown()
            httpd.server_close()

        return stop

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels or None) or 0.0
