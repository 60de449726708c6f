"""Sequential Recommend latency over a real channel, side by side in one run: a null handler,
the NumPy and SavedModel tower runtimes, the SQLite and Redis online stores, and optionally
a large synthetic index.

Every server is a ``recsys serve`` child pinned to one core; the client is this process,
pinned to the other. Calls rotate between the servers in blocks so machine noise hits all
alike. Each server sends its stage times as trailing metadata (``serving.timing_trailer``),
so one call gives the client's round trip and the server's hot path; the gRPC stage is the
difference. Before the servers start, the same requests run through the hot path as a plain
object in this process, pinned to the servers' core: once with the store, once with
features preloaded (what the rest costs when the store read has not just run).
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc

from benchmarks.harness import Table, machine_line, percentiles, pinned, split_cores
from features.user import UserFeatures
from localservices.procs import child, serving_ports, slug, write_config
from recsys.config import Config
from recsys.data.dataset import Dataset
from recsys.v1 import recommender_pb2 as pb
from recsys.v1 import recommender_pb2_grpc as pb_grpc
from serving.client import RecommendClient
from serving.metrics import STAGES as HOT_PATH_STAGES
from serving.recommender import Features

BLOCK = 50
STAGES = ("grpc", *HOT_PATH_STAGES, "hot_path")


class _Target:
    """One server under test: its channel, and every sample taken from it."""

    def __init__(self, name: str, address: str):
        self.name = name
        self.channel = grpc.insecure_channel(address)
        self.call = pb_grpc.RecommenderStub(self.channel).Recommend.with_call
        self.total_us: list[float] = []
        self.stages: dict[str, list[float]] = {s: [] for s in STAGES}

    def run(self, requests: Sequence[pb.RecommendRequest], keep: bool = True) -> None:
        for request in requests:
            t = time.perf_counter()
            _, call = self.call(request, timeout=10)
            elapsed = (time.perf_counter() - t) * 1e6
            if not keep:
                continue
            self.total_us.append(elapsed)
            for key, value in call.trailing_metadata() or ():
                if key != "recsys-timing-us":
                    continue
                for part in value.split(","):
                    stage, us = part.split("=")
                    # 0: the stage did not run (popular items: no tower); batch is a size
                    if stage in self.stages and float(us):
                        self.stages[stage].append(float(us))
                self.stages["grpc"].append(elapsed - self.stages["hot_path"][-1])


def _has_ranker(config: Config) -> bool:
    """Whether the current index's model was trained with its ranker (``model.ranker``)."""
    from ranking.servable import has_ranker
    from recsys import artifacts

    index = artifacts.read_manifest(artifacts.current(config.indexes_dir), verify=False)
    return has_ranker(config.models_dir / str(index["model_version"]))


