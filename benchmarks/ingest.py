"""``recsys bench-ingest``: ingest throughput from a real broker into the online store.

Produces the whole data set as events to a fresh topic on a local broker, then times one
ingester (the same ``process_batch`` and commit loop as ``recsys ingest``) from its first
poll to the commit of the last event.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from benchmarks.harness import percentiles, pinned, split_cores
from features.activity import fold_ratings
from features.backfill import initialise, restore
from features.store import OnlineFeatures, open_store
from features.stream.fold import IngestStats
from features.stream.ingest import rebuild, run
from features.stream.replay import replay
from localservices.kafka import LocalBroker, ensure_jars
from localservices.redis import LocalRedis
from recsys.config import Config
from recsys.data.dataset import Dataset
from recsys.errors import RecsysError, StoreUnavailableError

if TYPE_CHECKING:
    from subprocess import Popen
    from threading import Event

    from feast import FeatureStore

    from serving.client import RecommendClient


@dataclass
class Stack:
    """A benchmark's throw-away services: the config pointing at them, an initialised
    ``feast.FeatureStore``, and the ``redis-server`` when the store is Redis."""

    config: Config
    store: FeatureStore
    redis: LocalRedis | None


@contextlib.contextmanager
def scratch_stack(
    config: Config, ml: Dataset, history: pd.DataFrame | None = None
) -> Iterator[Stack]:
    """A throw-away broker, online store (and ``redis-server`` for Redis) for one benchmark,
    the store's profiles materialized and its activity backfilled from ``history`` (default:
    none)."""
    jars = ensure_jars(config.paths.kafka_pom, config.paths.kafka_jars)
    with (
        tempfile.TemporaryDirectory(prefix="recsys-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        work = Path(tmp)
        overrides: dict[str, dict[str, object]] = {"paths": {"state": str(work / "state")}}
        redis = None
        if config.feast.online_store == "redis":
            redis = stack.enter_context(LocalRedis(work / "redis"))
            overrides["feast"] = {"redis": redis.connection_string}
        broker = stack.enter_context(LocalBroker(jars, work / "kafka"))
        overrides["kafka"] = {"bootstrap_servers": broker.bootstrap_servers}
        cfg = config.with_overrides(overrides)
        store = initialise(cfg, ml, ml.interactions.head(0) if history is None else history)
        yield Stack(cfg, store, redis)


def run_bench(config: Config, ml: Dataset, events: int | None = None) -> dict[str, float]:
    """Returns ``{"events", "produce_per_s", "ingest_per_s", "seconds"}`` and prints them.

    With ``feast.online_store: redis`` a local ``redis-server`` is started for the run.
    """
    rows = ml.interactions if events is None else ml.interactions.head(events)
    with scratch_stack(config, ml) as stack:
        cfg, store = stack.config, stack.store
        started = time.perf_counter()
        sent = replay(cfg, rows, progress=True)
        produce_s = time.perf_counter() - started
        stop = threading.Event()
        done_at: list[float] = []

        def on_batch(stats: IngestStats) -> None:
            if stats.events >= sent and not done_at:
                done_at.append(time.perf_counter())
                stop.set()

        features = OnlineFeatures(store)
        started = time.perf_counter()
        stats = run(cfg, features, stop, on_batch=on_batch)
        seconds = done_at[0] - started
        users = list(pd.unique(rows["user_id"]))
        written = features.read_activity(users)
        if written != fold_ratings(rows, cfg.model.history_length):
            raise RecsysError("the ingested states are not the from-scratch fold of the events")
        # Then the store is lost (Feast's teardown drops its tables or keys) and rebuilt:
        # the offline backfill, then the whole topic again, as `recsys ingest --rebuild`.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            open_store(cfg).teardown()  # type: ignore[no-untyped-call]  # unannotated in Feast
        started = time.perf_counter()
        restore(cfg)
        rebuilt = OnlineFeatures(open_store(cfg))
        rebuild(cfg, rebuilt)
        rebuild_s = time.perf_counter() - started
        if rebuilt.read_activity(users) != written:
            raise RecsysError("the rebuild from the log did not give back the ingested states")
    result = {
        "events": float(sent),
        "produce_per_s": sent / produce_s,
        "ingest_per_s": sent / seconds,
        "seconds": seconds,
        "batches": float(stats.batches),
        "users_with_state": float(sum(1 for a in written.values() if a.recent_items)),
        "rebuild_seconds": rebuild_s,
    }
    print(
        f"ingested {sent:,} events in {seconds:.1f}s: {result['ingest_per_s']:,.0f} events/s "
        f"into the {config.feast.online_store} online store ({stats.batches} batches of up to "
        f"{config.kafka.poll_max_records}); produced at {result['produce_per_s']:,.0f} events/s\n"
        f"rebuilt the store from the log after a teardown in {rebuild_s:.1f}s (offline "
        f"backfill, then all {sent:,} events again): the same {len(users):,} users' states, "
        "each the from-scratch fold of its events"
    )
    return result


@dataclass
class _Probes:
    """Probe users: each gets one event for ``item``, the cold-start answer's top item."""

    item: str
    sent_at: dict[str, float] = field(default_factory=dict)
    in_store: dict[str, float] = field(default_factory=dict)
    in_recommend: dict[str, float] = field(default_factory=dict)

    def pending(self) -> tuple[list[str], list[str]]:
        """(probes not yet seen in the store, probes seen there but not yet in Recommend)."""
        sent = list(self.sent_at)
        return (
            [u for u in sent if u not in self.in_store],
            [u for u in sent if u in self.in_store and u not in self.in_recommend],
        )


