"""The candidate sources and the one interface they share.

* :class:`TwoTowerSource`: the user-tower query searched in the item index (today's stage).
* :class:`NeighbourSource`: item-to-item neighbours of the user's recent items, their
  similarities summed per candidate (item-KNN as a source), from a
  :class:`candidates.neighbours.NeighbourTable`.
* :class:`TrendingSource`: the most interacted-with items over a trailing window, from a
  :class:`Trending` that the stream keeps current (``observe``) and the clock ages
  (``advance``).

Every source leaves out each request's banned rows (its seen set) and returns at most ``n``
rows per request, best first, ``-1``-padded.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import faiss
import numpy as np

from candidates.neighbours import NeighbourTable


@dataclass(frozen=True)
class Query:
    """A batch of requests as the sources read them.

    Attributes:
        recent: ``[B, H] int64`` each request's recent items as catalog rows, newest first,
            ``-1``-padded.
        times_ms: ``[B] int64`` request times.
        vectors: ``[B, dim] float32`` user-tower queries (``None``: no source needs them).
        banned: Each request's ``int64`` rows it must not be answered with (``()``: none).
        last_ms: ``[B] int64`` the time of each user's latest event (``-1``: none); for the
            ranking features.
        earlier: ``[B] int64`` how many events each user has had; for the ranking features.
    """

    recent: np.ndarray
    times_ms: np.ndarray
    vectors: np.ndarray | None = None
    banned: Sequence[np.ndarray] = ()
    last_ms: np.ndarray | None = None
    earlier: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.times_ms)

    @property
    def most_banned(self) -> int:
        """The most rows any request of the batch bans."""
        return max((len(b) for b in self.banned), default=0)


@dataclass(frozen=True)
class Candidates:
    """``rows``: ``[B, n] int64`` best first, ``-1``-padded; ``scores``: ``[B, n] float32``
    the source's own scores (``-inf`` where padded), comparable within a source only."""

    rows: np.ndarray
    scores: np.ndarray


class Source(Protocol):
    """Proposes up to ``n`` unbanned rows for each request of a batch."""

    name: str

    def __call__(self, query: Query, n: int) -> Candidates: ...


_masks = threading.local()


def banned_mask(items: int) -> np.ndarray:
    """This thread's ``[items] bool`` scratch mask, all False (set a request's banned rows,
    read, and clear them again: cheaper than ``np.isin``'s sort on every request)."""
    mask: np.ndarray | None = getattr(_masks, "mask", None)
    if mask is None or len(mask) < items:
        mask = _masks.mask = np.zeros(items, bool)
    return mask


def keep_unbanned(
    rows: np.ndarray, scores: np.ndarray, banned: Sequence[np.ndarray], n: int
) -> Candidates:
    """The first ``n`` valid (``>= 0``) rows of each ranked list that its request does not
    ban. ``rows``/``scores``: ``[B, m]`` best first."""
    out_rows = np.full((len(rows), n), -1, np.int64)
    out_scores = np.full((len(rows), n), -np.inf, np.float32)
    mask = banned_mask(int(rows.max(initial=-1)) + 1) if banned else None
    for i in range(len(rows)):
        valid = rows[i] >= 0
        if mask is not None and len(banned[i]):
            ban = banned[i]
            ban = ban[ban < len(mask)]
            mask[ban] = True
            valid &= ~mask[np.where(valid, rows[i], 0)]
            mask[ban] = False
        keep = np.flatnonzero(valid)[:n]
        out_rows[i, : len(keep)] = rows[i, keep]
        out_scores[i, : len(keep)] = scores[i, keep]
    return Candidates(out_rows, out_scores)


class TwoTowerSource:
    """The user-tower queries searched in the item index (inner product, as served).

    Args:
        index: The catalog's FAISS index, row ``i`` the catalog's row ``i``.
        params: Search parameters (an IVF index's ``nprobe``); ``None``: the index's own.
    """

    name = "two_tower"

    def __init__(self, index: faiss.Index, params: faiss.SearchParameters | None = None):
        self._index = index
        self._params = params

    @classmethod
    def exact(cls, item_vectors: np.ndarray) -> TwoTowerSource:
        """Over an exact (flat inner-product) index of ``item_vectors``."""
        vectors = np.ascontiguousarray(item_vectors, np.float32)
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors)
        return cls(index)

    def __call__(self, query: Query, n: int) -> Candidates:
        if query.vectors is None:
            raise ValueError("the two-tower source needs the user-tower vectors")
        fetch = min(n + query.most_banned, self._index.ntotal)
        vectors = np.ascontiguousarray(query.vectors, np.float32)
        scores, rows = self._index.search(vectors, fetch, params=self._params)
        return keep_unbanned(rows, scores, query.banned, n)


