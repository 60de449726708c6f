"""The Recommend hot path as a plain object: features → user tower → search → filter.

Knows nothing of gRPC; the servicer converts requests and maps errors.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from features.store import OnlineFeatures, UserFeatures
from index.build import load_index
from recsys import artifacts
from recsys.config import Config, ServingConfig
from recsys.errors import ArtifactError, InvalidRequestError
from towers.encoding import FeatureSpace, RawUser
from towers.runtime import NumpyUserTower


@dataclass(frozen=True)
class ScoredItem:
    item_id: str
    score: float


@dataclass(frozen=True)
class Recommendation:
    items: list[ScoredItem]
    model_version: str
    index_version: str


@dataclass(frozen=True)
class Bundle:
    """A model and the index its own item tower built, loaded and verified together."""

    model_version: str
    index_version: str
    space: FeatureSpace
    tower: NumpyUserTower
    index: faiss.Index
    item_ids: list[str]

    @classmethod
    def load(cls, models_dir: Path, index_dir: Path, model_version: str | None = None) -> Bundle:
        """Loads an index and the model whose item tower built it.

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
        model_dir = models_dir / str(manifest["model_version"])
        model_manifest = artifacts.read_manifest(model_dir)
        tower = NumpyUserTower.load(model_dir)
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
        )

    @classmethod
    def load_current(cls, config: Config) -> Bundle:
        return cls.load(config.models_dir, artifacts.current(config.indexes_dir))


class Recommender:
    """Answers Recommend for one loaded model+index pair."""

    def __init__(self, bundle: Bundle, features: OnlineFeatures, config: ServingConfig):
        self.bundle = bundle
        self._features = features
        self._config = config

    def validate(self, user_id: str, k: int, exclude: Sequence[str]) -> None:
        """Raises ``InvalidRequestError`` with a message that says what is allowed."""
        cfg = self._config
        if not user_id:
            raise InvalidRequestError("user_id is empty; pass the id of the user to recommend for")
        if len(user_id) > cfg.max_id_length:
            raise InvalidRequestError(f"user_id is longer than {cfg.max_id_length} characters")
        if not 1 <= k <= cfg.max_k:
            raise InvalidRequestError(f"k must be between 1 and {cfg.max_k}, got {k}")
        if len(exclude) > cfg.max_exclude:
            raise InvalidRequestError(
                f"at most {cfg.max_exclude} exclude_item_ids are allowed, got {len(exclude)}"
            )

    def user_vector(self, features: UserFeatures, request_time_ms: int) -> np.ndarray:
        """``[1, dim] float32`` from the user's online features and the request time."""
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

    def recommend(self, user_id: str, k: int, exclude: Sequence[str] = ()) -> Recommendation:
        """Top ``k`` items for the user, without excluded or recently seen items."""
        self.validate(user_id, k, exclude)
        bundle = self.bundle
        features = self._features.read([user_id])[0]
        banned = set(exclude) | set(features.activity.recent_items)
        fetch = min(k + len(banned), bundle.index.ntotal)
        query = self.user_vector(features, int(time.time() * 1000))
        scores, rows = bundle.index.search(query, fetch)
        items = []
        for score, row in zip(scores[0], rows[0], strict=True):
            if row < 0:
                break
            item_id = bundle.item_ids[row]
            if item_id not in banned:
                items.append(ScoredItem(item_id, float(score)))
                if len(items) == k:
                    break
        return Recommendation(items, bundle.model_version, bundle.index_version)
