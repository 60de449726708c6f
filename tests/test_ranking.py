"""The second stage's pure logic: the union of the sources, the point-in-time features, the
ranker's rows and ordering (``ranking``), and the pipeline's split (``evaluation.pipeline``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from candidates.neighbours import NeighbourTable
from candidates.sources import Candidates, NeighbourSource, Query
from evaluation.pipeline import CUTS, pipeline_splits
from evaluation.protocols import temporal_split_protocol
from ranking import ranker
from ranking.features import (
    DAY_MS,
    Catalog,
    Cut,
    ItemState,
    blend_score,
    feature_names,
    features,
    first_cut,
    tag_matrix,
    union,
)
from recsys.config import Config


def _lists() -> dict[str, Candidates]:
    return {
        "a": Candidates(
            np.array([[4, 2, -1], [1, 0, 3]]),
            np.array([[0.9, 0.5, -np.inf], [3, 2, 1]], np.float32),
        ),
        "b": Candidates(
            np.array([[2, 5, 0], [-1, -1, -1]]), np.array([[7, 6, 5], [0, 0, 0]], np.float32)
        ),
    }


def test_the_union_holds_each_candidate_once_with_every_sources_score_and_rank() -> None:
    found, scores, ranks = union(_lists(), items=6)
    assert list(zip(found.owner.tolist(), found.rows.tolist(), strict=True)) == [
        (0, 0), (0, 2), (0, 4), (0, 5), (1, 0), (1, 1), (1, 3)
    ]  # fmt: skip
    np.testing.assert_array_equal(found.groups(2), [4, 3])
    at = {
        pair: j
        for j, pair in enumerate(zip(found.owner.tolist(), found.rows.tolist(), strict=True))
    }
    np.testing.assert_array_equal(scores[at[0, 2]], [0.5, 7.0])  # both sources
    np.testing.assert_array_equal(ranks[at[0, 2]], [1, 0])
    assert np.isnan(scores[at[0, 5], 0]) and ranks[at[0, 5], 0] == 3  # a did not propose it
    np.testing.assert_array_equal(ranks[at[1, 3]], [2, 3])


def _table() -> NeighbourTable:
    neighbours = np.array([[1, 2], [0, 2], [0, 3], [2, -1], [5, -1], [4, -1]], np.int32)
    weights = np.array(
        [[0.5, 0.2], [0.5, 0.1], [0.2, 0.4], [0.4, 0], [0.9, 0], [0.9, 0]], np.float32
    )
    return NeighbourTable(neighbours, weights)


def test_item_to_item_scores_cover_every_candidate_with_their_catalog_z_score() -> None:
    knn = NeighbourSource(_table(), last_items=2)
    query = Query(np.array([[0, 1], [-1, -1]]), np.zeros(2, np.int64))
    owner, rows = np.array([0, 0, 0, 1]), np.array([2, 3, 4, 2])
    scores, z = knn.scores_of(query, owner, rows)
    dense = np.zeros(6)
    dense[[1, 2]] += [0.5, 0.2]  # item 0's neighbours
    dense[[0, 2]] += [0.5, 0.1]  # item 1's
    np.testing.assert_allclose(scores, [dense[2], dense[3], dense[4], 0.0])
    want = (dense[[2, 3, 4]] - dense.mean()) / dense.std()
    np.testing.assert_allclose(z[:3], want)
    assert z[3] == 0.0  # no recent items: no spread to scale by
    nobody = Query(np.full((2, 2), -1), np.zeros(2, np.int64))  # a batch without history
    scores, z = knn.scores_of(nobody, owner, rows)
    assert not scores.any() and not z.any()
    assert (knn(nobody, 3).rows == -1).all()


def test_the_tower_z_score_is_the_score_standardized_over_the_whole_catalog() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((50, 4)).astype(np.float32)
    catalog = Catalog(vectors, np.zeros((50, 0), np.float32), np.zeros(50))
    queries = rng.standard_normal((3, 4))
    rows = np.array([5, 17, 42])
    scores = np.einsum("ij,ij->i", queries, vectors[rows])
    got = catalog.tower_z(queries, scores)
    for j in range(3):
        everything = vectors.astype(np.float64) @ queries[j]
        assert got[j] == pytest.approx((scores[j] - everything.mean()) / everything.std(), rel=1e-5)


def test_features_read_only_what_was_known_at_the_request() -> None:
    vectors = np.array([[1, 0], [0, 1], [0.6, 0.8], [0.8, 0.6], [-1, 0], [0, -1]], np.float32)
    tags = tag_matrix([("x",), ("y",), ("x", "y"), (), ("x",), ("z",)], ["x", "y"])
    np.testing.assert_array_equal(tags[2], [1, 1])
    catalog = Catalog(vectors, tags, np.array([0, 1, 3, 0, 0, 7], np.float64))
    state = ItemState(6)
    now = 40 * DAY_MS
    # Item 2: seen 35 and 3 days ago and 1 hour ago; item 5: 20 days ago.
    state.observe(
        np.array([2, 5, 2, 2]), now - np.array([35 * DAY_MS, 20 * DAY_MS, 3 * DAY_MS, 3_600_000])
    )
    state.advance(now)
    query = Query(
        recent=np.array([[0, 1, -1], [-1, -1, -1]]),
        times_ms=np.array([now + 13 * 3_600_000, now]),  # 13:00 on a Tuesday; midnight
        vectors=np.array([[1, 0], [0, 1]], np.float32),
        banned=[np.array([0, 1]), np.array([], np.int64)],
        last_ms=np.array([now - 3 * 3_600_000, -1]),
        earlier=np.array([9, 0]),
    )
    found, matrix = features(query, _lists(), catalog, state, NeighbourSource(_table(), 2))
    names = feature_names(["a", "b"])
    assert matrix.shape == (7, len(names)) and matrix.dtype == np.float32
    col = {n: matrix[:, i] for i, n in enumerate(names)}
    at = {
        pair: j
        for j, pair in enumerate(zip(found.owner.tolist(), found.rows.tolist(), strict=True))
    }
    j = at[0, 2]
    assert (col["count_1d"][j], col["count_7d"][j], col["count_30d"][j]) == (1, 2, 2)
    assert col["age_days"][j] == pytest.approx(35.0)
    assert np.isnan(col["age_days"][at[0, 4]])  # never seen yet
    assert col["sources"][j] == 2
    assert col["prior"][j] == pytest.approx(np.log1p(3))
    assert col["tower_score"][j] == pytest.approx(0.6)
    assert col["tag_affinity"][j] == pytest.approx((1 + 1) / 2 / 2)  # profile (½, ½) · (1, 1) / 2
    assert col["sim_max"][j] == pytest.approx(0.8) and col["sim_mean"][j] == pytest.approx(0.7)
    assert col["since_last_h"][j] == pytest.approx(np.log1p(16))
    assert col["earlier"][j] == pytest.approx(np.log1p(9)) and col["seen"][j] == pytest.approx(
        np.log1p(2)
    )
    assert col["hour"][j] == 13 and col["weekday"][j] == 1  # 1970-02-10 was a Tuesday
    k = at[1, 0]  # a user with no history
    assert np.isnan(col["since_last_h"][k]) and np.isnan(col["sim_max"][k])
    assert col["tag_affinity"][k] == 0 and col["knn_score"][k] == 0
    with pytest.raises(ValueError, match="last_ms"):
        features(
            Query(query.recent, query.times_ms, query.vectors),
            _lists(),
            catalog,
            state,
            NeighbourSource(_table(), 2),
        )


def test_the_first_cut_keeps_each_requests_best_by_score_ties_by_order() -> None:
    rng = np.random.default_rng(3)
    owner = np.sort(rng.integers(0, 6, 200))
    score = rng.integers(0, 5, 200).astype(np.float64)  # many ties
    for depth in (1, 3, 50):
        keep = first_cut(owner, score, depth)
        for o in range(6):
            mine = np.flatnonzero(owner == o)
            best = sorted(mine, key=lambda j: (-score[j], j))[:depth]
            assert set(np.flatnonzero(keep & (owner == o))) == set(best)
    depths = np.array([0, 1, 2, 3, 40, 5])  # one a request
    keep = first_cut(owner, score, depths)
    np.testing.assert_array_equal(
        np.bincount(owner[keep], minlength=6), np.minimum(depths, np.bincount(owner))
    )


def test_a_cut_before_the_features_keeps_the_rows_a_cut_of_the_feature_rows_keeps() -> None:
    """What the server computes with a cut equals the offline walk's rows cut afterwards
    (by the matrix's own tower_z and knn_z columns): the ranker trains on what it serves."""
    rng = np.random.default_rng(7)
    items, b = 40, 5
    vectors = rng.standard_normal((items, 4)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    catalog = Catalog(vectors, np.zeros((items, 0), np.float32), rng.integers(0, 9, items) * 1.0)
    neighbours = np.stack([rng.permutation(items)[:6] for _ in range(items)]).astype(np.int32)
    table = NeighbourTable(neighbours, rng.random((items, 6)).astype(np.float32))
    state = ItemState(items)
    state.observe(rng.integers(0, items, 30), rng.integers(0, DAY_MS, 30))
    state.advance(DAY_MS)
    query = Query(
        recent=rng.integers(-1, items, (b, 3)),
        times_ms=np.full(b, DAY_MS),
        vectors=rng.standard_normal((b, 4)).astype(np.float32),
        banned=[np.array([], np.int64)] * b,
        last_ms=np.full(b, DAY_MS - 1000),
        earlier=np.arange(b),
    )
    lists = {
        name: Candidates(
            np.stack([rng.permutation(items)[:12] for _ in range(b)]),
            rng.random((b, 12)).astype(np.float32),
        )
        for name in ("a", "b")
    }
    knn = NeighbourSource(table, 2)
    names = feature_names(list(lists))
    whole, matrix = features(query, lists, catalog, state, knn)
    cut = Cut(depth=7, share=0.4)
    found, kept = features(query, lists, catalog, state, knn, cut)
    mask = first_cut(
        whole.owner,
        blend_score(matrix[:, names.index("tower_z")], matrix[:, names.index("knn_z")], 0.4),
        7,
    )
    assert 0 < mask.sum() < len(mask) and (found.groups(b) <= 7).all()
    np.testing.assert_array_equal(found.owner, whole.owner[mask])
    np.testing.assert_array_equal(found.rows, whole.rows[mask])
    np.testing.assert_array_equal(kept, matrix[mask])
    # Filters apply before the cut: the admitted rows, then each request's best of them,
    # at least as many as a request asks for.
    allowed = whole.rows % 3 != 0
    found, kept = features(
        query,
        lists,
        catalog,
        state,
        knn,
        cut.at_least(np.array([0, 0, 9, 0, 0])),
        admit=lambda u: u.rows % 3 != 0,
    )
    blend = blend_score(matrix[:, names.index("tower_z")], matrix[:, names.index("knn_z")], 0.4)
    mask = first_cut(whole.owner[allowed], blend[allowed], np.array([7, 7, 9, 7, 7]))
    np.testing.assert_array_equal(found.rows, whole.rows[allowed][mask])
    np.testing.assert_array_equal(kept, matrix[allowed][mask])
    assert found.groups(b)[2] == 9 and not (found.rows % 3 == 0).any()


def test_rows_keep_the_groups_with_a_positive_and_places_follow_the_scores() -> None:
    rows = ranker.Rows(
        np.arange(14, dtype=np.float32).reshape(7, 2),
        np.array([0, 1, 0, 0, 0, 0, 1], np.float32),
        np.array([2, 3, 2]),
        ["f", "g"],
        np.arange(7.0),
    )
    kept = rows.with_a_positive()
    np.testing.assert_array_equal(kept.groups, [2, 2])
    np.testing.assert_array_equal(kept.labels, [0, 1, 0, 1])
    np.testing.assert_array_equal(kept.base, [0, 1, 5, 6])
    owner = np.array([0, 0, 0, 1, 1])
    place = ranker.ranked_positions(owner, np.array([0.1, 0.9, 0.5, 2.0, 2.0]), 2)
    np.testing.assert_array_equal(place, [2, 0, 1, 0, 1])  # ties by the candidates' order


def test_the_ranker_learns_which_feature_marks_the_next_item() -> None:
    rng = np.random.default_rng(1)

    def rows(groups: int) -> ranker.Rows:
        size = 20
        features = rng.standard_normal((groups * size, 3)).astype(np.float32)
        labels = np.zeros(groups * size, np.float32)
        best = np.argmax(
            features[:, 1].reshape(groups, size) + 0.3 * rng.standard_normal((groups, size)), 1
        )
        labels[np.arange(groups) * size + best] = 1
        return ranker.Rows(features, labels, np.full(groups, size), ["noise", "signal", "more"])

    train, valid = rows(400), rows(200)
    booster, fit = ranker.train(train, valid, threads=1)
    assert fit["rounds"] >= 1 and fit["valid_ndcg@10"] > 0.7
    gains = ranker.importance(booster, train.names)
    assert max(gains, key=lambda n: gains[n]) == "signal"
    scores = ranker.predict(booster, valid.features)
    np.testing.assert_allclose(
        ranker.predict(booster, valid.features, np.ones(len(scores))), scores + 1
    )


def test_the_pipeline_cuts_the_past_in_time_order() -> None:
    rng = np.random.default_rng(2)
    frame = pd.DataFrame(
        {
            "user_id": [f"u{u}" for u in rng.integers(0, 30, 1_000)],
            "item_id": [f"i{i}" for i in rng.integers(0, 50, 1_000)],
            "value": np.ones(1_000, np.float32),
            "timestamp": rng.permutation(1_000).astype(np.int64),
        }
    )
    split = temporal_split_protocol(frame, 0.2, 0.1)
    stages, final = pipeline_splits(split, 0.25)
    assert stages.valid is not None and final.valid is not None
    assert stages.train["timestamp"].max() < stages.valid["timestamp"].min()
    assert stages.valid["timestamp"].max() < stages.test["timestamp"].min()
    pd.testing.assert_frame_equal(stages.test, split.valid)
    pd.testing.assert_frame_equal(final.test, split.test)
    assert len(stages.train) + len(stages.valid) == len(split.train)
    assert len(final.train) == len(stages.train)
    assert len(final.valid) == len(stages.valid) + len(split.valid)
    with pytest.raises(ValueError, match="validation part"):
        pipeline_splits(temporal_split_protocol(frame, 0.2, None))


@pytest.fixture(scope="module")
def pipeline_report(ranked: Config) -> dict[str, Any]:  # Any: JSON
    """The pipeline's report from training a model with its ranker (``model.ranker``), on
    walks of 300 events: what ``recsys evaluate --protocol pipeline`` reports too."""
    from recsys import artifacts

    manifest = artifacts.read_manifest(artifacts.current(ranked.models_dir))
    report: dict[str, Any] = manifest["metrics"]["pipeline"]
    return report


def test_the_pipeline_protocol_reports_every_stage_on_the_same_test_walk(
    pipeline_report: dict[str, Any],
) -> None:
    r = pipeline_report
    for name in ("model", "item_knn", "blend", "pipeline"):
        assert r[name]["events"] == 300
        assert 0.0 <= r[name]["ndcg@10"] <= r[name]["recall@10"] <= 1.0
    # The pipeline can only find what the union holds.
    assert r["pipeline"]["recall@50"] <= r["candidates_recall"] <= r["union_recall"] <= 1.0
    assert r["ranker"]["cut"] in CUTS
    assert f"cut {r['ranker']['cut'] or 'none'}, {r['ranker']['start']}" in r["ranker"]["tried"]
    assert len(r["ranker"]["tried"]) == 2 * len(CUTS)
    assert r["ranker"]["training_rows"] > 300 * 100
    gains = r["ranker"]["importance"]
    assert set(gains) == set(feature_names(["two_tower", "neighbours", "trending"]))
    assert sum(gains.values()) == pytest.approx(1.0, abs=1e-3)
    assert r["settings"]["blend_share"] in [round(0.1 * i, 1) for i in range(11)]