@contextlib.contextmanager
def variant_servers(
    config: Config,
    ml: Dataset,
    work: Path,
    index_items: int,
    cpu: set[int] | None,
    kinds: Sequence[str] = ("auto",),
) -> Iterator[dict[str, tuple[str, subprocess.Popen[bytes]]]]:
    """Starts every variant pinned to ``cpu``: a null handler, the NumPy and SavedModel tower
    runtimes on SQLite, NumPy on Redis, with a ranker in the model the ranker on SQLite and
    on Redis (``serving.ranker: gbdt``), and with ``index_items`` a synthetic catalog of that
    size, one server per index kind in ``kinds`` on SQLite (``auto``: what ``index.type:
    auto`` builds, IVF at 1M; ``flat``: exact search), and the ``auto`` kind on Redis too (the
    shape a deployment runs).
    Yields ``{name: (address, process)}`` once all are SERVING."""
    from features.backfill import initialise
    from index.plan import index_spec
    from localservices.redis import LocalRedis
    from recsys.data import temporal_split

    host = config.serving.host

    def variant(**serving: object) -> Config:
        ports = serving_ports(config)
        return config.with_overrides({"serving": {**ports, "timing_trailer": True, **serving}})

    variants: dict[str, tuple[Config, list[str]]] = {
        "null handler": (variant(), ["serve", "--null"]),
        "numpy, sqlite": (variant(), ["serve"]),
        "savedmodel, sqlite": (variant(tower_runtime="savedmodel"), ["serve"]),
    }
    with contextlib.ExitStack() as stack:
        # Beside the servers, as a local Redis would share their host: unpinned, the
        # scheduler can park it behind the client's core and a read waits a scheduler tick.
        redis = stack.enter_context(LocalRedis(work / "redis", cpus=cpu))
        redis_cfg = variant().with_overrides(
            {
                "paths": {"state": str(work / "redis-state")},
                "feast": {"online_store": "redis", "redis": redis.connection_string},
            }
        )
        past, _ = temporal_split(ml.interactions, config.model.test_fraction)
        initialise(redis_cfg, ml, past)
        variants["numpy, redis"] = (redis_cfg, ["serve"])
        if _has_ranker(config):  # the second stage, on and off back to back
            variants["numpy, sqlite, ranker gbdt"] = (variant(ranker="gbdt"), ["serve"])
            ranked = redis_cfg.with_overrides(
                {"serving": {**serving_ports(config), "ranker": "gbdt"}}
            )
            variants["numpy, redis, ranker gbdt"] = (ranked, ["serve"])
        for kind in kinds if index_items else []:
            built = index_spec(config.index.model_copy(update={"type": kind}), index_items)[0]
            name = f"numpy, sqlite, {index_items:,} items {built}"
            if name not in variants:  # below index.exact_below, auto is flat already
                variants[name] = (large_index(variant(), ml, index_items, kind), ["serve"])
        if index_items:
            # The shape a deployment runs: a shared store and a large catalog together.
            built = index_spec(config.index, index_items)[0]
            own_ports = redis_cfg.with_overrides({"serving": serving_ports(config)})
            large = large_index(own_ports, ml, index_items)
            variants[f"numpy, redis, {index_items:,} items {built}"] = (large, ["serve"])
        procs = {}
        for name, (cfg, args) in variants.items():
            file = slug(name)
            path = write_config(cfg, work / f"{file}.yaml")
            procs[name] = stack.enter_context(child(file, path, args, work, quiet=True, cpus=cpu))
        servers = {
            name: (f"{host}:{cfg.serving.port}", procs[name]) for name, (cfg, _) in variants.items()
        }
        for address, process in servers.values():
            with RecommendClient(address) as client:
                client.wait_until_serving(timeout=600, process=process)
        yield servers


def large_index(config: Config, ml: Dataset, items: int, kind: str = "auto") -> Config:
    """A config whose index is a synthetic ``items``-item catalog (``index.type`` ``kind``),
    built once per model and reused."""
    from index.build import build_index
    from index.catalog import Catalog
    from recsys import artifacts

    name = f"synthetic-{items}" if kind == "auto" else f"synthetic-{items}-{kind}"
    root = config.paths.artifacts / "bench" / name
    (root / "indexes").mkdir(parents=True, exist_ok=True)
    if not (root / "models").exists():
        (root / "models").symlink_to(config.models_dir)
    cfg = config.with_overrides({"paths": {"artifacts": str(root)}, "index": {"type": kind}})
    model = artifacts.current(config.models_dir).name
    try:
        current = artifacts.read_manifest(artifacts.current(cfg.indexes_dir), verify=False)
        fresh = current["model_version"] == model and current["items"] == items
    except Exception:
        fresh = False
    if not fresh:
        print(f"building a {items:,}-item synthetic index for model {model} (about a minute)")
        build_index(cfg, ml, catalog=Catalog.synthetic(ml, items), progress=True)
    return cfg


def _requests(
    users: Sequence[str], calls: int, k: int, filter_value: str | None
) -> list[pb.RecommendRequest]:
    """Known users, one in ten unknown (cold start), every fifth with a filter (on the most
    common value of the filter field, when there is one)."""
    out = []
    for i in range(calls):
        user = users[i % len(users)] if i % 10 else f"bench-new-user-{i}"
        genres = [filter_value] if filter_value and i % 5 == 2 else []
        out.append(pb.RecommendRequest(user_id=user, k=k, include_genres=genres))
    return out


class _Preloaded:
    """Features read once, then served from memory: the hot path without the store, to see
    what the store read costs beyond its own stage (it leaves the caches cold for the rest)."""

    def __init__(self, reader: Features):
        self._reader = reader
        self._seen: dict[str, UserFeatures] = {}

    def read_many(self, user_ids: Sequence[str]) -> list[UserFeatures] | None:
        missing = [u for u in user_ids if u not in self._seen]
        read = self._reader.read_many(missing) if missing else []
        if read is None:
            return None
        self._seen.update(zip(missing, read, strict=True))
        return [self._seen[u] for u in user_ids]


