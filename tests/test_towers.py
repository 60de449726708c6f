"""Exported towers agree with each other: SavedModel vs the NumPy serving runtime (≤ 1e-5),
and training examples are point-in-time."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.protocols import temporal_split_protocol
from features.activity import rating_event_id
from index.plan import raw_column
from recsys import artifacts
from recsys.errors import ArtifactError
from tests.users import UserRow, tower_inputs
from towers.encoding import FeatureSpace, Inputs
from towers.examples import HistoryIndex, catalog_inputs, query_inputs, training_examples
from towers.runtime import NumpyItemTower, NumpyUserTower, SavedModelUserTower


@pytest.fixture(scope="module")
def model_dir(trained):
    return artifacts.current(trained.models_dir)


@pytest.fixture(scope="module")
def space(model_dir) -> FeatureSpace:
    return FeatureSpace.load(model_dir / "features.json")


@pytest.fixture(scope="module")
def split(ml, trained):
    mc = trained.model
    return temporal_split_protocol(ml.interactions, mc.test_fraction, mc.valid_fraction or None)


@pytest.fixture(scope="module")
def tf(trained):
    """TensorFlow, imported only where a trained model is (not at collection)."""
    from towers.tf_env import tf

    return tf


def _saved(tf, model_dir, name, signature="encoded"):
    return tf.saved_model.load(str(model_dir / name)).signatures[signature]


def _user_batch(ml, space, split) -> Inputs:
    users = list(ml.users["user_id"][:200])
    history = HistoryIndex(split.train, space.history_length)
    known = query_inputs(ml, space, history, [(u, 889_000_000_000, 889_000_000_000) for u in users])
    # Brand-new users: unknown id, no profile, a short streamed history with an unknown item
    # (last, and between known ones: position pooling ranks known items only).
    new = space.encode_users(
        *tower_inputs(
            [
                UserRow("brand-new", recent_items=("50", "181", "nope")),
                UserRow("brand-new-2", recent_items=("50", "nope", "181", "1")),
            ]
        )
    )
    return {k: np.concatenate([v, new[k]]) for k, v in known.items()}


def test_user_tower_numpy_matches_saved_model(tf, model_dir, space, ml, split) -> None:
    inputs = _user_batch(ml, space, split)
    assert (inputs["history"] == 0).any() and (inputs["user"] == 0).any()
    assert (inputs["user_zip_code"] > 0).any()
    tensors = {k: tf.constant(v) for k, v in inputs.items()}
    expected = _saved(tf, model_dir, "user_tower")(**tensors)["embedding"].numpy()
    got = NumpyUserTower.load(model_dir)(inputs)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # normalized
    # The default tower pools the history by recency rank, and training moved those weights.
    position = np.load(model_dir / "weights.npz")["history_position"][:, 0]
    assert np.ptp(position) > 1e-3


def test_a_users_embedding_is_bit_for_bit_the_same_alone_or_in_any_batch(
    model_dir, space, ml, split
) -> None:
    """Batch-invariant: serving a request in a batch must not move its scores."""
    inputs = _user_batch(ml, space, split)
    tower = NumpyUserTower.load(model_dir)
    batch = tower(inputs)
    for i in [0, 1, 57, len(inputs["user"]) - 1]:  # the last is the brand-new user
        one = {k: v[i : i + 1] for k, v in inputs.items()}
        np.testing.assert_array_equal(tower(one), batch[i : i + 1])
        part = {k: v[i : i + 3] for k, v in inputs.items()}
        np.testing.assert_array_equal(tower(part)[0], batch[i])


def _raw_users(ml, space) -> list[UserRow]:
    profiles = ml.users.set_index("user_id")
    raws = [
        UserRow(
            u,
            profiles.loc[u, "gender"],
            int(profiles.loc[u, "age"]),
            profiles.loc[u, "occupation"],
            profiles.loc[u, "zip_code"],
            ("nope", "50", "181", "1", "not-an-item", "100")[: int(u) % 7],
            889_000_000_000 + int(u) * 3_599_000,
        )
        for u in list(profiles.index[:60])
    ]
    longer = tuple(str(i) for i in range(1, space.history_length + 6))  # truncated
    raws += [
        UserRow("nobody"),
        UserRow("new", "X", 0, "astronaut", "t8h1n", ("50", "not-an-item"), 1_795_789_800_000),
        UserRow("long", "F", 30, "writer", "T8H1N", longer, 5),
    ]
    return raws


def test_embed_from_raw_features_is_encode_then_tower_bit_for_bit(model_dir, space, ml) -> None:
    raws = _raw_users(ml, space)
    tower = NumpyUserTower.load(model_dir)
    embedded = tower.embed(space, *tower_inputs(raws))
    np.testing.assert_array_equal(embedded, tower(space.encode_users(*tower_inputs(raws))))
    alone = np.concatenate([tower.embed(space, *tower_inputs([r])) for r in raws])
    np.testing.assert_array_equal(alone, embedded)


def test_both_runtimes_embed_raw_features_alike(model_dir, space, ml) -> None:
    raws = _raw_users(ml, space)
    np.testing.assert_allclose(
        SavedModelUserTower(model_dir).embed(space, *tower_inputs(raws)),
        NumpyUserTower.load(model_dir).embed(space, *tower_inputs(raws)),
        atol=1e-5,
        rtol=0,
    )


def test_item_tower_numpy_matches_saved_model(tf, model_dir, space, ml) -> None:
    _, catalog = catalog_inputs(ml, space)
    assert (catalog["item_title"] > 0).any()
    tensors = {k: tf.constant(v) for k, v in catalog.items()}
    expected = _saved(tf, model_dir, "item_tower")(**tensors)["embedding"].numpy()
    got = NumpyItemTower.load(model_dir)(catalog)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_raw_feature_signatures_match_python_encoding_and_numpy(tf, model_dir, space, ml) -> None:
    """The SavedModels' raw-feature signatures encode in TensorFlow exactly as
    towers.encoding does in Python, then compute the same embeddings as the NumPy runtime."""
    profiles = ml.users.set_index("user_id")
    raws = [
        UserRow(
            u,
            profiles.loc[u, "gender"],
            int(profiles.loc[u, "age"]),
            profiles.loc[u, "occupation"],
            profiles.loc[u, "zip_code"],
            ("50", "181", "1")[: int(u) % 4],
            889_000_000_000 + int(u) * 3_599_000,
        )
        for u in list(profiles.index[:50])
    ]
    raws.append(UserRow("nobody", "", 0, "", "", ("50", "not-an-item"), 1_795_789_800_000))
    width = space.history_length + 5  # longer than the tower keeps: truncation is exercised
    recent = [list(r.recent_items) + [""] * (width - len(r.recent_items)) for r in raws]
    raws.append(
        UserRow("long", "F", 30, "writer", "T8H1N", tuple(str(i) for i in range(1, width + 1)), 5)
    )
    recent.append([str(i) for i in range(1, width + 1)])
    user_raw = _saved(tf, model_dir, "user_tower", "serving_default")(
        user_id=tf.constant([r.user_id for r in raws]),
        gender=tf.constant([r.gender for r in raws]),
        age=tf.constant([float(r.age) if r.age else np.nan for r in raws], tf.float64),
        occupation=tf.constant([r.occupation for r in raws]),
        zip_code=tf.constant([r.zip_code for r in raws]),
        recent_items=tf.constant(recent),
        request_time_ms=tf.constant([r.request_time_ms for r in raws], tf.int64),
    )["embedding"].numpy()
    expected = NumpyUserTower.load(model_dir)(space.encode_users(*tower_inputs(raws)))
    np.testing.assert_allclose(user_raw, expected, atol=1e-5, rtol=0)

    items = ml.items
    raw = {f.name: tf.constant(raw_column(items[f.name], f.kind)) for f in space.item_features}
    item_raw = _saved(tf, model_dir, "item_tower", "serving_default")(
        item_id=tf.constant(list(items["item_id"])), **raw
    )["embedding"].numpy()
    _, catalog = catalog_inputs(ml, space)
    np.testing.assert_allclose(item_raw, NumpyItemTower.load(model_dir)(catalog), atol=1e-5, rtol=0)


def test_missing_tower_weights_are_refused(model_dir, tmp_path) -> None:
    (tmp_path / "tower.json").write_text((model_dir / "tower.json").read_text())
    with np.load(model_dir / "weights.npz") as data:
        np.savez(tmp_path / "weights.npz", **{k: data[k] for k in data.files if k != "user_emb"})
    with pytest.raises(ArtifactError, match="user_emb"):
        NumpyUserTower.load(tmp_path)
    with np.load(model_dir / "weights.npz") as data:
        np.savez(
            tmp_path / "weights.npz", **{k: data[k] for k in data.files if k != "history_position"}
        )
    with pytest.raises(ArtifactError, match="history_position"):
        NumpyUserTower.load(tmp_path)
    (tmp_path / "tower.json").write_text("{not json")
    with pytest.raises(ArtifactError, match=r"tower\.json"):
        NumpyItemTower.load(tmp_path)


def test_training_examples_use_only_strictly_earlier_history(ml, space, split) -> None:
    examples = training_examples(ml, split.train, space)
    ordered = split.train.sort_values(["user_id", "timestamp"], kind="stable").reset_index(
        drop=True
    )
    assert len(examples.users["user"]) == len(ordered)
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
        got = examples.users["history"][row]
        np.testing.assert_array_equal(got[: len(want)], want)
        assert not got[len(want) :].any()
        # The request time of a training example is the interaction's own time.
        assert examples.users["hour"][row] == (t // 3600) % 24
        assert examples.items["item"][row] == space.items.lookup(ordered.loc[row, "item_id"])


def test_manifest_records_test_metrics_a_baseline_and_the_report(model_dir) -> None:
    manifest = artifacts.read_manifest(model_dir)
    stream = manifest["metrics"]["stream"]
    for name in ("model", "frozen", "popularity", "trailing_popularity", "item_knn"):
        assert 0.0 < stream[name]["ndcg@10"] <= 1.0
        assert stream[name]["events"] == manifest["split"]["test"]
    assert stream["freshness_lift"] == stream["model"]["ndcg@10"] / stream["frozen"]["ndcg@10"]
    for name in ("model", "popularity"):
        assert 0.0 < manifest["metrics"]["temporal"][name]["ndcg@10"] <= 1.0
    assert manifest["split"]["protocol"] == "temporal"
    assert (model_dir / "training.png").stat().st_size > 1000
    assert 1 <= manifest["best_epoch"] <= manifest["hyperparameters"]["epochs"]


def test_training_is_deterministic_for_a_seed(ml, trained) -> None:
    from training.train import fit

    mc = trained.model.model_copy(update={"epochs": 1})
    split = temporal_split_protocol(ml.interactions, mc.test_fraction, None)
    first, second = (fit(mc, ml, split, log=lambda _: None, progress=False) for _ in range(2))
    for a, b in zip(first.model.get_weights(), second.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    other = fit(mc.model_copy(update={"seed": 7}), ml, split, log=lambda _: None, progress=False)
    assert not np.array_equal(first.model.get_weights()[0], other.model.get_weights()[0])
