"""The Recommend hot path as a plain object: features → user tower → search → filter.

Knows nothing of gRPC; the servicer converts requests and maps errors. A ``Recommender``
serves one model+index pair for its whole life; a reload builds a new one beside it and
swaps the reference (``serving.live``), so a request never mixes two pairs.

Requests are served in batches (``serving.batching`` gathers whatever is waiting): one feature
read for all their users, one user-tower call on ``[B, …]``, one FAISS search per fetch size,
then each request's own filtering. Every stage computes each request's part independently of
the others (the tower is batch-invariant, the search fetch is a function of the request
alone), so a request gets the same items and scores alone or in any batch. Each request keeps
its own validation, deadline and errors: one that fails fails alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from catalog.overlay import Overlay
from features.user import UserFeatures
from recsys.config import ServingConfig
from recsys.errors import DeadlineExceededError, InvalidRequestError
from recsys.logs import Throttled
from serving.answers import Outcome, Recommendation, Served, ServingPath, Stages
from serving.bundle import Bundle
from serving.catalog_feed import CatalogFeed
from serving.catalog_view import CatalogView
from serving.item_feed import ItemFeed
from serving.ranking import Asked, RankStage, Selected
from serving.request import Request, validate

log = logging.getLogger(__name__)
MIN_FETCH = 64
"""The fewest candidates a search fetches; fetches are powers of two from here."""
FIRST_FETCH = 256
"""The most candidates a first search fetches to survive exclusions (a flat top-k grows
steeply past it: BENCHMARKS.md, the figures behind the code); widening covers the rare user
it fails."""


class Features(Protocol):
    def read_many(self, user_ids: Sequence[str]) -> Sequence[UserFeatures] | None:
        """Each user's features in order, or ``None`` when the store failed."""
        ...


class _Work:
    """One valid request on its way through a batch."""

    __slots__ = ("banned", "deadline", "exclude", "features", "include", "path", "request", "slot")

    def __init__(self, slot: int, request: Request, deadline: float | None, masks: tuple[int, int]):
        self.slot = slot
        self.request = request
        self.deadline = deadline
        self.include, self.exclude = masks
        self.features = UserFeatures(request.user_id)
        self.banned: np.ndarray = _NOTHING
        """``[n] int64`` index rows this request must not answer with."""
        self.path = ServingPath.PERSONALIZED