def _in_process(
    config: Config, requests: Sequence[pb.RecommendRequest]
) -> dict[str, dict[str, dict[str, float]]]:
    """The hot path as a plain object in this process (no gRPC), with the store and with
    features preloaded: ``{variant: {stage: percentiles}}`` in µs."""
    import faiss

    from features.online.read import FeatureReader
    from serving.bundle import Bundle
    from serving.recommender import Recommender
    from serving.wire import request_from

    faiss.omp_set_num_threads(1)
    bundle = Bundle.load_current(config.models_dir, config.indexes_dir)
    reader = FeatureReader(config)
    plain = [request_from(r) for r in requests]
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, features in (("store", reader), ("preloaded", _Preloaded(reader))):
        rec = Recommender(bundle, features, config.serving)
        for request in plain:  # warm, and fill the preloaded features
            rec.recommend(request)
        samples: dict[str, list[float]] = {s: [] for s in STAGES[1:]}
        for request in plain:
            t = time.perf_counter()
            served = rec.recommend_batch([request])
            samples["hot_path"].append((time.perf_counter() - t) * 1e6)
            for stage in HOT_PATH_STAGES:
                if value := getattr(served.stages, stage):
                    samples[stage].append(value * 1e6)
        out[name] = {s: percentiles(v) for s, v in samples.items() if v}
    return out


def run(
    config: Config, ml: Dataset, *, calls: int = 2000, k: int = 10, index_items: int = 0
) -> dict[str, dict[str, dict[str, float]]]:
    """Prints the latency tables; returns ``{server: {"client": pcts, stage: pcts}}`` (µs)."""
    work = config.paths.state / "bench" / "serving"
    work.mkdir(parents=True, exist_ok=True)
    server_cpu, client_cpu = split_cores(system=1, load=1)
    users = list(ml.interactions["user_id"].unique())
    field = ml.schema.filter
    common = ml.items[field].explode().value_counts().index[0] if field else None
    requests = _requests(users, calls, k, common)
    with pinned(server_cpu):
        in_process = _in_process(config, requests)
    with (
        variant_servers(config, ml, work, index_items, server_cpu) as servers,
        pinned(client_cpu),
    ):
        targets = [_Target(name, address) for name, (address, _) in servers.items()]
        try:
            for target in targets:  # warm: connections, first-call costs
                target.run(requests[:300], keep=False)
            for start in range(0, calls, BLOCK):
                for target in targets:
                    target.run(requests[start : start + BLOCK])
        finally:
            for target in targets:
                target.channel.close()
    return _report(targets, in_process, calls, k, server_cpu, client_cpu)


def _report(
    targets: list[_Target],
    in_process: dict[str, dict[str, dict[str, float]]],
    calls: int,
    k: int,
    server_cpu: object,
    client_cpu: object,
) -> dict[str, dict[str, dict[str, float]]]:
    result: dict[str, dict[str, dict[str, float]]] = {}
    for t in targets:
        result[t.name] = {"client": percentiles(t.total_us)}
        result[t.name].update({s: percentiles(v) for s, v in t.stages.items() if v})
    null_p50 = result["null handler"]["client"]["p50"]
    print(
        f"\n{calls} sequential Recommend calls per server (k={k}; 1 in 10 a new user, 1 in 5 "
        f"genre-filtered), servers on CPU {server_cpu}, client on CPU {client_cpu}; "
        f"{machine_line()}"
    )
    print("\nround trip seen by the client (ms)")
    client = Table([("server", "<34"), *((q, ">8.3f") for q in ("p50", "p90", "p99", "max"))])
    print(client.header() + f"{'p50 / null':>12}")
    for name, r in result.items():
        c = r["client"]
        ms = (c[q] / 1e3 for q in ("p50", "p90", "p99", "max"))
        print(client.row(name, *ms) + f"{c['p50'] / null_p50:>11.2f}x")
    print(
        "\nper stage, p50 / p99 (µs); gRPC = client round trip − server hot path, per call; "
        "hot path = request in to answer ready inside the server"
    )
    header = ("gRPC", *HOT_PATH_STAGES, "hot path")
    stages = Table([("server", "<34"), *((h, ">15") for h in header)])
    print(stages.header())
    rows = [(name, r) for name, r in result.items() if "hot_path" in r]
    rows += [(f"in process, {name} (numpy, sqlite)", r) for name, r in in_process.items()]
    for name, r in rows:
        cells = [f"{r[s]['p50']:.0f} / {r[s]['p99']:.0f}" if s in r else None for s in STAGES]
        print(stages.row(name, *cells))
    result.update({f"in process, {name}": r for name, r in in_process.items()})
    return result
