"""The batch index rebuild on Apache Spark: the catalog embedded, indexed and verified in the
executors, one shard per partition, merged on the driver.

Two jobs over a Parquet catalog (a generated one is written as Parquet first):

1. IVF only: the items drawn for the training sample (by id hash, as the local engine draws
   them: ``index.build.training_sample``) are embedded in the executors and collected; the
   driver trains the coarse quantizer on ``64 · nlist`` of them once, the same vectors in the
   same order as the local engine, so the same centroids.
2. The catalog, partitioned by item-id hash (so a duplicate id meets its twin in one
   partition), goes through ``mapInArrow``. Each task embeds its Arrow batches with the item
   tower, adds them to a copy of the trained, empty index, keeps the exact top results of the
   verification queries over its items, and writes its shard (FAISS index, ids, filter bits)
   to the scratch folder. It returns one row: where the shard is, its size, its exact top
   lists and its timings.

The driver then merges the shards in partition order into one index (``merge_from``, rows
shifted by the items before), merges the exact top lists the same way, and hands the result
to the verify-then-publish step the local engine uses. The server loads the same kind of
version and knows nothing of the engine. A merged index rather than ``IndexShards``: the
merge costs about a second a million items on the driver, and at 1M one index answers a
query in 77 µs p50 against 200 µs for its 4 shards (BENCHMARKS.md).

The model reaches the executors as a broadcast of the item tower and feature space loaded
from the version's exported weights (under 1 MB): unpickled once per Python worker, which
Spark reuses across tasks. A failed task is retried by Spark (``local[N,F]``: F attempts);
each attempt writes its own files, and the driver reads only the attempts whose rows came
back. A job that fails raises ``ArtifactError``; the scratch folder is removed and nothing
is written or published, so the old ``CURRENT`` keeps serving.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np

from index import items
from index import spark_tasks as tasks
from index.plan import Filled, Plan, sample_threshold, train_size, training_sample
from index.recall import ExactTopK
from recsys.config import Config
from recsys.data.schema import Table
from recsys.errors import ArtifactError, ConfigError, DataError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, Row, SparkSession


ITEMS_PER_PARTITION = 250_000
"""At most this many items a shard by default: a task's vectors, index copy and exact top
lists stay near 100 MB, and a lost task costs seconds to redo."""
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
"""One thread a task: Spark runs one task per slot, so FAISS's OpenMP and NumPy's BLAS
would otherwise put every core's worth of threads on every slot."""


