"""The catalog changes since an index version, kept beside it and searched with it.

An :class:`Overlay` holds what the catalog topic said after the offsets the version was built
from: the items upserted since (their item-tower vectors and filter bitsets, searched by an
exact index of their own) and the version's rows that are hidden (deleted, or replaced by a
newer upsert). Rows ``0 .. base_rows-1`` are the version's, row ``base_rows + i`` the overlay's
``i``-th item: one row space for the search, the filters and the seen sets.

An overlay is never changed in place: :meth:`Overlay.apply` returns a new one, and whoever
serves it swaps one reference, so a search sees every change of a batch or none of it.

Over an IVF-Flat version the overlay is an IVF on the version's own coarse quantizer (each
new item in the list the version would put it in), stacked under the version's lists as lists
``nlist .. 2 nlist - 1`` of one index that is searched in one FAISS call: each query probes its
lists in both, so the overlay adds only its items in the probed lists (about ``nprobe /
nlist`` of them), one selector covers both, FAISS keeps one top-k, and the pair answers as the
version would with the changes applied in place. Over any other version (flat, HNSW, a
quantized IVF) the overlay is searched exactly beside it and the two lists merged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import faiss
import numpy as np

from catalog.events import ItemChange

Lookup = Callable[[Sequence[str]], np.ndarray]
"""Item ids → the version's rows (-1: not in the version), as ``SeenIndex.lookup``."""


