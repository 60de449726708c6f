"""The stream evaluation protocol: the walk folds exactly what the ingester would have, the ranking
excludes everything seen, and the baselines count what they say they count."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from evaluation.baselines import ItemKNN, Popularity, TrailingPopularity, _tiebreak
from evaluation.metrics import next_item_metrics, next_item_ranks
from evaluation.protocols import temporal_split_protocol
from evaluation.stream import StreamEvaluator
from evaluation.walk import Walk, walk
from features.activity import EMPTY, apply_events, ratings_to_interactions
from tests.conftest import skewed_interactions
from towers.examples import fit_feature_space

DAY_S = 86_400


def _frame(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    users, items, times = zip(*rows, strict=True)
    return pd.DataFrame(
        {"user_id": users, "item_id": items, "value": 4.0, "timestamp": np.array(times)}
    )


COLUMN = {item: c for c, item in enumerate(["a", "b", "c", "d", "e"])}


def test_ranks_order_ties_by_column_and_exclude_what_was_seen() -> None:
    scores = np.array(
        [
            [1.0, 3.0, 3.0, 0.0, 2.0],  # target c: b ties it at a lower column
            [1.0, 3.0, 3.0, 0.0, 2.0],  # target c with b seen: nothing ahead of it
            [1.0, 3.0, 3.0, 0.0, 2.0],  # target b, seen: never recommendable
            [5.0, 5.0, 5.0, 5.0, 5.0],  # target e, constant scores: last by column
        ]
    )
    seen = [np.array([], np.int64), np.array([1]), np.array([1, 3]), np.array([0])]
    ranks = next_item_ranks(scores, seen, np.array([2, 2, 1, 4]))
    np.testing.assert_array_equal(ranks, [1.0, 0.0, math.inf, 3.0])
    metrics = next_item_metrics(ranks, k=2, recall_at=(4,))
    assert metrics["recall@2"] == pytest.approx(2 / 4)
    assert metrics["ndcg@2"] == pytest.approx((1 / math.log2(3) + 1.0) / 4)
    assert metrics["mrr@2"] == pytest.approx((1 / 2 + 1.0) / 4)
    assert metrics["recall@4"] == pytest.approx(3 / 4)
    assert metrics["events"] == 4


def test_ranks_refuse_mismatched_shapes_and_metrics_refuse_nothing() -> None:
    with pytest.raises(ValueError, match="one target"):
        next_item_ranks(np.zeros((2, 3)), [np.array([])], np.array([0, 1]))
    with pytest.raises(ValueError, match="item columns"):
        next_item_ranks(np.zeros((1, 3)), [np.array([])], np.array([3]))
    with pytest.raises(ValueError, match="no events"):
        next_item_metrics(np.array([]))


def test_the_walk_folds_every_earlier_event_and_nothing_later() -> None:
    known = _frame([("1", "a", 10), ("1", "b", 20), ("2", "c", 15)])
    part = _frame([("1", "c", 30), ("2", "d", 30), ("1", "d", 40), ("1", "e", 40), ("3", "a", 35)])
    w = walk(known, part, COLUMN, history_length=2)
    # Event-time order across users, ties by event id.
    assert list(zip(w.users, w.times_ms.tolist(), strict=True)) == [
        ("1", 30_000), ("2", 30_000), ("3", 35_000), ("1", 40_000), ("1", 40_000)
    ]  # fmt: skip
    np.testing.assert_array_equal(w.targets, [2, 3, 0, 3, 4])
    everything = pd.concat([known, part])
    for i, (user, t) in enumerate(zip(w.users, w.times_ms.tolist(), strict=True)):
        before = everything[(everything["user_id"] == user) & (everything["timestamp"] * 1000 < t)]
        events = ratings_to_interactions(user, list(before["item_id"]), list(before["timestamp"]))
        state = apply_events(EMPTY, events, 2)
        assert w.earlier is not None and w.last_ms is not None
        assert w.earlier[i] == state.events
        assert w.last_ms[i] == (state.last_event_ms if state.events else -1)
        want = [COLUMN[x] for x in state.recent_items]
        np.testing.assert_array_equal(w.recent[i], want + [-1] * (2 - len(want)))
        assert sorted(w.seen[i].tolist()) == sorted(COLUMN[x] for x in before["item_id"])
        past = known[known["user_id"] == user]
        assert sorted(w.frozen_seen[i].tolist()) == sorted(COLUMN[x] for x in past["item_id"])
    # The two events at 40 s do not see each other; the history keeps the newest two only.
    np.testing.assert_array_equal(w.recent[3], w.recent[4])
    np.testing.assert_array_equal(w.recent[3], [COLUMN["c"], COLUMN["b"]])
    np.testing.assert_array_equal(w.frozen_recent[3], [COLUMN["b"], COLUMN["a"]])
    np.testing.assert_array_equal(w.recent[2], [-1, -1])  # a user the past never saw
    assert not len(w.seen[2])


def test_trailing_popularity_counts_only_the_window_strictly_before_each_event() -> None:
    known = _frame([("1", "a", 0), ("2", "a", DAY_S), ("3", "b", 2 * DAY_S)])
    part = _frame([("4", "c", 2 * DAY_S + 10), ("5", "d", 2 * DAY_S + 10)])
    stream = pd.concat([known, part], ignore_index=True)
    w = walk(known, part, COLUMN, history_length=3)
    train_counts = np.array([0.0, 0.0, 0.0, 0.0, 9.0])
    scores = TrailingPopularity(stream, COLUMN, 1, train_counts)(w, slice(0, 2))
    # Within the last day: b (2 days) only; a at day 1 is 1 day + 10 s ago; e breaks ties.
    np.testing.assert_array_equal(np.floor(scores), [[0, 1, 0, 0, 0]] * 2)
    assert np.argmax(scores[0] - np.floor(scores[0])) == 4
    wider = TrailingPopularity(stream, COLUMN, 7, train_counts)(w, slice(0, 2))
    np.testing.assert_array_equal(np.floor(wider), [[2, 1, 0, 0, 0]] * 2)


@pytest.mark.parametrize("seed", range(4))
def test_trailing_popularity_slides_to_what_counting_each_window_afresh_gives(seed) -> None:
    """The sliding window (events in any order, ties, gaps wider than the window) gives
    exactly the counts of each event's own window."""
    rng = np.random.default_rng(seed)
    items = list(COLUMN)
    times = np.sort(rng.integers(0, 20 * DAY_S, 300))
    stream = _frame(
        [(str(i), items[rng.integers(len(items))], int(t)) for i, t in enumerate(times)]
    )
    asked = rng.choice(np.r_[times, times + 1, rng.integers(0, 30 * DAY_S, 40)], 60)
    w = Walk(["u"] * len(asked), asked * 1000, np.zeros(len(asked), np.int64), *([None] * 4))
    train_counts = rng.integers(0, 5, len(COLUMN)).astype(np.float64)
    for days in (1, 3):
        got = TrailingPopularity(stream, COLUMN, days, train_counts)(w, slice(0, len(asked)))
        cols = stream["item_id"].map(COLUMN).to_numpy()
        for row, t in zip(got, asked, strict=True):
            inside = (times >= t - days * DAY_S) & (times < t)
            want = np.bincount(cols[inside], minlength=len(COLUMN)) + _tiebreak(train_counts)
            np.testing.assert_array_equal(row, want)


