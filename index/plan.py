"""What both build engines share: the index spec for a catalog size, a chunk of the catalog
checked and embedded, the hash-drawn training sample, the build's plan and its result.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np
import pandas as pd

from index import items
from index.catalog import Catalog
from index.recall import ExactTopK
from recsys.config import IndexConfig
from recsys.data.dataset import Dataset
from recsys.data.schema import BUCKETED
from recsys.errors import DataError
from towers.encoding import FeatureSpace

if TYPE_CHECKING:
    from towers.runtime import NumpyItemTower


def embed_catalog(
    model_dir: Path, data: Dataset, batch_size: int = 4096
) -> tuple[list[str], np.ndarray]:
    """Runs the exported item-tower SavedModel (raw-feature signature) over the data set's
    items: the reference the NumPy runtime and the index are checked against in tests."""
    from towers.tf_env import tf

    tower = tf.saved_model.load(str(model_dir / "item_tower")).signatures["serving_default"]
    space = FeatureSpace.load(model_dir / "features.json")
    items = data.items
    item_ids = list(items["item_id"])
    raw = {"item_id": np.array(item_ids, dtype=object)}
    for f in space.item_features:
        raw[f.name] = raw_column(items[f.name], f.kind)
    chunks = []
    for start in range(0, len(item_ids), batch_size):
        part = {k: tf.constant(v[start : start + batch_size]) for k, v in raw.items()}
        chunks.append(tower(**part)["embedding"].numpy())
    return item_ids, np.ascontiguousarray(np.concatenate(chunks), np.float32)


def raw_column(values: pd.Series, kind: str) -> np.ndarray:
    """A canonical column as the SavedModel's raw signature takes it: numbers as float64,
    tag sets as a ``""``-padded string matrix, strings as they are."""
    if kind == "tags":
        width = max(1, max((len(t) for t in values), default=1))
        return np.array([list(t) + [""] * (width - len(t)) for t in values], dtype=object)
    column: np.ndarray = values.to_numpy(np.float64 if kind in BUCKETED else object)
    return column


def index_spec(cfg: IndexConfig, items: int) -> tuple[str, str]:
    """(kind, FAISS factory string) for a catalog of ``items``."""
    kind = cfg.type
    if kind == "auto":
        kind = "flat" if items < cfg.exact_below else "ivf"
    nlist = cfg.nlist or int(2 ** round(np.log2(max(4.0 * np.sqrt(items), 1.0))))
    nlist = max(1, min(nlist, items // 39 or 1))  # FAISS wants >= 39 training points a list
    specs = {
        "flat": "Flat",
        "ivf": f"IVF{nlist},Flat",
        "ivf-sq8": f"IVF{nlist},SQ8",
        "hnsw": f"HNSW{cfg.hnsw_m},Flat",
    }
    return kind, specs[kind]


def check_ids(chunk: pd.DataFrame, seen: set[str]) -> list[str]:
    """The chunk's item ids, added to ``seen``.

    Raises:
        DataError: an empty id, or one already in ``seen`` or twice in the chunk.
    """
    ids = ["" if i is None else str(i) for i in chunk["item_id"]]
    if any(not i for i in ids):
        raise DataError("the catalog has an empty item id; nothing published")
    fresh = set(ids)
    if len(fresh) != len(ids) or not seen.isdisjoint(fresh):
        dup = next(i for i in ids if i in seen or ids.count(i) > 1)
        raise DataError(f"the catalog has duplicate item id {dup!r}; nothing published")
    seen |= fresh
    return ids


def embed_chunk(
    space: FeatureSpace, tower: NumpyItemTower, chunk: pd.DataFrame, seen: set[str]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """One catalog chunk (canonical columns) through the item tower, as both engines run it.

    Returns:
        The ids (checked by ``check_ids``), ``[n, dim] float32`` vectors and ``[n, words]
        uint64`` filter bits.
    """
    ids = check_ids(chunk, seen)
    vectors = np.ascontiguousarray(tower(space.encode_items(chunk)), np.float32)
    tags = chunk[space.filter] if space.filter else [()] * len(ids)
    return ids, vectors, items.tag_bits(tags, space.filter_values)


def train_size(index: faiss.Index, kind: str) -> int:
    """Vectors an IVF coarse quantizer is trained on: 64 per list (0: nothing to train)."""
    return 64 * faiss.extract_index_ivf(index).nlist if kind.startswith("ivf") else 0


SAMPLE_SLACK = 1.2
"""The training sample is drawn this many times larger than needed, so that a catalog's
hash draw falls short only when its ids are far from random (then it trains on fewer)."""


def sample_threshold(needed: int, size: int) -> int:
    """Item ids whose CRC-32 is below this are drawn for the training sample: about
    ``SAMPLE_SLACK · needed`` of a catalog of ``size`` (all of it when that is more)."""
    return int(min(1.0, SAMPLE_SLACK * needed / max(size, 1)) * 2**32)


def id_keys(ids: Iterable[object]) -> np.ndarray:
    """``[n] int64`` CRC-32 of each id's UTF-8 bytes, as Spark's ``crc32`` computes it.

    The training sample is drawn by these keys rather than by position or a random draw, so
    both engines train the quantizer on the same items, whatever the catalog's order or
    partitioning."""
    return np.fromiter((zlib.crc32(str(i).encode()) for i in ids), np.int64)


def training_sample(ids: list[str], vectors: np.ndarray, needed: int) -> np.ndarray:
    """The ``needed`` drawn vectors with the smallest (key, id): the same rows in the same
    order from any engine (k-means is seeded, so the same centroids follow)."""
    order = np.lexsort((np.array(ids, dtype=np.str_), id_keys(ids)))
    return np.ascontiguousarray(vectors[order[:needed]])


@dataclass
class Filled:
    """What an engine hands to verification: the filled index and what is row-aligned
    with it.

    Attributes:
        index: Trained, holding every item; row ``i`` is ``item_ids[i]``.
        tags: ``[items, words] uint64`` filter bits.
        exact: The verification queries' exact top results over every item.
        stats: Engine facts for the manifest (the Spark engine's partitions, task retries).
    """

    index: faiss.Index
    item_ids: list[str]
    tags: np.ndarray
    exact: ExactTopK
    stats: dict[str, Any] = field(default_factory=dict)  # Any: JSON, for the manifest


@dataclass
class Plan:
    """What an engine fills, whichever it is.

    Attributes:
        index: Empty and untrained, of ``kind`` (``index_spec``).
        exact: The verification queries' running exact top lists, to fold every item into.
        phases: Seconds per phase, which the engine adds its own to.
    """

    catalog: Catalog
    space: FeatureSpace
    tower: NumpyItemTower
    index: faiss.Index
    kind: str
    exact: ExactTopK
    phases: dict[str, float]
