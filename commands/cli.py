"""The ``recsys`` command line: one subcommand per stage of the loop, plus ``demo``."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from commands.dataset import load_dataset
from recsys import logs
from recsys.config import Config, load_config
from recsys.errors import ConfigError, RecsysError

if TYPE_CHECKING:  # the data module pulls in pandas; keep `recsys --help` fast
    pass


def cmd_fetch_data(config: Config, args: argparse.Namespace) -> None:
    ml = load_dataset(config)
    print(
        f"ML-100K ready: {len(ml.interactions):,} ratings, {len(ml.users):,} users, "
        f"{len(ml.items):,} items"
    )


def cmd_fetch_kafka(config: Config, args: argparse.Namespace) -> None:
    from localservices.kafka import ensure_jars

    jars = ensure_jars(config.paths.kafka_pom, config.paths.kafka_jars)
    print(f"Kafka broker jars ready in {jars}")


def cmd_train(config: Config, args: argparse.Namespace) -> None:
    from training.train import train

    train(config, load_dataset(config))


def cmd_evaluate(config: Config, args: argparse.Namespace) -> None:
    from training.compare import PROTOCOLS, run, save

    protocols = PROTOCOLS if args.protocol == "all" else (args.protocol,)
    results = run(
        config.model,
        load_dataset(config),
        protocols,
        ablation=args.ablation,
        export_dir=args.export_splits,
    )
    out = args.out or config.paths.artifacts / "evaluation.json"
    save(results, out)
    print(f"\nresults in {out}")


def cmd_build_index(config: Config, args: argparse.Namespace) -> None:
    from index.build import build_index

    overrides: dict[str, object] = {}
    if args.synthetic is not None:
        overrides["synthetic_items"] = args.synthetic
    if args.type:
        overrides["type"] = args.type
    if args.catalog is not None:
        overrides["catalog"] = str(args.catalog)
    if args.engine:
        overrides["engine"] = args.engine
    if args.master:
        overrides["spark_master"] = args.master
    config = config.with_overrides({"index": overrides})
    build_index(config, load_dataset(config), publish=not args.no_publish, progress=True)


def cmd_index(config: Config, args: argparse.Namespace) -> None:
    from index.versions import rollback, versions
    from recsys import artifacts

    root = config.indexes_dir
    if args.action == "rollback":
        before = artifacts.current(root).name
        print(f"CURRENT: {before} → {rollback(root, args.to)}")
        return
    try:
        current = artifacts.current(root).name
    except RecsysError:
        current = ""
    print(f"{'':2}{'version':<24} {'model':<24} {'items':>10} {'type':<16} {'recall@10':>9}")
    for version in versions(root):
        m = artifacts.read_manifest(root / version, verify=False)
        mark = "* " if version == current else "  "
        recall = m.get("recall_at_10")
        print(
            f"{mark}{version:<24} {m.get('model_version', '?'):<24} {m.get('items', 0):>10,} "
            f"{m.get('index_type', '?'):<16} {recall if recall is not None else '–':>9}"
        )


def cmd_init_features(config: Config, args: argparse.Namespace) -> None:
    from features.store import initialise
    from recsys.data import temporal_split

    ml = load_dataset(config)
    past, _ = temporal_split(ml.interactions, config.model.test_fraction)
    initialise(config, ml, past)
    print(f"feature store ready in {config.feast_dir}: profiles materialized, activity backfilled")


def cmd_serve(config: Config, args: argparse.Namespace) -> None:
    from serving.server import serve

    if args.workers is not None:
        config = config.with_overrides({"serving": {"processes": args.workers}})
    if config.serving.processes == 1:
        serve(config, null=args.null)
        return
    from serving.workers import Supervisor

    def worker(cfg: Config, on_ready: Callable[[], object]) -> None:
        serve(cfg, null=args.null, on_ready=on_ready)

    sys.exit(Supervisor(config, config.serving.processes, worker).run())


def cmd_ingest(config: Config, args: argparse.Namespace) -> None:
    from features.ingest import IngestStats, run
    from features.metrics import IngestMetrics
    from features.replay import ensure_topic
    from features.store import OnlineFeatures, open_store
    from index.versions import read_item_ids
    from recsys import artifacts
    from recsys.errors import StoreUnavailableError

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    features = OnlineFeatures(open_store(config, timeout_ms=config.kafka.store_timeout_ms))
    if not args.rebuild:
        # A store that is not there at the start is a setup mistake, told in one line; one
        # that goes away later is an outage the loop rides out.
        try:
            features.read_activity(["recsys-ingest-startup-check"])
        except StoreUnavailableError as exc:
            kind = config.feast.online_store
            where = config.feast.redis if kind == "redis" else config.feast_dir / "online.db"
            raise StoreUnavailableError(
                f"the {kind} online store at {where} does not answer ({exc.__cause__ or exc}): "
                "start it first (a running ingester rides out later outages)"
            ) from exc
    ensure_topic(config)
    print(f"ingesting {config.kafka.topic} from {config.kafka.bootstrap_servers}", flush=True)
    last_report = [0.0]

    def report(stats: IngestStats) -> None:
        # One progress line every couple of seconds, not one per batch.
        if time.monotonic() - last_report[0] >= 2.0:
            last_report[0] = time.monotonic()
            print(stats.summary(), flush=True)

    try:
        catalog: set[str] | None = set(read_item_ids(artifacts.current(config.indexes_dir)))
    except RecsysError:
        catalog = None
        print("no published index: item ids are not checked against a catalog", flush=True)
    if args.rebuild:
        from features.ingest import rebuild
        from features.store import restore

        started = time.monotonic()
        print("restoring profiles and the backfilled activity from the offline files", flush=True)
        restore(config)
        print(f"folding every retained event of {config.kafka.topic} again", flush=True)
        stats = rebuild(config, features, catalog=catalog, stop=stop)
        print(f"rebuilt in {time.monotonic() - started:.1f}s: {stats.summary()}", flush=True)
        return
    metrics = IngestMetrics()
    if args.metrics_port:
        metrics.serve(args.metrics_port, args.metrics_host)
        print(f"metrics on http://{args.metrics_host}:{args.metrics_port}/metrics", flush=True)
    stats = run(
        config,
        features,
        stop,
        catalog=catalog,
        metrics=metrics,
        on_batch=report,
    )
    print("ingester stopped: " + stats.summary(), flush=True)


def cmd_replay(config: Config, args: argparse.Namespace) -> None:
    from features.replay import replay
    from recsys.data import temporal_split

    ml = load_dataset(config)
    _, future = temporal_split(ml.interactions, config.model.test_fraction)
    rows = ml.interactions if args.all else future
    if args.synthetic:
        from features.synthetic import synthetic_interactions

        rows = synthetic_interactions(
            ml, args.synthetic, seed=args.seed, per_second=args.rate or 1000.0
        )
    if args.limit:
        rows = rows.head(args.limit)
    sent = replay(config, rows, rate=args.rate)
    print(f"sent {sent:,} events to {config.kafka.topic}")


def cmd_recommend(config: Config, args: argparse.Namespace) -> None:
    import grpc

    from recsys.v1 import recommender_pb2 as pb
    from serving.client import RecommendClient

    target = args.target or f"{config.serving.host}:{config.serving.port}"
    with RecommendClient(target) as client:
        try:
            reply = client.recommend(
                args.user,
                args.k,
                args.exclude,
                args.timeout,
                include_seen=args.include_seen,
                request_time_ms=args.time_ms,
                include_genres=args.genres,
                exclude_genres=args.not_genres,
            )
        except grpc.RpcError as exc:
            raise RecsysError(f"Recommend failed: {exc.code().name}: {exc.details()}") from exc
    path = pb.ServingPath.Name(reply.path).removeprefix("SERVING_PATH_").lower()
    print(f"user {args.user} ({path}; model {reply.model_version}, index {reply.index_version}):")
    for rank, item in enumerate(reply.items, 1):
        print(f"  {rank:2d}. item {item.item_id:>5}  score {item.score:.3f}")


def cmd_admin(config: Config, args: argparse.Namespace) -> None:
    import grpc

    from recsys.v1 import admin_pb2, admin_pb2_grpc

    sc = config.serving
    target = args.target or f"{sc.admin_host}:{sc.admin_port}"
    with grpc.insecure_channel(target) as channel:
        stub = admin_pb2_grpc.RecommenderAdminStub(channel)
        try:
            if args.action == "reload":
                reply = stub.Reload(admin_pb2.ReloadRequest(), timeout=args.timeout)
            elif args.action == "rollback":
                request = admin_pb2.RollbackRequest(to_index_version=args.to or "")
                reply = stub.Rollback(request, timeout=args.timeout)
            else:
                reply = stub.Status(admin_pb2.StatusRequest(), timeout=args.timeout)
        except grpc.RpcError as exc:
            raise RecsysError(f"{args.action} failed: {exc.code().name}: {exc.details()}") from exc
    print(
        f"serving model {reply.model_version}, index {reply.index_version} "
        f"({reply.items:,} items); {reply.swaps} swaps since start"
        + (f"; last reload refused: {reply.last_error}" if reply.last_error else "")
    )


def cmd_broker(config: Config, args: argparse.Namespace) -> None:
    from localservices.kafka import LocalBroker, ensure_jars

    host, _, port = config.kafka.bootstrap_servers.partition(":")
    jars = ensure_jars(config.paths.kafka_pom, config.paths.kafka_jars)
    # The JVM runs in its own session (so a terminal's Ctrl-C does not reach it half-way):
    # this process must stop it, so a signal only ends the wait and the `with` stops it.
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    with LocalBroker(jars, config.paths.state / "kafka", host=host, port=int(port)) as broker:
        print(
            f"Kafka broker on {broker.bootstrap_servers} (pid {broker.pid}); Ctrl-C or "
            "SIGTERM stops it",
            flush=True,
        )
        stop.wait()
        print("stopping the broker", flush=True)


def _loadtest_mode_error(args: argparse.Namespace) -> str | None:
    """Why these flags cannot go together (None: they can)."""

    def given(*flags: str) -> list[str]:
        return [f"--{f}" for f in flags if getattr(args, f.replace("-", "_"))]

    if args.ingest is not None and args.ingest <= 0:
        return f"--ingest is events per second, more than 0 (got {args.ingest:g})"
    scenarios = given("swap", "ingest")
    if args.compare and (clash := given("target", "null", "baseline", "ramp") + scenarios):
        return f"--compare starts its own servers and runs alone, not with {' '.join(clash)}"
    alone = given("target", "null", "baseline", "ramp", "compare", "workers") + scenarios
    if args.transports and alone:
        return (
            f"--transports starts its own null servers and runs alone, not with {' '.join(alone)}"
        )
    if args.index_items and not args.compare:
        return "--index-items goes with --compare only"
    if args.workers is not None and (clash := given("target", "compare")):
        return f"--workers is for the servers this command starts, not with {' '.join(clash)}"
    if scenarios and (clash := given("target", "null", "ramp")):
        return (
            f"{' '.join(scenarios)}: a scenario needs one run against a Recommend server this "
            f"command starts, not {' '.join(clash)}"
        )
    return None


def cmd_loadtest(config: Config, args: argparse.Namespace) -> None:
    from loadtest.run import compare, ramp, run
    from recsys import artifacts

    if error := _loadtest_mode_error(args):
        raise ConfigError(error)

    overrides = {
        key: value
        for key, value in {
            "rate": args.rate,
            "seconds": args.seconds,
            "users": args.users,
            "slo_p99_ms": args.slo_p99_ms,
            "slo_p999_ms": args.slo_p999_ms,
        }.items()
        if value is not None
    }
    config = config.with_overrides({"loadtest": overrides})
    if args.workers is not None:
        config = config.with_overrides({"serving": {"processes": args.workers}})
    if args.target is None and not args.null:
        artifacts.current(config.indexes_dir)  # fails with what to run when nothing is published
    out = args.out or config.paths.state / "loadtest" / time.strftime("%Y%m%dT%H%M%SZ")
    if args.compare:
        compare(config, load_dataset(config), out, index_items=args.index_items)
        return
    if args.transports:
        from loadtest.transports import compare as transports

        transports(config, load_dataset(config), out, args.transports, rounds=args.rounds)
        return
    if args.ramp:
        ramp(
            config,
            load_dataset(config),
            out,
            args.ramp,
            target=args.target,
            null=args.null,
            baseline=args.baseline,
        )
        return
    run(
        config,
        load_dataset(config),
        out,
        target=args.target,
        null=args.null,
        baseline=args.baseline,
        swap=args.swap,
        ingest=args.ingest,
    )


def cmd_bench(config: Config, args: argparse.Namespace) -> None:
    from benchmarks.serving import run
    from recsys import artifacts

    artifacts.current(config.indexes_dir)  # fails with what to run when nothing is published
    run(config, load_dataset(config), calls=args.calls, k=args.k, index_items=args.index_items)


def cmd_bench_index(config: Config, args: argparse.Namespace) -> None:
    if args.engine == "spark":
        from benchmarks import index_engines as bench_engines

        if args.master:
            config = config.with_overrides({"index": {"spark_master": args.master}})
        bench_engines.run(config, load_dataset(config), args.items)
        return
    from benchmarks.index import run

    artifacts_out = config.paths.artifacts / "bench" / "index_recall_latency.png"
    run(config, load_dataset(config), args.items, args.png or artifacts_out)


def cmd_bench_ingest(config: Config, args: argparse.Namespace) -> None:
    from benchmarks.ingest import run_bench

    run_bench(config, load_dataset(config), events=args.events)


def cmd_bench_freshness(config: Config, args: argparse.Namespace) -> None:
    from benchmarks.ingest import Outage, run_freshness
    from recsys import artifacts

    artifacts.current(config.indexes_dir)  # the server needs a published model and index
    ml = load_dataset(config)
    outage = None
    if args.redis_outage:
        if config.feast.online_store != "redis":
            raise ConfigError(
                "--redis-outage needs the Redis store: RECSYS_FEAST__ONLINE_STORE=redis"
            )
        at_s, for_s = args.redis_outage
    for rate in args.rates:
        if args.redis_outage:
            outage = Outage(at_s, for_s)
        run_freshness(config, ml, rate=rate, seconds=args.seconds, outage=outage)


def cmd_demo(config: Config, args: argparse.Namespace) -> None:
    from commands.demo import run_demo

    run_demo(config, users=args.users, events=args.events)


class _Help(argparse.HelpFormatter):
    """Shows each option's default after its help, unless it has none worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "%(default)" in text:
            return text
        return f"{text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recsys", description=__doc__, formatter_class=_Help)
    config_help = "YAML config file (default: RECSYS_CONFIG, else the embedded defaults)"
    parser.add_argument("--config", type=Path, help=config_help)
    sub = parser.add_subparsers(dest="command", required=True)
    commands: dict[str, tuple[Callable[[Config, argparse.Namespace], None], str]] = {
        "fetch-data": (cmd_fetch_data, "download and check MovieLens-100K"),
        "fetch-kafka": (cmd_fetch_kafka, "download the Kafka broker jars from Maven Central"),
        "train": (cmd_train, "train the two towers and publish a model version"),
        "evaluate": (
            cmd_evaluate,
            "train and score under the stream/temporal/RecBole/TFRS protocols",
        ),
        "build-index": (cmd_build_index, "embed the catalog and publish a FAISS index version"),
        "index": (cmd_index, "list index versions (* = current) or roll back CURRENT"),
        "init-features": (cmd_init_features, "create the Feast store and backfill features"),
        "serve": (cmd_serve, "run the gRPC Recommend server"),
        "ingest": (cmd_ingest, "consume events from Kafka into the online store"),
        "replay": (cmd_replay, "produce ML-100K (or synthetic) interactions to Kafka in order"),
        "recommend": (cmd_recommend, "call Recommend on a running server"),
        "admin": (cmd_admin, "status, reload or rollback of a running server (admin port)"),
        "loadtest": (
            cmd_loadtest,
            "Locust at a fixed rate; µs histogram, plots, summary; fails on the latency SLO",
        ),
        "broker": (cmd_broker, "run a local single-node Kafka broker (foreground)"),
        "bench": (
            cmd_bench,
            "Recommend latency and stage costs vs a null handler (runtimes, stores side by side)",
        ),
        "bench-index": (cmd_bench_index, "1M-item rebuild, search latency/recall, memory"),
        "bench-ingest": (cmd_bench_ingest, "ingest throughput from a local broker"),
        "bench-freshness": (
            cmd_bench_freshness,
            "event → online store → Recommend latency at fixed rates",
        ),
        "demo": (cmd_demo, "the whole loop end to end, then stop everything"),
    }
    parsers = {}
    for name, (func, help_text) in commands.items():
        p = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            formatter_class=_Help,
        )
        p.set_defaults(func=func)
        # Also after the command (`recsys serve --config x.yaml`); SUPPRESS keeps a value
        # given before it when this one is not.
        p.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=config_help)
        parsers[name] = p
    parsers["replay"].add_argument("--rate", type=float, help="events/s (default: max)")
    parsers["replay"].add_argument("--limit", type=int, help="send only the first N events")
    parsers["replay"].add_argument(
        "--all", action="store_true", help="replay all ratings, not only the held-out future"
    )
    parsers["replay"].add_argument(
        "--synthetic",
        type=int,
        metavar="N",
        help="send N synthetic events (power-law users and items, 5%% new users, time: now)",
    )
    parsers["replay"].add_argument("--seed", type=int, default=0, help="of --synthetic")
    parsers["serve"].add_argument(
        "--null", action="store_true", help="answer with an empty list (latency baseline)"
    )
    parsers["serve"].add_argument(
        "--workers",
        type=int,
        help="server processes sharing the port (SO_REUSEPORT; serving.processes); worker i's "
        "admin and metrics ports are serving.admin_port + i and serving.metrics_port + i",
    )
    rec = parsers["recommend"]
    rec.add_argument("--user", required=True, help="the user id to recommend for")
    rec.add_argument("--k", type=int, default=10, help="how many items")
    rec.add_argument("--exclude", nargs="*", default=[], help="item ids not to return")
    rec.add_argument("--genres", nargs="*", default=[], help="only items with one of these")
    rec.add_argument("--not-genres", nargs="*", default=[], help="no items with any of these")
    rec.add_argument("--include-seen", action="store_true", help="keep recently seen items")
    rec.add_argument("--time-ms", type=int, default=0, help="request time (default: now)")
    rec.add_argument("--target", help="host:port (default: serving.host:serving.port)")
    rec.add_argument("--timeout", type=float, default=5.0, help="the call's deadline, seconds")
    lt = parsers["loadtest"]
    lt.add_argument("--target", help="host:port of a running server (default: start one)")
    lt.add_argument("--null", action="store_true", help="load a null-handler server instead")
    lt.add_argument(
        "--workers", type=int, help="server processes for the servers it starts (serve --workers)"
    )
    lt.add_argument(
        "--baseline", action="store_true", help="first the same run against a null handler"
    )
    lt.add_argument("--rate", type=float, help="requests/s (loadtest.rate)")
    lt.add_argument(
        "--ramp",
        type=float,
        nargs="+",
        help="step through these rates instead; report the highest that holds the SLO",
    )
    lt.add_argument(
        "--transports",
        type=float,
        nargs="+",
        metavar="RATE",
        help="Python gRPC alone: threaded vs grpc.aio null servers at these rates, alternating",
    )
    lt.add_argument(
        "--rounds", type=int, default=2, help="rounds per rate and kind of --transports"
    )
    lt.add_argument(
        "--compare",
        action="store_true",
        help="the same load against each variant in turn: null, tower runtimes, stores, indexes",
    )
    lt.add_argument(
        "--index-items",
        type=int,
        default=0,
        help="with --compare: a synthetic catalog of this size, IVF and flat (e.g. 1000000)",
    )
    lt.add_argument(
        "--swap",
        action="store_true",
        help="swap to a freshly built index version halfway through; p99 during it vs the rest",
    )
    lt.add_argument(
        "--ingest",
        type=float,
        metavar="EVENTS_PER_S",
        help="stream events through Kafka into the store the server reads, all run long",
    )
    lt.add_argument("--seconds", type=float, help="duration (loadtest.seconds)")
    lt.add_argument("--users", type=int, help="simulated callers (loadtest.users)")
    lt.add_argument("--slo-p99-ms", type=float, help="loadtest.slo_p99_ms")
    lt.add_argument("--slo-p999-ms", type=float, help="loadtest.slo_p999_ms")
    lt.add_argument("--out", type=Path, help="results folder (default: .state/loadtest/<time>)")
    admin = parsers["admin"]
    admin.add_argument(
        "action", choices=["status", "reload", "rollback"], help="what to ask the server"
    )
    admin.add_argument("--to", help="rollback: the index version (default: the previous one)")
    admin.add_argument("--target", help="host:port (default: serving.admin_host:admin_port)")
    admin.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="the call's deadline, seconds (a reload verifies and warms)",
    )
    ev = parsers["evaluate"]
    ev.add_argument(
        "--protocol",
        choices=("stream", "temporal", "recbole", "tfrs", "all"),
        default="all",
        help="the evaluation protocol (stream is the primary one)",
    )
    ev.add_argument("--ablation", action="store_true", help="user-tower ablation (stream)")
    ev.add_argument("--export-splits", type=Path, help="write each split as RecBole atomic files")
    ev.add_argument("--out", type=Path, help="results JSON (default: artifacts/evaluation.json)")
    bi = parsers["build-index"]
    source = bi.add_mutually_exclusive_group()
    source.add_argument("--synthetic", type=int, metavar="N", help="a synthetic catalog of N items")
    bi.add_argument(
        "--type",
        choices=("auto", "flat", "ivf", "ivf-sq8", "hnsw"),
        help="the FAISS index kind (default: index.type; auto picks by catalog size)",
    )
    source.add_argument(
        "--catalog",
        type=Path,
        metavar="PARQUET",
        help="index this Parquet catalog (file or folder; columns item_id, title, "
        "release_year, genres) instead of index.catalog / ML-100K's",
    )
    bi.add_argument(
        "--engine",
        choices=("local", "spark"),
        help="where the catalog is embedded and indexed (default: index.engine)",
    )
    bi.add_argument(
        "--master",
        metavar="URL",
        help="the Spark master for --engine spark (default: index.spark_master)",
    )
    bi.add_argument("--no-publish", action="store_true", help="write the version, keep CURRENT")
    parsers["index"].add_argument(
        "action", choices=("list", "rollback"), help="list the versions or roll CURRENT back"
    )
    parsers["index"].add_argument("--to", help="rollback: this version (default: the previous)")
    parsers["bench"].add_argument("--calls", type=int, default=2000, help="calls per variant")
    parsers["bench"].add_argument(
        "--index-items", type=int, default=0, help="also serve a synthetic index this large"
    )
    parsers["bench"].add_argument("--k", type=int, default=10, help="items per call")
    parsers["ingest"].add_argument(
        "--rebuild",
        action="store_true",
        help="restore the offline backfill, fold the whole retained topic into the online "
        "store again, and exit (after a store loss; stop the live ingester first)",
    )
    parsers["ingest"].add_argument(
        "--metrics-port", type=int, default=0, help="serve Prometheus /metrics (0: off)"
    )
    parsers["ingest"].add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="the address /metrics binds to (0.0.0.0 in a container, for Prometheus)",
    )
    parsers["bench-index"].add_argument(
        "--items", type=int, default=1_000_000, help="synthetic catalog size"
    )
    parsers["bench-index"].add_argument("--png", type=Path, help="recall/latency plot path")
    parsers["bench-index"].add_argument(
        "--engine",
        choices=["local", "spark"],
        default="local",
        help="spark: rebuild on both engines from one Parquet catalog, phase by phase",
    )
    parsers["bench-index"].add_argument(
        "--master", help="Spark master (default: index.spark_master)"
    )
    parsers["bench-ingest"].add_argument("--events", type=int, help="default: all ratings")
    fresh = parsers["bench-freshness"]
    fresh.add_argument(
        "--rates", type=float, nargs="+", default=[1000.0, 5000.0], help="events/s, one run each"
    )
    fresh.add_argument("--seconds", type=float, default=30.0, help="length of each run")
    fresh.add_argument(
        "--redis-outage",
        type=float,
        nargs=2,
        metavar=("AT_S", "FOR_S"),
        help="SIGKILL the Redis store AT_S seconds into the stream, restart it FOR_S later",
    )
    parsers["demo"].add_argument(
        "--users", type=int, default=3, help="users whose recommendations are shown"
    )
    parsers["demo"].add_argument(
        "--events", type=int, default=5, help="events streamed per shown user"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The server's logs are for machines (JSON lines); the other commands' are for people.
    logs.configure(structured=args.command == "serve")
    config: Config | None = None
    try:
        config = load_config(args.config)
        args.func(config, args)
    except RecsysError as exc:
        print(f"recsys {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        explained = explain(exc, config)
        if explained is None:
            raise
        print(f"recsys {args.command}: error: {explained}", file=sys.stderr)
        return 2
    return 0


def explain(exc: BaseException, config: Config | None) -> str | None:
    """What to do about a dependency's error that a user causes by setup, not by a bug (a
    broker not running, a store not started or never initialised); ``None`` for anything
    else, which keeps its traceback."""
    import sqlite3

    from feast.errors import FeastObjectNotFoundException
    from kafka.errors import KafkaConnectionError, KafkaTimeoutError

    if config is None:
        return None
    if isinstance(exc, KafkaConnectionError) or (
        isinstance(exc, KafkaTimeoutError) and "bootstrap" in str(exc)
    ):
        return (
            f"no Kafka broker answers at {config.kafka.bootstrap_servers}: start one with "
            "`recsys broker` (or `make broker`), or set kafka.bootstrap_servers"
        )
    never_initialised = (
        f"the feature store under {config.feast_dir} was never initialised: run "
        "`recsys init-features`"
    )
    if isinstance(exc, FeastObjectNotFoundException):
        return never_initialised
    if isinstance(exc, sqlite3.OperationalError) and "no such table" in str(exc):
        return never_initialised
    try:
        from redis.exceptions import ConnectionError, TimeoutError
    except ImportError:
        return None
    if isinstance(exc, ConnectionError | TimeoutError):
        return (
            f"the Redis online store at {config.feast.redis} does not answer ({exc}): start "
            "redis-server there, or set feast.online_store: sqlite"
        )
    return None


if __name__ == "__main__":
    sys.exit(main())