class Recommender:
    """Answers Recommend for one loaded model+index pair."""

    def __init__(self, bundle: Bundle, features: Features, config: ServingConfig):
        self.bundle = bundle
        self._features = features
        self._config = config
        self._limit = min(bundle.index.ntotal, config.max_fetch)
        self.view = CatalogView(bundle)
        """The catalog a batch reads (once): the version, and its overlay once one is set."""
        self._rank = (
            None
            if bundle.ranker is None
            else RankStage(bundle.ranker, bundle.seen, bundle.meta, bundle.space.history_length)
        )
        self.catalog_feed: CatalogFeed | None = None
        """What keeps the catalog overlay current (``serving.live`` starts it)."""
        self.feed: ItemFeed | None = None
        """What keeps the ranker's item state current (``serving.live`` starts it)."""
        self.rank_failures = 0
        """Batches the ranker failed on (each answered in the search's order, flagged)."""
        self._rank_failed = Throttled(
            log, "the ranker failed; answered in the search's order (UNRANKED)", 10.0
        )

    def set_overlay(self, overlay: Overlay) -> None:
        """Serves the catalog as ``overlay`` has changed it, from the next batch on (one
        reference swapped: a batch sees all of a change or none of it)."""
        self.view = CatalogView(self.bundle, overlay)

    def recommend(self, request: Request, deadline: float | None = None) -> Recommendation:
        """Top ``k`` items for the user, without excluded, filtered or recently seen items.

        Args:
            deadline: ``time.monotonic()`` value after which the caller has given up.

        Raises:
            InvalidRequestError: the request breaks a limit.
            DeadlineExceededError: the deadline passed before the answer was ready.
        """
        outcome = self.recommend_batch([request], [deadline]).outcomes[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def recommend_batch(
        self, requests: Sequence[Request], deadlines: Sequence[float | None] | None = None
    ) -> Served:
        """``recommend`` for several requests at once, in named stages over the batch: plan →
        read → embed → search → select. Each outcome is the answer, or the error that
        request alone would have raised.

        Args:
            deadlines: Each request's ``time.monotonic()`` deadline (``None``: none).
        """
        clock = time.perf_counter
        outcomes: list[Outcome | None] = [None] * len(requests)
        view = self.view
        t0 = clock()
        work = self._validate(requests, deadlines, outcomes)
        t1 = clock()
        features = self._features.read_many([w.request.user_id for w in work]) if work else []
        t2 = clock()
        work, towered = self._plan(work, features, outcomes, view)
        t3 = clock()
        results: dict[int, Selected | Exception] = {}
        towered, vectors = self._embed(towered, results)
        t4 = clock()
        embedded = len(vectors) > 0
        ranked = 0.0
        if self._rank is not None and towered:
            towered, vectors = self._ranked(towered, vectors, results, view)
            ranked = clock() - t4
        searched = self._search(towered, vectors, results, view)
        for w in work:
            if w.slot not in results:  # nothing to personalize on: the most popular items
                results[w.slot] = self._try_select(w, view.popular, view.popular_share, view)
        for w in work:
            result = results[w.slot]
            outcomes[w.slot] = (
                result
                if isinstance(result, Exception)
                else Recommendation(self.bundle, *result, w.path, view.ids)
            )
        t5 = clock()
        stages = Stages(
            plan=(t1 - t0) + (t3 - t2),
            read=t2 - t1 if work else 0.0,
            embed=t4 - t3 if embedded else 0.0,
            search=searched,
            select=t5 - t4 - ranked - searched if work else 0.0,
            rank=ranked,
            batch=len(requests),
        )
        return Served(outcomes, stages)  # type: ignore[arg-type]  # every slot is filled by now

    def _validate(
        self,
        requests: Sequence[Request],
        deadlines: Sequence[float | None] | None,
        outcomes: list[Outcome | None],
    ) -> list[_Work]:
        """Plan, before the read: each request checked and its genre masks made; one that
        is invalid or out of time gets its error in ``outcomes``."""
        work: list[_Work] = []
        for i, request in enumerate(requests):
            try:
                masks = validate(request, self._config, self.bundle.meta)
            except InvalidRequestError as exc:
                outcomes[i] = exc
                continue
            work.append(_Work(i, request, deadlines[i] if deadlines else None, masks))
        return _in_time(work, outcomes)

    def _plan(
        self,
        work: list[_Work],
        features: Sequence[UserFeatures] | None,
        outcomes: list[Outcome | None],
        view: CatalogView,
    ) -> tuple[list[_Work], list[_Work]]:
        """Plan, after the read: each request's features, path and banned rows (its seen set
        and its exclusions).

        Returns:
            The requests still in time, and those of them the tower embeds (a user it knows,
            or one with a profile or recent items; the rest get the popular items).
        """
        degraded = features is None
        if features is not None:
            for w, f in zip(work, features, strict=True):
                w.features = f
        work = _in_time(work, outcomes)
        lookup = self.bundle.space.users.index
        towered: list[_Work] = []
        for w in work:
            f = w.features
            known = f.user_id in lookup
            recent = f.activity.recent_items
            if degraded:
                w.path = ServingPath.DEGRADED
            elif not known:
                w.path = ServingPath.COLD_START
            exclude = w.request.exclude
            if not w.request.include_seen and (recent or f.activity.seen):
                w.banned = view.seen_rows(f.activity)
                if exclude:
                    w.banned = np.concatenate([w.banned, view.rows_of(exclude)])
            elif exclude:
                w.banned = view.rows_of(exclude)
            if known or f.has_profile or recent:
                towered.append(w)
        return work, towered

    def user_vector(self, features: UserFeatures, request_time_ms: int) -> np.ndarray:
        """``[1, dim] float32`` from the user's features and the request time."""
        work = _Work(0, Request(features.user_id, request_time_ms=request_time_ms), None, (0, 0))
        work.features = features
        return self._vectors([work])

    def _embed(
        self, work: list[_Work], results: dict[int, Selected | Exception]
    ) -> tuple[list[_Work], np.ndarray]:
        """``[len(work), dim]`` user-tower queries, one tower call for the batch. Should that
        raise, each request is run alone, and one that still fails fails alone (its error in
        ``results``)."""
        if not work:
            return work, np.zeros((0, self.bundle.tower.dim), np.float32)
        try:
            return work, self._vectors(work)
        except Exception:
            kept, vectors = [], []
            for w in work:
                try:
                    vectors.append(self._vectors([w]))
                    kept.append(w)
                except Exception as exc:
                    results[w.slot] = exc
            dim = self.bundle.tower.dim
            return kept, np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32)

    def _vectors(self, work: Sequence[_Work]) -> np.ndarray:
        """``[len(work), dim] float32`` user-tower queries."""
        now = 0
        times = []
        for w in work:
            t = w.request.request_time_ms
            if not t:
                now = now or _now_ms()
                t = now
            times.append(t)
        users = [w.features for w in work]
        vectors = self.bundle.tower.embed(self.bundle.space, users, times)
        return np.ascontiguousarray(vectors, np.float32)

    def _ranked(
        self,
        work: list[_Work],
        vectors: np.ndarray,
        results: dict[int, Selected | Exception],
        view: CatalogView,
    ) -> tuple[list[_Work], np.ndarray]:
        """The ranker's answers into ``results``, one call for the batch. Returns the
        requests the search answers instead: those whose candidates hold fewer than ``k``
        passing their filters, or every one should the ranker fail (flagged UNRANKED).
        The ranker ranks the version's items (never one the overlay hides)."""
        assert self._rank is not None
        base = view.base
        asked = [
            Asked(
                w.features,
                w.request.request_time_ms or _now_ms(),
                w.banned[w.banned < base] if view.ids else w.banned,
                w.request.k,
                w.include,
                w.exclude,
            )
            for w in work
        ]
        try:
            answers = self._rank(asked, vectors, view.overlay.hidden if view.overlay else None)
        except Exception as exc:
            self.rank_failures += 1
            self._rank_failed.note(f"{type(exc).__name__}: {exc}")
            for w in work:
                if w.path is ServingPath.PERSONALIZED:
                    w.path = ServingPath.UNRANKED
            return work, vectors
        left = [i for i, a in enumerate(answers) if a is None]
        for w, answer in zip(work, answers, strict=True):
            if answer is not None:
                results[w.slot] = answer
        return [work[i] for i in left], vectors[left]

    def _search(
        self,
        work: Sequence[_Work],
        vectors: np.ndarray,
        results: dict[int, Selected | Exception],
        view: CatalogView,
    ) -> float:
        """Each request's top ``k`` into ``results``: one FAISS search per fetch size and genre
        filter in the batch, then widening (×4 while exclusions leave fewer than ``k``) for a
        request that needs it. Returns the seconds spent in FAISS."""
        groups: dict[tuple[int, int, int], list[int]] = {}
        for i, w in enumerate(work):
            groups.setdefault((self._fetch(w), w.include, w.exclude), []).append(i)
        searched = 0.0
        for (fetch, include, exclude), members in groups.items():
            queries = vectors if len(members) == len(vectors) else vectors[members]
            t = time.perf_counter()
            scores, rows = view.search(queries, fetch, include, exclude)
            searched += time.perf_counter() - t
            for j, i in enumerate(members):
                w = work[i]
                try:
                    picked = view.select(rows[j], scores[j], w.request.k, w.banned)
                    fetched, last = fetch, rows[j][-1]
                    # Widen while exclusions leave fewer than k, unless the catalog is
                    # exhausted or the index found fewer than asked (a filter passes fewer).
                    while len(picked[0]) < w.request.k and fetched < self._limit and last >= 0:
                        fetched = min(4 * fetched, self._limit)
                        t = time.perf_counter()
                        wide_scores, wide_rows = view.search(
                            queries[j : j + 1], fetched, include, exclude
                        )
                        searched += time.perf_counter() - t
                        picked = view.select(wide_rows[0], wide_scores[0], w.request.k, w.banned)
                        last = wide_rows[0][-1]
                    results[w.slot] = picked
                except Exception as exc:  # this request fails alone
                    results[w.slot] = exc
        return searched

    def _fetch(self, w: _Work) -> int:
        """How many candidates to fetch for one request: enough to survive its exclusions,
        rounded up to a power of two from ``MIN_FETCH``, at most ``FIRST_FETCH`` (a user who
        has seen hundreds of items rarely has them all near the top; the widening finds the
        rest when they are). Genre filters run inside the search.
        A function of the request alone, so its answer does not depend on its batch."""
        need = min(w.request.k + len(w.banned), FIRST_FETCH)
        return min(max(MIN_FETCH, 1 << (need - 1).bit_length()), self._limit)

    def _try_select(
        self, w: _Work, rows: np.ndarray, scores: np.ndarray, view: CatalogView
    ) -> Selected | Exception:
        try:
            return view.select(rows, scores, w.request.k, w.banned, (w.include, w.exclude))
        except Exception as exc:  # this request fails alone
            return exc


_NOTHING = np.zeros(0, np.int64)


def _in_time(work: list[_Work], outcomes: list[Outcome | None]) -> list[_Work]:
    """The requests whose deadline has not passed; the others fail with DEADLINE_EXCEEDED."""
    if all(w.deadline is None for w in work):
        return work
    now = time.monotonic()
    kept = []
    for w in work:
        if w.deadline is not None and now > w.deadline:
            outcomes[w.slot] = DeadlineExceededError(
                "the deadline passed before the answer was ready"
            )
        else:
            kept.append(w)
    return kept


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
