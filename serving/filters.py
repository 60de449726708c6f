"""Genre filters that run inside the FAISS search: a bitmap over the index's rows per
include/exclude mask pair, kept for the pairs asked for most recently."""

from __future__ import annotations

import faiss
import numpy as np

FILTERS_KEPT = 64
"""Genre-filter bitmaps kept per pair (1M items: 125 kB each)."""


class GenreFilters:
    """The search parameters for each genre-mask pair of one index, built once per pair."""

    def __init__(self, index: faiss.Index, genres: np.ndarray):
        """
        Args:
            index: The index the parameters are for (its own nprobe or efSearch is kept).
            genres: ``[ntotal] uint64`` genre bits of each row.
        """
        self._index = index
        self._genres = genres
        self._filters: dict[tuple[int, int], tuple[faiss.SearchParameters, object, np.ndarray]] = {}

    def params(self, include: int, exclude: int) -> faiss.SearchParameters | None:
        """FAISS search parameters that only consider items passing the genre masks (a bitmap
        over the index's rows, kept per mask pair), so a filtered search fetches what an
        unfiltered one does instead of over-fetching and widening; ``None`` without filters."""
        if not include and not exclude:
            return None
        key = (include, exclude)
        kept = self._filters.get(key)
        if kept is None:
            genres = self._genres
            passes = (genres & np.uint64(include)) != 0 if include else np.ones(len(genres), bool)
            if exclude:
                passes &= (genres & np.uint64(exclude)) == 0
            bitmap = np.packbits(passes, bitorder="little")
            selector = faiss.IDSelectorBitmap(len(passes), faiss.swig_ptr(bitmap))
            if len(self._filters) >= FILTERS_KEPT:
                self._filters.pop(next(iter(self._filters)))
            # The bitmap and selector are kept with the parameters: FAISS holds bare pointers.
            kept = self._filters[key] = (
                search_parameters(self._index, selector),
                selector,
                bitmap,
            )
        return kept[0]


def search_parameters(index: faiss.Index, selector: faiss.IDSelector) -> faiss.SearchParameters:
    """Parameters with ``selector`` that keep the index's own search setting (passing
    parameters replaces it: an IVF index would fall back to nprobe 1)."""
    params: faiss.SearchParameters
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:  # not an IVF index
        hnsw = getattr(faiss.downcast_index(index), "hnsw", None)
        if hnsw is None:
            params = faiss.SearchParameters()
        else:
            params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]  # not in the stubs
            params.efSearch = hnsw.efSearch  # type: ignore[attr-defined]  # declared as the base
    else:
        params = faiss.SearchParametersIVF()
        params.nprobe = ivf.nprobe
    params.sel = selector
    return params
