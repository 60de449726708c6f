"""The second stage on the hot path (``serving.ranker: gbdt``): the batch's requests as one
:class:`candidates.sources.Query`, the model's ranker over the union of its candidate
sources (``ranking.servable``), and each request's top ``k`` by the ranker's score.

One call per batch, on the serving thread: the sources, the features and the compiled
ranker each run once over the whole batch, with no thread pool anywhere (FAISS runs on the
serving thread's one OpenMP thread, lleaves with ``n_jobs=1``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from candidates.sources import Query
from features.activity import SeenIndex
from features.user import UserFeatures
from index.items import ItemMeta
from ranking.features import Union
from ranking.servable import ServedRanker

Selected = tuple[np.ndarray, np.ndarray]
"""``[n] int64`` rows and ``[n] float32`` scores, best first."""


@dataclass(frozen=True)
class Asked:
    """One request as the rank stage reads it."""

    features: UserFeatures
    time_ms: int
    banned: np.ndarray
    k: int
    include: int
    exclude: int


class RankStage:
    """Orders each request's candidates by the ranker.

    Args:
        ranker: The model's ranker on this index's rows.
        seen: Decodes item ids into this index's rows.
        meta: The index's items' filter values.
        history: Recent items per request the query holds (the towers' history length).
    """

    def __init__(self, ranker: ServedRanker, seen: SeenIndex, meta: ItemMeta, history: int):
        self.ranker = ranker
        self._seen = seen
        self._meta = meta
        self._history = history

    def query(self, asked: Sequence[Asked], vectors: np.ndarray) -> Query:
        recent = np.full((len(asked), self._history), -1, np.int64)
        for i, a in enumerate(asked):
            rows = self._seen.rows_of(a.features.activity.recent_items[: self._history])
            recent[i, : len(rows)] = rows
        activity = [a.features.activity for a in asked]
        return Query(
            recent=recent,
            times_ms=np.array([a.time_ms for a in asked], np.int64),
            vectors=vectors,
            banned=[a.banned for a in asked],
            last_ms=np.array([x.last_event_ms if x.last_event_ms else -1 for x in activity]),
            earlier=np.array([x.events for x in activity], np.int64),
        )

    def __call__(
        self, asked: Sequence[Asked], vectors: np.ndarray, hidden: np.ndarray | None = None
    ) -> list[Selected | None]:
        """Each request's top ``k`` rows and ranker scores, best first; ``None`` for one
        whose candidates hold fewer than ``k`` that pass its filters (the search answers it).
        Filters (and ``hidden``: rows the catalog overlay hides) apply to the union before
        the first cut, and the cut keeps at least ``k``.
        """
        filtered = hidden is not None or any(a.include or a.exclude for a in asked)
        found, scores = self.ranker.rank(
            self.query(asked, vectors),
            admit=(lambda union: self._admit(asked, union, hidden)) if filtered else None,
            wanted=np.array([a.k for a in asked], np.int64),
        )
        order = np.lexsort((-scores, found.owner))  # by request, best first
        bounds = np.searchsorted(found.owner[order], np.arange(len(asked) + 1))
        out: list[Selected | None] = []
        for i, a in enumerate(asked):
            mine = order[bounds[i] : bounds[i + 1]]
            rows = found.rows[mine]
            if len(rows) < a.k:
                out.append(None)
                continue
            out.append((rows[: a.k], scores[mine[: a.k]].astype(np.float32)))
        return out

    def _admit(self, asked: Sequence[Asked], union: Union, hidden: np.ndarray | None) -> np.ndarray:
        """``[m] bool``: the union's candidates that pass their request's filters and that
        the catalog overlay does not hide (``hidden``: ``[rows] bool``)."""
        keep = np.ones(len(union.rows), bool) if hidden is None else ~hidden[union.rows]
        bounds = np.searchsorted(union.owner, np.arange(len(asked) + 1))
        for i, a in enumerate(asked):
            if a.include or a.exclude:
                at = slice(bounds[i], bounds[i + 1])
                keep[at] = self._meta.passing(a.include, a.exclude, union.rows[at])
        return keep
