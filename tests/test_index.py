"""The index build: exact search over item-tower embeddings, paired with its model."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from index.build import INDEX_FILE, embed_catalog, load_index
from recsys import artifacts
from recsys.errors import ArtifactError
from serving.recommender import Bundle


def test_index_returns_the_exact_top_k_of_the_item_tower(trained, ml) -> None:
    index, item_ids, manifest = load_index(artifacts.current(trained.indexes_dir))
    model_dir = artifacts.current(trained.models_dir)
    assert manifest["model_version"] == model_dir.name
    ids, vectors = embed_catalog(model_dir, ml)
    assert ids == item_ids and manifest["items"] == len(ml.items)
    rng = np.random.default_rng(0)
    queries = rng.normal(size=(8, vectors.shape[1])).astype(np.float32)
    _, rows = index.search(queries, 10)
    exact = np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(np.sort(rows, axis=1), np.sort(exact, axis=1))


def test_corrupt_index_file_is_refused(trained, tmp_path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(artifacts.current(trained.indexes_dir), copy)
    data = bytearray((copy / INDEX_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / INDEX_FILE).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="corrupt"):
        load_index(copy)


def test_index_naming_a_missing_model_is_refused(trained, tmp_path) -> None:
    with pytest.raises(ArtifactError):
        Bundle.load(tmp_path / "no-models", artifacts.current(trained.indexes_dir))
