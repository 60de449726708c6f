"""The configured data set, for every command that needs one, and ``recsys fetch-data``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from commands.command import Command
from recsys.config import Config

if TYPE_CHECKING:  # the data module pulls in pandas; keep `recsys --help` fast
    from recsys.data.dataset import Dataset


def load_dataset(config: Config) -> Dataset:
    """The configured data set, read and checked through its schema. For MovieLens-100K's
    own schema its files are fetched and converted first (once)."""
    from recsys.data.dataset import load_dataset as read
    from recsys.data.movielens import prepare_ml100k
    from recsys.data.schema import BUILTIN, configured_schema

    schema = configured_schema(config)
    if schema.path == BUILTIN.absolute():
        prepare_ml100k(config.paths.data_dir, config.paths.dataset)
    return read(schema)


def fetch_data(config: Config, args: argparse.Namespace) -> None:
    data = load_dataset(config)
    print(
        f"{data.name} ready: {len(data.interactions):,} interactions, {len(data.users):,} "
        f"users with a profile, {len(data.items):,} items"
    )


def generate_shop(config: Config, args: argparse.Namespace) -> None:
    from recsys.data.shop import generate

    out = args.out or config.paths.data_dir / "shop"
    schema = generate(out, items=args.items, interactions=args.interactions, seed=args.seed)
    print(f"use it with RECSYS_DATA__SCHEMA={schema}")


def shop_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--items", type=int, default=1_000_000, help="catalog size")
    parser.add_argument("--interactions", type=int, default=10_000_000, help="events")
    parser.add_argument("--seed", type=int, default=0, help="the same seed draws the same shop")
    parser.add_argument("--out", type=Path, help="folder (default: paths.data_dir/shop)")


COMMANDS = (
    Command("fetch-data", "fetch (MovieLens-100K) and check the configured data set", fetch_data),
    Command(
        "generate-shop",
        "write a synthetic shop of any size and its data schema (recsys/data/shop.py)",
        generate_shop,
        shop_arguments,
    ),
)
