"""Genre filters that run inside the FAISS search: a bitmap over the index's rows per
include/exclude mask pair, kept for the pairs asked for most recently."""

from __future__ import annotations

import faiss
import numpy as np

from catalog.overlay import Overlay
from index.items import ItemMeta, bits_passing
from index.tuning import with_selector

FILTERS_KEPT = 64
"""Genre-filter bitmaps kept per pair (one bit per item each)."""


class GenreFilters:
    """The search parameters for each genre-mask pair of one index, built once per pair."""

    def __init__(
        self,
        index: faiss.Index,
        meta: ItemMeta,
        hidden: np.ndarray | None = None,
        overlay: Overlay | None = None,
    ):
        """
        Args:
            index: The index the parameters are for (its own nprobe or efSearch is kept).
            meta: Its items' genres, row-aligned.
            hidden: ``[rows] bool`` rows no search may return (an overlay's deleted and
                replaced items); ``None``: none.
            overlay: A catalog overlay searched in one call with the index
                (``Overlay.combined``): the parameters then cover its items too.
        """
        self._index = index
        self._meta = meta
        self._hidden = hidden
        combined = overlay is not None and overlay.combined and bool(overlay.ids)
        self._overlay = overlay if combined else None
        self._filters: dict[tuple[int, int], tuple[faiss.SearchParameters, object]] = {}

    def params(self, include: int, exclude: int) -> faiss.SearchParameters | None:
        """FAISS search parameters that only consider items passing the genre masks (a bitmap
        over the index's rows, kept per mask pair), so a filtered search fetches what an
        unfiltered one does instead of over-fetching and widening; ``None`` without filters
        or hidden rows."""
        if not include and not exclude and self._hidden is None:
            return None
        key = (include, exclude)
        kept = self._filters.get(key)
        if kept is None:
            passes = self._meta.passing(include, exclude)
            if self._hidden is not None:
                passes &= ~self._hidden
            if len(self._filters) >= FILTERS_KEPT:
                self._filters.pop(next(iter(self._filters)))
            # The bitmap and selector are kept with the parameters: FAISS holds bare pointers.
            if self._overlay is not None:
                added = None
                if include or exclude:
                    added = bits_passing(self._overlay.tags, include, exclude)
                params, held = self._overlay.combined_params(passes, added)
                assert params is not None
                kept = self._filters[key] = (params, held)
            else:
                bitmap = np.packbits(passes, bitorder="little")
                selector = faiss.IDSelectorBitmap(len(passes), faiss.swig_ptr(bitmap))
                kept = self._filters[key] = (
                    with_selector(self._index, selector),
                    (selector, bitmap),
                )
        return kept[0]
