"""Training: ML-100K → point-in-time examples → two-tower model → versioned artifacts."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.activity import EMPTY, apply_events, point_in_time, ratings_to_interactions
from recsys import artifacts
from recsys.config import Config
from recsys.data import MovieLens, temporal_split
from towers.encoding import FeatureSpace, ItemInputs, UserInputs, Vocab
from towers.evaluate import rank_metrics
from towers.runtime import NumpyItemTower, NumpyUserTower


@dataclass(frozen=True)
class TrainResult:
    version: str
    directory: Path
    metrics: dict[str, Any]


def fit_feature_space(ml: MovieLens, train: pd.DataFrame, history_length: int) -> FeatureSpace:
    """Vocabularies: users seen in training (others fall in the unknown bucket), the whole
    item catalog, and the profile values of the user table."""
    genres = sorted({g for gs in ml.items["genres"] for g in gs})
    return FeatureSpace(
        users=Vocab.fit(train["user_id"]),
        items=Vocab.fit(ml.items["item_id"]),
        genders=Vocab.fit(ml.users["gender"]),
        occupations=Vocab.fit(ml.users["occupation"]),
        genres=tuple(genres),
        history_length=history_length,
    )


def encode_catalog(ml: MovieLens, space: FeatureSpace) -> tuple[list[str], dict[str, np.ndarray]]:
    """Every catalog item's ids and tower inputs, in catalog order."""
    items = ml.items
    inputs = space.encode_items(
        list(items["item_id"]), list(items["release_year"]), list(items["genres"])
    )
    return list(items["item_id"]), inputs.as_dict()


def build_examples(
    ml: MovieLens, train: pd.DataFrame, space: FeatureSpace
) -> dict[str, np.ndarray]:
    """One example per training interaction, the user's history taken point-in-time."""
    ordered = train.sort_values(["user_id", "timestamp"], kind="stable")
    histories: list[tuple[str, ...]] = []
    for user_id, group in ordered.groupby("user_id", sort=False):
        events = ratings_to_interactions(user_id, list(group["item_id"]), list(group["timestamp"]))
        histories.extend(a.recent_items for a in point_in_time(events, space.history_length))
    profiles = ml.users.set_index("user_id").loc[ordered["user_id"]]
    user = space.encode_users(
        list(ordered["user_id"]),
        list(profiles["gender"]),
        list(profiles["age"]),
        list(profiles["occupation"]),
        histories,
    )
    catalog_ids, catalog = encode_catalog(ml, space)
    row = pd.Index(catalog_ids).get_indexer(ordered["item_id"])
    counts = ordered["item_id"].value_counts()
    prob = (ordered["item_id"].map(counts) / len(ordered)).to_numpy(np.float32)
    return {
        **user.as_dict(),
        **{name: values[row] for name, values in catalog.items()},
        "item_prob": prob,
    }


def user_states(
    ml: MovieLens, train: pd.DataFrame, space: FeatureSpace, user_ids: list[str]
) -> UserInputs:
    """Each user's tower inputs at the end of ``train`` (what the online store holds then)."""
    by_user = {u: g for u, g in train.groupby("user_id")}
    histories = []
    for u in user_ids:
        g = by_user.get(u)
        events = (
            []
            if g is None
            else ratings_to_interactions(u, list(g["item_id"]), list(g["timestamp"]))
        )
        histories.append(apply_events(EMPTY, events, space.history_length).recent_items)
    profiles = ml.users.set_index("user_id").loc[user_ids]
    return space.encode_users(
        user_ids,
        list(profiles["gender"]),
        list(profiles["age"]),
        list(profiles["occupation"]),
        histories,
    )


