"""``recsys bench-ingest``: ingest throughput from a real broker into the online store.

Produces the whole data set as events to a fresh topic on a local broker, then times one
ingester (the same ``process_batch`` and commit loop as ``recsys ingest``) from its first
poll to the commit of the last event.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd

from features.broker import LocalBroker, ensure_jars
from features.ingest import run
from features.redis_server import LocalRedis
from features.replay import replay
from features.store import OnlineFeatures, initialise
from recsys.config import Config
from recsys.data import MovieLens


def run_bench(config: Config, ml: MovieLens, events: int | None = None) -> dict[str, float]:
    """Returns ``{"events", "produce_per_s", "ingest_per_s", "seconds"}`` and prints them.

    With ``feast.online_store: redis`` a local ``redis-server`` is started for the run.
    """
    rows = ml.interactions if events is None else ml.interactions.head(events)
    jars = ensure_jars(config.paths.kafka_pom, config.paths.kafka_jars)
    with (
        tempfile.TemporaryDirectory(prefix="recsys-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        work = Path(tmp)
        overrides: dict[str, dict[str, object]] = {"paths": {"state": str(work / "state")}}
        if config.feast.online_store == "redis":
            redis = stack.enter_context(LocalRedis(work / "redis"))
            overrides["feast"] = {"redis": redis.connection_string}
        with LocalBroker(jars, work / "kafka") as broker:
            overrides["kafka"] = {"bootstrap_servers": broker.bootstrap_servers}
            cfg = config.with_overrides(overrides)
            empty = ml.interactions.head(0)
            store = initialise(cfg, ml, empty)
            started = time.perf_counter()
            sent = replay(cfg, rows, progress=True)
            produce_s = time.perf_counter() - started
            stop = threading.Event()
            done_at: list[float] = []

            def on_batch(stats) -> None:
                if stats.events >= sent and not done_at:
                    done_at.append(time.perf_counter())
                    stop.set()

            features = OnlineFeatures(store)
            started = time.perf_counter()
            stats = run(cfg, features, stop, on_batch=on_batch)
            seconds = done_at[0] - started
            written = features.read_activity(list(pd.unique(rows["user_id"])))
    result = {
        "events": float(sent),
        "produce_per_s": sent / produce_s,
        "ingest_per_s": sent / seconds,
        "seconds": seconds,
        "batches": float(stats.batches),
        "users_with_state": float(sum(1 for a in written.values() if a.recent_items)),
    }
    print(
        f"ingested {sent:,} events in {seconds:.1f}s: {result['ingest_per_s']:,.0f} events/s "
        f"into the {config.feast.online_store} online store ({stats.batches} batches of up to "
        f"{config.kafka.poll_max_records}); produced at {result['produce_per_s']:,.0f} events/s"
    )
    return result