def test_item_knn_sums_cosine_over_the_last_items_and_falls_back_to_popularity() -> None:
    train = _frame([("1", "a", 1), ("1", "b", 2), ("2", "a", 3), ("2", "c", 4), ("3", "d", 5)])
    part = _frame([("1", "e", 10), ("9", "e", 10)])
    w = walk(train, part, COLUMN, history_length=3)
    counts = np.array([2.0, 1.0, 1.0, 1.0, 0.0])
    knn = ItemKNN(train, COLUMN, 1, counts)
    user_1, new_user = knn(w, slice(0, 2))
    # User 1's last item is b: b's only co-occurrence is a, cos = 1 / sqrt(1 * 2).
    np.testing.assert_allclose(user_1[:4], [1 / math.sqrt(2), 0, 0, 0], atol=1e-5)
    assert np.argsort(-new_user)[:2].tolist() == [0, 1]  # popularity, ties by column
    two = ItemKNN(train, COLUMN, 2, counts)(w, slice(0, 1))[0]
    # b and a vote: a gets b's cosine, b gets a's, c gets a's.
    np.testing.assert_allclose(two[:3], [1 / math.sqrt(2)] * 3, atol=1e-5)


@pytest.fixture(scope="module")
def evaluator(ml):
    split = temporal_split_protocol(ml.interactions, 0.2, 0.1)
    return StreamEvaluator(ml, fit_feature_space(ml, split.train, 20), split, "valid")


def test_an_oracle_hits_every_event_and_an_anti_oracle_none(evaluator) -> None:
    def oracle(walk, rows):
        scores = np.zeros((len(walk.targets[rows]), len(evaluator.column)))
        scores[np.arange(len(scores)), walk.targets[rows]] = 1.0
        return scores

    assert evaluator.baseline(oracle)["ndcg@10"] == pytest.approx(1.0)
    assert evaluator.baseline(lambda w, r: -oracle(w, r))["recall@50"] == 0.0


def test_a_model_scoring_by_popularity_equals_the_popularity_baseline(evaluator) -> None:
    vectors = evaluator.train_counts.astype(np.float32)[:, np.newaxis]
    model = evaluator.model(lambda inputs: np.ones((len(inputs["user"]), 1), np.float32), vectors)
    assert model == evaluator.baseline(Popularity(evaluator.train_counts))
    assert model["events"] == len(evaluator.stream) - len(evaluator.train)


def test_a_new_item_is_scored_by_its_new_vector_among_the_others_as_they_are(evaluator) -> None:
    counts = evaluator.train_counts.astype(np.float32)[:, np.newaxis]
    ones = lambda inputs: np.ones((len(inputs["user"]), 1), np.float32)  # noqa: E731
    # The same vectors: the model's own figures. The target new and worth more than any item:
    # every event a hit at the first place; worth less than any: never in the top 50.
    assert evaluator.new_item(ones, counts, counts) == evaluator.model(ones, counts)
    best = np.full_like(counts, counts.max() + 1)
    assert evaluator.new_item(ones, counts, best)["ndcg@10"] == pytest.approx(1.0)
    assert evaluator.new_item(ones, counts, np.full_like(counts, -1.0))["recall@50"] == 0.0


