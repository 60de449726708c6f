"""The index rebuild on Spark against a real ``local[2,4]`` session: the same ids and vectors as
the local engine, the recall target met, the catalog's errors reported, and a Python worker
killed mid-job retried by Spark. Catalogs a user brings (Parquet) on both engines."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from index import spark as spark_engine
from index.build import build_index
from index.catalog import Catalog
from index.versions import load_index, versions
from recsys import artifacts
from recsys.config import Config
from recsys.errors import DataError
from tests.conftest import real_part


@pytest.fixture
def scratch(trained: Config, tmp_path: Path) -> Config:
    root = tmp_path / "artifacts"
    root.mkdir()
    (root / "models").symlink_to(trained.models_dir)
    return trained.with_overrides({"paths": {"artifacts": str(root)}})


@pytest.fixture(scope="module")
@real_part
def spark() -> Iterator[object]:
    with spark_engine.session("local[2,4]") as session:
        yield session


def _vectors_by_id(directory: Path) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    index, ids, manifest = load_index(directory)
    if manifest["index_type"] != "Flat":
        faiss.extract_index_ivf(index).make_direct_map()
    vectors = index.reconstruct_n(0, index.ntotal)
    return dict(zip(ids, vectors, strict=True)), manifest


def _genres_by_id(directory: Path) -> dict[str, int]:
    """Each item's filter bits (ML-100K's 19 genres: one word)."""
    ids = load_index(directory)[1]
    return dict(zip(ids, np.load(directory / "tags.npy")[:, 0].tolist(), strict=True))


def _popular(directory: Path) -> tuple[set[str], list[float]]:
    """The popular ids above the cut's share (ties at the cut fall either way by row order),
    and every share."""
    ids = load_index(directory)[1]
    with np.load(directory / "popular.npz") as popular:
        rows, shares = popular["rows"], popular["shares"]
    return {ids[r] for r, s in zip(rows, shares, strict=True) if s > shares[-1]}, shares.tolist()


def _build(config: Config, ml, engine: str, catalog: Path, **index) -> Path:
    config = config.with_overrides({"index": {"engine": engine, "catalog": str(catalog), **index}})
    return build_index(config, ml, log=lambda _: None).directory


def test_flat_index_from_spark_holds_the_local_engines_ids_and_vectors(scratch, ml, spark):
    catalog = Catalog.synthetic(ml, 20_000, chunk=3_000).write_parquet(
        scratch.indexes_dir.parent / "c.parquet"
    )
    local = _build(scratch, ml, "local", catalog, type="flat")
    on_spark = _build(scratch, ml, "spark", catalog, type="flat")
    want, _ = _vectors_by_id(local)
    got, manifest = _vectors_by_id(on_spark)
    assert manifest["engine"] == "spark" and manifest["items"] == 20_000
    assert manifest["engine_stats"]["partitions"] >= 2 and manifest["recall_at_10"] == 1.0
    _assert_model_loaded_once_per_worker(manifest["engine_stats"])
    assert sorted(got) == sorted(want)
    assert max(float(np.abs(got[i] - want[i]).max()) for i in want) <= 1e-5
    assert _genres_by_id(on_spark) == _genres_by_id(local)
    assert _popular(on_spark) == _popular(local)
    assert artifacts.current(scratch.indexes_dir) == on_spark
    # The server's loader takes it as it is: nothing engine-specific on the serving side.
    assert len(load_index(on_spark)[1]) == 20_000


def test_ivf_index_from_spark_reaches_the_recall_target(scratch, ml, spark):
    catalog = Catalog.synthetic(ml, 30_000, chunk=7_000).write_parquet(
        scratch.indexes_dir.parent / "c.parquet"
    )
    local = _build(scratch, ml, "local", catalog, type="ivf", nlist=64)
    on_spark = _build(scratch, ml, "spark", catalog, type="ivf", nlist=64)
    got, manifest = _vectors_by_id(on_spark)
    want, local_manifest = _vectors_by_id(local)
    assert manifest["index_type"] == local_manifest["index_type"] == "IVF64,Flat"
    assert manifest["recall_at_10"] >= scratch.index.min_recall
    assert manifest["engine_stats"]["train_vectors"] == 64 * 64
    _assert_model_loaded_once_per_worker(manifest["engine_stats"])
    assert sorted(got) == sorted(want)
    assert max(float(np.abs(got[i] - want[i]).max()) for i in want) <= 1e-5
    # Both engines draw the training sample by id hash: the same quantizer, the same answer.
    assert np.abs(_centroids(on_spark) - _centroids(local)).max() <= 1e-5
    assert manifest["params"] == local_manifest["params"]
    assert abs(manifest["recall_at_10"] - local_manifest["recall_at_10"]) <= 0.005


def _assert_model_loaded_once_per_worker(stats: dict) -> None:
    # Each Python worker that ran a task of the build unpickled the model once, and no task
    # shipped it again: fewer loads than the shard job alone has tasks.
    assert stats["tower_loads"] == stats["python_workers"] >= 1
    assert stats["tower_loads"] < stats["partitions"]


def _centroids(directory: Path) -> np.ndarray:
    index = load_index(directory)[0]  # held: the quantizer is the index's to free
    ivf = faiss.extract_index_ivf(index)
    return faiss.downcast_index(ivf.quantizer).reconstruct_n(0, ivf.nlist)


def _write(path: Path, frame: pd.DataFrame, schema: pa.Schema | None = None) -> Path:
    pq.write_table(pa.Table.from_pandas(frame, schema, preserve_index=False), path)
    return path


def _frame(ids: list) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": ids,
            "title": [f"title {i}" for i in range(len(ids))],
            "release_year": [1995] * len(ids),
            "genres": [["Drama"]] * len(ids),
        }
    )


@pytest.mark.parametrize("engine", ["local", "spark"])
def test_a_duplicate_id_in_a_users_catalog_publishes_nothing(scratch, ml, spark, engine):
    before = build_index(scratch, ml, log=lambda _: None).directory
    ids = [f"x{i}" for i in range(5_000)] + ["x17"]
    catalog = _write(scratch.indexes_dir.parent / "dup.parquet", _frame(ids))
    with pytest.raises(DataError, match="duplicate item id 'x17'"):
        _build(scratch, ml, engine, catalog, type="flat", chunk_items=1_000)
    assert artifacts.current(scratch.indexes_dir) == before
    assert versions(scratch.indexes_dir) == [before.name]
    assert not list(scratch.indexes_dir.glob(".*.tmp"))


@pytest.mark.parametrize("engine", ["local", "spark"])
def test_a_catalog_column_missing_or_mistyped_is_named(scratch, ml, spark, engine):
    root = scratch.indexes_dir.parent
    missing = _write(root / "missing.parquet", _frame(["a", "b"]).drop(columns=["genres"]))
    with pytest.raises(DataError, match="no column 'genres'"):
        _build(scratch, ml, engine, missing)
    mistyped = _write(root / "typed.parquet", _frame(["a", "b"]).assign(release_year=["x", "y"]))
    with pytest.raises(DataError, match="'release_year' row 0: 'x' is not a number"):
        _build(scratch, ml, engine, mistyped)


@pytest.mark.parametrize("engine", ["local", "spark"])
def test_integer_ids_and_missing_values_are_taken(scratch, ml, spark, engine):
    frame = _frame(list(range(1, 201)))
    frame.loc[3, "title"] = None
    frame["genres"] = frame["genres"].astype(object)
    frame.at[4, "genres"] = None
    schema = pa.schema(
        [
            ("item_id", pa.int64()),
            ("title", pa.string()),
            ("release_year", pa.int16()),
            ("genres", pa.list_(pa.string())),
        ]
    )
    catalog = _write(scratch.indexes_dir.parent / "ints.parquet", frame, schema)
    directory = _build(scratch, ml, engine, catalog, type="flat")
    assert sorted(load_index(directory)[1], key=int) == [str(i) for i in range(1, 201)]
    assert _genres_by_id(directory)["5"] == 0  # no genres: no bits


def test_an_unreadable_catalog_is_a_data_error(tmp_path) -> None:
    bad = tmp_path / "items.parquet"
    bad.write_text("not parquet")
    with pytest.raises(DataError, match="cannot read the catalog"):
        Catalog.parquet(bad, ml_items())


def python_workers() -> list[int]:
    """Spark's forked Python workers: children of a ``pyspark.daemon`` process."""
    procs = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        procs[int(entry.name)] = (b"pyspark.daemon" in cmdline, stat[0], int(stat[1]))
    return [
        pid
        for pid, (daemon, state, parent) in procs.items()
        if daemon and state == "R" and procs.get(parent, (False,))[0]
    ]


def kill_a_busy_worker(deadline: float) -> threading.Thread:
    """Kills (SIGKILL) the first Python worker seen running a task."""

    def run() -> None:
        while time.monotonic() < deadline:
            busy = python_workers()
            if busy:
                os.kill(busy[0], signal.SIGKILL)
                return
            time.sleep(0.02)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_python_worker_killed_mid_job_is_retried(scratch, ml, spark):
    catalog = Catalog.synthetic(ml, 300_000).write_parquet(scratch.indexes_dir.parent / "c.parquet")
    killer = kill_a_busy_worker(time.monotonic() + 120)
    directory = _build(scratch, ml, "spark", catalog, type="flat")
    killer.join(timeout=1)
    _, ids, manifest = load_index(directory)
    assert manifest["engine_stats"]["failed_tasks"] >= 1
    assert len(set(ids)) == len(ids) == 300_000
    assert artifacts.current(scratch.indexes_dir) == directory


def ml_items():
    """MovieLens-100K's items table, as its schema declares it."""
    from recsys.data.schema import load_schema

    return load_schema(None, Path(".cache/data")).items
