"""Tests for evaluation.metrics (rank_metrics, topk_accuracy) on small hand-computed examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluation.metrics import rank_metrics, topk_accuracy


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
    assert set(m) == {"recall@5", "ndcg@5", "hit@5", "mrr@5", "recall@20", "users"}
    assert 0.0 <= m["ndcg@5"] <= 1.0


def test_mismatched_user_lists_are_rejected() -> None:
    scores = np.zeros((2, 4), np.float32)
    with pytest.raises(ValueError):
        rank_metrics(scores, seen=[ints()], relevant=[ints(1), ints(2)], k=2)


# rank_metrics: MRR and the extra Recall cut-offs ------------------------------------------


def test_default_keys_for_k_10() -> None:
    scores = np.tile(np.arange(30, dtype=np.float32), (2, 1))
    m = rank_metrics(scores, seen=[ints(), ints()], relevant=[ints(0), ints(29)])
    assert set(m) == {"recall@10", "ndcg@10", "hit@10", "mrr@10", "recall@20", "users"}


def test_mrr_and_recall_at_a_second_cut_off_hand_computed() -> None:
    # 25 items, item i scores i: the ranking is 24, 23, ..., 0 (item i at rank 25 - i).
    scores = np.arange(25, dtype=np.float32)[None, :].repeat(3, axis=0)
    relevant = [
        ints(22, 10),  # ranks 3 and 15: mrr 1/3; recall@10 1/2; recall@20 2/2
        ints(12, 3, 0),  # ranks 13, 22, 25: nothing in the top 10; recall@20 1/3
        ints(24),  # rank 1: mrr 1, recall 1 everywhere
    ]
    m = rank_metrics(scores, seen=[ints(), ints(), ints()], relevant=relevant, k=10)
    assert m["mrr@10"] == pytest.approx((1 / 3 + 0 + 1) / 3)
    assert m["recall@10"] == pytest.approx((1 / 2 + 0 + 1) / 3)
    assert m["recall@20"] == pytest.approx((1 + 1 / 3 + 1) / 3)
    assert m["hit@10"] == pytest.approx(2 / 3)
    # NDCG@10 user 0: DCG 1/log2(4), IDCG 1 + 1/log2(3).
    ndcg0 = (1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert m["ndcg@10"] == pytest.approx((ndcg0 + 0 + 1) / 3)


def test_mrr_counts_only_the_first_relevant_item_after_exclusion() -> None:
    # Ranking 0, 1, 2, 3, 4; item 0 seen, so the list is 1, 2, 3, 4; first relevant is 3
    # at rank 3 (item 4 later does not matter).
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5]], np.float32)
    m = rank_metrics(scores, seen=[ints(0)], relevant=[ints(3, 4)], k=3, recall_at=(4,))
    assert m["mrr@3"] == pytest.approx(1 / 3)
    assert m["recall@3"] == pytest.approx(1 / 2)
    assert m["recall@4"] == pytest.approx(1.0)


def test_recall_cut_off_beyond_the_catalog_never_counts_seen_items() -> None:
    # 4 items, cut-off 20: the list is the whole catalog, but the seen item 0 is excluded
    # even though it is also relevant.
    scores = np.array([[0.9, 0.1, 0.2, 0.3]], np.float32)
    m = rank_metrics(scores, seen=[ints(0)], relevant=[ints(0, 1)], k=2)
    assert m["recall@20"] == pytest.approx(1 / 2)
    assert m["recall@2"] == 0.0


def test_recall_at_can_be_turned_off_or_extended() -> None:
    scores = np.arange(60, dtype=np.float32)[None, ::-1].copy()
    m = rank_metrics(scores, seen=[ints()], relevant=[ints(0, 35, 55)], k=10, recall_at=())
    assert set(m) == {"recall@10", "ndcg@10", "hit@10", "mrr@10", "users"}
    m = rank_metrics(
        scores, seen=[ints()], relevant=[ints(0, 35, 55)], k=10, recall_at=(20, 50, 10)
    )
    assert (m["recall@10"], m["recall@20"], m["recall@50"]) == pytest.approx((1 / 3, 1 / 3, 2 / 3))
    with pytest.raises(ValueError):
        rank_metrics(scores, seen=[ints()], relevant=[ints(0)], k=10, recall_at=(0,))


# topk_accuracy ------------------------------------------------------------------------------


def test_topk_accuracy_hand_computed() -> None:
    scores = np.array(
        [
            [0.1, 0.9, 0.5, 0.3],  # positive 2 (0.5): 1 item higher -> rank 2
            [0.1, 0.9, 0.5, 0.3],  # positive 0 (0.1): 3 higher -> rank 4
            [0.7, 0.2, 0.4, 0.6],  # positive 0 (0.7): 0 higher -> rank 1
        ],
        np.float32,
    )
    positives = ints(2, 0, 0)
    assert topk_accuracy(scores, positives, k=1) == pytest.approx(1 / 3)
    assert topk_accuracy(scores, positives, k=2) == pytest.approx(2 / 3)
    assert topk_accuracy(scores, positives, k=3) == pytest.approx(2 / 3)
    assert topk_accuracy(scores, positives, k=4) == pytest.approx(1.0)
    assert topk_accuracy(scores, positives, k=100) == pytest.approx(1.0)


def test_topk_accuracy_ties_count_as_hits_like_in_top_k() -> None:
    # tf.math.in_top_k: a hit when fewer than k items score strictly higher. Here the
    # positive ties with three other items at the top: 0 strictly higher, so even k=1 hits.
    scores = np.array([[0.5, 0.5, 0.5, 0.5, 0.1]], np.float32)
    assert topk_accuracy(scores, ints(3), k=1) == 1.0
    # Two items strictly higher and two tied with the positive: k=2 misses, k=3 hits.
    scores = np.array([[0.9, 0.8, 0.5, 0.5, 0.5]], np.float32)
    assert topk_accuracy(scores, ints(4), k=2) == 0.0
    assert topk_accuracy(scores, ints(4), k=3) == 1.0


def test_topk_accuracy_masks_nothing() -> None:
    # The same item can be the positive of two pairs, and a higher-scoring item the user
    # already rated still counts against it: nothing is excluded.
    scores = np.array([[0.9, 0.5, 0.1], [0.9, 0.5, 0.1]], np.float32)
    assert topk_accuracy(scores, ints(1, 1), k=1) == 0.0
    assert topk_accuracy(scores, ints(1, 1), k=2) == 1.0


def test_topk_accuracy_chunks_agree_and_scale() -> None:
    rng = np.random.default_rng(0)
    # Coarse values give many ties; every chunking must count them the same way.
    scores = rng.integers(0, 20, size=(1_000, 50)).astype(np.float32)
    positives = rng.integers(0, 50, size=1_000)
    higher = (scores > scores[np.arange(1_000), positives][:, None]).sum(axis=1)
    for k in (1, 5, 10):
        expected = float(np.mean(higher < k))
        for chunk_rows in (1, 7, 1_000, 5_000):
            assert topk_accuracy(scores, positives, k, chunk_rows=chunk_rows) == expected
    # The MovieLens test-set size: 20,000 pairs over 1,682 items.
    big = rng.standard_normal((20_000, 1_682), dtype=np.float32)
    big_positives = rng.integers(0, 1_682, size=20_000)
    accuracy = topk_accuracy(big, big_positives, k=100)
    assert accuracy == pytest.approx(100 / 1_682, abs=0.01)


def test_topk_accuracy_rejects_bad_input() -> None:
    scores = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError):
        topk_accuracy(scores, ints(0), k=1)  # one positive per row
    with pytest.raises(ValueError):
        topk_accuracy(scores, ints(0, 3), k=1)  # out of range
    with pytest.raises(ValueError):
        topk_accuracy(scores, np.array([0.0, 1.0]), k=1)  # not integer columns
    with pytest.raises(ValueError):
        topk_accuracy(scores, ints(0, 1), k=0)
    with pytest.raises(ValueError):
        topk_accuracy(np.zeros((0, 3), np.float32), ints(), k=1)
    with pytest.raises(ValueError):
        topk_accuracy(np.array([[np.nan, 0.0, 1.0]], np.float32), ints(0), k=1)
