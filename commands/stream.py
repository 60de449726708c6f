"""``recsys init-features``, ``recsys ingest`` and ``recsys replay``: the feature store,
backfilled offline and kept fresh from the event stream."""

from __future__ import annotations

import argparse
import signal
import threading
import time

from commands.command import Command
from commands.dataset import load_dataset
from recsys.config import Config


def init_features(config: Config, args: argparse.Namespace) -> None:
    from features.backfill import initialise
    from recsys.data import temporal_split

    ml = load_dataset(config)
    past, _ = temporal_split(ml.interactions, config.model.test_fraction)
    initialise(config, ml, past)
    print(f"feature store ready in {config.feast_dir}: profiles materialized, activity backfilled")


def ingest(config: Config, args: argparse.Namespace) -> None:
    from catalog.dead_letters import CatalogChecker
    from features.stream.fold import IngestStats
    from features.stream.ingester import Ingester
    from features.stream.metrics import IngestMetrics
    from index.versions import published_catalog
    from recsys.data.schema import configured_schema

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    catalog = published_catalog(config.indexes_dir)
    ingester = Ingester.open(config, catalog, check_store=not args.rebuild)
    print(f"ingesting {config.kafka.topic} from {config.kafka.bootstrap_servers}", flush=True)
    if catalog is None:
        print("no published index: item ids are not checked against a catalog", flush=True)
    if args.rebuild:
        started = time.monotonic()
        print(
            "restoring profiles and the backfilled activity from the offline files, then "
            f"folding every retained event of {config.kafka.topic} again",
            flush=True,
        )
        stats = ingester.rebuild(stop)
        print(f"rebuilt in {time.monotonic() - started:.1f}s: {stats.summary()}", flush=True)
        return
    # The catalog topic's dead letters, written once (every server only skips them).
    checker = CatalogChecker(config, configured_schema(config))
    checking = threading.Thread(target=checker.run, args=(stop,), name="catalog-check", daemon=True)
    checking.start()
    print(
        f"checking {config.kafka.catalog_topic}: unusable item changes go to "
        f"{config.kafka.catalog_dead_letter_topic}",
        flush=True,
    )
    metrics = IngestMetrics()
    if args.metrics_port:
        metrics.serve(args.metrics_port, args.metrics_host)
        print(f"metrics on http://{args.metrics_host}:{args.metrics_port}/metrics", flush=True)
    last_report = 0.0

    def report(stats: IngestStats) -> None:
        nonlocal last_report
        # One progress line every couple of seconds, not one per batch.
        if time.monotonic() - last_report >= 2.0:
            last_report = time.monotonic()
            print(stats.summary(), flush=True)

    try:
        stats = ingester.run(stop, metrics=metrics, on_batch=report)
    finally:
        stop.set()
        checking.join(timeout=10)
    print("ingester stopped: " + stats.summary(), flush=True)
    print(
        f"catalog check stopped: {checker.stats.checked:,} checked, "
        f"{checker.stats.dead_letters:,} dead-lettered",
        flush=True,
    )


def ingest_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--rebuild",
        action="store_true",
        help="restore the offline backfill, fold the whole retained topic into the online "
        "store again, and exit (after a store loss; stop the live ingester first)",
    )
    p.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus /metrics (0: off)")
    p.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="the address /metrics binds to (0.0.0.0 in a container, for Prometheus)",
    )


def replay_events(config: Config, args: argparse.Namespace) -> None:
    from features.stream.replay import replay
    from recsys.data import temporal_split

    ml = load_dataset(config)
    _, future = temporal_split(ml.interactions, config.model.test_fraction)
    rows = ml.interactions if args.all else future
    if args.synthetic:
        from features.stream.synthetic import synthetic_interactions

        rows = synthetic_interactions(
            ml, args.synthetic, seed=args.seed, per_second=args.rate or 1000.0
        )
    if args.limit:
        rows = rows.head(args.limit)
    sent = replay(config, rows, rate=args.rate)
    print(f"sent {sent:,} events to {config.kafka.topic}")


def replay_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rate", type=float, help="events/s (default: max)")
    p.add_argument("--limit", type=int, help="send only the first N events")
    p.add_argument(
        "--all", action="store_true", help="replay all ratings, not only the held-out future"
    )
    p.add_argument(
        "--synthetic",
        type=int,
        metavar="N",
        help="send N synthetic events (power-law users and items, 5%% new users, time: now)",
    )
    p.add_argument("--seed", type=int, default=0, help="of --synthetic")


COMMANDS = (
    Command("init-features", "create the Feast store and backfill features", init_features),
    Command("ingest", "consume events from Kafka into the online store", ingest, ingest_arguments),
    Command(
        "replay",
        "produce ML-100K (or synthetic) interactions to Kafka in order",
        replay_events,
        replay_arguments,
    ),
)
