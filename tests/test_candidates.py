"""Candidate sources (``candidates``) and their offline report (``evaluation.candidates``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import pytest

from candidates.neighbours import (
    NeighbourTable,
    cooccurrence_table,
    vector_neighbours,
)
from candidates.sources import (
    NeighbourSource,
    Query,
    Trending,
    TrendingSource,
    TwoTowerSource,
    keep_unbanned,
)
from commands.train import candidates
from evaluation.baselines import ItemSimilarity
from evaluation.candidates import Replay, recall, union_size, walk_lists
from evaluation.experiments import item_vectors
from evaluation.protocols import temporal_split_protocol
from evaluation.stream import StreamEvaluator
from recsys import artifacts
from recsys.config import Config
from recsys.data.dataset import load_dataset
from recsys.data.schema import configured_schema
from recsys.errors import RecsysError
from tests.conftest import skewed_interactions
from towers.encoding import FeatureSpace
from towers.runtime import NumpyItemTower, NumpyUserTower


def _query(recent: list[list[int]], banned: list[list[int]] | None = None) -> Query:
    return Query(
        recent=np.array(recent, np.int64),
        times_ms=np.zeros(len(recent), np.int64),
        banned=[np.array(b, np.int64) for b in banned] if banned else (),
    )


def test_keep_unbanned_keeps_the_first_n_valid_rows_a_request_does_not_ban() -> None:
    rows = np.array([[5, 3, 9, 1, -1], [2, 4, 6, 8, 0]])
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.0], [5, 4, 3, 2, 1]], np.float32)
    got = keep_unbanned(rows, scores, [np.array([3, 1]), np.array([], np.int64)], 3)
    np.testing.assert_array_equal(got.rows, [[5, 9, -1], [2, 4, 6]])
    np.testing.assert_array_equal(
        got.scores, np.array([[0.9, 0.7, -np.inf], [5, 4, 3]], np.float32)
    )


def test_the_two_tower_source_is_the_exact_top_of_the_catalog_less_the_banned_rows() -> None:
    rng = np.random.default_rng(1)
    items = rng.standard_normal((300, 8)).astype(np.float32)
    users = rng.standard_normal((4, 8)).astype(np.float32)
    index = faiss.IndexFlatIP(8)
    index.add(items)
    banned = [rng.choice(300, 40, replace=False) for _ in range(4)]
    query = Query(np.full((4, 1), -1), np.zeros(4, np.int64), users, banned)
    got = TwoTowerSource(index)(query, 20)
    for i in range(4):
        scores = items @ users[i]
        scores[banned[i]] = -np.inf
        np.testing.assert_array_equal(got.rows[i], np.argsort(-scores, kind="stable")[:20])
    with pytest.raises(ValueError, match="user-tower vectors"):
        TwoTowerSource(index)(Query(np.full((1, 1), -1), np.zeros(1, np.int64)), 5)


def test_the_neighbour_source_sums_each_candidates_similarity_over_the_recent_items() -> None:
    rng = np.random.default_rng(2)
    n_items, m = 50, 6
    neighbours = np.stack(
        [
            rng.choice([j for j in range(n_items) if j != i], m, replace=False)
            for i in range(n_items)
        ]
    ).astype(np.int32)
    neighbours[3, 4:] = -1  # a short list
    weights = rng.random((n_items, m)).astype(np.float32)
    weights[3, 4:] = 0.0
    table = NeighbourTable(neighbours, weights)
    prior = rng.integers(0, 100, n_items).astype(np.float64)
    recent = [[3, 7, 11, -1], [-1, -1, -1, -1], [7, 7, 20, 3]]
    banned = [[neighbours[3, 0]], [], []]
    got = NeighbourSource(table, 3, prior)(_query(recent, banned), 8)
    for i, history in enumerate(recent):
        dense = np.zeros(n_items)
        for item in history[:3]:
            if item >= 0:
                valid = neighbours[item] >= 0
                np.add.at(dense, neighbours[item][valid], weights[item][valid])
        candidates = np.flatnonzero(dense > 0)
        candidates = candidates[~np.isin(candidates, banned[i])]
        score = dense + 1e-6 * 0.5 * prior / (prior.max() + 1.0)
        want = candidates[np.argsort(-score[candidates], kind="stable")][:8]
        np.testing.assert_array_equal(got.rows[i, : len(want)], want)
        assert (got.rows[i, len(want) :] == -1).all()
        np.testing.assert_allclose(got.scores[i, : len(want)], score[want], rtol=1e-6)
    assert (got.rows[1] == -1).all()  # no recent items: no candidates


def test_the_cooccurrence_table_holds_each_items_most_similar_items_by_cosine() -> None:
    frame, column = skewed_interactions()
    dense = ItemSimilarity(frame, column).rows(np.arange(300))
    rows = frame["item_id"].map(column).to_numpy(np.int64)
    table = cooccurrence_table(frame["user_id"].to_numpy(object), rows, 300, 5)
    for item in range(300):
        kept = table.neighbours[item][table.neighbours[item] >= 0]
        assert item not in kept
        assert len(kept) == min(5, np.count_nonzero(dense[item]))
        np.testing.assert_allclose(table.weights[item, : len(kept)], dense[item][kept], rtol=1e-6)
        assert (np.diff(table.weights[item, : len(kept)]) <= 0).all()  # most similar first
        if len(kept):
            assert dense[item][kept].min() >= np.sort(dense[item])[-5] - 1e-6


def test_the_item_tower_table_holds_each_items_nearest_other_items() -> None:
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((120, 8)).astype(np.float32)
    table = vector_neighbours(vectors, 7, batch=50)
    for item in range(120):
        scores = vectors @ vectors[item]
        scores[item] = -np.inf
        np.testing.assert_array_equal(
            np.sort(table.neighbours[item]), np.sort(np.argsort(-scores)[:7])
        )
        np.testing.assert_allclose(table.weights[item], np.sort(scores)[::-1][:7], rtol=1e-5)


def test_trending_counts_the_window_before_each_request_as_trailing_popularity_does() -> None:
    rng = np.random.default_rng(4)
    n = 2_000
    stream = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in rng.zipf(1.3, n) % 40],
            "timestamp": rng.integers(0, 5_000, n),
        }
    )
    column = {f"i{i}": i for i in range(40)}
    window_s = 600
    trending = Trending(40, window_s * 1000)
    replay = Replay(stream, column, trending)
    times = stream["timestamp"].to_numpy()
    cols = stream["item_id"].map(column).to_numpy()
    for t in np.sort(rng.integers(0, 5_500, 30)):
        replay.until(int(t) * 1000)
        inside = (times >= t - window_s) & (times < t)
        want = np.bincount(cols[inside], minlength=40)
        rows, scores = trending.top(40)
        np.testing.assert_array_equal(scores[np.argsort(rows)], want.astype(np.float32))
        assert (np.diff(scores) <= 0).all()
    # Events arriving out of order, or already too old for the window, are counted right.
    late = Trending(3, 100)
    late.advance(1_000)
    late.observe(np.array([0, 1, 1, 2]), np.array([950, 880, 990, 905]))
    late.observe(np.array([2]), np.array([920]))
    rows, scores = late.top(3)
    assert rows.tolist() == [2, 0, 1] and scores.tolist() == [2.0, 1.0, 1.0]  # ties by row
    late.advance(1_021)  # 905 and 920 age out; 950 and 990 stay
    rows, scores = late.top(3)
    assert dict(zip(rows.tolist(), scores.tolist(), strict=True)) == {0: 1.0, 1: 1.0, 2: 0.0}


def test_trending_reuses_its_ranking_until_the_refresh_interval_passes() -> None:
    trending = Trending(4, 10_000, refresh_ms=1_000)
    trending.advance(0)
    trending.observe(np.array([1]), np.array([0]))
    assert trending.top(1)[0].tolist() == [1]
    trending.observe(np.array([2, 2]), np.array([500, 500]))
    trending.advance(500)
    assert trending.top(1)[0].tolist() == [1]  # within the interval: the ranking kept
    trending.advance(1_000)
    assert trending.top(1)[0].tolist() == [2]
    source = TrendingSource(trending)
    got = source(_query([[-1], [-1]], [[2], []]), 2)
    np.testing.assert_array_equal(got.rows, [[1, 0], [2, 1]])


def test_recall_and_union_size_read_the_first_depth_of_each_list() -> None:
    targets = np.array([1, 2, 3, 4])
    a = np.array([[1, 9, 8], [7, 2, -1], [5, 6, 0], [-1, -1, -1]])
    b = np.array([[9, 1, 2], [7, 6, 5], [3, 5, 6], [-1, -1, -1]])
    assert recall([a], targets, 1) == 0.25
    assert recall([a], targets, 2) == 0.5
    assert recall([a, b], targets, 1) == 0.5
    assert recall([a, b], targets, 3) == 0.75
    assert union_size([a, b], 2) == (3 + 2 + 3 + 0) / 4


def test_the_candidates_command_reports_each_source_on_the_trained_models_walk(
    trained: Config, tmp_path: Path
) -> None:
    config = trained.with_overrides({"model": {"stream_eval_events": 400}})
    out = tmp_path / "candidates.json"
    candidates(config, argparse.Namespace(out=out))
    report = json.loads(out.read_text())
    assert report["test"]["events"] == 400
    for part in ("valid", "test"):
        got = report[part]
        for name in ("two_tower", "neighbours", "tower_neighbours", "trending"):
            assert 0.0 < got[name]["recall@100"] <= got[name]["recall@200"] <= 1.0
            assert (
                got["union"]["recall@200"] >= got[name]["recall@200"] or name == "tower_neighbours"
            )
        assert got["union"]["recall@100"] >= got["two_tower+neighbours"]["recall@100"]
        assert 100 <= got["union"]["size@100"] <= 300
    assert report["settings"]["trending_window_days"] in (1, 7, 30)
    assert set(report["cost_us"]) == {"two_tower", "neighbours", "trending"}
    # The two-tower source, as the server will run it, gives what the offline scorer ranks
    # first (ties aside: float32 against float64).
    ml = load_dataset(configured_schema(config))
    model_dir = artifacts.current(config.models_dir)
    space = FeatureSpace.load(model_dir / "features.json")
    split = temporal_split_protocol(ml.interactions, 0.2, 0.1)
    ev = StreamEvaluator(ml, space, split, "test", 300)
    user_fn, items = (
        NumpyUserTower.load(model_dir),
        item_vectors(NumpyItemTower.load(model_dir), ml, space),
    )
    served = walk_lists(ev, TwoTowerSource.exact(items), 10, user_fn(ev.live_inputs))
    offline = ev.top(user_fn, items, 10)
    same = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(served, offline, strict=True)])
    assert same >= 0.99
    with pytest.raises(RecsysError, match="trained on a split"):
        candidates(
            config.with_overrides({"model": {"test_fraction": 0.3}}), argparse.Namespace(out=out)
        )
