"""The validated linear blend: the bar a ranker over several sources has to clear.

Each source scores the whole catalog; each event's scores are z-scored across the catalog
(their scales differ: an inner product against a sum of cosines) and mixed with one weight,
picked on the validation walk's NDCG@10. Scored on a walk by the same ranking as every model
and baseline (:meth:`evaluation.stream.StreamEvaluator.ranks`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from evaluation.baselines import ItemKNN
from evaluation.stream import StreamEvaluator
from evaluation.walk import Scorer, Walk

SHARES = tuple(round(0.1 * i, 1) for i in range(11))
"""The item-KNN shares the blend picks from on validation (0: two towers alone)."""


def zscored(scores: np.ndarray) -> np.ndarray:
    """Each row standardized across the catalog (a constant row becomes zeros)."""
    scores = np.asarray(scores, np.float64)
    spread = scores.std(axis=1, keepdims=True)
    out: np.ndarray = (scores - scores.mean(axis=1, keepdims=True)) / np.where(
        spread > 0, spread, 1.0
    )
    return out


class Blend:
    """``(1 - share) · z(two towers) + share · z(item-KNN)`` for each event.

    Args:
        users: ``[events, dim]`` the walk's user-tower queries (live histories).
        items: ``[items, dim]`` the catalog's item vectors.
        knn: Item-KNN over the same walk.
        share: Item-KNN's share, in [0, 1].
    """

    def __init__(self, users: np.ndarray, items: np.ndarray, knn: ItemKNN, share: float):
        self._users = np.asarray(users, np.float64)
        self._items = np.asarray(items, np.float64)
        self._knn = knn
        self.share = share

    def __call__(self, walk: Walk, rows: slice) -> np.ndarray:
        towers = zscored(self._users[rows] @ self._items.T)
        if self.share == 0:
            return towers
        out: np.ndarray = (1 - self.share) * towers + self.share * zscored(self._knn(walk, rows))
        return out


def select_blend(
    valid: StreamEvaluator,
    user_fn: Callable[[Any], np.ndarray],  # Any: encoded user inputs
    items: np.ndarray,
    last_items: int,
    shares: Sequence[float] = SHARES,
) -> tuple[float, dict[float, float]]:
    """The item-KNN share with the best validation NDCG@10, and each share's NDCG@10."""
    knn = ItemKNN(valid.train, valid.column, last_items, valid.train_counts)
    users = user_fn(valid.live_inputs)
    tried = {s: valid.baseline(Blend(users, items, knn, s))["ndcg@10"] for s in shares}
    return max(tried, key=lambda s: tried[s]), tried


def blend_scorer(
    ev: StreamEvaluator,
    user_fn: Callable[[Any], np.ndarray],  # Any: encoded user inputs
    items: np.ndarray,
    last_items: int,
    share: float,
) -> Scorer:
    """The blend with a chosen share, on ``ev``'s walk."""
    knn = ItemKNN(ev.train, ev.column, last_items, ev.train_counts)
    return Blend(user_fn(ev.live_inputs), items, knn, share)


def evaluate_blend(
    valid: StreamEvaluator,
    test: StreamEvaluator,
    user_fn: Callable[[Any], np.ndarray],  # Any: encoded user inputs
    items: np.ndarray,
    last_items: int,
) -> dict[str, Any]:  # Any: a JSON report
    """The two towers, item-KNN over ``last_items`` and their blend (share picked on
    validation) on the test walk: ``{"model", "item_knn", "blend", "share",
    "tried_on_valid"}``."""
    share, tried = select_blend(valid, user_fn, items, last_items)
    knn = ItemKNN(test.train, test.column, last_items, test.train_counts)
    return {
        "model": test.model(user_fn, items),
        "item_knn": test.baseline(knn),
        "blend": test.baseline(blend_scorer(test, user_fn, items, last_items, share)),
        "share": share,
        "last_items": last_items,
        "tried_on_valid": tried,
    }
