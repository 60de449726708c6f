"""The configured data set, for every command that needs one, and ``recsys fetch-data``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from commands.command import Command
from recsys.config import Config

if TYPE_CHECKING:  # the data module pulls in pandas; keep `recsys --help` fast
    from recsys.data import MovieLens


def load_dataset(config: Config) -> MovieLens:
    """The configured data set: an official ml-100k folder if given, else the download."""
    from recsys.data import fetch_ml100k, load_movielens

    path = config.paths.dataset or fetch_ml100k(config.paths.data_dir)
    return load_movielens(path)


def fetch_data(config: Config, args: argparse.Namespace) -> None:
    ml = load_dataset(config)
    print(
        f"ML-100K ready: {len(ml.interactions):,} ratings, {len(ml.users):,} users, "
        f"{len(ml.items):,} items"
    )


COMMANDS = (Command("fetch-data", "download and check MovieLens-100K", fetch_data),)
