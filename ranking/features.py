"""Each candidate's features, as of the request: the sources' scores and ranks, item
popularity over several windows, item age, the user's affinity to the item's tags, the item's
similarity to the user's recent items, and the user's activity and time of day.

Everything here reads only what was known before the request: the request's own state
(recent items, seen set, last event time, event count), the stream's item counts as the
clock stood (:class:`ItemState`, advanced to the request time before it is read) and the
version's static catalog facts (:class:`Catalog`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from candidates.sources import Candidates, NeighbourSource, Query, Trending

DAY_MS = 86_400_000
WINDOWS_DAYS = (1, 7, 30)
"""The popularity windows every candidate carries a count for."""


@dataclass(frozen=True)
class Catalog:
    """What a version holds about its items, row-aligned with the index.

    Attributes:
        vectors: ``[items, dim] float32`` the item tower's L2-normalized vectors.
        tags: ``[items, tags] float32`` 0/1 each item's tags (``[items, 0]``: none declared).
        prior: ``[items]`` training-period interaction counts.
    """

    vectors: np.ndarray
    tags: np.ndarray
    prior: np.ndarray
    mean: np.ndarray = field(init=False)
    """``[dim]`` the vectors' mean: a query's mean score over the catalog is ``u · mean``."""
    covariance: np.ndarray = field(init=False)
    """``[dim, dim]``: a query's score variance over the catalog is ``u' C u``."""

    def __post_init__(self) -> None:
        vectors = np.asarray(self.vectors, np.float64)
        mean = vectors.mean(axis=0)
        centred = vectors - mean
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "covariance", centred.T @ centred / max(len(vectors), 1))

    def moments(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``[n]`` each query's mean score over the catalog and ``[n]`` its spread (1 where
        the scores do not spread)."""
        queries = np.asarray(queries, np.float64)
        variance = ((queries @ self.covariance) * queries).sum(axis=1)
        spread = np.sqrt(np.maximum(variance, 0))
        return queries @ self.mean, np.where(spread > 0, spread, 1.0)

    def tower_z(self, queries: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Each score's z-score across the whole catalog for its query (``queries[j]`` the
        query of ``scores[j]``): what the validated blend mixes."""
        mean, spread = self.moments(queries)
        out: np.ndarray = (scores - mean) / spread
        return out


def tag_matrix(tag_lists: Iterable[Iterable[str]], values: Sequence[str]) -> np.ndarray:
    """``[items, len(values)] float32`` 0/1: which of ``values`` each item carries."""
    at = {v: i for i, v in enumerate(values)}
    lists = list(tag_lists)
    out = np.zeros((len(lists), len(values)), np.float32)
    for row, tags in enumerate(lists):
        for tag in tags:
            if tag in at:
                out[row, at[tag]] = 1.0
    return out


class ItemState:
    """What the stream keeps about items: counts over each window of :data:`WINDOWS_DAYS` and
    the time each item was first seen. ``observe`` and ``advance`` as
    :class:`candidates.sources.Trending`'s."""

    def __init__(self, items: int, windows_days: Sequence[int] = WINDOWS_DAYS):
        self.windows = tuple(Trending(items, d * DAY_MS) for d in windows_days)
        self.first_seen = np.full(items, np.iinfo(np.int64).max, np.int64)
        self.now = 0

    def observe(self, rows: np.ndarray, times_ms: np.ndarray) -> None:
        for window in self.windows:
            window.observe(rows, times_ms)
        np.minimum.at(self.first_seen, np.asarray(rows, np.int64), np.asarray(times_ms, np.int64))

    def advance(self, now_ms: int) -> None:
        self.now = max(self.now, int(now_ms))
        for window in self.windows:
            window.advance(now_ms)


SOURCE_FEATURES = ("score", "rank")
REQUEST_FEATURES = ("since_last_h", "earlier", "seen", "hour", "weekday")
ITEM_FEATURES = (
    *(f"count_{d}d" for d in WINDOWS_DAYS),
    "prior",
    "age_days",
    "tower_score",
    "tower_z",
    "knn_score",
    "knn_z",
    "tag_affinity",
    "sim_max",
    "sim_mean",
)


def feature_names(sources: Sequence[str]) -> list[str]:
    """The columns of :func:`features`, in order."""
    per_source = [f"{s}_{f}" for s in sources for f in SOURCE_FEATURES]
    return [*per_source, "sources", *ITEM_FEATURES, *REQUEST_FEATURES]