@dataclass
class Outage:
    """Redis killed with SIGKILL ``at_s`` into the stream and restarted (on its append-only
    file) ``for_s`` later; ``down``/``up`` are when it happened (``perf_counter``)."""

    at_s: float
    for_s: float
    down: float = 0.0
    up: float = 0.0

    def run(self, redis: LocalRedis, started: float) -> None:
        time.sleep(max(0.0, started + self.at_s - time.perf_counter()))
        if redis.pid is not None:
            os.kill(redis.pid, signal.SIGKILL)
        redis.stop()  # reaps it
        self.down = time.perf_counter()
        time.sleep(self.for_s)
        redis.start()
        self.up = time.perf_counter()

    def windows(self, probes: _Probes) -> dict[str, float]:
        """Store freshness of the probes sent before, during, and in the first 10 s and the
        rest after the outage, and ``drained_s``: how long after Redis returned the last
        probe sent before that became readable."""
        out: dict[str, float] = {}
        spans = {
            "before": (-np.inf, self.down),
            "during": (self.down, self.up),
            "first10s": (self.up, self.up + 10.0),
            "after10s": (self.up + 10.0, np.inf),
        }
        for name, (lo, hi) in spans.items():
            sent = [u for u, t in probes.sent_at.items() if lo <= t < hi]
            seen = [probes.in_store[u] for u in sent if u in probes.in_store]
            out[f"{name}_probes"] = float(len(sent))
            out[f"{name}_in_store"] = float(len(seen))
            out.update(percentiles(np.array(seen) * 1000, (50, 99), f"{name}_store_{{}}_ms"))
        readable = [
            probes.sent_at[u] + probes.in_store[u]
            for u in probes.in_store
            if probes.sent_at[u] < self.up
        ]
        out["drained_s"] = max(0.0, max(readable, default=self.up) - self.up)
        return out


