"""Exported towers agree with each other: SavedModel vs the NumPy serving runtime (≤ 1e-5)."""

from __future__ import annotations

import numpy as np
import pytest

from features.activity import rating_event_id
from recsys import artifacts
from recsys.data import temporal_split
from towers.encoding import FeatureSpace, ItemInputs
from towers.runtime import NumpyItemTower, NumpyUserTower
from towers.tf_env import tf
from towers.train import build_examples, encode_catalog, user_states


@pytest.fixture(scope="module")
def model_dir(trained):
    return artifacts.current(trained.models_dir)


@pytest.fixture(scope="module")
def space(model_dir) -> FeatureSpace:
    return FeatureSpace.load(model_dir / "features.json")


def _saved(model_dir, name):
    return tf.saved_model.load(str(model_dir / name)).signatures["serving_default"]


def test_user_tower_numpy_matches_saved_model(model_dir, space, ml, trained) -> None:
    past, _ = temporal_split(ml.interactions, trained.model.test_fraction)
    users = [*list(ml.users["user_id"][:200]), "brand-new-user"]
    profiles = ml.users.set_index("user_id")
    inputs = user_states(ml, past, space, users[:-1])
    # A brand-new user: unknown id, no profile, a short streamed history.
    new = space.encode_users(["brand-new-user"], [""], [0], [""], [["50", "181", "nope"]])
    batch = {k: np.concatenate([v, new.as_dict()[k]]) for k, v in inputs.as_dict().items()}
    assert (batch["history"] == 0).any() and (batch["user"] == 0).any()
    expected = _saved(model_dir, "user_tower")(**{k: tf.constant(v) for k, v in batch.items()})
    got = NumpyUserTower.load(model_dir)(type(inputs)(**batch))
    np.testing.assert_allclose(got, expected["embedding"].numpy(), atol=1e-5, rtol=0)
    assert len(profiles) == len(ml.users)


def test_item_tower_numpy_matches_saved_model(model_dir, space, ml) -> None:
    _, catalog = encode_catalog(ml, space)
    expected = _saved(model_dir, "item_tower")(**{k: tf.constant(v) for k, v in catalog.items()})
    got = NumpyItemTower.load(model_dir)(ItemInputs(**catalog))
    np.testing.assert_allclose(got, expected["embedding"].numpy(), atol=1e-5, rtol=0)


def test_training_examples_use_only_strictly_earlier_history(ml, space, trained) -> None:
    past, _ = temporal_split(ml.interactions, trained.model.test_fraction)
    examples = build_examples(ml, past, space)
    ordered = past.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)
    assert len(examples["user"]) == len(ordered)
    for row in (0, 1, 500, len(ordered) - 1):
        user, t = ordered.loc[row, "user_id"], ordered.loc[row, "timestamp"]
        earlier = ordered[(ordered["user_id"] == user) & (ordered["timestamp"] < t)]
        # Newest first; ties in one second ordered by the event id the stream would carry.
        newest_first = sorted(
            zip(earlier["timestamp"], earlier["item_id"], strict=True),
            key=lambda ti: (ti[0], rating_event_id(user, ti[1], int(ti[0]))),
            reverse=True,
        )
        want = space.items.lookup_many([i for _, i in newest_first][: space.history_length])
        got = examples["history"][row]
        np.testing.assert_array_equal(got[: len(want)], want)
        assert not got[len(want) :].any()


def test_manifest_records_metrics_and_a_popularity_baseline(model_dir) -> None:
    manifest = artifacts.read_manifest(model_dir)
    for name in ("model", "popularity"):
        assert 0.0 < manifest["metrics"][name]["ndcg@10"] <= 1.0
    assert manifest["split"]["protocol"] == "temporal"
