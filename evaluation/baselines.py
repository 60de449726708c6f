"""Baselines a team would ship instead of a model, scored on a stream walk.

Each is a :class:`evaluation.walk.Scorer`, so :class:`evaluation.stream.StreamEvaluator` ranks
them exactly as it ranks the model: :class:`Popularity` (the training period),
:class:`TrailingPopularity` (a window before each event, what the stream has seen by then)
and :class:`ItemKNN` (item-to-item cosine over the user's last items). The last two break
ties by training popularity, so their integer-valued or sparse scores do not fall back to
catalog order.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from evaluation.walk import Walk

DAY_MS = 86_400_000


def counts(interactions: pd.DataFrame, column: dict[str, int]) -> np.ndarray:
    """``[items] float64`` interaction counts per catalog column."""
    cols = interactions["item_id"].map(column).to_numpy(np.int64)
    return np.bincount(cols, minlength=len(column)).astype(np.float64)


def _tiebreak(popularity: np.ndarray) -> np.ndarray:
    """Training popularity scaled into [0, 0.5): added to integer-valued or sparse scores it
    orders their ties by popularity and nothing else."""
    scaled: np.ndarray = 0.5 * popularity / (popularity.max() + 1.0)
    return scaled


class Popularity:
    """The most interacted-with items of the training period, for everyone."""

    def __init__(self, train_counts: np.ndarray):
        self._scores = np.asarray(train_counts, np.float64)

    def __call__(self, walk: Walk, rows: slice) -> np.ndarray:
        n = len(range(*rows.indices(len(walk))))
        return np.broadcast_to(self._scores, (n, len(self._scores)))


class TrailingPopularity:
    """The most interacted-with items over a trailing window before each event.

    Counts every user's events strictly before the event's time (what the stream has seen by
    then), ties ordered by training popularity.

    Args:
        stream: All interactions the stream could have seen (past and the part itself).
        column: Item id → catalog column.
        window_days: The window.
        train_counts: ``[items]`` training-period counts, for ties.
    """

    def __init__(
        self,
        stream: pd.DataFrame,
        column: dict[str, int],
        window_days: int,
        train_counts: np.ndarray,
    ):
        order = np.argsort(stream["timestamp"].to_numpy(np.int64), kind="stable")
        self._times = stream["timestamp"].to_numpy(np.int64)[order] * 1000
        self._cols = stream["item_id"].map(column).to_numpy(np.int64)[order]
        self._window_ms = window_days * DAY_MS
        self._tiebreak = _tiebreak(train_counts)

    def __call__(self, walk: Walk, rows: slice) -> np.ndarray:
        times = walk.times_ms[rows]
        lo = np.searchsorted(self._times, times - self._window_ms, side="left")
        hi = np.searchsorted(self._times, times, side="left")
        n_items = len(self._tiebreak)
        out = np.empty((len(times), n_items), np.float64)
        for i, (a, b) in enumerate(zip(lo, hi, strict=True)):
            out[i] = np.bincount(self._cols[a:b], minlength=n_items)
        scores: np.ndarray = out + self._tiebreak
        return scores


class ItemKNN:
    """Item-to-item cosine similarity over the training period, summed over the user's last
    items; a user with no history gets training popularity.

    ``sim(i, j) = |U_i ∩ U_j| / sqrt(|U_i| |U_j|)`` over the sets of users who interacted with
    each item, the diagonal zeroed.

    Args:
        train: The training interactions.
        column: Item id → catalog column.
        last_items: How many of the user's most recent items vote.
        train_counts: ``[items]`` training-period counts, for users with no history and ties.
        similarity: :class:`ItemSimilarity` of the same training part, so several
            ``last_items`` share it; computed here when not given.
    """

    def __init__(
        self,
        train: pd.DataFrame,
        column: dict[str, int],
        last_items: int,
        train_counts: np.ndarray,
        similarity: ItemSimilarity | None = None,
    ):
        self.last_items = last_items
        self._similarity = similarity or ItemSimilarity(train, column)
        self._tiebreak = 1e-6 * _tiebreak(train_counts)

    def __call__(self, walk: Walk, rows: slice) -> np.ndarray:
        recent = walk.recent[rows, : self.last_items]
        out = np.zeros((len(recent), len(self._tiebreak)), np.float64)
        for j in range(recent.shape[1]):
            voters = np.flatnonzero(recent[:, j] >= 0)
            if len(voters):
                out[voters] += self._similarity.rows(recent[voters, j])
        return out + self._tiebreak


class ItemSimilarity:
    """:class:`ItemKNN`'s cosine similarity over a training part, built once so several
    ``last_items`` settings share it.

    A catalog of up to ``DENSE_ITEMS`` items gets the whole ``[items, items]`` matrix; a
    larger one (where it would not fit: 37 GiB at 100,000 items) computes each item's row when
    first asked, from the user-item pairs (the item's users, their items), and keeps the
    most recent ``CELLS`` worth of rows. Both give the same numbers.
    """

    DENSE_ITEMS = 4096
    CELLS = 2**24

    def __init__(self, train: pd.DataFrame, column: dict[str, int]):
        n = len(column)
        users = pd.factorize(train["user_id"])[0].astype(np.int64)
        items = train["item_id"].map(column).to_numpy(np.int64)
        pairs = np.unique(users * n + items)  # the binary user-item matrix, by user then item
        self._users, self._items = np.divmod(pairs, n)
        self._n = n
        per_item = np.bincount(self._items, minlength=n).astype(np.float64)
        self._norms = np.sqrt(per_item)
        self._user_starts = np.searchsorted(self._users, np.arange(self._users.max() + 2))
        by_item = np.argsort(self._items, kind="stable")
        self._item_users = self._users[by_item]
        self._item_starts = np.searchsorted(self._items[by_item], np.arange(n + 1))
        self._cache: dict[int, np.ndarray] = {}
        self._dense: np.ndarray | None = None
        if n <= self.DENSE_ITEMS:
            matrix = np.zeros((int(self._users.max()) + 1, n), np.float32)
            matrix[self._users, self._items] = 1.0
            overlap = (matrix.T @ matrix).astype(np.float64)
            dense = overlap / np.maximum(np.outer(self._norms, self._norms), 1e-12)
            np.fill_diagonal(dense, 0.0)
            self._dense = dense

    def rows(self, items: np.ndarray) -> np.ndarray:
        """``[len(items), catalog] float64`` the similarity rows of ``items`` (columns)."""
        if self._dense is not None:
            picked: np.ndarray = self._dense[items]
            return picked
        return np.stack([self.row(int(i)) for i in items])

    def row(self, item: int) -> np.ndarray:
        """``[catalog] float64`` one item's similarity to every item."""
        if self._dense is not None:
            one: np.ndarray = self._dense[item]
            return one
        row = self._cache.get(item)
        if row is None:
            users = self._item_users[self._item_starts[item] : self._item_starts[item + 1]]
            starts, ends = self._user_starts[users], self._user_starts[users + 1]
            picks = np.concatenate(
                [self._items[a:b] for a, b in zip(starts, ends, strict=True)] or [self._items[:0]]
            )
            overlap = np.bincount(picks, minlength=self._n).astype(np.float64)
            row = overlap / np.maximum(self._norms[item] * self._norms, 1e-12)
            row[item] = 0.0
            if len(self._cache) >= max(16, self.CELLS // self._n):
                self._cache.pop(next(iter(self._cache)))
            self._cache[item] = row
        return row
