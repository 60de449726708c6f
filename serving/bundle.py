"""A model and the index its own item tower built, loaded and verified together: what one
``Recommender`` serves for its whole life."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import faiss
import numpy as np

from candidates.sources import TwoTowerSource
from features.activity import SeenIndex
from features.user import UserFeatures
from index.items import ItemMeta
from index.versions import load_index
from ranking.servable import ServedRanker, has_ranker
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
    ranker: ServedRanker | None = None
    """The model's ranker on this index's rows (``serving.ranker: gbdt``)."""
    catalog_positions: dict[int, int] | None = None
    """Partition → offset of the catalog topic the version was built up to (``None``: it
    read none of it; its overlay then starts at the topic's beginning)."""
    catalog_topic: str | None = None
    """The topic those offsets are of (``None``: none recorded)."""

    def catalog_start(self, topic: str) -> dict[int, int]:
        """Where a feed of ``topic`` starts: the recorded offsets when they are that topic's,
        else its beginning (a version built against another topic read none of this one)."""
        if self.catalog_topic != topic:
            return {}
        return dict(self.catalog_positions or {})

    @classmethod
    def load(
        cls,
        models_dir: Path,
        index_dir: Path,
        model_version: str | None = None,
        runtime: str = "numpy",
        ranker: str = "none",
    ) -> Bundle:
        """Loads an index and the model whose item tower built it (with ``ranker="gbdt"``,
        and that model's ranker: the three are one servable).

        Args:
            runtime: The user tower's runtime: ``numpy`` or ``savedmodel``.
            ranker: ``gbdt`` or ``none``.

        Raises:
            ArtifactError: ``model_version`` is given and is not the index's model (the
                user tower would query another embedding space), a file is corrupt, or the
                ranker is asked for and the model has none or it fails its parity probe.
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
        served = None
        if ranker == "gbdt":
            served = _load_ranker(model_dir, index, item_ids, meta)
        return cls(
            model_version=str(model_manifest["version"]),
            index_version=str(manifest["version"]),
            space=FeatureSpace.load(model_dir / "features.json"),
            tower=tower,
            index=index,
            item_ids=item_ids,
            meta=meta,
            seen=SeenIndex(item_ids),
            ranker=served,
            catalog_positions=_positions(manifest.get("catalog_topic")),
            catalog_topic=_topic(manifest.get("catalog_topic")),
        )

    @classmethod
    def load_current(
        cls, models_dir: Path, indexes_dir: Path, runtime: str = "numpy", ranker: str = "none"
    ) -> Bundle:
        return cls.load(models_dir, artifacts.current(indexes_dir), runtime=runtime, ranker=ranker)


def _load_ranker(
    model_dir: Path, index: faiss.Index, item_ids: list[str], meta: ItemMeta
) -> ServedRanker:
    if not has_ranker(model_dir):
        raise ArtifactError(
            f"serving.ranker is gbdt but model {model_dir.name} has no ranker: train one "
            "(model.ranker: true) or serve with serving.ranker: none"
        )
    return ServedRanker.load(
        model_dir, item_ids, item_vectors(index), tag_floats(meta), TwoTowerSource(index)
    )


def item_vectors(index: faiss.Index) -> np.ndarray:
    """``[ntotal, d] float32`` the vectors the index holds, in row order (an IVF index gets
    a direct map for it; a quantized one gives its decoded vectors)."""
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        ivf = None
    if ivf is not None:
        ivf.make_direct_map()
    return np.asarray(index.reconstruct_n(0, index.ntotal), np.float32)


def tag_floats(meta: ItemMeta) -> np.ndarray:
    """``[items, values] float32`` 0/1 each item's filter values, in ``filter_values`` order
    (the ranker's tag-affinity input)."""
    values = len(meta.filter_values)
    if not values:
        return np.zeros((len(meta.tags), 0), np.float32)
    bits = np.unpackbits(np.ascontiguousarray(meta.tags).view(np.uint8), axis=1, bitorder="little")
    return bits[:, :values].astype(np.float32)


def _topic(record: object) -> str | None:
    """The manifest's ``catalog_topic`` topic name (``None`` when it records none)."""
    return str(record["topic"]) if isinstance(record, dict) and "topic" in record else None


def _positions(record: object) -> dict[int, int] | None:
    """The manifest's ``catalog_topic`` positions (``index.build``), keyed by partition."""
    if not isinstance(record, dict):
        return None
    return {int(p): int(o) for p, o in record.get("positions", {}).items()}
