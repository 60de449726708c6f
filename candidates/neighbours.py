"""Item-to-item neighbour tables: each item's most similar items, from co-occurrence in
interactions or from the item tower's vectors."""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np
import pandas as pd


@dataclass(frozen=True)
class NeighbourTable:
    """``neighbours``: ``[items, m] int32`` each item's most similar items (never itself),
    most similar first, ``-1``-padded; ``weights``: ``[items, m] float32`` their
    similarities (0 where padded)."""

    neighbours: np.ndarray
    weights: np.ndarray

    def __post_init__(self) -> None:
        if self.neighbours.shape != self.weights.shape or self.neighbours.ndim != 2:
            raise ValueError(
                f"neighbours {self.neighbours.shape} and weights {self.weights.shape} must be "
                "the same [items, m] shape"
            )


def distinct_pairs(
    user_ids: np.ndarray, items: np.ndarray, n_items: int
) -> tuple[np.ndarray, np.ndarray]:
    """The binary user-item matrix as ``[pairs] int64`` user numbers and items, sorted by
    user then item, from interactions (``user_ids`` any hashable, ``items`` catalog rows)."""
    users = pd.factorize(user_ids)[0].astype(np.int64)
    pairs = np.unique(users * n_items + np.asarray(items, np.int64))
    numbers, rows = np.divmod(pairs, n_items)
    return numbers, rows


def cooccurrence_table(
    user_ids: np.ndarray, items: np.ndarray, n_items: int, m: int
) -> NeighbourTable:
    """:func:`cosine_neighbours` of interactions (``user_ids`` any hashable, ``items``
    catalog rows)."""
    users, rows = distinct_pairs(user_ids, items, n_items)
    return cosine_neighbours(users, rows, n_items, m)


def cosine_neighbours(users: np.ndarray, items: np.ndarray, n_items: int, m: int) -> NeighbourTable:
    """Each item's ``m`` most similar items by ``|U_i ∩ U_j| / sqrt(|U_i| |U_j|)`` over the
    sets of users who interacted with each (item-KNN's cosine), from the user-item pairs'
    lists: each item's users, their items.

    Args:
        users: ``[pairs] int64`` user numbers of the distinct user-item pairs, sorted by user
            then item (:func:`distinct_pairs`).
        items: ``[pairs] int64`` the pairs' items.
        n_items: Catalog size.
        m: Neighbours kept per item.
    """
    norms = np.sqrt(np.bincount(items, minlength=n_items).astype(np.float64))
    user_starts = np.searchsorted(users, np.arange(int(users.max(initial=-1)) + 2))
    by_item = np.argsort(items, kind="stable")
    item_users = users[by_item]
    item_starts = np.searchsorted(items[by_item], np.arange(n_items + 1))
    # int32 / float32: 1.6 GB for 1 M items and m = 200, half of what int64 / float64 hold.
    neighbours = np.full((n_items, m), -1, np.int32)
    weights = np.zeros((n_items, m), np.float32)
    for item in range(n_items):
        mine = item_users[item_starts[item] : item_starts[item + 1]]
        if not len(mine):
            continue
        picks = np.concatenate([items[user_starts[u] : user_starts[u + 1]] for u in mine])
        others, shared = np.unique(picks, return_counts=True)
        keep = others != item
        others, shared = others[keep], shared[keep]
        sims: np.ndarray = shared / np.maximum(norms[item] * norms[others], 1e-12)
        if len(others) > m:
            top = np.argpartition(-sims, m - 1)[:m]
            others, sims = others[top], sims[top]
        order = np.argsort(-sims, kind="stable")
        neighbours[item, : len(others)] = others[order]
        weights[item, : len(others)] = sims[order]
    return NeighbourTable(neighbours, weights)


def vector_neighbours(vectors: np.ndarray, m: int, batch: int = 4096) -> NeighbourTable:
    """Each item's ``m`` nearest items by inner product of the item tower's vectors (exact:
    a catalog of millions wants its IVF index searched instead)."""
    vectors = np.ascontiguousarray(vectors, np.float32)
    n = len(vectors)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    fetch = min(m + 1, n)
    neighbours = np.full((n, m), -1, np.int32)
    weights = np.zeros((n, m), np.float32)
    for start in range(0, n, batch):
        scores, rows = index.search(vectors[start : start + batch], fetch)
        for j in range(len(rows)):
            keep = (rows[j] >= 0) & (rows[j] != start + j)
            found = rows[j][keep][:m]
            neighbours[start + j, : len(found)] = found
            weights[start + j, : len(found)] = scores[j][keep][:m]
    return NeighbourTable(neighbours, weights)
