"""``recsys bench``, ``bench-index``, ``bench-ingest``, ``bench-rank``, ``bench-catalog``,
``bench-fleet`` and ``bench-freshness``: the benchmarks behind BENCHMARKS.md, each printing
its numbers."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from commands.command import Command
from commands.dataset import load_dataset
from recsys.config import Config
from recsys.errors import ConfigError


def bench_serving(config: Config, args: argparse.Namespace) -> None:
    from benchmarks.serving import run
    from recsys import artifacts

    artifacts.current(config.indexes_dir)  # fails with what to run when nothing is published
    run(config, load_dataset(config), calls=args.calls, k=args.k, index_items=args.index_items)


def bench_serving_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--calls", type=int, default=2000, help="calls per variant")
    p.add_argument(
        "--index-items", type=int, default=0, help="also serve a synthetic index this large"
    )
    p.add_argument("--k", type=int, default=10, help="items per call")


def bench_index(config: Config, args: argparse.Namespace) -> None:
    if args.factories:
        from benchmarks import index_kinds

        if args.engine != "local":
            raise ConfigError("--factories builds locally; drop --engine spark")
        index_kinds.run(config, load_dataset(config), args.items, args.factories)
        return
    if args.engine == "spark":
        from benchmarks import index_engines as bench_engines

        if args.master:
            config = config.with_overrides({"index": {"spark_master": args.master}})
        bench_engines.run(config, load_dataset(config), args.items)
        return
    from benchmarks.index import run

    artifacts_out = config.paths.artifacts / "bench" / "index_recall_latency.png"
    run(config, load_dataset(config), args.items, args.png or artifacts_out)


def bench_index_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--items", type=int, default=1_000_000, help="synthetic catalog size")
    p.add_argument("--png", type=Path, help="recall/latency plot path")
    p.add_argument(
        "--engine",
        choices=["local", "spark"],
        default="local",
        help="spark: rebuild on both engines from one Parquet catalog, phase by phase",
    )
    p.add_argument("--master", help="Spark master (default: index.spark_master)")
    p.add_argument(
        "--factories",
        nargs="+",
        metavar="SPEC",
        help="instead: these FAISS factory strings side by side on one catalog (e.g. "
        '"IVF4096,Flat" "IVF4096,SQ8" "IVF4096,PQ32x4fsr,RFlat" "HNSW32,Flat"), each at its '
        "cheapest setting holding index.min_recall, one query at a time",
    )


def bench_ingest(config: Config, args: argparse.Namespace) -> None:
    from benchmarks.ingest import run_bench

    run_bench(config, load_dataset(config), events=args.events)


def bench_ingest_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--events", type=int, help="default: all ratings")


def bench_freshness(config: Config, args: argparse.Namespace) -> None:
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


def bench_freshness_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--rates", type=float, nargs="+", default=[1000.0, 5000.0], help="events/s, one run each"
    )
    p.add_argument("--seconds", type=float, default=30.0, help="length of each run")
    p.add_argument(
        "--redis-outage",
        type=float,
        nargs=2,
        metavar=("AT_S", "FOR_S"),
        help="SIGKILL the Redis store AT_S seconds into the stream, restart it FOR_S later",
    )


def bench_rank(config: Config, args: argparse.Namespace) -> None:
    from benchmarks.rank_stage import run

    ml = load_dataset(config)
    run(config, sorted(ml.interactions["user_id"].unique()), args.batches, args.calls)


def bench_rank_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16], help="batch sizes")
    p.add_argument("--calls", type=int, default=800, help="requests per batch size")


def bench_catalog(config: Config, args: argparse.Namespace) -> None:
    from benchmarks.catalog import run
    from recsys import artifacts

    artifacts.current(config.indexes_dir)  # fails with what to run when nothing is published
    if args.rate is not None and args.rate <= 0:
        raise ConfigError(f"--rate is changes per second, more than 0 (got {args.rate:g})")
    if args.index_items and args.rate is not None:
        raise ConfigError("--index-items times the overlay's search; not with --rate")
    if args.rate is None:
        ml = load_dataset(config)
        if args.index_items:
            from benchmarks.serving import large_index

            config = large_index(config, ml, args.index_items)
        run(config, ml, args.overlay, args.calls)
        return
    from loadtest.run import run as loadtest

    overrides = {"rate": args.requests, "seconds": args.seconds}
    config = config.with_overrides({"loadtest": {k: v for k, v in overrides.items() if v}})
    out = args.out or config.paths.state / "bench-catalog" / time.strftime("%Y%m%dT%H%M%SZ")
    loadtest(config, load_dataset(config), out, catalog=args.rate)


def bench_catalog_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--overlay",
        type=int,
        nargs="+",
        default=[1_000, 10_000, 100_000],
        help="overlay sizes (new items) to time the search with",
    )
    p.add_argument("--calls", type=int, default=1000, help="searches per variant")
    p.add_argument(
        "--index-items",
        type=int,
        default=0,
        help="on a synthetic catalog of this many items (built once per model; e.g. 1000000)",
    )
    p.add_argument(
        "--rate",
        type=float,
        metavar="CHANGES_PER_S",
        help="instead: item changes at this rate beside Locust's load (recsys loadtest "
        "--catalog): upsert → recommendable, delete → never served again, p50/p99",
    )
    p.add_argument("--requests", type=float, help="with --rate: requests/s (loadtest.rate)")
    p.add_argument("--seconds", type=float, help="with --rate: duration (loadtest.seconds)")
    p.add_argument("--out", type=Path, help="with --rate: results folder")


def bench_fleet(config: Config, args: argparse.Namespace) -> None:
    from benchmarks.fleet import run
    from recsys import artifacts

    artifacts.current(config.indexes_dir)  # the workers need a published model and index
    run(config, rate=args.rate, workers=args.workers, seconds=args.seconds)


def bench_fleet_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rate", type=float, default=1000.0, help="Recommend calls/s")
    p.add_argument("--workers", type=int, default=2, help="server processes")
    p.add_argument("--seconds", type=float, default=15.0, help="length of the steady run")


COMMANDS = (
    Command(
        "bench",
        "Recommend latency and stage costs vs a null handler (runtimes, stores side by side)",
        bench_serving,
        bench_serving_arguments,
    ),
    Command(
        "bench-index",
        "1M-item rebuild, search latency/recall, memory",
        bench_index,
        bench_index_arguments,
    ),
    Command(
        "bench-ingest",
        "ingest throughput from a local broker",
        bench_ingest,
        bench_ingest_arguments,
    ),
    Command(
        "bench-rank",
        "the second stage's cost a request by batch size, with and without its first cut",
        bench_rank,
        bench_rank_arguments,
    ),
    Command(
        "bench-catalog",
        "the catalog overlay's cost: search stage, memory and applying a batch, by size",
        bench_catalog,
        bench_catalog_arguments,
    ),
    Command(
        "bench-fleet",
        "serve --workers under faults: a worker killed, a rolling restart, garbage floods",
        bench_fleet,
        bench_fleet_arguments,
    ),
    Command(
        "bench-freshness",
        "event → online store → Recommend latency at fixed rates",
        bench_freshness,
        bench_freshness_arguments,
    ),
)
