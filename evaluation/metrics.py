"""Retrieval metrics over the whole catalog.

* :func:`rank_metrics`: full-ranking Recall/NDCG/Hit/MRR per user, seen items excluded (the
  protocol of RecBole's ``mode: full`` evaluation).
* :func:`topk_accuracy`: TFRS's ``FactorizedTopK`` top-k categorical accuracy per
  (query, positive) pair, nothing excluded (the number the TFRS tutorials report).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def rank_metrics(
    scores: np.ndarray,
    seen: Sequence[np.ndarray],
    relevant: Sequence[np.ndarray],
    k: int = 10,
    recall_at: Sequence[int] = (20,),
) -> dict[str, float]:
    """Recall@k, NDCG@k, Hit@k, MRR@k and Recall at extra cut-offs, averaged over users.

    Every user's top list is computed once, at the largest cut-off, and every metric is read
    off it. Items in ``seen`` are excluded from the ranking and never count as hits.

    Args:
        scores: ``[users, items]`` float, higher is better. Not modified.
        seen: ``users`` arrays of item columns (int) to exclude, e.g. training interactions.
        relevant: ``users`` arrays of held-out item columns (int); users with none are
            skipped.
        k: Main cut-off, ``1 <= k < items``.
        recall_at: Extra cut-offs at which only Recall is reported, each >= 1; one at or
            above the number of items ranks the whole catalog.

    Returns:
        ``{"recall@k", "ndcg@k", "hit@k", "mrr@k", "recall@j" for j in recall_at, "users"}``:
        for the default ``k=10``, ``recall@10``, ``ndcg@10``, ``hit@10``, ``mrr@10``,
        ``recall@20`` and ``users`` (the number of users evaluated, as a float).
        MRR@k is the reciprocal rank of the first relevant item within the top k (0 if none).

    Raises:
        ValueError: ``k`` or a cut-off is out of range, ``seen`` and ``relevant`` do not have
            one entry per row of ``scores``, or no user has a held-out item.
    """
    scores = np.asarray(scores)
    n_users, n_items = scores.shape
    if not 0 < k < n_items:
        raise ValueError(f"k must be between 1 and the number of items - 1, got {k}")
    extra = [int(j) for j in recall_at if int(j) != k]
    if any(j < 1 for j in extra):
        raise ValueError(f"recall_at cut-offs must be >= 1, got {list(recall_at)}")
    if len(seen) != n_users or len(relevant) != n_users:
        raise ValueError(
            f"seen ({len(seen)}) and relevant ({len(relevant)}) need one entry per row of "
            f"scores ({n_users})"
        )
    depth = min(max([k, *extra]), n_items)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    reciprocal = 1.0 / np.arange(1, k + 1)
    recalls, ndcgs, hits, mrrs = [], [], [], []
    extra_recalls: dict[int, list[float]] = {j: [] for j in extra}
    for row, (excluded, target) in enumerate(zip(seen, relevant, strict=True)):
        if len(target) == 0:
            continue
        user_scores = scores[row].astype(np.float64, copy=True)
        user_scores[np.asarray(excluded, np.int64)] = -np.inf
        if depth < n_items:
            top = np.argpartition(-user_scores, depth - 1)[:depth]
        else:
            top = np.arange(n_items)
        top = top[np.argsort(-user_scores[top], kind="stable")]
        # An excluded item can only enter the list when fewer items remain than the depth;
        # it still must not count.
        gains = np.isin(top, target) & np.isfinite(user_scores[top])
        head = gains[:k].astype(np.float64)
        n_target = len(target)
        ideal = discounts[: min(n_target, k)].sum()
        recalls.append(head.sum() / n_target)
        ndcgs.append(float(head @ discounts[: len(head)]) / ideal)
        hits.append(float(head.any()))
        mrrs.append(float(reciprocal[np.argmax(head)]) if head.any() else 0.0)
        for j, values in extra_recalls.items():
            values.append(float(gains[:j].sum()) / n_target)
    if not recalls:
        raise ValueError("no user has a held-out item: nothing to evaluate")
    metrics = {
        f"recall@{k}": float(np.mean(recalls)),
        f"ndcg@{k}": float(np.mean(ndcgs)),
        f"hit@{k}": float(np.mean(hits)),
        f"mrr@{k}": float(np.mean(mrrs)),
    }
    for j, values in extra_recalls.items():
        metrics[f"recall@{j}"] = float(np.mean(values))
    metrics["users"] = float(len(recalls))
    return metrics


def topk_accuracy(
    scores: np.ndarray,
    positives: np.ndarray,
    k: int = 100,
    *,
    chunk_rows: int = 2048,
) -> float:
    """TFRS ``FactorizedTopK`` top-k categorical accuracy over the whole catalog.

    The fraction of (query, positive) pairs whose positive item is in the top ``k`` of all
    items, nothing excluded (not even items the user rated in training). Ties follow
    ``tf.math.in_top_k``, which ``FactorizedTopK`` uses for score-based evaluation: a pair is
    a hit when fewer than ``k`` items score *strictly* higher than its positive, so items
    tied with the positive at the boundary all count as inside the top k.

    Rows are processed ``chunk_rows`` at a time, so the temporary memory is about
    ``chunk_rows * items`` bytes whatever the number of pairs.

    Args:
        scores: ``[pairs, items]`` float, higher is better; row ``i`` scores every item for
            the query of pair ``i`` (one row per test rating, so a user appears once per
            held-out item). Must be finite: ``in_top_k`` would count a pair next to a
            non-finite score as a miss, which here hides a broken model, so it is an error.
        positives: ``[pairs]`` int, the column of each pair's true item.
        k: Cut-off, >= 1 (TFRS reports 1, 5, 10, 50 and 100).
        chunk_rows: Rows per chunk, >= 1.

    Returns:
        The mean hit rate over pairs, in [0, 1].

    Raises:
        ValueError: Shapes disagree, there are no pairs, a positive is out of range, ``k``
            or ``chunk_rows`` is < 1, or a score is not finite.
    """
    scores = np.asarray(scores)
    positives = np.asarray(positives)
    if scores.ndim != 2 or positives.ndim != 1 or len(positives) != len(scores):
        raise ValueError(
            f"scores must be [pairs, items] and positives [pairs], got {scores.shape} and "
            f"{positives.shape}"
        )
    n_pairs, n_items = scores.shape
    if n_pairs == 0:
        raise ValueError("no (query, positive) pairs to evaluate")
    if not np.issubdtype(positives.dtype, np.integer):
        raise ValueError(f"positives must be integer item columns, got {positives.dtype}")
    if positives.min() < 0 or positives.max() >= n_items:
        raise ValueError(f"positives must be item columns in [0, {n_items}), got out-of-range")
    if k < 1 or chunk_rows < 1:
        raise ValueError(f"k and chunk_rows must be >= 1, got k={k}, chunk_rows={chunk_rows}")
    hits = 0
    for start in range(0, n_pairs, chunk_rows):
        block = scores[start : start + chunk_rows]
        if not np.isfinite(block).all():
            raise ValueError(f"scores has non-finite values in rows {start}..{start + len(block)}")
        cols = positives[start : start + chunk_rows]
        positive_scores = block[np.arange(len(block)), cols]
        higher = np.count_nonzero(block > positive_scores[:, None], axis=1)
        hits += int(np.count_nonzero(higher < k))
    return hits / int(n_pairs)


def exclude_seen(scores: np.ndarray, seen: Sequence[np.ndarray]) -> np.ndarray:
    """``[rows, items] float64``: a copy of ``scores`` with each row's ``seen`` columns at
    ``-inf``, so no ranking can pick them.

    Args:
        scores: ``[rows, items]`` float. Not modified.
        seen: ``rows`` arrays of item columns (int).
    """
    masked = np.asarray(scores).astype(np.float64, copy=True)
    lengths = np.fromiter((len(s) for s in seen), np.int64, len(seen))
    if lengths.sum():
        rows = np.repeat(np.arange(len(seen)), lengths)
        masked[rows, np.concatenate([np.asarray(s, np.int64) for s in seen])] = -np.inf
    return masked


def next_item_ranks(
    scores: np.ndarray, seen: Sequence[np.ndarray], targets: np.ndarray
) -> np.ndarray:
    """Each event's 0-based rank of its one target item, seen items excluded.

    The rank is the number of unexcluded items scoring strictly higher than the target plus
    those tied with it at a lower column, i.e. its position in a stable sort by descending
    score, so ties never favour the target and constant scores (popularity) are ranked the
    same way every run. A target the user has already seen can never be recommended and
    ranks at infinity (a miss at every cut-off).

    Args:
        scores: ``[events, items]`` float, higher is better. Not modified.
        seen: ``events`` arrays of item columns (int) to exclude.
        targets: ``[events]`` int, each event's item column.

    Returns:
        ``[events] float64`` ranks, ``inf`` for a seen target.

    Raises:
        ValueError: Shapes disagree, or a target is out of range.
    """
    scores = np.asarray(scores)
    targets = np.asarray(targets, np.int64)
    if scores.ndim != 2 or targets.shape != (len(scores),) or len(seen) != len(scores):
        raise ValueError(
            f"scores must be [events, items] with one target and one seen array per row, got "
            f"{scores.shape}, {targets.shape} and {len(seen)}"
        )
    n_events, n_items = scores.shape
    if n_events and (targets.min() < 0 or targets.max() >= n_items):
        raise ValueError(f"targets must be item columns in [0, {n_items})")
    # Two passes over the scores and no copy of them (a 1 M-item catalog ranks a few rows
    # at a time); the seen items, a few per row, are then taken back out by their scores.
    rows = np.arange(n_events)
    target = scores[rows, targets][:, np.newaxis]
    higher = np.count_nonzero(scores > target, axis=1)
    tied = scores == target
    tied_before = np.zeros(n_events, np.int64)
    for r in np.flatnonzero(np.count_nonzero(tied, axis=1) > 1):
        tied_before[r] = np.count_nonzero(tied[r, : targets[r]])
    lengths = np.fromiter((len(s) for s in seen), np.int64, len(seen))
    if lengths.sum():
        cells = np.repeat(rows, lengths) * n_items + np.concatenate(
            [np.asarray(s, np.int64) for s in seen]
        )
        cells = np.unique(cells)
        seen_row, seen_col = np.divmod(cells, n_items)
        value = scores[seen_row, seen_col]
        against = target[seen_row, 0]
        higher -= np.bincount(seen_row[value > against], minlength=n_events)
        before = (value == against) & (seen_col < targets[seen_row])
        tied_before -= np.bincount(seen_row[before], minlength=n_events)
        target = target.copy()
        target[seen_row[seen_col == targets[seen_row]], 0] = -np.inf
    ranks: np.ndarray = (higher + tied_before).astype(np.float64)
    ranks[np.isneginf(target[:, 0])] = np.inf
    return ranks


def next_item_metrics(
    ranks: np.ndarray, k: int = 10, recall_at: Sequence[int] = (50,)
) -> dict[str, float]:
    """Recall@k (= HR@k with one target), NDCG@k, MRR@k and Recall at extra cut-offs.

    Args:
        ranks: ``[events]`` 0-based ranks of each event's target (:func:`next_item_ranks`).
        k: Main cut-off, >= 1.
        recall_at: Extra cut-offs at which only Recall is reported.

    Returns:
        ``{"recall@k", "ndcg@k", "mrr@k", "recall@j"..., "events"}``, averaged over events.

    Raises:
        ValueError: No events, or a cut-off below 1.
    """
    ranks = np.asarray(ranks, np.float64)
    if ranks.size == 0:
        raise ValueError("no events to evaluate")
    if k < 1 or any(int(j) < 1 for j in recall_at):
        raise ValueError(f"cut-offs must be >= 1, got k={k}, recall_at={list(recall_at)}")
    hit = ranks < k
    finite = np.where(hit, ranks, 0.0)
    metrics = {
        f"recall@{k}": float(hit.mean()),
        f"ndcg@{k}": float(np.where(hit, 1.0 / np.log2(finite + 2.0), 0.0).mean()),
        f"mrr@{k}": float(np.where(hit, 1.0 / (finite + 1.0), 0.0).mean()),
    }
    for j in recall_at:
        if int(j) != k:
            metrics[f"recall@{int(j)}"] = float((ranks < int(j)).mean())
    metrics["events"] = float(ranks.size)
    return metrics