@dataclass(frozen=True)
class Union:
    """The distinct candidates of a batch: ``owner[j]`` is the request candidate ``j`` is
    for, ``rows[j]`` its catalog row; grouped by request, rows ascending within one."""

    owner: np.ndarray
    rows: np.ndarray

    def groups(self, requests: int) -> np.ndarray:
        """``[requests]`` how many candidates each request has."""
        return np.bincount(self.owner, minlength=requests)


def union(lists: Mapping[str, Candidates], items: int) -> tuple[Union, np.ndarray, np.ndarray]:
    """The union of the sources' lists for each request, with each source's score and rank
    of each candidate.

    Returns:
        The union, ``[m, sources] float32`` scores (NaN where a source did not propose the
        candidate) and ``[m, sources] float32`` 0-based ranks (the list's depth there).
    """
    found = list(lists.values())
    if not found:
        empty = np.zeros(0, np.int64)
        return Union(empty, empty), np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
    # Every source's lists side by side: [B, total depth], one unique over all of them.
    rows = np.concatenate([f.rows for f in found], axis=1)
    listed = np.concatenate([f.scores for f in found], axis=1)
    depths = [f.rows.shape[1] for f in found]
    source = np.repeat(np.arange(len(found)), depths)
    place = np.concatenate([np.arange(d) for d in depths])
    valid = rows >= 0
    owner = np.nonzero(valid)[0]
    keys = owner * items + rows[valid]
    pairs, inverse = np.unique(keys, return_inverse=True)
    which = np.broadcast_to(source, rows.shape)[valid]
    scores = np.full((len(pairs), len(found)), np.nan, np.float32)
    ranks = np.empty((len(pairs), len(found)), np.float32)
    ranks[:] = depths
    scores[inverse, which] = listed[valid]
    ranks[inverse, which] = np.broadcast_to(place, rows.shape)[valid]
    owners, items_ = np.divmod(pairs, items)
    return Union(owners, items_), scores, ranks


@dataclass(frozen=True)
class Cut:
    """A first cut of the union before the features and the ranker: each request's ``depth``
    best candidates by the blend of the towers' and item-KNN's z-scores at ``share`` (what
    :func:`blend_score` gives), the rest dropped. Every feature is a candidate's own, so
    cutting before the features and cutting the feature rows after give the same rows.

    ``depth``: one for every request, or ``[B]`` one each (a request that asks for more
    than the cut keeps as many as it asks for)."""

    depth: int | np.ndarray
    share: float

    def at_least(self, wanted: np.ndarray) -> Cut:
        """Each request keeps ``max(depth, wanted)``."""
        return Cut(np.maximum(self.depth, np.asarray(wanted, np.int64)), self.share)


def blend_score(tower_z: np.ndarray, knn_z: np.ndarray, share: float) -> np.ndarray:
    """``[m] float64`` the validated blend from the ``tower_z`` and ``knn_z`` feature columns
    as the feature matrix holds them (float32), so a cut made from the matrix's columns and
    one made before the matrix agree to the last bit."""
    tower = np.asarray(tower_z, np.float32).astype(np.float64)
    knn = np.asarray(knn_z, np.float32).astype(np.float64)
    out: np.ndarray = (1 - share) * tower + share * knn
    return out


def first_cut(owner: np.ndarray, score: np.ndarray, depth: int | np.ndarray) -> np.ndarray:
    """``[m] bool``: the candidates among their request's ``depth`` best by ``score`` (ties
    by their order); ``owner`` grouped by request; ``depth`` one for all or ``[B]``."""
    owner = np.asarray(owner, np.int64)
    order = np.lexsort((-np.asarray(score, np.float64), owner))
    place = np.arange(len(owner)) - np.searchsorted(owner, owner[order])
    depths = np.asarray(depth, np.int64)
    keep = np.zeros(len(owner), bool)
    keep[order[place < (depths[owner[order]] if depths.ndim else depths)]] = True
    return keep