def test_frozen_histories_feed_the_tower_the_state_at_the_cut(evaluator) -> None:
    w = evaluator.walk
    live = evaluator._inputs["live"]["history"]
    frozen = evaluator._inputs["frozen"]["history"]
    # Before a user's first event of the part, live and frozen are the same state; later ones
    # differ wherever the user has acted since.
    first = {}
    for i, user in enumerate(w.users):
        first.setdefault(user, i)
    for i in first.values():
        np.testing.assert_array_equal(live[i], frozen[i])
    later = [i for i, u in enumerate(w.users) if i != first[u]]
    assert np.mean([not np.array_equal(live[i], frozen[i]) for i in later]) > 0.9


def test_validating_on_a_split_without_a_validation_part_is_refused(ml) -> None:
    split = temporal_split_protocol(ml.interactions, 0.2, None)
    with pytest.raises(ValueError, match="no validation part"):
        StreamEvaluator(ml, fit_feature_space(ml, split.train, 5), split, "valid")


def test_recency_weights_halve_per_half_life_and_average_one() -> None:
    from training.train import recency_weights

    days = np.array([0, 10, 20, 20]) * DAY_S
    weights = recency_weights(days, 10.0)
    assert weights.mean() == pytest.approx(1.0)
    np.testing.assert_allclose(weights[1:] / weights[:-1], [2.0, 2.0, 1.0], rtol=1e-6)
    np.testing.assert_array_equal(recency_weights(days, None), np.ones(4, np.float32))


def test_a_large_catalogs_item_similarity_keeps_each_items_nearest_neighbours(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past DENSE_ITEMS each item keeps its NEIGHBOURS most similar items, with the dense
    matrix's values (repeats within a user counted once, never itself)."""
    from evaluation.baselines import ItemSimilarity

    frame, column = skewed_interactions()
    dense = ItemSimilarity(frame, column).rows(np.arange(300))
    monkeypatch.setattr(ItemSimilarity, "DENSE_ITEMS", 10)
    monkeypatch.setattr(ItemSimilarity, "NEIGHBOURS", 300)
    sparse = ItemSimilarity(frame, column)
    np.testing.assert_allclose(sparse.rows(np.arange(300)), dense, rtol=1e-6)  # float32
    # Adding rows in place is adding the dense rows.
    out = np.ones((4, 300))
    sparse.add_rows(out, np.array([3, 0, 2]), np.array([5, 9, 5]))
    want = np.ones((4, 300))
    want[[3, 0, 2]] += dense[[5, 9, 5]]
    np.testing.assert_allclose(out, want, rtol=1e-6)
    monkeypatch.setattr(ItemSimilarity, "NEIGHBOURS", 5)
    top = ItemSimilarity(frame, column).rows(np.array([0, 7]))
    for row, item in zip(top, (0, 7), strict=True):
        kept = np.flatnonzero(row)
        assert len(kept) <= 5 and row[item] == 0.0
        np.testing.assert_allclose(row[kept], dense[item][kept], rtol=1e-6)
        assert row[kept].min() >= np.sort(dense[item])[-5] - 1e-6


def test_a_long_part_is_scored_on_a_seeded_sample_of_its_events(ml) -> None:
    split = temporal_split_protocol(ml.interactions, 0.2, 0.1)
    space = fit_feature_space(ml, split.train, 5)
    full = StreamEvaluator(ml, space, split, "valid")
    sample = StreamEvaluator(ml, space, split, "valid", max_events=1_000)
    again = StreamEvaluator(ml, space, split, "valid", max_events=1_000)
    assert len(full.walk) > 1_000 == len(sample.walk)
    np.testing.assert_array_equal(sample.walk.targets, again.walk.targets)
    assert set(sample.walk.times_ms) <= set(full.walk.times_ms)
    assert (np.diff(sample.walk.times_ms) >= 0).all()
    popularity = Popularity(sample.train_counts)
    assert sample.baseline(popularity)["events"] == 1_000


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ranks_are_positions_in_a_stable_descending_sort_of_the_unseen(seed) -> None:
    rng = np.random.default_rng(seed)
    # Few distinct values: ties everywhere; seen lists with repeats and with the target.
    scores = rng.integers(0, 4, (30, 12)).astype(np.float32)
    scores[0, :] = -np.inf
    targets = rng.integers(0, 12, 30)
    seen = [rng.integers(0, 12, rng.integers(0, 5)) for _ in range(30)]
    ranks = next_item_ranks(scores, seen, targets)
    for r in range(30):
        masked = scores[r].astype(np.float64)
        masked[seen[r]] = -np.inf
        order = np.argsort(-masked, kind="stable").tolist()
        want = math.inf if np.isneginf(masked[targets[r]]) else order.index(targets[r])
        assert ranks[r] == want, r
