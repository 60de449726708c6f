"""Prometheus metrics of the Recommend server: requests by path, errors by status code,
latency per stage and overall, the loaded versions, swaps and refused reloads.

One registry per server process, served by ``serving.metrics_port``; tests read it directly.
The histograms' buckets reach down to 25 µs: the stages cost tens of microseconds.
"""

from __future__ import annotations

import warnings

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from recsys.telemetry import in_process_values
from serving.recommender import Recommendation, Recommender

BUCKETS = (
    25e-6, 50e-6, 100e-6, 150e-6, 250e-6, 500e-6,
    1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3,
)  # fmt: skip
STAGES = ("features", "tower", "search", "filter")


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
            "Time per hot-path stage",
            ["stage"],
            buckets=BUCKETS,
            registry=r,
        )
        self._stages = [stage.labels(s) for s in STAGES]
        self._paths = {
            p: self.requests.labels(p) for p in ("personalized", "cold_start", "degraded")
        }
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

    def observe(self, answer: Recommendation, seconds: float) -> None:
        self._paths[answer.path.name.lower()].inc()
        self.latency.observe(seconds)
        s = answer.stages
        for child, value in zip(
            self._stages, (s.features, s.tower, s.search, s.filter), strict=True
        ):
            if value:  # a popular-items answer runs no tower and no search
                child.observe(value)

    def serving(self, recommender: Recommender) -> None:
        """Records the pair now serving (called by ``Live`` at start and on every swap)."""
        b = recommender.bundle
        with warnings.catch_warnings():
            # It warns whenever PROMETHEUS_MULTIPROC_DIR is set (Feast sets it), but our
            # values are in-process (``in_process_values``), where clearing works.
            warnings.simplefilter("ignore", UserWarning)
            self.loaded.clear()
        self.loaded.labels(b.model_version, b.index_version).set(1)

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Serves ``/metrics`` on ``host:port`` from a daemon thread."""
        start_http_server(port, addr=host, registry=self.registry)

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels or None) or 0.0
