"""What the hot path answers: each request's items and the path that produced them, and
the stages one batch spent its time in. Plain types, shared by the recommender, the servicer,
the wire encoder and the metrics."""

from __future__ import annotations

import enum
from typing import NamedTuple

import numpy as np

from serving.bundle import Bundle


class ServingPath(enum.Enum):
    """Which path produced an answer (``recsys.v1.ServingPath``)."""

    PERSONALIZED = 1
    COLD_START = 2
    DEGRADED = 3
    UNRANKED = 4


class ScoredItem(NamedTuple):
    item_id: str
    score: float


class Stages(NamedTuple):
    """Seconds one batch spent in each stage of the hot path, each timer covering only what
    it names, and how many requests the batch held. A stage that did not run counts 0.

    Attributes:
        plan: Validation, genre masks, deadlines, and after the read each request's banned
            rows (its seen set decoded, its exclusions) and its path.
        read: The online store's read, one for the batch.
        embed: The user tower, one call for the batch.
        search: FAISS, every search of the batch (widening included).
        select: Picking each answer's top ``k`` from its candidates (the popular-items
            answers included) and building the answers.
        rank: The second stage (``serving.ranker: gbdt``): the candidate sources, their
            union's features and the ranker, once for the batch; its answers' own search
            counts here, not under ``search``.
    """

    plan: float = 0.0
    read: float = 0.0
    embed: float = 0.0
    search: float = 0.0
    select: float = 0.0
    rank: float = 0.0
    batch: int = 0


class Recommendation:
    """One answer: index rows and scores, best first, and the pair and path that produced it.

    Attributes:
        rows: ``[n] int64`` rows of the bundle's index (past its last: the overlay's).
        scores: ``[n] float32``.
    """

    __slots__ = ("added", "bundle", "path", "rows", "scores")

    def __init__(
        self,
        bundle: Bundle,
        rows: np.ndarray,
        scores: np.ndarray,
        path: ServingPath,
        added: tuple[str, ...] = (),
    ):
        self.bundle = bundle
        self.rows = rows
        self.scores = scores
        self.path = path
        self.added = added
        """The catalog overlay's items the answer read: row ``ntotal + i`` is ``added[i]``."""

    @property
    def model_version(self) -> str:
        return self.bundle.model_version

    @property
    def index_version(self) -> str:
        return self.bundle.index_version

    @property
    def items(self) -> list[ScoredItem]:
        ids = self.bundle.item_ids
        base = len(ids)
        return [
            ScoredItem(ids[r] if r < base else self.added[r - base], s)
            for r, s in zip(self.rows.tolist(), self.scores.tolist(), strict=True)
        ]


Outcome = Recommendation | Exception
"""An answer, or the error that request alone fails with (``RecsysError`` subclasses say
what to do; anything else is an internal error)."""


class Served(NamedTuple):
    """What one batch gives back: each request's outcome, in order, and the batch's stages
    (once for the batch: its read, tower call and searches served every request in it)."""

    outcomes: list[Outcome]
    stages: Stages
