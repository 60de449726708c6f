"""``recsys catalog put|delete|synthetic``: item changes onto the catalog topic."""

from __future__ import annotations

import argparse
import json
import time

from commands.command import Command
from recsys.config import Config
from recsys.errors import ConfigError, DataError


def catalog(config: Config, args: argparse.Namespace) -> None:
    from catalog.events import check, encode_delete, encode_upsert
    from catalog.produce import send
    from recsys.data.schema import configured_schema

    time_ms = args.time_ms or int(time.time() * 1000)
    if args.action == "synthetic":
        _synthetic(config, args, time_ms)
        return
    if not args.item_id:
        raise ConfigError(f"catalog {args.action} needs the item's id")
    if args.action == "put":
        try:
            features = json.loads(args.features)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--features is not JSON: {exc}") from exc
        if not isinstance(features, dict):
            raise ConfigError('--features must be a JSON object: {"name": value, ...}')
        change = check(
            args.item_id, features, configured_schema(config)
        )  # refused here, not dead-lettered
        assert change.features is not None
        encoded = encode_upsert(args.item_id, features, time_ms)
    else:
        if args.features != "{}":
            raise DataError("a delete takes no --features")
        encoded = encode_delete(args.item_id, time_ms)
    (sent,) = send(config, [encoded])
    print(
        f"item {args.item_id!r} {'upserted' if args.action == 'put' else 'deleted'}: "
        f"{config.kafka.catalog_topic} partition {sent.partition} offset {sent.offset}"
    )


def _synthetic(config: Config, args: argparse.Namespace, time_ms: int) -> None:
    from catalog.produce import send
    from catalog.synthetic import synthetic_changes
    from commands.dataset import load_dataset

    if args.item_id:
        raise ConfigError("catalog synthetic makes its own items; give no item id")
    ml = load_dataset(config)
    changes = synthetic_changes(
        ml.items,
        ml.schema,
        args.events,
        delete_share=args.delete_share,
        seed=args.seed,
        start_ms=time_ms,
    )
    started = time.monotonic()
    send(config, [(k, v) for _, k, v in changes], rate=args.rate or None)
    deletes = sum(kind == "delete" for kind, _, _ in changes)
    print(
        f"{len(changes):,} item changes ({len(changes) - deletes:,} new items, {deletes:,} "
        f"deletes) sent to {config.kafka.catalog_topic} in {time.monotonic() - started:.1f}s"
    )


def catalog_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "action",
        choices=["put", "delete", "synthetic"],
        help="upsert the item, withdraw it, or send a synthetic stream of changes",
    )
    p.add_argument("item_id", nargs="?", help="put, delete: the item, as the catalog names it")
    p.add_argument(
        "--features",
        default="{}",
        help='put: the item\'s features by schema name, as JSON ({"genres": ["Comedy"], '
        '"title": "…", "release_year": 2026}); a declared feature left out is missing',
    )
    p.add_argument("--time-ms", type=int, help="when the change was made (default: now)")
    p.add_argument("--events", type=int, default=1000, help="synthetic: changes to send")
    p.add_argument(
        "--rate", type=float, default=100.0, help="synthetic: changes a second (0: at once)"
    )
    p.add_argument(
        "--delete-share", type=float, default=0.2, help="synthetic: the share that are deletes"
    )
    p.add_argument("--seed", type=int, default=0, help="synthetic: the stream's seed")


COMMANDS = (
    Command(
        "catalog",
        "send an item change (put: new or replaced, delete: withdrawn) to the catalog topic",
        catalog,
        catalog_arguments,
    ),
)
