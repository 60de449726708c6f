"""``recsys catalog put|delete``: one item change onto the catalog topic."""

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


def catalog_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["put", "delete"], help="upsert the item, or withdraw it")
    p.add_argument("item_id", help="the item, as the catalog names it")
    p.add_argument(
        "--features",
        default="{}",
        help='put: the item\'s features by schema name, as JSON ({"genres": ["Comedy"], '
        '"title": "…", "release_year": 2026}); a declared feature left out is missing',
    )
    p.add_argument("--time-ms", type=int, help="when the change was made (default: now)")


COMMANDS = (
    Command(
        "catalog",
        "send an item change (put: new or replaced, delete: withdrawn) to the catalog topic",
        catalog,
        catalog_arguments,
    ),
)
