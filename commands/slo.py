"""``recsys loadtest``: Locust against the gRPC API, gating the latency SLO."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import get_args

from commands.command import Command
from commands.dataset import load_dataset
from recsys.config import Config, IndexType
from recsys.errors import ConfigError

INDEX_KINDS = get_args(IndexType)
DEFAULT_KINDS = ("auto", "flat")
"""``--compare --index-items``' index kinds by default: the one served and exact search."""


def mode_error(args: argparse.Namespace) -> str | None:
    """Why these flags cannot go together (None: they can)."""

    def given(*flags: str) -> list[str]:
        return [f"--{f}" for f in flags if getattr(args, f.replace("-", "_"))]

    if args.ingest is not None and args.ingest <= 0:
        return f"--ingest is events per second, more than 0 (got {args.ingest:g})"
    if args.catalog is not None and args.catalog <= 0:
        return f"--catalog is changes per second, more than 0 (got {args.catalog:g})"
    scenarios = given("swap", "ingest", "catalog")
    if args.catalog and (clash := given("swap", "ingest")):
        return f"--catalog runs alone, not with {' '.join(clash)}"
    if args.compare and (clash := given("target", "null", "baseline", "ramp") + scenarios):
        return f"--compare starts its own servers and runs alone, not with {' '.join(clash)}"
    alone = given("target", "null", "baseline", "ramp", "compare", "workers") + scenarios
    if args.transports and alone:
        return (
            f"--transports starts its own null servers and runs alone, not with {' '.join(alone)}"
        )
    if args.index_items and not args.compare:
        return "--index-items goes with --compare only"
    if args.index_kinds and not args.index_items:
        return "--index-kinds goes with --compare --index-items only"
    if args.workers is not None and (clash := given("target", "compare")):
        return f"--workers is for the servers this command starts, not with {' '.join(clash)}"
    if scenarios and (clash := given("target", "null", "ramp")):
        return (
            f"{' '.join(scenarios)}: a scenario needs one run against a Recommend server this "
            f"command starts, not {' '.join(clash)}"
        )
    return None


def loadtest(config: Config, args: argparse.Namespace) -> None:
    from loadtest.compare import compare
    from loadtest.run import ramp, run
    from recsys import artifacts

    if error := mode_error(args):
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
        kinds = tuple(args.index_kinds or DEFAULT_KINDS)
        compare(config, load_dataset(config), out, index_items=args.index_items, kinds=kinds)
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
        catalog=args.catalog,
    )


def loadtest_arguments(lt: argparse.ArgumentParser) -> None:
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
        "--index-kinds",
        nargs="+",
        choices=INDEX_KINDS,
        help=f"with --index-items: the index kinds served on SQLite (default: "
        f"{' '.join(DEFAULT_KINDS)}; the one `auto` picks is also served on Redis)",
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
    lt.add_argument(
        "--catalog",
        type=float,
        metavar="CHANGES_PER_S",
        help="stream item upserts and deletes onto the catalog topic the server follows; "
        "upsert → recommendable and delete → never served again, p50/p99",
    )
    lt.add_argument("--seconds", type=float, help="duration (loadtest.seconds)")
    lt.add_argument("--users", type=int, help="simulated callers (loadtest.users)")
    lt.add_argument("--slo-p99-ms", type=float, help="loadtest.slo_p99_ms")
    lt.add_argument("--slo-p999-ms", type=float, help="loadtest.slo_p999_ms")
    lt.add_argument("--out", type=Path, help="results folder (default: .state/loadtest/<time>)")


COMMANDS = (
    Command(
        "loadtest",
        "Locust at a fixed rate; µs histogram, plots, summary; fails on the latency SLO",
        loadtest,
        loadtest_arguments,
    ),
)