@contextlib.contextmanager
def session(master: str, app: str = "recsys-build-index") -> Iterator[SparkSession]:
    """A Spark session on ``master``; an active one is reused (and left running), one made
    here is stopped on exit. The executors' Python is this interpreter unless
    ``PYSPARK_PYTHON`` says otherwise (on a cluster it must have this project installed)."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        yield active
        return
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(master)
        .appName(app)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "20000")
    )
    for name in THREAD_ENV:
        builder = builder.config(f"spark.executorEnv.{name}", "1")
    if master.startswith("local"):  # everything on this machine: nothing listens outside it
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        builder = builder.config("spark.driver.host", "127.0.0.1").config(
            "spark.driver.bindAddress", "127.0.0.1"
        )
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    try:
        yield spark
    finally:
        spark.stop()


def read_catalog(spark: SparkSession, path: Path, table: Table) -> DataFrame:
    """The catalog's columns (``table``'s) as a DataFrame, the id column as string
    ``item_id``; each executor converts its rows by kind (``index.catalog.to_canonical``).

    Raises:
        DataError: the path is not readable Parquet, or a declared column is missing.
    """
    from pyspark.errors import PySparkException
    from pyspark.sql import functions as F  # noqa: N812 (Spark's own convention)

    try:
        frame = spark.read.parquet(str(path))
    except PySparkException as exc:
        raise DataError(f"cannot read the catalog {path} as Parquet: {_first_line(exc)}") from exc
    columns = [table.id, *(f.source(n) for n, f in table.features.items())]
    for column in columns:
        if column not in frame.columns:
            raise DataError(
                f"the catalog {path} has no column {column!r}, which the data schema declares; "
                f"its columns: {frame.columns}"
            )
    return frame.select(*dict.fromkeys(columns)).withColumn(
        "item_id", F.col(table.id).cast("string")
    )


def fill(config: Config, plan: Plan, version: str) -> Filled:
    """The Spark engine behind ``index.build.build_index``: the plan's index (empty,
    untrained) trained on a sample and filled with every item of its catalog by the
    executors.

    Raises:
        ConfigError: an HNSW index (graphs do not merge from shards).
        DataError: a catalog column missing or mistyped, an empty or duplicate item id.
        ArtifactError: the Spark job failed (after Spark's own retries).
    """
    cfg = config.index
    if not plan.catalog.size:
        raise DataError(f"the catalog {plan.catalog.name} is empty: nothing to index")
    if plan.kind == "hnsw":
        raise ConfigError(
            "the spark engine builds flat and IVF indexes (HNSW graphs do not merge from "
            "shards); use --engine local or --type ivf"
        )
    scratch = (cfg.spark_scratch or config.indexes_dir) / f".spark-{version}.tmp"
    scratch.mkdir(parents=True)
    started = time.perf_counter()
    try:
        with session(cfg.spark_master) as spark:
            plan.phases["session"] = time.perf_counter() - started
            return _fill(spark, config, plan, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _fill(spark: SparkSession, config: Config, plan: Plan, scratch: Path) -> Filled:
    from py4j.protocol import Py4JJavaError
    from pyspark.sql import functions as F  # noqa: N812 (Spark's own convention)

    cfg = config.index
    catalog, index, kind, exact, phases = (
        plan.catalog,
        plan.index,
        plan.kind,
        plan.exact,
        plan.phases,
    )
    sc = spark.sparkContext
    t = time.perf_counter()
    if catalog.path is not None and catalog.changes is None:  # read where it lies
        path, table = catalog.path, catalog.table or catalog.items
    else:  # generated, or with the catalog topic's changes folded in: written once
        path, table = catalog.write_parquet(scratch / "catalog.parquet"), catalog.items
    frame = read_catalog(spark, path, table)
    # Executors read the id from the string column read_catalog adds.
    reading = (table.model_copy(update={"id": "item_id"}), str(path))
    phases["catalog"] = time.perf_counter() - t
    group = f"recsys-build-{scratch.name}"
    sc.setJobGroup(group, f"index build: {catalog.name}")
    model = sc.broadcast((plan.space, plan.tower))
    stats: dict[str, Any] = {"master": sc.master, "slots": sc.defaultParallelism}  # Any: JSON
    # Any: job 1's rows (who loaded the model, if it ran), read by key beside the Spark Rows
    sampled: list[Any] = []
    try:
        needed = train_size(index, kind)
        if needed:
            t = time.perf_counter()
            drawn = frame.where(F.crc32("item_id") < sample_threshold(needed, catalog.size))
            rows = drawn.mapInArrow(
                functools.partial(tasks.embed_sample, model, reading), tasks.ddl(tasks.SAMPLE)
            ).collect()
            sampled = [{"pid": r["pid"], "loaded": r["loaded"]} for r in rows]
            ids = [i for r in rows for i in r["ids"]]
            if not ids:
                raise DataError(f"the catalog {catalog.name} is empty: nothing to index")
            vectors = np.concatenate([np.frombuffer(r["vectors"], np.float32) for r in rows])
            sample = training_sample(ids, vectors.reshape(-1, index.d), needed)
            stats["executor_embed_seconds"] = sum(r["embed_seconds"] for r in rows)
            phases["sample"] = time.perf_counter() - t
            t = time.perf_counter()
            index.train(sample)
            phases["train"] = time.perf_counter() - t
            stats["train_vectors"] = len(sample)
            del sample, vectors, ids, rows
        partitions = cfg.spark_partitions or max(
            2 * sc.defaultParallelism, -(-catalog.size // ITEMS_PER_PARTITION)
        )
        blob = faiss.serialize_index(index).tobytes()
        empty = sc.broadcast((blob, exact.queries, str(scratch)))
        t = time.perf_counter()
        shards = (
            frame.repartition(partitions, "item_id")
            .mapInArrow(
                functools.partial(tasks.shard, model, reading, empty), tasks.ddl(tasks.SHARD)
            )
            .collect()
        )
        phases["shards"] = time.perf_counter() - t
    except Py4JJavaError as exc:
        raise ArtifactError(f"the Spark job failed, nothing published: {_first_line(exc)}") from exc
    finally:
        stats["failed_tasks"] = _failed_tasks(spark, group)
        sc.setLocalProperty("spark.jobGroup.id", None)  # type: ignore[arg-type]  # None unsets it
    errors = sorted(r["error"] for r in shards if r["error"])
    if errors:
        raise DataError(errors[0])
    t = time.perf_counter()
    # Into a copy read back like the shards are: FAISS merges only indexes of one class,
    # and a factory-made flat index reads back as its metric's subclass.
    target = faiss.deserialize_index(np.frombuffer(blob, np.uint8))
    filled = _merge(sorted(shards, key=lambda r: r["part"]), target, kind, exact)
    phases["merge"] = time.perf_counter() - t
    stats.update(
        partitions=partitions,
        executor_embed_seconds=stats.get("executor_embed_seconds", 0.0)
        + sum(r["embed_seconds"] for r in shards),
        executor_task_seconds=sum(r["task_seconds"] for r in shards),
        python_workers=len({r["pid"] for r in [*sampled, *shards]}),
        tower_loads=sum(r["loaded"] for r in [*sampled, *shards]),
    )
    filled.stats = {k: round(v, 3) if isinstance(v, float) else v for k, v in stats.items()}
    return filled


def _merge(shards: list[Row], index: faiss.Index, kind: str, exact: ExactTopK) -> Filled:
    """The shards' indexes, ids, filter bits and exact top lists, in partition order."""
    item_ids: list[str] = []
    tags = []
    for row in shards:
        shard = faiss.read_index(row["path"])
        n = len(item_ids)
        # IVF lists carry their ids: shift the shard's 0..n-1 past the rows before it.
        index.merge_from(shard, n if kind.startswith("ivf") else 0)
        with np.load(row["path"] + ".npz") as meta:
            ids = meta["ids"].tolist()
            tags.append(meta["tags"])
        scores = np.frombuffer(row["scores"], np.float32).reshape(len(exact.queries), -1)
        rows = np.frombuffer(row["rows"], np.int64).reshape(scores.shape) + n
        exact.merge(scores, rows)
        item_ids += ids
    if index.ntotal != len(item_ids):
        raise ArtifactError(f"merged {index.ntotal} vectors for {len(item_ids)} ids; rebuild")
    return Filled(index, item_ids, items.stack_bits(tags), exact)


def _failed_tasks(spark: SparkSession, group: str) -> int:
    tracker = spark.sparkContext.statusTracker()
    failed = 0
    for job in tracker.getJobIdsForGroup(group):
        info = tracker.getJobInfo(job)
        for stage in info.stageIds if info else ():
            stage_info = tracker.getStageInfo(stage)
            failed += stage_info.numFailedTasks if stage_info else 0
    return failed


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    for line in text.splitlines():
        if "Error" in line or "Exception" in line:
            return line.strip()[:500]
    return text.splitlines()[0][:500] if text else type(exc).__name__