def features(
    query: Query,
    lists: Mapping[str, Candidates],
    catalog: Catalog,
    state: ItemState,
    knn: NeighbourSource,
    cut: Cut | None = None,
    admit: Callable[[Union], np.ndarray] | None = None,
) -> tuple[Union, np.ndarray]:
    """The union of ``lists`` (less what ``admit`` refuses and ``cut`` drops) and
    ``[m, features] float32`` features for each candidate (columns :func:`feature_names` of
    ``lists``' keys), as of ``state``'s clock; ``knn`` scores every candidate by
    item-to-item similarity, whichever source proposed it.

    ``query`` needs its ``vectors``, ``last_ms`` and ``earlier``. ``admit``: ``[m] bool``
    which of the union's candidates a request may be answered with (its filters), applied
    before the cut."""
    items = len(catalog.vectors)
    found, scores, ranks = union(lists, items)
    if admit is not None:
        allowed = admit(found)
        found = Union(found.owner[allowed], found.rows[allowed])
        scores, ranks = scores[allowed], ranks[allowed]
    owner, rows = found.owner, found.rows
    if query.vectors is None or query.last_ms is None or query.earlier is None:
        raise ValueError("ranking features need the query's vectors, last_ms and earlier")
    queries = np.asarray(query.vectors, np.float32)
    tower = np.einsum("ij,ij->i", queries[owner], catalog.vectors[rows])
    mean, spread = catalog.moments(queries)  # per request, not per candidate
    tower_z = (tower - mean[owner]) / spread[owner]
    knn_scores, knn_z = knn.scores_of(query, owner, rows)
    if cut is not None:
        keep = first_cut(owner, blend_score(tower_z, knn_z, cut.share), cut.depth)
        found = Union(owner[keep], rows[keep])
        owner, rows, scores, ranks = found.owner, found.rows, scores[keep], ranks[keep]
        tower, tower_z, knn_scores, knn_z = (
            tower[keep],
            tower_z[keep],
            knn_scores[keep],
            knn_z[keep],
        )
    columns: list[np.ndarray] = []
    for s in range(len(lists)):
        columns += [scores[:, s], ranks[:, s]]
    columns.append((~np.isnan(scores)).sum(axis=1).astype(np.float32))
    columns += [window.counts_of(rows) for window in state.windows]
    columns.append(np.log1p(catalog.prior[rows]))
    first = state.first_seen[rows]
    columns.append(
        np.where(first <= state.now, (state.now - first) / DAY_MS, np.nan).astype(np.float32)
    )
    vectors = catalog.vectors[rows]
    columns += [tower, tower_z, knn_scores, knn_z]
    recent = np.asarray(query.recent, np.int64)
    has = recent >= 0
    at = np.where(has, recent, 0)
    if catalog.tags.shape[1]:
        held = catalog.tags[at] * has[..., None]  # [B, H, tags]
        profile = held.sum(axis=1) / np.maximum(has.sum(axis=1), 1)[:, None]
        item_tags = catalog.tags[rows]
        columns.append(
            np.einsum("ij,ij->i", profile[owner], item_tags) / np.maximum(item_tags.sum(axis=1), 1)
        )
    else:
        columns.append(np.zeros(len(rows), np.float32))
    # Each request's candidates against its own recent items, one product a request (the
    # candidates are grouped by request): [m, H].
    held_vectors = catalog.vectors[at]  # [B, H, dim]
    bounds = np.searchsorted(owner, np.arange(len(recent) + 1))
    sims = np.empty((len(rows), recent.shape[1]), np.float32)
    for i in range(len(recent)):
        sims[bounds[i] : bounds[i + 1]] = vectors[bounds[i] : bounds[i + 1]] @ held_vectors[i].T
    mine = has[owner]
    columns.append(np.where(mine, sims, -np.inf).max(axis=1, initial=-np.inf))
    columns[-1] = np.where(mine.any(axis=1), columns[-1], np.nan)
    columns.append(
        np.where(
            mine.any(axis=1), (sims * mine).sum(axis=1) / np.maximum(mine.sum(axis=1), 1), np.nan
        )
    )
    times = np.asarray(query.times_ms, np.int64)
    last = np.asarray(query.last_ms, np.int64)
    since = np.where(last >= 0, (times - last) / 3_600_000, np.nan)
    seen = np.array([len(b) for b in query.banned] if query.banned else [0] * len(times))
    hours = (times // 3_600_000) % 24
    weekdays = (times // DAY_MS + 3) % 7  # 1970-01-01 was a Thursday: Monday is 0
    for per_request in (
        np.log1p(np.maximum(since, 0)),
        np.log1p(np.asarray(query.earlier)),
        np.log1p(seen),
        hours,
        weekdays,
    ):
        columns.append(np.asarray(per_request, np.float64)[owner])
    matrix = np.empty((len(rows), len(columns)), np.float32)
    for j, column in enumerate(columns):
        matrix[:, j] = column
    return found, matrix