def run_freshness(
    config: Config,
    ml: Dataset,
    *,
    rate: float,
    seconds: float = 30.0,
    probes_per_s: int = 20,
    outage: Outage | None = None,
) -> dict[str, float]:
    """Produce → readable in the online store, and produce → reflected by ``Recommend``.

    A synthetic stream (power-law users and items) runs at ``rate`` events/s for ``seconds``
    through a real broker into ``recsys ingest``; a ``recsys serve`` reads the same store.
    About ``probes_per_s`` events a second go to fresh probe users, for the item a cold-start
    user is recommended first. A checker polls every 5 ms: the store for probes not seen yet,
    then ``Recommend`` for probes the store has. A probe is reflected when its answer leaves
    out the probe item (exclude-seen) while a never-seen user's answer at that moment still
    has it. The load generator (producer, checker) and the system (ingester, server) run on
    separate cores; the broker is not pinned.

    With an ``outage`` (Redis only), the Redis server is killed and restarted mid-stream,
    and the store freshness is also reported per window around it (:meth:`Outage.windows`).

    Returns:
        Rates, probe counts, and p50/p99/max in ms for ``store`` and ``recommend``.
    """
    from kafka import KafkaProducer

    from features.events import encode
    from features.stream.synthetic import synthetic_interactions
    from localservices.procs import child, serving_ports, write_config
    from serving.client import RecommendClient

    system_cpus, load_cpus = split_cores()
    total = int(rate * seconds)
    probe_every = max(1, int(rate / probes_per_s))
    background = synthetic_interactions(ml, total, seed=int(rate), per_second=rate)
    run = f"{int(time.time())}"
    logs = config.paths.state / "bench" / f"freshness-{run}"
    logs.mkdir(parents=True, exist_ok=True)
    print(f"logs in {logs}", flush=True)
    with scratch_stack(config, ml) as stack:
        if outage is not None and stack.redis is None:
            raise RecsysError("an outage needs feast.online_store: redis")
        store = stack.store
        cfg = stack.config.with_overrides({"serving": serving_ports(stack.config)})
        config_file = write_config(cfg, logs / "config.yaml")
        features = OnlineFeatures(store)
        replay(cfg, ml.interactions.head(1), progress=False)  # creates the topic
        with (
            child("ingester", config_file, ["ingest"], logs, cpus=system_cpus) as ingester,
            child("server", config_file, ["serve"], logs, cpus=system_cpus) as server,
            RecommendClient(f"{cfg.serving.host}:{cfg.serving.port}") as client,
            pinned(load_cpus),
        ):
            client.wait_until_serving(process=server)
            cold = [i.item_id for i in client.recommend(f"cold-{run}", k=10).items]
            probes = _Probes(item=cold[0])
            wait_consuming(cfg, features, ingester, run, probes.item)
            # Everything is encoded before the clock starts; event time is the planned send time.
            start_ms = int(time.time() * 1000) + 1000
            events = []
            for n, row in enumerate(background.itertuples(index=False)):
                probe = n % probe_every == 0
                user, item = (
                    (f"probe-{run}-{n}", probes.item) if probe else (row.user_id, row.item_id)
                )
                key, value = encode(f"fresh-{run}-{n}", user, item, start_ms + int(n * 1000 / rate))
                events.append((user if probe else None, key, value))
            done = threading.Event()
            checker = threading.Thread(target=_check, args=(probes, features, client, done, run))
            checker.start()
            producer = KafkaProducer(bootstrap_servers=cfg.kafka.bootstrap_servers, linger_ms=1)
            time.sleep(max(0.0, start_ms / 1000 - time.time()))
            started = time.perf_counter()
            if outage is not None:
                threading.Thread(
                    target=outage.run, args=(stack.redis, started), daemon=True
                ).start()
            for n, (probe_user, key, value) in enumerate(events):
                future = producer.send(cfg.kafka.topic, key=key, value=value)
                if probe_user is not None:
                    producer.flush()  # the probe's clock starts when the broker has it
                    future.get()
                    probes.sent_at[probe_user] = time.perf_counter()
                ahead = (n + 1) / rate - (time.perf_counter() - started)
                if ahead > 0:
                    time.sleep(ahead)
            producer.flush()
            sending_s = time.perf_counter() - started
            producer.close()
            done.set()
            checker.join()
    result = {
        "rate": rate,
        "achieved_rate": total / sending_s,
        "seconds": seconds,
        "probes": float(len(probes.sent_at)),
        "in_store": float(len(probes.in_store)),
        "in_recommend": float(len(probes.in_recommend)),
        **percentiles(np.array(list(probes.in_store.values())) * 1000, (50, 99), "store_{}_ms"),
        **percentiles(
            np.array(list(probes.in_recommend.values())) * 1000, (50, 99), "recommend_{}_ms"
        ),
        **(outage.windows(probes) if outage is not None else {}),
    }
    placement = (
        f"load on cores {sorted(load_cpus)}, system on {sorted(system_cpus)}"
        if load_cpus and system_cpus
        else "unpinned"
    )
    print(
        f"{rate:,.0f} events/s asked, {result['achieved_rate']:,.0f} sent, for {seconds:.0f}s "
        f"into {config.feast.online_store} ({placement}); "
        f"{len(probes.in_store)}/{len(probes.sent_at)} probes readable, "
        f"{len(probes.in_recommend)} reflected by Recommend\n"
        f"    produce → readable in store: p50 {result['store_p50_ms']:.0f} ms, "
        f"p99 {result['store_p99_ms']:.0f} ms, max {result['store_max_ms']:.0f} ms\n"
        f"    produce → Recommend reflects it: p50 {result['recommend_p50_ms']:.0f} ms, "
        f"p99 {result['recommend_p99_ms']:.0f} ms, max {result['recommend_max_ms']:.0f} ms",
        flush=True,
    )
    if outage is not None:
        print(
            f"    Redis killed {outage.at_s:.0f} s in, back {outage.for_s:.0f} s later; the "
            f"events held meanwhile drained {result['drained_s']:.1f} s after it returned",
            flush=True,
        )
        for name in ("before", "during", "first10s", "after10s"):
            print(
                f"    probes sent {name:<9} {result[f'{name}_in_store']:.0f}/"
                f"{result[f'{name}_probes']:.0f} readable: p50 "
                f"{result[f'{name}_store_p50_ms']:.0f} ms, p99 "
                f"{result[f'{name}_store_p99_ms']:.0f} ms",
                flush=True,
            )
    return result


