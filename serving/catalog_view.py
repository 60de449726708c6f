"""One index version with one state of its catalog overlay: what a batch searches, filters,
bans and answers from, read once per batch so every request of it sees the same catalog.

Without an overlay (or with an empty one) everything goes straight to the version. With one,
the version's search skips its hidden rows (a bitmap inside the FAISS search, as the genre
filters are), the overlay's items are searched beside it and merged into one top-k, and
rows past the version's are the overlay's (``catalog.overlay``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from catalog.overlay import Overlay, search
from features.activity import Activity, SeenIndex
from index.items import bits_passing
from serving.bundle import Bundle
from serving.filters import GenreFilters

_masks = threading.local()
"""Each serving thread's banned-row mask, all False between uses (kept across views)."""


class CatalogView:
    """``bundle``'s catalog as ``overlay`` has changed it (``None``: as built)."""

    def __init__(self, bundle: Bundle, overlay: Overlay | None = None):
        if overlay is not None and not overlay.ids and not overlay.hidden.any():
            overlay = None  # nothing changed: the version's own fast paths
        self.bundle = bundle
        self.overlay = overlay
        self.base = bundle.index.ntotal
        self.total = self.base + (len(overlay.ids) if overlay is not None else 0)
        """Rows of the row space: the version's, then the overlay's."""
        hidden = None if overlay is None or not overlay.hidden.any() else overlay.hidden
        self.filters = GenreFilters(bundle.index, bundle.meta, hidden, overlay)
        self.ids: tuple[str, ...] = () if overlay is None else overlay.ids
        """The overlay's items: row ``base + i`` is ``ids[i]``."""
        self._seen = SeenIndex(self.ids) if self.ids else None
        meta = bundle.meta
        if hidden is not None and hidden[meta.popular].any():
            shown = ~hidden[meta.popular]
            self.popular, self.popular_share = meta.popular[shown], meta.popular_share[shown]
        else:
            self.popular, self.popular_share = meta.popular, meta.popular_share

    def search(
        self, queries: np.ndarray, k: int, include: int, exclude: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each query's ``k`` best rows (row space) passing the genre masks, hidden rows never:
        ``[B, k]`` scores and rows, -1 padded."""
        params = self.filters.params(include, exclude)
        if not self.ids:
            return self.bundle.index.search(queries, k, params=params)
        assert self.overlay is not None
        passes = None
        if (include or exclude) and not self.overlay.combined:  # else in the parameters
            passes = self._passing_added(include, exclude, np.arange(len(self.ids)))
        return search(self.bundle.index, self.overlay, queries, k, params, passes)

    def passing(self, include: int, exclude: int, rows: np.ndarray) -> np.ndarray:
        """``[n] bool`` which rows (row space) pass the genre masks."""
        if not self.ids:
            return self.bundle.meta.passing(include, exclude, rows)
        mine = rows >= self.base
        out = np.empty(len(rows), bool)
        out[~mine] = self.bundle.meta.passing(include, exclude, rows[~mine])
        out[mine] = self._passing_added(include, exclude, rows[mine] - self.base)
        return out

    def _passing_added(self, include: int, exclude: int, at: np.ndarray) -> np.ndarray:
        assert self.overlay is not None
        return bits_passing(self.overlay.tags[at], include, exclude)

    def seen_rows(self, activity: Activity) -> np.ndarray:
        """``[n] int64`` rows of the items a user has seen: the version's, and the overlay's
        for items it holds (a replaced item's row moves there)."""
        rows = self.bundle.seen.rows(activity)
        if self._seen is None:
            return rows
        return np.concatenate([rows, self._seen.rows(activity) + self.base])

    def rows_of(self, item_ids: Sequence[str]) -> np.ndarray:
        """``[n] int64`` rows of the ids the catalog holds (exclude lists)."""
        rows = self.bundle.seen.rows_of(item_ids)
        if self._seen is None:
            return rows
        return np.concatenate([rows, self._seen.rows_of(item_ids) + self.base])

    def select(
        self,
        rows: np.ndarray,
        scores: np.ndarray,
        k: int,
        banned: np.ndarray,
        genres: tuple[int, int] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The first ``k`` candidates that are not banned (and, with ``genres``, pass those
        include/exclude masks: for the popular-items list; a search applied them already):
        ``[n]`` rows and ``[n]`` scores."""
        if len(rows) and rows[-1] < 0:  # the index found fewer than asked
            found = rows >= 0
            rows, scores = rows[found], scores[found]
        if genres is not None and (genres[0] or genres[1]):
            keep = self.passing(genres[0], genres[1], rows)
            rows, scores = rows[keep], scores[keep]
        if not len(banned):
            return rows[:k], scores[:k]
        # At most len(banned) of the first k + len(banned) candidates can be banned. A mask
        # over the rows beats np.isin's sort (BENCHMARKS.md has the figures). It is kept per
        # thread and cleared after use: a fresh one per request would cost a page fault for
        # every page the request touches, which grows with the catalog.
        head = rows[: k + len(banned)]
        is_banned = getattr(_masks, "banned", None)
        if is_banned is None or len(is_banned) < self.total:
            is_banned = _masks.banned = np.zeros(self.total, bool)
        is_banned[banned] = True
        try:
            picked = np.flatnonzero(~is_banned[head])[:k]
        finally:
            is_banned[banned] = False
        return head[picked], scores[picked]
