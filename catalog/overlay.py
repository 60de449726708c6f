"""The catalog changes since an index version, kept beside it and searched with it.

An :class:`Overlay` holds what the catalog topic said after the offsets the version was built
from: the items upserted since (their item-tower vectors and filter bitsets, searched by an
exact index of their own) and the version's rows that are hidden (deleted, or replaced by a
newer upsert). Rows ``0 .. base_rows-1`` are the version's, row ``base_rows + i`` the overlay's
``i``-th item: one row space for the search, the filters and the seen sets.

An overlay is never changed in place: :meth:`Overlay.apply` returns a new one, and whoever
serves it swaps one reference, so a search sees every change of a batch or none of it.

Over an IVF version the overlay is an IVF on the version's own coarse quantizer (each new
item in the list the version would put it in), and :func:`search` assigns each query to its
lists once for both: the overlay adds only its items in the probed lists (about ``nprobe /
nlist`` of them) to a search, and the pair answers as the version would with the changes
applied in place. Over a flat (or HNSW) version the overlay is searched exactly.
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
        coarse: The version's index when it is an IVF: the overlay then shares its quantizer.
        lists: ``[len(ids)] int64`` each item's list in ``coarse`` (empty without one).
    """

    base_rows: int
    hidden: np.ndarray
    ids: tuple[str, ...]
    vectors: np.ndarray
    tags: np.ndarray
    positions: Mapping[int, int]
    changes: int = 0
    coarse: faiss.IndexIVF | None = field(default=None, repr=False, compare=False)
    lists: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    _at: dict[str, int] = field(init=False, repr=False, compare=False)
    _index: faiss.Index = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_at", {item: i for i, item in enumerate(self.ids)})
        vectors = np.ascontiguousarray(self.vectors, np.float32)
        index: faiss.Index
        if self.coarse is None:
            index = faiss.IndexFlatIP(vectors.shape[1])
            if len(self.ids):
                index.add(vectors)
        else:
            c = self.coarse
            index = faiss.IndexIVFFlat(c.quantizer, c.d, c.nlist, c.metric_type)
            index.nprobe = c.nprobe
            if len(self.ids):  # into the lists already assigned: no quantizer search
                lists = np.ascontiguousarray(self.lists, np.int64)
                index.add_core(len(vectors), faiss.swig_ptr(vectors), None, faiss.swig_ptr(lists))
        object.__setattr__(self, "_index", index)

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
        self,
        queries: np.ndarray,
        k: int,
        passes: np.ndarray | None = None,
        assigned: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The overlay's best ``k`` for each query (inner product): ``[B, k] float32`` scores
        and ``[B, k] int64`` rows in the row space (-1 padded). ``passes``: ``[len(ids)] bool``
        the overlay items a filter lets through (``None``: all). ``assigned``: the queries'
        coarse lists (distances, lists) in the shared quantizer, when the overlay has one."""
        b = len(queries)
        n = len(self.ids) if passes is None else int(passes.sum())
        if n == 0 or k == 0:
            return np.full((b, k), -np.inf, np.float32), np.full((b, k), -1, np.int64)
        params: faiss.SearchParameters | None = None
        bitmap = None
        if self.coarse is not None:
            params = faiss.SearchParametersIVF()
            params.nprobe = self.coarse.nprobe if assigned is None else assigned[1].shape[1]
        if passes is not None:
            bitmap = np.packbits(passes, bitorder="little")
            params = params or faiss.SearchParameters()
            params.sel = faiss.IDSelectorBitmap(len(passes), faiss.swig_ptr(bitmap))
        q = np.ascontiguousarray(queries, np.float32)
        fetch = min(k, len(self.ids))
        if assigned is not None and self.coarse is not None:
            scores, rows = preassigned(self._index, q, fetch, assigned, params)
        else:
            scores, rows = self._index.search(q, fetch, params=params)
        rows = np.where(rows >= 0, rows + self.base_rows, -1)
        if rows.shape[1] < k:
            pad = k - rows.shape[1]
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
            rows = np.pad(rows, ((0, 0), (0, pad)), constant_values=-1)
        scores = np.where(rows >= 0, scores, -np.inf).astype(np.float32)
        return scores, rows.astype(np.int64)


def ivf_of(index: faiss.Index) -> faiss.IndexIVF | None:
    """``index`` as an IVF whose coarse assignment can be shared (``None``: not an IVF, or
    wrapped in a transform that a preassigned search would skip)."""
    index = faiss.downcast_index(index)
    return index if isinstance(index, faiss.IndexIVF) else None


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
    ivf.search_preassigned_c(
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
    """The version's best ``k`` (``params``: its filter and hidden rows) and the overlay's
    (``passes``: its items the filter lets through), merged into one top-k: ``[B, k]`` scores
    and int64 rows of the row space. Over an IVF version the queries are assigned to their
    lists once, for both."""
    if overlay is None or not overlay.ids:
        scores, rows = index.search(queries, k, params=params)
        return scores, rows.astype(np.int64)
    q = np.ascontiguousarray(queries, np.float32)
    ivf = overlay.coarse
    if ivf is None:
        scores, rows = index.search(q, k, params=params)
        added = overlay.search(q, k, passes)
    else:
        nprobe = ivf.nprobe if params is None else params.nprobe
        assigned = ivf.quantizer.search(q, nprobe)
        scores, rows = preassigned(ivf, q, k, assigned, params)
        added = overlay.search(q, k, passes, assigned)
    return merge((scores, rows.astype(np.int64)), added, k)


def merge(
    base: tuple[np.ndarray, np.ndarray], added: tuple[np.ndarray, np.ndarray], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's best ``k`` of two ranked lists (``[B, m]`` scores and rows, -1 padded),
    ties to the first list: one top-k over the version and the overlay."""
    scores = np.concatenate([base[0], added[0]], axis=1)
    rows = np.concatenate([base[1], added[1]], axis=1)
    scores = np.where(rows >= 0, scores, -np.inf)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return (
        np.take_along_axis(scores, order, axis=1).astype(np.float32),
        np.take_along_axis(rows, order, axis=1),
    )