def evaluate_temporal(
    ml: MovieLens, train: pd.DataFrame, test: pd.DataFrame, space: FeatureSpace, model_dir: Path
) -> dict[str, dict[str, float]]:
    """Recall/NDCG/Hit@10 on the future split for the model and a popularity baseline."""
    user_ids = sorted(set(test["user_id"]))
    catalog_ids, catalog = encode_catalog(ml, space)
    column = {item: c for c, item in enumerate(catalog_ids)}
    user_tower = NumpyUserTower.load(model_dir)
    item_tower = NumpyItemTower.load(model_dir)
    item_vecs = item_tower(ItemInputs(**catalog))
    user_vecs = user_tower(user_states(ml, train, space, user_ids))
    seen_by = train.groupby("user_id")["item_id"].agg(list).to_dict()
    rel_by = test.groupby("user_id")["item_id"].agg(list).to_dict()
    seen = [np.array([column[i] for i in seen_by.get(u, [])], np.int64) for u in user_ids]
    relevant = [np.array([column[i] for i in rel_by[u]], np.int64) for u in user_ids]
    popularity = np.zeros(len(catalog_ids), np.float32)
    for item, n in train["item_id"].value_counts().items():
        popularity[column[item]] = n
    return {
        "model": rank_metrics(user_vecs @ item_vecs.T, seen, relevant),
        "popularity": rank_metrics(np.tile(popularity, (len(user_ids), 1)), seen, relevant),
    }


def train(
    config: Config, ml: MovieLens, *, log: Callable[[str], None] = print, publish: bool = True
) -> TrainResult:
    """Trains on the past, evaluates on the future, writes ``models/<version>/``.

    Args:
        config: The project configuration; ``config.model`` sets the hyper-parameters.
        ml: The data set.
        log: Progress sink.
        publish: Point ``models/CURRENT`` at the new version.
    """
    from towers.model import TwoTower, export
    from towers.tf_env import keras, tf

    mc = config.model
    tf.keras.utils.set_random_seed(mc.seed)
    tf.config.experimental.enable_op_determinism()
    train_df, test_df = temporal_split(ml.interactions, mc.test_fraction)
    space = fit_feature_space(ml, train_df, mc.history_length)
    examples = build_examples(ml, train_df, space)
    log(
        f"training on {len(train_df):,} interactions before "
        f"{pd.Timestamp(int(test_df['timestamp'].min()), unit='s')} "
        f"({len(test_df):,} held out), {mc.epochs} epochs"
    )
    dataset = (
        tf.data.Dataset.from_tensor_slices(examples)
        .shuffle(len(train_df), seed=mc.seed, reshuffle_each_iteration=True)
        .batch(mc.batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    model = TwoTower(space, mc.embedding_dim)
    model.compile(optimizer=keras.optimizers.Adagrad(mc.learning_rate))
    started = time.perf_counter()
    history = model.fit(dataset, epochs=mc.epochs, verbose=2)
    seconds = time.perf_counter() - started

    version = artifacts.new_version()
    with artifacts.staged_version(config.models_dir, version) as staging:
        export(model, space, staging)
        space.save(staging / "features.json")
        metrics = evaluate_temporal(ml, train_df, test_df, space, staging)
        manifest = {
            "version": version,
            "kind": "two-tower",
            "embedding_dim": mc.embedding_dim,
            "history_length": mc.history_length,
            "train_seconds": round(seconds, 2),
            "loss": [round(float(v), 4) for v in history.history["loss"]],
            "split": {
                "protocol": "temporal",
                "cut_timestamp": int(test_df["timestamp"].min()),
                "train": len(train_df),
                "test": len(test_df),
            },
            "metrics": metrics,
            "hyperparameters": mc.model_dump(),
        }
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2))
        artifacts.write_manifest(staging, manifest)
    directory = config.models_dir / version
    if publish:
        artifacts.publish(config.models_dir, version)
    m, p = metrics["model"], metrics["popularity"]
    log(
        f"model {version}: trained in {seconds:.1f}s; temporal NDCG@10 {m['ndcg@10']:.4f} "
        f"(popularity {p['ndcg@10']:.4f}), Recall@10 {m['recall@10']:.4f} "
        f"(popularity {p['recall@10']:.4f})"
    )
    return TrainResult(version, directory, manifest)
