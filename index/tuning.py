"""An index kind's search setting, in one place: which knob each kind has (``nprobe`` for
IVF, ``efSearch`` for HNSW, none for a flat index), setting it, and FAISS search parameters
that keep it. The build tunes the knob, the manifest records it, the read path sets it and
serving's filtered searches carry it."""

from __future__ import annotations

from typing import cast

import faiss

NPROBE = "nprobe"
EF_SEARCH = "efSearch"


def knob(kind: str) -> str | None:
    """The search setting of an index kind (``flat``, ``ivf``, ``ivf-sq8``, ``hnsw``)."""
    if kind.startswith("ivf"):
        return NPROBE
    return EF_SEARCH if kind == "hnsw" else None


def set_knob(index: faiss.Index, name: str, value: int) -> None:
    """Sets ``nprobe`` or ``efSearch`` on ``index``.

    Raises:
        ValueError: ``name`` is neither.
    """
    if name == NPROBE:
        faiss.extract_index_ivf(index).nprobe = value
    elif name == EF_SEARCH:
        # downcast_index returns the concrete class; the manifest says which.
        cast(faiss.IndexHNSW, faiss.downcast_index(index)).hnsw.efSearch = value
    else:
        raise ValueError(f"no search setting {name!r}; {NPROBE} or {EF_SEARCH}")


def with_selector(index: faiss.Index, selector: faiss.IDSelector) -> faiss.SearchParameters:
    """Search parameters with ``selector`` that keep the index's own search setting (passing
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