GIVE_UP_S = 30.0
"""After the stream ends, probes still unseen this much later count as lost."""


def wait_consuming(
    config: Config, features: OnlineFeatures, ingester: Popen[bytes], run: str, item: str
) -> None:
    """Sends a marker event and waits until the ingester (a child process) has written it."""
    from kafka import KafkaProducer

    from features.events import encode

    marker = f"marker-{run}"
    producer = KafkaProducer(bootstrap_servers=config.kafka.bootstrap_servers, acks="all")
    key, value = encode(f"marker-{run}", marker, item, int(time.time() * 1000))
    producer.send(config.kafka.topic, key=key, value=value)
    producer.flush()
    producer.close()
    deadline = time.monotonic() + 120
    while not features.read_activity([marker])[marker].last_event_ms:
        if ingester.poll() is not None or time.monotonic() > deadline:
            raise RecsysError("the benchmark's ingester did not start consuming; see its log")
        time.sleep(0.1)


def _check(
    probes: _Probes, features: OnlineFeatures, client: RecommendClient, done: Event, run: str
) -> None:
    give_up: float | None = None
    while True:
        unseen, unreflected = probes.pending()
        if done.is_set():
            if not unseen and not unreflected:
                return
            give_up = give_up or time.perf_counter() + GIVE_UP_S
            if time.perf_counter() > give_up:
                return
        if unseen:
            try:
                states = features.read_activity(unseen)
            except StoreUnavailableError:  # an outage run: the probes wait with the rest
                time.sleep(0.05)
                continue
            # Timed when the read has returned: a read that waited out a store coming back
            # must not count that wait as fresh.
            now = time.perf_counter()
            for user, state in states.items():
                if state.last_event_ms:
                    probes.in_store[user] = now - probes.sent_at[user]
        for user in unreflected:
            answer = {i.item_id for i in client.recommend(user, k=10).items}
            now = time.perf_counter()
            cold = {i.item_id for i in client.recommend(f"cold-{run}", k=10).items}
            if probes.item not in answer and probes.item in cold:
                probes.in_recommend[user] = now - probes.sent_at[user]
        time.sleep(0.005)
