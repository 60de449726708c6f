"""The Recommend hot path as a plain object: features → user tower → search → filter.

Knows nothing of gRPC; the servicer converts requests and maps errors. A ``Recommender``
serves one model+index pair for its whole life; a reload builds a new one beside it and
swaps the reference (``serving.live``), so a request never mixes two pairs.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

import faiss
import numpy as np

from features.store import UserFeatures
from index.build import load_index
from index.items import ItemMeta
from recsys import artifacts
from recsys.config import ServingConfig
from recsys.errors import ArtifactError, DeadlineExceededError, InvalidRequestError
from towers.encoding import FeatureSpace, RawUser, UserInputs
from towers.runtime import load_user_tower


class ServingPath(enum.Enum):
    """Which path produced an answer (``recsys.v1.ServingPath``)."""

    PERSONALIZED = 1
    COLD_START = 2
    DEGRADED = 3


class UserTower(Protocol):
    dim: int

    def __call__(self, inputs: UserInputs) -> np.ndarray: ...


class Features(Protocol):
    def read(self, user_id: str) -> UserFeatures | None: ...


@dataclass(frozen=True)
class Request:
    """One Recommend request, as the hot path sees it.

    Attributes:
        request_time_ms: The moment the answer is for (time features); 0: now.
        include_genres: Only items with one of these genres; empty: any.
        exclude_genres: No items with any of these genres.
    """

    user_id: str
    k: int = 10
    exclude: Sequence[str] = ()
    include_seen: bool = False
    request_time_ms: int = 0
    include_genres: Sequence[str] = ()
    exclude_genres: Sequence[str] = ()


class ScoredItem(NamedTuple):
    item_id: str
    score: float


@dataclass(frozen=True)
class Stages:
    """Seconds spent in each stage of one request."""

    features: float = 0.0
    tower: float = 0.0
    search: float = 0.0
    filter: float = 0.0


@dataclass(frozen=True)
class Recommendation:
    items: list[ScoredItem]
    model_version: str
    index_version: str
    path: ServingPath
    stages: Stages


@dataclass(frozen=True)
class Bundle:
    """A model and the index its own item tower built, loaded and verified together."""

    model_version: str
    index_version: str
    space: FeatureSpace
    tower: UserTower
    index: faiss.Index
    item_ids: list[str]
    meta: ItemMeta

    @classmethod
    def load(
        cls,
        models_dir: Path,
        index_dir: Path,
        model_version: str | None = None,
        runtime: str = "numpy",
    ) -> Bundle:
        """Loads an index and the model whose item tower built it.

        Args:
            runtime: The user tower's runtime: ``numpy`` or ``savedmodel``.

        Raises:
            ArtifactError: ``model_version`` is given and is not the index's model (the
                user tower would query another embedding space), or a file is corrupt.
        """
        index, item_ids, manifest = load_index(index_dir)
        if model_version is not None and model_version != manifest["model_version"]:
            raise ArtifactError(
                f"index {manifest['version']} was built by model {manifest['model_version']}'s "
                f"item tower; it cannot serve model {model_version}'s user tower "
                "(build an index with that model, or serve the index's model)"
            )
        meta = ItemMeta.load(index_dir, manifest, len(item_ids))
        model_dir = models_dir / str(manifest["model_version"])
        model_manifest = artifacts.read_manifest(model_dir)
        tower = load_user_tower(model_dir, runtime)
        if tower.dim != index.d:
            raise ArtifactError(
                f"model {model_manifest['version']} embeds in {tower.dim} dims but index "
                f"{manifest['version']} holds {index.d}; rebuild the index with this model"
            )
        return cls(
            model_version=str(model_manifest["version"]),
            index_version=str(manifest["version"]),
            space=FeatureSpace.load(model_dir / "features.json"),
            tower=tower,
            index=index,
            item_ids=item_ids,
            meta=meta,
        )

    @classmethod
    def load_current(cls, models_dir: Path, indexes_dir: Path, runtime: str = "numpy") -> Bundle:
        return cls.load(models_dir, artifacts.current(indexes_dir), runtime=runtime)


class Recommender:
    """Answers Recommend for one loaded model+index pair."""

    def __init__(self, bundle: Bundle, features: Features, config: ServingConfig):
        self.bundle = bundle
        self._features = features
        self._config = config
        self._limit = min(bundle.index.ntotal, config.max_fetch)

    def validate(self, request: Request) -> tuple[int, int]:
        """Checks the request against the limits; returns the include and exclude genre masks.

        Raises:
            InvalidRequestError: with a message that says what is allowed.
        """
        cfg = self._config
        user_id, k = request.user_id, request.k
        if not user_id:
            raise InvalidRequestError("user_id is empty; pass the id of the user to recommend for")
        if len(user_id) > cfg.max_id_length:
            raise InvalidRequestError(f"user_id is longer than {cfg.max_id_length} characters")
        if not 1 <= k <= cfg.max_k:
            raise InvalidRequestError(f"k must be between 1 and {cfg.max_k}, got {k}")
        if len(request.exclude) > cfg.max_exclude:
            raise InvalidRequestError(
                f"at most {cfg.max_exclude} exclude_item_ids are allowed, "
                f"got {len(request.exclude)}"
            )
        if any(not item or len(item) > cfg.max_id_length for item in request.exclude):
            raise InvalidRequestError(
                f"exclude_item_ids must be non-empty and at most {cfg.max_id_length} characters"
            )
        if request.request_time_ms < 0:
            raise InvalidRequestError(
                f"request_time_ms must be milliseconds since the epoch or 0 (now), "
                f"got {request.request_time_ms}"
            )
        genres = len(request.include_genres) + len(request.exclude_genres)
        if genres > cfg.max_genres:
            raise InvalidRequestError(f"at most {cfg.max_genres} genre filters are allowed")
        meta = self.bundle.meta
        return meta.genre_mask(request.include_genres), meta.genre_mask(request.exclude_genres)

    def recommend(self, request: Request, deadline: float | None = None) -> Recommendation:
        """Top ``k`` items for the user, without excluded, filtered or recently seen items.

        Args:
            deadline: ``time.monotonic()`` value after which the caller has given up.

        Raises:
            InvalidRequestError: the request breaks a limit.
            DeadlineExceededError: the deadline passed before the answer was ready.
        """
        include, exclude = self.validate(request)
        bundle = self.bundle
        _check(deadline)
        t0 = time.perf_counter()
        features = self._features.read(request.user_id)
        t1 = time.perf_counter()
        known = bundle.space.users.lookup(request.user_id) > 0
        if features is None:
            path, features = ServingPath.DEGRADED, UserFeatures(request.user_id)
        else:
            path = ServingPath.PERSONALIZED if known else ServingPath.COLD_START
        _check(deadline)
        banned = set(request.exclude)
        if not request.include_seen:
            banned.update(features.activity.recent_items)
        if known or features.has_profile or features.activity.recent_items:
            query = self.user_vector(features, request.request_time_ms or _now_ms())
            t2 = time.perf_counter()
            items, searched = self._search(query, request.k, banned, include, exclude)
            t3 = time.perf_counter()
            stages = Stages(t1 - t0, t2 - t1, searched, t3 - t2 - searched)
        else:  # nothing to personalize on: the most popular items
            meta = bundle.meta
            items = self._select(
                meta.popular, meta.popular_share, request.k, banned, include, exclude
            )
            stages = Stages(t1 - t0, 0.0, 0.0, time.perf_counter() - t1)
        return Recommendation(items, bundle.model_version, bundle.index_version, path, stages)

    def user_vector(self, features: UserFeatures, request_time_ms: int) -> np.ndarray:
        """``[1, dim] float32`` from the user's features and the request time."""
        raw = RawUser(
            features.user_id,
            features.gender,
            features.age,
            features.occupation,
            features.zip_code,
            features.activity.recent_items,
            request_time_ms,
        )
        inputs = self.bundle.space.encode_users([raw])
        return np.ascontiguousarray(self.bundle.tower(inputs), np.float32)

    def _search(
        self, query: np.ndarray, k: int, banned: set[str], include: int, exclude: int
    ) -> tuple[list[ScoredItem], float]:
        """Over-fetches enough to survive exclusions, widening while filters leave fewer
        than ``k``. Returns the items and the seconds spent in FAISS."""
        fetch = min(k + len(banned), self._limit)
        if include or exclude:
            fetch = min(max(4 * fetch, 64), self._limit)
        searched = 0.0
        while True:
            t = time.perf_counter()
            scores, rows = self.bundle.index.search(query, fetch)
            searched += time.perf_counter() - t
            items = self._select(rows[0], scores[0], k, banned, include, exclude)
            exhausted = rows[0][-1] < 0  # an ANN index found fewer than asked
            if len(items) == k or fetch >= self._limit or exhausted:
                return items, searched
            fetch = min(4 * fetch, self._limit)

    def _select(
        self,
        rows: np.ndarray,
        scores: np.ndarray,
        k: int,
        banned: set[str],
        include: int,
        exclude: int,
    ) -> list[ScoredItem]:
        """The first ``k`` candidates that pass the genre masks and are not banned."""
        if include or exclude or rows[-1] < 0:  # -1: an ANN index found fewer than asked
            keep = rows >= 0
            if include or exclude:
                genres = self.bundle.meta.genres[np.where(keep, rows, 0)]
                if include:
                    keep &= (genres & np.uint64(include)) != 0
                if exclude:
                    keep &= (genres & np.uint64(exclude)) == 0
            rows, scores = rows[keep], scores[keep]
        ids = self.bundle.item_ids
        items = []
        for row, score in zip(rows.tolist(), scores.tolist(), strict=True):
            item_id = ids[row]
            if item_id not in banned:
                items.append(ScoredItem(item_id, score))
                if len(items) == k:
                    break
        return items


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _check(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise DeadlineExceededError("the deadline passed before the answer was ready")
