"""``recsys train`` and ``recsys evaluate``: the model, trained and compared."""

from __future__ import annotations

import argparse
from pathlib import Path

from commands.command import Command
from commands.dataset import load_dataset
from recsys.config import Config


def train_model(config: Config, args: argparse.Namespace) -> None:
    from training.train import train

    train(config, load_dataset(config))


def evaluate_model(config: Config, args: argparse.Namespace) -> None:
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


def evaluate_arguments(ev: argparse.ArgumentParser) -> None:
    ev.add_argument(
        "--protocol",
        choices=("stream", "temporal", "recbole", "tfrs", "all"),
        default="all",
        help="the evaluation protocol (stream is the primary one)",
    )
    ev.add_argument("--ablation", action="store_true", help="user-tower ablation (stream)")
    ev.add_argument("--export-splits", type=Path, help="write each split as RecBole atomic files")
    ev.add_argument("--out", type=Path, help="results JSON (default: artifacts/evaluation.json)")


COMMANDS = (
    Command("train", "train the two towers and publish a model version", train_model),
    Command(
        "evaluate",
        "train and score under the stream/temporal/RecBole/TFRS protocols",
        evaluate_model,
        evaluate_arguments,
    ),
)
