"""A model and the index its own item tower built, loaded and verified together: what one
``Recommender`` serves for its whole life."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import faiss
import numpy as np

from features.activity import SeenIndex
from features.user import UserFeatures
from index.items import ItemMeta
from index.versions import load_index
from recsys import artifacts
from recsys.errors import ArtifactError
from towers.encoding import FeatureSpace
from towers.runtime import load_user_tower


class UserTower(Protocol):
    dim: int

    def embed(
        self, space: FeatureSpace, users: Sequence[UserFeatures], times_ms: Sequence[int]
    ) -> np.ndarray:
        """Users' features at their request times → ``[len(users), dim] float32``."""
        ...


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
    seen: SeenIndex
    """Decodes a user's seen set (and exclude ids) into this index's rows."""

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
            seen=SeenIndex(item_ids),
        )

    @classmethod
    def load_current(cls, models_dir: Path, indexes_dir: Path, runtime: str = "numpy") -> Bundle:
        return cls.load(models_dir, artifacts.current(indexes_dir), runtime=runtime)
