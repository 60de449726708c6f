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

from candidates.neighbours import cosine_neighbours, distinct_pairs
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
        # The window slides forward in time order: each event's counts are the previous
        # one's plus the events that entered and minus those that left (whole numbers in
        # float64, so exactly what counting the window afresh gives).
        window = np.zeros(n_items, np.float64)
        a = b = 0
        for i in np.argsort(times, kind="stable"):
            if lo[i] >= b:  # no overlap with the previous window: count afresh
                window[:] = np.bincount(self._cols[lo[i] : hi[i]], minlength=n_items)
            else:
                np.add.at(window, self._cols[b : hi[i]], 1.0)
                np.subtract.at(window, self._cols[a : lo[i]], 1.0)
            a, b = lo[i], hi[i]
            out[i] = window
        out += self._tiebreak  # in place: a second [events, items] array is 256 MB a chunk
        return out


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
                self._similarity.add_rows(out, voters, recent[voters, j])
        out += self._tiebreak
        return out


class ItemSimilarity:
    """:class:`ItemKNN`'s cosine similarity over a training part, built once so several
    ``last_items`` settings share it.

    A catalog of up to ``DENSE_ITEMS`` items gets the whole ``[items, items]`` matrix. A
    larger one (where that would not fit: 37 GiB at 100,000 items) keeps each item's
    ``NEIGHBOURS`` most similar items, computed from the user-item pairs (the item's users,
    their items): item-KNN as it is deployed, with its neighbour lists truncated.
    """

    DENSE_ITEMS = 4096
    NEIGHBOURS = 200

    def __init__(self, train: pd.DataFrame, column: dict[str, int]):
        n = len(column)
        items = train["item_id"].map(column).to_numpy(np.int64)
        users, items = distinct_pairs(train["user_id"].to_numpy(object), items, n)
        self._n = n
        if n <= self.DENSE_ITEMS:
            norms = np.sqrt(np.bincount(items, minlength=n).astype(np.float64))
            matrix = np.zeros((int(users.max()) + 1, n), np.float32)
            matrix[users, items] = 1.0
            overlap = (matrix.T @ matrix).astype(np.float64)
            dense = overlap / np.maximum(np.outer(norms, norms), 1e-12)
            np.fill_diagonal(dense, 0.0)
            self._dense: np.ndarray | None = dense
            return
        self._dense = None
        table = cosine_neighbours(users, items, n, self.NEIGHBOURS)
        self._neighbours, self._weights = table.neighbours, table.weights

    def add_rows(self, out: np.ndarray, rows: np.ndarray, items: np.ndarray) -> None:
        """``out[rows] += self.rows(items)``, without building the dense rows of a large
        catalog: each item's neighbours are added where they fall (``rows`` distinct)."""
        if self._dense is not None:
            out[rows] += self._dense[items]
            return
        neighbours, weights = self._neighbours[items], self._weights[items]
        at = np.repeat(rows, neighbours.shape[1])
        known = neighbours.ravel() >= 0
        # One item's neighbours are distinct, and each row gets one item: no cell twice.
        out[at[known], neighbours.ravel()[known]] += weights.ravel()[known]

    def rows(self, items: np.ndarray) -> np.ndarray:
        """``[len(items), catalog] float64`` the similarity rows of ``items`` (columns)."""
        if self._dense is not None:
            picked: np.ndarray = self._dense[items]
            return picked
        out = np.zeros((len(items), self._n), np.float64)
        neighbours, weights = self._neighbours[items], self._weights[items]
        rows = np.repeat(np.arange(len(items)), neighbours.shape[1])
        known = neighbours.ravel() >= 0
        out[rows[known], neighbours.ravel()[known]] = weights.ravel()[known]
        return out