@dataclass(frozen=True)
class Overlay:
    """One state of the changes past an index version.

    Attributes:
        base_rows: Rows of the version's index.
        hidden: ``[base_rows] bool`` version rows never to be answered (deleted or replaced).
        ids: The overlay's items, row ``base_rows + i`` for ``ids[i]``.
        vectors: ``[len(ids), dim] float32`` their item-tower vectors.
        tags: ``[len(ids), words] uint64`` their filter bitsets (``index.items.tag_bits``).
        positions: Partition → the next offset of the catalog topic to apply.
        changes: Events applied since the version (for the record and the fold-in rule).
        coarse: The version's index when it is an IVF-Flat: the overlay then shares its
            quantizer and is searched with it in one call.
        lists: ``[len(ids)] int64`` each item's list in ``coarse`` (empty without one).
        version: The version's index as loaded (kept alive while the overlay points into it).
    """

    base_rows: int
    hidden: np.ndarray
    ids: tuple[str, ...]
    vectors: np.ndarray
    tags: np.ndarray
    positions: Mapping[int, int]
    changes: int = 0
    coarse: faiss.IndexIVFFlat | None = field(default=None, repr=False, compare=False)
    lists: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    version: faiss.Index | None = field(default=None, repr=False, compare=False)
    _at: dict[str, int] = field(init=False, repr=False, compare=False)
    _index: faiss.Index = field(init=False, repr=False, compare=False)
    _combined: faiss.IndexIVFFlat | None = field(init=False, repr=False, compare=False)
    _keep: tuple[object, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_at", {item: i for i, item in enumerate(self.ids)})
        vectors = np.ascontiguousarray(self.vectors, np.float32)
        n = len(self.ids)
        combined = None
        keep: tuple[object, ...] = ()
        index: faiss.Index
        if self.coarse is None:
            index = faiss.IndexFlatIP(vectors.shape[1])
            if n:
                index.add(vectors)
        else:
            c = self.coarse
            index = faiss.IndexIVFFlat(c.quantizer, c.d, c.nlist, c.metric_type)
            if n:  # into the lists already assigned, under ids past the version's bitmap
                lists = np.ascontiguousarray(self.lists, np.int64)
                ids = np.arange(self.pad, self.pad + n, dtype=np.int64)
                index.add_core(
                    n, faiss.swig_ptr(vectors), faiss.swig_ptr(ids), faiss.swig_ptr(lists)
                )
            # One index over both: the version's lists, then the overlay's (no copy of either).
            parts = faiss.InvertedListsPtrVector()  # type: ignore[attr-defined]  # not in the stubs
            parts.push_back(c.invlists)
            parts.push_back(index.invlists)
            stacked = faiss.VStackInvertedLists(  # type: ignore[attr-defined]  # not in the stubs
                parts.size(), parts.data()
            )
            combined = faiss.IndexIVFFlat(c.quantizer, c.d, 2 * c.nlist, c.metric_type)
            combined.replace_invlists(stacked, False)
            combined.is_trained = True
            combined.ntotal = c.ntotal + n
            combined.nprobe = 2 * self.probe
            keep = (parts, stacked)
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_combined", combined)
        object.__setattr__(self, "_keep", keep)

    @property
    def pad(self) -> int:
        """Where the overlay's ids start inside a combined search: the version's rows rounded
        up to a byte, so one bitmap is the version's bytes, then the overlay's."""
        return (self.base_rows + 7) // 8 * 8

    @property
    def probe(self) -> int:
        """Lists a combined search probes in the version (and as many in the overlay): its
        nprobe, at most its nlist (FAISS clamps a search's nprobe to the lists there are)."""
        assert self.coarse is not None
        return min(self.coarse.nprobe, self.coarse.nlist)

    @property
    def combined(self) -> bool:
        """Searched in one call with the version (an IVF-Flat version's overlay)."""
        return self._combined is not None

    def combined_params(
        self, base_passes: np.ndarray | None, passes: np.ndarray | None
    ) -> tuple[faiss.SearchParametersIVF | None, object]:
        """For a combined overlay: parameters for :func:`search` that let through the
        version's rows where ``base_passes`` (``[base_rows] bool``; ``None``: all) and the
        overlay's items where ``passes`` (``None``: all), and what must outlive them (FAISS
        holds bare pointers); ``(None, None)`` when everything passes."""
        assert self.coarse is not None
        if base_passes is None and passes is None:
            return None, None
        base = (
            np.full(self.pad // 8, 0xFF, np.uint8)
            if base_passes is None
            else np.packbits(base_passes, bitorder="little")
        )
        added = np.ones(len(self.ids), bool) if passes is None else passes
        bitmap = np.concatenate((base, np.packbits(added, bitorder="little")))
        selector = faiss.IDSelectorBitmap(self.pad + len(self.ids), faiss.swig_ptr(bitmap))
        params = faiss.SearchParametersIVF()
        params.nprobe = 2 * self.probe
        params.sel = selector
        return params, (selector, bitmap)

    @classmethod
    def empty(
        cls,
        base_rows: int,
        dim: int,
        words: int,
        positions: Mapping[int, int] | None = None,
        index: faiss.Index | None = None,
    ) -> Overlay:
        """No change yet past ``positions`` (the version's offsets); ``index``: the version's,
        whose coarse quantizer the overlay shares when it is an IVF."""
        return cls(
            base_rows,
            np.zeros(base_rows, bool),
            (),
            np.zeros((0, dim), np.float32),
            np.zeros((0, words), np.uint64),
            dict(positions or {}),
            coarse=None if index is None else ivf_of(index),
            version=index,
        )

    @property
    def rows(self) -> int:
        """The row space: the version's rows, then the overlay's."""
        return self.base_rows + len(self.ids)

    def apply(
        self,
        changes: Sequence[ItemChange],
        vectors: np.ndarray,
        tags: np.ndarray,
        lookup: Lookup,
        positions: Mapping[int, int],
    ) -> Overlay:
        """A new overlay with ``changes`` applied in order (a later change of an item wins).

        Args:
            changes: Decoded events, in the topic's order for each item.
            vectors: ``[upserts, dim]`` the item-tower vectors of the upserts, in order.
            tags: ``[upserts, words]`` their filter bitsets, in order.
            lookup: The version's rows of item ids.
            positions: Partition → next offset once these are applied.
        """
        upserts = sum(not c.deleted for c in changes)
        if not upserts == len(vectors) == len(tags):
            raise ValueError(f"{upserts} upserts but {len(vectors)} vectors, {len(tags)} tags")
        hidden = self.hidden.copy()
        at = dict(self._at)  # item → its row in the overlay being built
        ids = list(self.ids)
        alive = np.ones(len(ids) + upserts, bool)
        source = np.arange(len(ids) + upserts)  # each row: an old row, or n + an upsert's
        n = len(ids)
        base = lookup([c.item_id for c in changes])
        upsert = 0
        for change, row in zip(changes, base, strict=True):
            if row >= 0:
                hidden[row] = True  # deleted, or replaced by the upsert below
            mine = at.get(change.item_id)
            if change.deleted:
                if mine is not None:
                    alive[mine] = False
                    del at[change.item_id]
                continue
            if mine is None:
                at[change.item_id] = mine = len(ids)
                ids.append(change.item_id)
            source[mine] = n + upsert  # the newest upsert of the item wins
            upsert += 1
        rows = len(ids)
        keep = alive[:rows]
        picked = source[:rows][keep]
        dim, words = self.vectors.shape[1], self.tags.shape[1]
        new_vectors = np.asarray(vectors, np.float32).reshape(-1, dim)
        vectors_all = np.concatenate([self.vectors, new_vectors])
        tags_all = np.concatenate([self.tags, np.asarray(tags, np.uint64)])
        lists = self.lists
        if self.coarse is not None:
            new_lists = np.zeros(0, np.int64)
            if len(new_vectors):
                new_lists = self.coarse.quantizer.assign(new_vectors, 1)[:, 0]
            lists = np.concatenate([self.lists, new_lists.astype(np.int64)])[picked]
        return Overlay(
            self.base_rows,
            hidden,
            tuple(item for item, k in zip(ids, keep, strict=True) if k),
            vectors_all[picked].reshape(-1, dim),
            tags_all[picked].reshape(-1, words),
            {**self.positions, **positions},
            self.changes + len(changes),
            self.coarse,
            lists,
            self.version,
        )

    def rows_of(self, item_ids: Sequence[str], lookup: Lookup) -> np.ndarray:
        """``[n] int64`` each id's row in the row space: the overlay's when it holds the item
        (an upsert replaces the version's row), else the version's unless hidden, else -1."""
        base = lookup(item_ids)
        out = np.where((base >= 0) & ~self.hidden[np.maximum(base, 0)], base, -1)
        for i, item in enumerate(item_ids):
            at = self._at.get(item)
            if at is not None:
                out[i] = self.base_rows + at
        return out.astype(np.int64)

    def search(
        self, queries: np.ndarray, k: int, passes: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The overlay's own best ``k`` for each query (inner product, exact): ``[B, m]
        float32`` scores and ``[B, m] int64`` rows in the row space, ``m`` the smaller of
        ``k`` and the items that pass (``k`` and -1 padded when none does). ``passes``:
        ``[len(ids)] bool`` the items a filter lets through (``None``: all). Not for a
        combined overlay (:func:`search` searches it with the version)."""
        b = len(queries)
        if not self.ids or k == 0 or (passes is not None and not passes.any()):
            return np.full((b, k), -np.inf, np.float32), np.full((b, k), -1, np.int64)
        if self._combined is not None:
            raise ValueError("a combined overlay is searched with its version (search())")
        params = None
        bitmap = None  # held until the search: FAISS keeps a bare pointer to it
        if passes is not None:
            bitmap = np.packbits(passes, bitorder="little")
            params = faiss.SearchParameters()
            params.sel = faiss.IDSelectorBitmap(len(passes), faiss.swig_ptr(bitmap))
        n = len(self.ids) if passes is None else int(np.count_nonzero(passes))
        scores, rows = self._index.search(
            np.ascontiguousarray(queries, np.float32), min(k, n), params=params
        )
        found = rows >= 0  # FAISS pads past its items with -1
        rows[found] += self.base_rows
        scores[~found] = -np.inf
        return scores, rows


def ivf_of(index: faiss.Index) -> faiss.IndexIVFFlat | None:
    """``index`` as an IVF-Flat an overlay can be stacked under (``None``: another kind, or
    one wrapped in a transform a preassigned search would skip)."""
    index = faiss.downcast_index(index)
    return index if isinstance(index, faiss.IndexIVFFlat) else None


def preassigned(
    ivf: faiss.IndexIVF,
    queries: np.ndarray,
    k: int,
    assigned: tuple[np.ndarray, np.ndarray],
    params: faiss.SearchParameters | None,
) -> tuple[np.ndarray, np.ndarray]:
    """``ivf``'s best ``k`` in the lists ``assigned`` gives each query (``[B, nprobe]``
    distances and lists), with ``params`` (its selector; its nprobe must be the lists'
    width). FAISS's Python wrapper of this search takes no parameters; its C++ call does."""
    n = len(queries)
    # Held in names until the call: FAISS gets bare pointers to them.
    q = np.ascontiguousarray(queries, np.float32)
    distances = np.ascontiguousarray(assigned[0], np.float32)
    lists = np.ascontiguousarray(assigned[1], np.int64)
    if params is None and lists.shape[1] != ivf.nprobe:
        raise ValueError(f"{lists.shape[1]} lists a query, but the index probes {ivf.nprobe}")
    scores = np.empty((n, k), np.float32)
    rows = np.empty((n, k), np.int64)
    ivf.search_preassigned_c(  # type: ignore[attr-defined]  # the C++ call, not in the stubs
        n,
        faiss.swig_ptr(q),
        k,
        faiss.swig_ptr(lists),
        faiss.swig_ptr(distances),
        faiss.swig_ptr(scores),
        faiss.swig_ptr(rows),
        False,
        params,
    )
    return scores, rows


def search(
    index: faiss.Index,
    overlay: Overlay | None,
    queries: np.ndarray,
    k: int,
    params: faiss.SearchParameters | None = None,
    passes: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of the version and its overlay: ``[B, k]`` scores and int64 rows of the
    row space, -1 padded.

    A combined overlay (IVF-Flat version) is one search: ``params`` from
    :meth:`Overlay.combined_params` (the version's rows and the overlay's items to let
    through), ``passes`` unused. Otherwise the version is searched with ``params`` (its
    filter and hidden rows), the overlay exactly with ``passes`` (its items the filter lets
    through), and the two lists merged."""
    q = np.ascontiguousarray(queries, np.float32)
    if overlay is None or not overlay.ids:
        scores, rows = index.search(q, k, params=params)
        return scores, rows.astype(np.int64)
    if overlay._combined is None:
        scores, rows = index.search(q, k, params=params)
        added = overlay.search(q, k, passes)
        return merge((scores, rows.astype(np.int64)), added, k)
    c = overlay.coarse
    assert c is not None
    distances, lists = c.quantizer.search(q, overlay.probe)
    # Each probed list in the version, and the same list among the overlay's.
    lists = np.concatenate((lists, lists + c.nlist), axis=1)
    distances = np.concatenate((distances, distances), axis=1)
    scores, rows = preassigned(overlay._combined, q, k, (distances, lists), params)
    mine = rows >= overlay.pad
    rows[mine] -= overlay.pad - overlay.base_rows
    return scores, rows


def merge(
    base: tuple[np.ndarray, np.ndarray], added: tuple[np.ndarray, np.ndarray], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's best ``k`` of two ranked lists (``[B, m]`` scores and rows, -1 padded),
    ties to the first list: one top-k over the version and the overlay."""
    # Every first list full, its k-th at least the second list's best: nothing moves.
    if (
        base[1].shape[1] >= k > 0
        and (base[1][:, k - 1] >= 0).all()
        and (added[0][:, 0] <= base[0][:, k - 1]).all()
    ):
        return base[0][:, :k].astype(np.float32), base[1][:, :k]
    scores = np.concatenate((base[0], added[0]), axis=1).astype(np.float32, copy=False)
    rows = np.concatenate((base[1], added[1]), axis=1)
    scores[rows < 0] = -np.inf  # a copy: the inputs are left as they were
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    at = np.arange(len(order))[:, None]
    return scores[at, order], rows[at, order]
