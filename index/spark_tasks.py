"""The rebuild's work inside the Spark executors (``index.spark`` is the driver's side):
embedding the training sample (job 1) and building one shard per partition (job 2), and the
Arrow schemas of the rows they return."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np
import pyarrow as pa

from index import items
from index.catalog import to_canonical
from index.plan import embed_chunk
from index.recall import ExactTopK
from recsys.data.schema import Table
from recsys.errors import DataError
from towers.encoding import FeatureSpace

if TYPE_CHECKING:
    from pyspark import Broadcast

    from towers.runtime import NumpyItemTower

SHARD = pa.schema(
    [
        ("part", pa.int32()),
        ("attempt", pa.int32()),
        ("path", pa.string()),
        ("items", pa.int64()),
        ("error", pa.string()),
        ("scores", pa.binary()),
        ("rows", pa.binary()),
        ("embed_seconds", pa.float64()),
        ("task_seconds", pa.float64()),
        ("pid", pa.int64()),
        ("loaded", pa.bool_()),
    ]
)
SAMPLE = pa.schema(
    [
        ("ids", pa.list_(pa.string())),
        ("vectors", pa.binary()),
        ("embed_seconds", pa.float64()),
        ("pid", pa.int64()),
        ("loaded", pa.bool_()),
    ]
)
DDL = {
    pa.int32(): "int",
    pa.int64(): "bigint",
    pa.string(): "string",
    pa.binary(): "binary",
    pa.float64(): "double",
    pa.bool_(): "boolean",
    pa.list_(pa.string()): "array<string>",
}


def ddl(schema: pa.Schema) -> str:
    """The Spark DDL of an Arrow schema (what ``mapInArrow`` is told it returns)."""
    return ", ".join(f"{f.name} {DDL[f.type]}" for f in schema)


_LOADED: list[Any] = [None, None]  # Any: [the broadcast, its value], both None at first
"""Per Python worker: the last broadcast model and its unpickled value. Spark reuses workers
across tasks and keeps one object per broadcast in each, so a worker unpickles the model once
per build; the broadcast is held (not its ``id``, which a later object could reuse) and a new
build's replaces it, so a long-lived worker keeps one model, not one per build."""


def model_of(
    model: Broadcast[tuple[FeatureSpace, NumpyItemTower]],
) -> tuple[FeatureSpace, NumpyItemTower, bool]:
    """The broadcast model, and whether this call unpickled it."""
    fresh = _LOADED[0] is not model
    if fresh:
        _LOADED[:] = [model, model.value]
    space, tower = _LOADED[1]
    return space, tower, fresh


def embed_sample(
    model: Broadcast[tuple[FeatureSpace, NumpyItemTower]],
    reading: tuple[Table, str],
    batches: Iterator[pa.RecordBatch],
) -> Iterator[pa.RecordBatch]:
    """Job 1: each batch's ids and vectors (as one blob); duplicates are job 2's to find.
    A worker that unpickles the model says so once, in a row of its own if it drew nothing."""
    space, tower, loaded = model_of(model)
    for batch in batches:
        if not batch.num_rows:
            continue
        t = time.perf_counter()
        ids, vectors, _ = embed_chunk(space, tower, to_canonical(batch, *reading), set())
        yield sample_row(ids, vectors.tobytes(), time.perf_counter() - t, loaded)
        loaded = False
    if loaded:
        yield sample_row([], b"", 0.0, loaded)


def sample_row(ids: list[str], vectors: bytes, seconds: float, loaded: bool) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {
            "ids": [ids],
            "vectors": [vectors],
            "embed_seconds": [seconds],
            "pid": [os.getpid()],
            "loaded": [loaded],
        },
        SAMPLE,
    )


def shard(
    model: Broadcast[tuple[FeatureSpace, NumpyItemTower]],
    reading: tuple[Table, str],
    empty: Broadcast[tuple[bytes, np.ndarray, str]],
    batches: Iterator[pa.RecordBatch],
) -> Iterator[pa.RecordBatch]:
    """Job 2: one partition embedded, added to a copy of the trained index, scored exactly
    against the queries and written as a shard; yields its one row of ``SHARD``."""
    from pyspark import TaskContext

    started = time.perf_counter()
    faiss.omp_set_num_threads(1)
    context = TaskContext.get()
    if context is None:
        raise RuntimeError("index.spark_tasks.shard runs inside a Spark task only")
    part, attempt = context.partitionId(), context.attemptNumber()
    space, tower, loaded = model_of(model)
    blob, queries, scratch = empty.value
    index = faiss.deserialize_index(np.frombuffer(blob, np.uint8))
    exact = ExactTopK(queries)
    ids: list[str] = []
    tags = []
    seen: set[str] = set()
    embed_seconds = 0.0
    error = None
    try:
        for batch in batches:
            if not batch.num_rows:
                continue
            t = time.perf_counter()
            batch_ids, vectors, bits = embed_chunk(
                space, tower, to_canonical(batch, *reading), seen
            )
            embed_seconds += time.perf_counter() - t
            exact.add(vectors, len(ids))
            index.add(vectors)
            ids += batch_ids
            tags.append(bits)
    except DataError as exc:  # the catalog's fault: retrying will not help, so report it
        error = str(exc)
    path = Path(scratch) / f"part-{part:05d}-{attempt}.faiss"
    if error is None:
        faiss.write_index(index, str(path) + ".tmp")
        os.replace(str(path) + ".tmp", path)
        np.savez(
            str(path) + ".npz",
            ids=np.array(ids, dtype=np.str_),
            tags=items.stack_bits(tags),
        )
    yield pa.RecordBatch.from_pydict(
        {
            "part": [part],
            "attempt": [attempt],
            "path": [str(path)],
            "items": [len(ids)],
            "error": [error],
            "scores": [exact.scores.astype(np.float32).tobytes()],
            "rows": [exact.rows.astype(np.int64).tobytes()],
            "embed_seconds": [embed_seconds],
            "task_seconds": [time.perf_counter() - started],
            "pid": [os.getpid()],
            "loaded": [loaded],
        },
        SHARD,
    )