class NeighbourSource:
    """Item-to-item neighbours of each request's last ``last_items`` recent items: a
    candidate's score is its similarity summed over the recent items it neighbours, plus a
    tie-break by ``prior`` (scaled into [0, 1e-6)). A request without recent items gets none.

    Args:
        table: Each item's most similar items.
        last_items: How many of the newest recent items vote.
        prior: ``[items]`` popularity that orders ties (``None``: by row).
    """

    name = "neighbours"

    def __init__(self, table: NeighbourTable, last_items: int, prior: np.ndarray | None = None):
        self._table = table
        self.last_items = last_items
        items = len(table.neighbours)
        self._last = threading.local()
        self._prior = (
            np.zeros(items) if prior is None else 1e-6 * tie_break(np.asarray(prior, np.float64))
        )

    def sums(self, query: Query) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every row a request's recent items neighbour, with its summed similarity (no
        tie-break, nothing banned): ``[p]`` requests, ``[p]`` rows and ``[p] float64`` sums,
        by request then row. Kept for the thread's last query: the source and the ranking
        feature both ask for the same batch's."""
        last: tuple[Query, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = getattr(
            self._last, "value", None
        )
        if last is not None and last[0] is query:
            return last[1]
        found = self._sums(query)
        self._last.value = (query, found)
        return found

    def _sums(self, query: Query) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        recent = np.asarray(query.recent, np.int64)[:, : self.last_items]
        b, items = len(recent), len(self._table.neighbours)
        has = recent >= 0
        at = np.where(has, recent, 0)
        neighbours = self._table.neighbours[at]  # [B, L, m]
        valid = has[..., None] & (neighbours >= 0)
        request = np.broadcast_to(np.arange(b, dtype=np.int64)[:, None, None], neighbours.shape)
        keys = request[valid] * items + neighbours[valid]
        weights = self._table.weights[at][valid].astype(np.float64)
        # Equal keys side by side (a stable sort keeps each key's weights in their order),
        # then one sum per run of equal keys: what np.unique + bincount did, in fewer passes.
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        starts = np.flatnonzero(np.concatenate(([len(keys) > 0], keys[1:] != keys[:-1])))
        sums = np.add.reduceat(weights[order], starts) if len(keys) else np.zeros(0)
        owner, rows = np.divmod(keys[starts], items)
        return owner, rows, sums

    def scores_of(
        self, query: Query, owner: np.ndarray, rows: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``[m]`` the summed similarity of each (request, row) pair (0: no recent item
        neighbours it), and ``[m]`` its z-score across the whole catalog for that request
        (what the validated blend mixes; 0 for a request with no neighbours)."""
        got_owner, got_rows, sums = self.sums(query)
        items, b = len(self._table.neighbours), len(query)
        keys = got_owner * items + got_rows
        want = np.asarray(owner, np.int64) * items + np.asarray(rows, np.int64)
        at = np.minimum(np.searchsorted(keys, want), max(len(keys) - 1, 0))
        found = (keys[at] == want) if len(keys) else np.zeros(len(want), bool)
        scores = np.where(found, sums[at] if len(keys) else 0.0, 0.0)
        mean = np.bincount(got_owner, sums, minlength=b) / items
        square = np.bincount(got_owner, sums**2, minlength=b) / items
        spread = np.sqrt(np.maximum(square - mean**2, 0.0))
        safe = np.where(spread > 0, spread, 1.0)
        z = np.where(spread[owner] > 0, (scores - mean[owner]) / safe[owner], 0.0)
        return scores, z

    def __call__(self, query: Query, n: int) -> Candidates:
        owner, rows, sums = self.sums(query)
        b, items = len(query), len(self._table.neighbours)
        if query.banned and query.most_banned:
            mask = banned_mask(items)
            kept = np.ones(len(rows), bool)
            starts = np.searchsorted(owner, np.arange(b + 1))
            for i, ban in enumerate(query.banned):
                if len(ban) and starts[i] < starts[i + 1]:
                    mask[ban] = True
                    kept[starts[i] : starts[i + 1]] = ~mask[rows[starts[i] : starts[i + 1]]]
                    mask[ban] = False
            owner, rows, sums = owner[kept], rows[kept], sums[kept]
        sums = sums + self._prior[rows]
        order = np.lexsort((-sums, owner))  # by request, then best first; ties by row
        owner, rows, sums = owner[order], rows[order], sums[order]
        place = np.arange(len(owner)) - np.searchsorted(owner, owner)
        top = place < n
        out_rows = np.full((b, n), -1, np.int64)
        out_scores = np.full((b, n), -np.inf, np.float32)
        out_rows[owner[top], place[top]] = rows[top]
        out_scores[owner[top], place[top]] = sums[top]
        return Candidates(out_rows, out_scores)


def tie_break(popularity: np.ndarray) -> np.ndarray:
    """Popularity scaled into [0, 0.5): added to whole-number scores it orders their ties by
    popularity and nothing else."""
    scaled: np.ndarray = 0.5 * popularity / (popularity.max(initial=0.0) + 1.0)
    return scaled


class Trending:
    """Each item's events over a trailing window, as the stream delivers them.

    ``observe`` adds events (any order); ``advance`` moves the clock, forgetting events older
    than the window. The counts hold every observed event no older than ``t - window`` at
    clock ``t``: a replay that observes the events before ``t`` and advances to ``t`` counts
    ``[t - window, t)``, the window :class:`evaluation.baselines.TrailingPopularity` counts.
    The events in the window are kept (16 bytes each) so each is forgotten as it ages out.

    Thread-safe: the stream's thread observes while serving threads read ``top``.

    Args:
        items: Catalog size.
        window_ms: The window.
        prior: ``[items]`` popularity that orders ties (``None``: by row).
        refresh_ms: A ranking is reused until the clock has moved this far and the counts
            have changed (0: recomputed on every change, as the offline walk does).
    """

    def __init__(
        self, items: int, window_ms: int, prior: np.ndarray | None = None, refresh_ms: int = 0
    ):
        self.window_ms = int(window_ms)
        self._counts = np.zeros(items, np.float64)
        self._tiebreak = (
            np.zeros(items) if prior is None else tie_break(np.asarray(prior, np.float64))
        )
        self._times = np.zeros(0, np.int64)
        self._rows = np.zeros(0, np.int64)
        self._now = np.iinfo(np.int64).min
        self._refresh_ms = refresh_ms
        self._ranked: tuple[np.ndarray, np.ndarray] | None = None
        self._ranked_at = 0
        self._changed = True
        self._lock = threading.Lock()

    def observe(self, rows: np.ndarray, times_ms: np.ndarray) -> None:
        """Counts events (catalog rows and their times); ones already out of the window are
        dropped."""
        rows, times = np.asarray(rows, np.int64), np.asarray(times_ms, np.int64)
        if not len(rows):
            return
        with self._lock:
            in_order = len(self._times) == 0 or times.min() >= self._times[-1]
            self._times = np.concatenate([self._times, times])
            self._rows = np.concatenate([self._rows, rows])
            if not in_order or (np.diff(times) < 0).any():
                order = np.argsort(self._times, kind="stable")
                self._times, self._rows = self._times[order], self._rows[order]
            np.add.at(self._counts, rows, 1.0)
            self._changed = True
            self._forget()

    def advance(self, now_ms: int) -> None:
        """Moves the clock to ``now_ms`` (never back)."""
        with self._lock:
            self._now = max(self._now, int(now_ms))
            self._forget()

    def _forget(self) -> None:
        cut = int(np.searchsorted(self._times, self._now - self.window_ms, side="left"))
        if cut:
            np.subtract.at(self._counts, self._rows[:cut], 1.0)
            self._times, self._rows = self._times[cut:], self._rows[cut:]
            self._changed = True

    def counts_of(self, rows: np.ndarray) -> np.ndarray:
        """``[len(rows)] float32`` the items' counts in the window now."""
        with self._lock:
            counts: np.ndarray = self._counts[rows].astype(np.float32)
        return counts

    def top(self, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """``[depth] int64`` rows and ``[depth] float32`` scores (count plus tie-break), best
        first."""
        with self._lock:
            ranked = self._ranked
            stale = self._changed and (
                self._refresh_ms <= 0 or self._now - self._ranked_at >= self._refresh_ms
            )
            if ranked is None or stale or len(ranked[0]) < min(depth, len(self._counts)):
                scores = self._counts + self._tiebreak
                depth_kept = min(max(depth, 256), len(scores))
                head = np.argpartition(-scores, depth_kept - 1)[:depth_kept]
                head = head[np.lexsort((head, -scores[head]))]  # best first, ties by row
                ranked = self._ranked = (head.astype(np.int64), scores[head].astype(np.float32))
                self._ranked_at, self._changed = self._now, False
        return ranked[0][:depth], ranked[1][:depth]


class TrendingSource:
    """The most interacted-with items over the :class:`Trending` window, the same list for
    every request less what each one bans."""

    name = "trending"

    def __init__(self, trending: Trending):
        self.trending = trending

    def __call__(self, query: Query, n: int) -> Candidates:
        rows, scores = self.trending.top(n + query.most_banned)
        b = len(query)
        return keep_unbanned(
            np.broadcast_to(rows, (b, len(rows))),
            np.broadcast_to(scores, (b, len(scores))),
            query.banned,
            n,
        )
