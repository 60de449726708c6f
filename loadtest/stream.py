"""``recsys loadtest --ingest RATE``: the real-time loop under load.

While Locust loads Recommend, synthetic events (power-law users and items, some new users)
stream at a fixed rate through a real Kafka broker into ``recsys ingest``, which writes the
online store the server reads. Once a second a probe event for a fresh user goes out, and a
checker polls the store for it: produce → readable, under load. The broker, store and
ingester are throw-away (the store backfilled as ``recsys init-features`` does); the real
ones are never touched.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.harness import percentiles, pin
from benchmarks.ingest import scratch_stack, wait_consuming
from features.events import encode
from features.store import OnlineFeatures
from features.stream.replay import ensure_topic
from features.stream.synthetic import synthetic_interactions
from localservices.procs import child, write_config
from recsys.config import Config
from recsys.data import temporal_split
from recsys.data.dataset import Dataset
from recsys.errors import RecsysError

PROBES_PER_S = 1.0
GIVE_UP_S = 30.0
"""After the stream ends, a probe still unreadable this much later counts as lost."""


@contextlib.contextmanager
def stream_stack(
    config: Config, ml: Dataset, out: Path, cpus: set[int] | None
) -> Iterator[tuple[Config, OnlineFeatures]]:
    """A scratch broker and online store with ``recsys ingest`` consuming (pinned to
    ``cpus``, beside the server); yields the config pointing at them and the store."""
    past, _ = temporal_split(ml.interactions, config.model.test_fraction)
    print("==> starting a scratch broker, online store and ingester", flush=True)
    with scratch_stack(config, ml, history=past) as stack:
        cfg, store = stack.config, stack.store
        ensure_topic(cfg)
        path = write_config(cfg, out / "ingest.yaml")
        with child("ingester", path, ["ingest"], out, quiet=True, cpus=cpus) as ingester:
            features = OnlineFeatures(store)
            item = str(ml.items["item_id"].iloc[0])
            wait_consuming(cfg, features, ingester, f"{time.time():.0f}", item)
            yield cfg, features


@dataclass
class Stream:
    """Produces ``rate`` events/s for ``seconds`` (run beside Locust), with probes; the
    producer and the checker run on ``cpus`` (the load generator's)."""

    config: Config
    features: OnlineFeatures
    ml: Dataset
    rate: float
    seconds: float
    cpus: set[int] | None
    sent: int = 0
    sending_s: float = 0.0
    sent_at: dict[str, float] = field(default_factory=dict)
    readable: dict[str, float] = field(default_factory=dict)
    check_error: Exception | None = None

    def __call__(self) -> None:
        from kafka import KafkaProducer

        pin(self.cpus)  # this thread, and the checker it starts
        total = int(self.rate * self.seconds)
        events = synthetic_interactions(self.ml, total, seed=7, per_second=self.rate)
        probe_every = max(1, int(self.rate / PROBES_PER_S))
        run = f"{time.time():.0f}"
        done = threading.Event()
        checker = threading.Thread(
            target=self._check, args=(done,), name="probe-checker", daemon=True
        )
        producer = KafkaProducer(bootstrap_servers=self.config.kafka.bootstrap_servers, linger_ms=5)
        checker.start()
        try:
            started = time.perf_counter()
            for n, row in enumerate(events.itertuples(index=False)):
                probe = n % probe_every == 0
                user = f"probe-{run}-{n}" if probe else row.user_id
                key, value = encode(f"load-{run}-{n}", user, row.item_id, int(time.time() * 1000))
                future = producer.send(self.config.kafka.topic, key=key, value=value)
                if probe:
                    producer.flush()  # the probe's clock starts when the broker has it
                    future.get(timeout=30)
                    self.sent_at[user] = time.perf_counter()
                ahead = (n + 1) / self.rate - (time.perf_counter() - started)
                if ahead > 0:
                    time.sleep(ahead)
            producer.flush()
            self.sent = total
            self.sending_s = time.perf_counter() - started
        finally:
            producer.close()
            done.set()
            checker.join()
        if self.check_error is not None:
            raise RecsysError(f"the probe checker failed: {self.check_error}")

    def _check(self, done: threading.Event) -> None:
        try:
            self._poll(done)
        except Exception as exc:  # reported by __call__, not lost with the thread
            self.check_error = exc

    def _poll(self, done: threading.Event) -> None:
        pin(self.cpus)
        give_up: float | None = None
        while True:
            unseen = [u for u in list(self.sent_at) if u not in self.readable]
            if done.is_set():
                give_up = give_up or time.perf_counter() + GIVE_UP_S
                if not unseen or time.perf_counter() > give_up:
                    return
            if unseen:
                now = time.perf_counter()
                for user, state in self.features.read_activity(unseen).items():
                    if state.last_event_ms:
                        self.readable[user] = now - self.sent_at[user]
            time.sleep(0.005)

    def report(self) -> tuple[str, dict[str, object]]:
        """(summary line, facts for ``result.json``)."""
        if not self.sent:
            raise RecsysError("the event stream did not finish; see the ingester's log")
        readable = percentiles(np.array(list(self.readable.values())) * 1000, (50, 99))
        p50, p99 = readable["p50"], readable["p99"]
        lost = len(self.sent_at) - len(self.readable)
        text = (
            f"stream: {self.sent:,} events at {self.sent / self.sending_s:,.0f}/s "
            f"(asked {self.rate:g}/s) through Kafka into the online store; probes "
            f"produce → readable p50 {p50:.0f} ms, p99 {p99:.0f} ms, "
            f"{len(self.readable)}/{len(self.sent_at)} readable"
        )
        facts: dict[str, object] = {
            "rate": self.rate,
            "sent": self.sent,
            "achieved_rate": self.sent / self.sending_s,
            "probes": len(self.sent_at),
            "probes_lost": lost,
            "readable_p50_ms": p50,
            "readable_p99_ms": p99,
        }
        return text, facts
