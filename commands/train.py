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


def candidates(config: Config, args: argparse.Namespace) -> None:
    """Each candidate source's recall on the current model's stream walk (see
    ``evaluation.candidates``)."""
    import json

    from evaluation.blend import evaluate_blend
    from evaluation.candidates import candidates_table, evaluate_candidates
    from evaluation.experiments import item_vectors
    from evaluation.protocols import temporal_split_protocol
    from evaluation.stream import StreamEvaluator, select_baselines
    from recsys import artifacts
    from recsys.errors import RecsysError
    from towers.encoding import FeatureSpace
    from towers.runtime import NumpyItemTower, NumpyUserTower

    ml = load_dataset(config)
    model_dir = artifacts.current(config.models_dir)
    manifest = artifacts.read_manifest(model_dir)
    mc = config.model
    split = temporal_split_protocol(ml.interactions, mc.test_fraction, mc.valid_fraction or None)
    trained = manifest["split"]
    if split.valid is None or (trained["train"], trained["test"]) != (
        len(split.train),
        len(split.test),
    ):
        raise RecsysError(
            f"model {model_dir.name} was trained on a split of {trained['train']:,} / "
            f"{trained['test']:,} interactions, the config and data set give "
            f"{len(split.train):,} / {len(split.test):,} (and a validation part is needed): "
            "train a model with this config first (recsys train)"
        )
    space = FeatureSpace.load(model_dir / "features.json")
    events = mc.stream_events(len(ml.items))
    valid = StreamEvaluator(ml, space, split, "valid", events)
    test = StreamEvaluator(ml, space, split, "test", events)
    vectors = item_vectors(NumpyItemTower.load(model_dir), ml, space)
    user_fn = NumpyUserTower.load(model_dir)
    report = evaluate_candidates(valid, test, user_fn, vectors)
    report["model_version"] = model_dir.name
    last = select_baselines(valid)["item_knn"]["last_items"]
    report["blend"] = blended = evaluate_blend(valid, test, user_fn, vectors, last)
    print(
        f"candidate sources on the stream walk ({report['test']['events']:,} test events, "
        f"model {model_dir.name}; settings picked on validation)\n{candidates_table(report)}"
    )
    best = max(blended["model"]["ndcg@10"], blended["item_knn"]["ndcg@10"])
    print(
        f"test NDCG@10: two towers {blended['model']['ndcg@10']:.4f}, item-KNN over the last "
        f"{last} {blended['item_knn']['ndcg@10']:.4f}, their z-scored blend (item-KNN share "
        f"{blended['share']:.1f}, picked on validation) {blended['blend']['ndcg@10']:.4f}: "
        f"{blended['blend']['ndcg@10'] / best:.2f}x the best single source"
    )
    out = args.out or config.paths.artifacts / "candidates.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"\nresults in {out}")


def candidates_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", type=Path, help="results JSON (default: artifacts/candidates.json)"
    )


def evaluate_arguments(ev: argparse.ArgumentParser) -> None:
    ev.add_argument(
        "--protocol",
        choices=("stream", "temporal", "recbole", "tfrs", "pipeline", "all"),
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
    Command(
        "candidates",
        "each candidate source's recall@100/200 and the union's on the current model's stream "
        "walk, and its cost a request",
        candidates,
        candidates_arguments,
    ),
)
