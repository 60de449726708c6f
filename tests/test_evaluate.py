"""Tests for towers.evaluate.rank_metrics on small hand-computed examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from towers.evaluate import rank_metrics


def ints(*values: int) -> np.ndarray:
    return np.array(values, np.int64)


def test_single_user_hand_computed() -> None:
    # Ranking by score: item 4 (0.9), 2 (0.8), 0 (0.7), 1 (0.3), 3 (0.1).
    scores = np.array([[0.7, 0.3, 0.8, 0.1, 0.9]], np.float32)
    # Relevant: 2 (rank 2) and 3 (rank 5, outside the top 3).
    m = rank_metrics(scores, seen=[ints()], relevant=[ints(2, 3)], k=3)
    assert m["recall@3"] == pytest.approx(1 / 2)
    # DCG = 1/log2(3); IDCG = 1/log2(2) + 1/log2(3).
    expected_ndcg = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert m["ndcg@3"] == pytest.approx(expected_ndcg)
    assert m["ndcg@3"] == pytest.approx(0.3868528, abs=1e-6)
    assert m["hit@3"] == 1.0
    assert m["users"] == 1.0


def test_perfect_and_empty_rankings() -> None:
    scores = np.array([[0.9, 0.8, 0.1, 0.0], [0.9, 0.8, 0.1, 0.0]], np.float32)
    m = rank_metrics(scores, seen=[ints(), ints()], relevant=[ints(0, 1), ints(3)], k=2)
    # User 0: both relevant items ranked first and second → recall 1, ndcg 1, hit 1.
    # User 1: item 3 is last → 0 everywhere.
    assert m["recall@2"] == pytest.approx(0.5)
    assert m["ndcg@2"] == pytest.approx(0.5)
    assert m["hit@2"] == pytest.approx(0.5)
    assert m["users"] == 2.0


def test_ndcg_ideal_is_capped_at_k() -> None:
    # 3 relevant items, k = 2, the top 2 are both relevant: ndcg must be exactly 1
    # (the ideal DCG only counts k positions) while recall is 2/3.
    scores = np.array([[0.9, 0.8, 0.7, 0.0]], np.float32)
    m = rank_metrics(scores, seen=[ints()], relevant=[ints(0, 1, 2)], k=2)
    assert m["ndcg@2"] == pytest.approx(1.0)
    assert m["recall@2"] == pytest.approx(2 / 3)


def test_relevant_item_at_rank_two_only() -> None:
    scores = np.array([[0.9, 0.8, 0.0, 0.1]], np.float32)
    m = rank_metrics(scores, seen=[ints()], relevant=[ints(1)], k=2)
    assert m["ndcg@2"] == pytest.approx(1 / math.log2(3))
    assert m["recall@2"] == 1.0


def test_seen_items_are_excluded_from_the_ranking() -> None:
    # Items 0 and 1 score highest but were seen in training; 2 and 3 move up into the top 2.
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.1]], np.float32)
    m = rank_metrics(scores, seen=[ints(0, 1)], relevant=[ints(3)], k=2)
    assert m["recall@2"] == 1.0
    assert m["hit@2"] == 1.0
    assert m["ndcg@2"] == pytest.approx(1 / math.log2(3))
    without_exclusion = rank_metrics(scores, seen=[ints()], relevant=[ints(3)], k=2)
    assert without_exclusion["hit@2"] == 0.0


def test_seen_items_never_count_as_hits() -> None:
    # A relevant item that was also seen is pushed out of the top k.
    scores = np.array([[0.9, 0.5, 0.4, 0.3]], np.float32)
    m = rank_metrics(scores, seen=[ints(0)], relevant=[ints(0)], k=2)
    assert m["hit@2"] == 0.0
    assert m["recall@2"] == 0.0


def test_exclusion_does_not_modify_the_callers_scores() -> None:
    scores = np.array([[0.9, 0.8, 0.7]], np.float32)
    before = scores.copy()
    rank_metrics(scores, seen=[ints(0)], relevant=[ints(1)], k=1)
    np.testing.assert_array_equal(scores, before)


def test_exclusion_is_per_user() -> None:
    # Both users have the same scores; only user 0 has seen item 0.
    scores = np.array([[0.9, 0.8, 0.1], [0.9, 0.8, 0.1]], np.float32)
    m = rank_metrics(scores, seen=[ints(0), ints()], relevant=[ints(1), ints(1)], k=1)
    # User 0: top-1 is item 1 → hit. User 1: top-1 is item 0 → miss.
    assert m["hit@1"] == pytest.approx(0.5)
    assert m["recall@1"] == pytest.approx(0.5)


def test_users_without_relevant_items_are_skipped() -> None:
    scores = np.array([[0.9, 0.1, 0.0], [0.0, 0.1, 0.9], [0.5, 0.4, 0.3]], np.float32)
    m = rank_metrics(
        scores, seen=[ints(), ints(), ints()], relevant=[ints(0), ints(), ints(2)], k=1
    )
    # Users 0 (hit) and 2 (miss) count; user 1 would be a miss if it were not skipped.
    assert m["users"] == 2.0
    assert m["hit@1"] == pytest.approx(0.5)
    assert m["recall@1"] == pytest.approx(0.5)
    assert m["ndcg@1"] == pytest.approx(0.5)


def test_metric_names_follow_k() -> None:
    scores = np.zeros((1, 6), np.float32)
    m = rank_metrics(scores, seen=[ints()], relevant=[ints(1)], k=5)
    assert set(m) == {"recall@5", "ndcg@5", "hit@5", "users"}
    assert 0.0 <= m["ndcg@5"] <= 1.0


def test_mismatched_user_lists_are_rejected() -> None:
    scores = np.zeros((2, 4), np.float32)
    with pytest.raises(ValueError):
        rank_metrics(scores, seen=[ints()], relevant=[ints(1), ints(2)], k=2)
