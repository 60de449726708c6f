"""Full-ranking retrieval metrics over the whole catalog, seen items excluded."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def rank_metrics(
    scores: np.ndarray,
    seen: Sequence[np.ndarray],
    relevant: Sequence[np.ndarray],
    k: int = 10,
) -> dict[str, float]:
    """Recall@k, NDCG@k and Hit@k averaged over users.

    Args:
        scores: ``[users, items] float32`` higher is better.
        seen: per user, item columns to exclude (training interactions).
        relevant: per user, the held-out item columns; users with none are skipped.
        k: cut-off.

    Returns:
        ``{"recall@k", "ndcg@k", "hit@k", "users"}``.
    """
    scores = scores.astype(np.float32, copy=True)
    if not 0 < k < scores.shape[1]:
        raise ValueError(f"k must be between 1 and the number of items - 1, got {k}")
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    recalls, ndcgs, hits = [], [], []
    for row, (excluded, target) in enumerate(zip(seen, relevant, strict=True)):
        if len(target) == 0:
            continue
        user_scores = scores[row]
        user_scores[np.asarray(excluded, np.int64)] = -np.inf
        top = np.argpartition(-user_scores, k)[:k]
        top = top[np.argsort(-user_scores[top], kind="stable")]
        gains = np.isin(top, target).astype(np.float64)
        ideal = discounts[: min(len(target), k)].sum()
        recalls.append(gains.sum() / len(target))
        ndcgs.append(float(gains @ discounts) / ideal)
        hits.append(float(gains.any()))
    if not recalls:
        raise ValueError("no user has a held-out item: nothing to evaluate")
    return {
        f"recall@{k}": float(np.mean(recalls)),
        f"ndcg@{k}": float(np.mean(ndcgs)),
        f"hit@{k}": float(np.mean(hits)),
        "users": float(len(recalls)),
    }
