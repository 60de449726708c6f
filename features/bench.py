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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from features.broker import LocalBroker, ensure_jars
from features.ingest import run
from features.redis_server import LocalRedis
from features.replay import replay
from features.store import OnlineFeatures, initialise
from recsys.config import Config
from recsys.data import MovieLens


@contextlib.contextmanager
def scratch_stack(config: Config, ml: MovieLens) -> Iterator[tuple[Config, Any]]:
    """A throw-away broker, online store (and ``redis-server`` for Redis) for one benchmark.

    Yields:
        The config pointing at them and an empty, initialised ``feast.FeatureStore``.
    """
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
        broker = stack.enter_context(LocalBroker(jars, work / "kafka"))
        overrides["kafka"] = {"bootstrap_servers": broker.bootstrap_servers}
        cfg = config.with_overrides(overrides)
        yield cfg, initialise(cfg, ml, ml.interactions.head(0))


def run_bench(config: Config, ml: MovieLens, events: int | None = None) -> dict[str, float]:
    """Returns ``{"events", "produce_per_s", "ingest_per_s", "seconds"}`` and prints them.

    With ``feast.online_store: redis`` a local ``redis-server`` is started for the run.
    """
    rows = ml.interactions if events is None else ml.interactions.head(events)
    with scratch_stack(config, ml) as (cfg, store):
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


def run_freshness(
    config: Config, ml: MovieLens, *, rate: float, seconds: float = 10.0, probe_every: int = 50
) -> dict[str, float]:
    """Event → readable in the online store, measured from outside the ingester.

    Events stream at ``rate``/s for ``seconds`` (users drawn from the data set, random items).
    One event in ``probe_every`` goes to a fresh probe user; a checker polls the store for
    the probe users every 10 ms and records, for each, the time from its send to the first
    read that sees it.

    Returns:
        ``{"rate", "events", "probes", "p50_ms", "p90_ms", "p99_ms", "max_ms"}``.
    """
    import numpy as np
    from kafka import KafkaProducer

    from features.events import encode

    users = list(ml.users["user_id"])
    items = list(ml.items["item_id"])
    rng = np.random.default_rng(0)
    sent_at: dict[str, float] = {}
    seen_after: dict[str, float] = {}
    with scratch_stack(config, ml) as (cfg, store):
        features = OnlineFeatures(store)
        replay(cfg, ml.interactions.head(1), progress=False)  # creates the topic
        stop = threading.Event()
        ingester = threading.Thread(target=run, args=(cfg, features, stop), daemon=True)
        ingester.start()
        time.sleep(5.0)  # consumer group join
        done = threading.Event()

        def check() -> None:
            give_up: float | None = None  # 30 s after the stream ends, unseen probes are lost
            while not done.is_set() or len(seen_after) < len(sent_at):
                if done.is_set():
                    give_up = give_up or time.perf_counter() + 30
                    if time.perf_counter() > give_up:
                        return
                pending = [u for u in list(sent_at) if u not in seen_after]
                if pending:
                    now = time.perf_counter()
                    for user, state in features.read_activity(pending).items():
                        if state.last_event_ms:
                            seen_after[user] = now - sent_at[user]
                time.sleep(0.01)

        checker = threading.Thread(target=check, daemon=True)
        checker.start()
        producer = KafkaProducer(bootstrap_servers=cfg.kafka.bootstrap_servers, linger_ms=1)
        total = int(rate * seconds)
        started = time.perf_counter()
        for n in range(total):
            probe = n % probe_every == 0
            user = f"probe-{n}" if probe else users[int(rng.integers(len(users)))]
            now_ms = int(time.time() * 1000)
            key, value = encode(f"fresh-{n}", user, items[int(rng.integers(len(items)))], now_ms)
            producer.send(cfg.kafka.topic, key=key, value=value)
            if probe:
                producer.flush()  # the probe's clock starts when the broker has it
                sent_at[user] = time.perf_counter()
            ahead = (n + 1) / rate - (time.perf_counter() - started)
            if ahead > 0:
                time.sleep(ahead)
        producer.flush()
        producer.close()
        sending_s = time.perf_counter() - started
        done.set()
        checker.join()
        stop.set()
        ingester.join(timeout=30)
    latencies = np.array(sorted(seen_after.values())) * 1000
    result = {
        "rate": rate,
        "achieved_rate": total / sending_s,
        "events": float(total),
        "probes": float(len(sent_at)),
        "seen": float(len(latencies)),
        "p50_ms": float(np.percentile(latencies, 50)),
        "p90_ms": float(np.percentile(latencies, 90)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "max_ms": float(latencies.max()),
    }
    print(
        f"{rate:,.0f} events/s asked, {result['achieved_rate']:,.0f} sent, for {seconds:.0f}s "
        f"into {config.feast.online_store}: "
        f"{len(latencies)}/{len(sent_at)} probes readable; produce → readable p50 "
        f"{result['p50_ms']:.0f} ms, p90 {result['p90_ms']:.0f} ms, p99 {result['p99_ms']:.0f} ms, "
        f"max {result['max_ms']:.0f} ms"
    )
    return result
