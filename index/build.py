"""Batch index rebuild: item tower over the catalog → FAISS index → verified → published.

One pass over the catalog in chunks: each chunk is encoded, embedded with the current
model's item tower (the NumPy runtime, held to the SavedModel within 1e-5 by the tower
tests), added to the index (an IVF index is trained on the first chunks), and scored
exactly against a sample of real user-tower queries, so exact ground truth costs no second
copy of the vectors. Then the ANN index's recall@10 is measured against that ground truth
for increasing ``nprobe`` (or ``efSearch``); the smallest setting whose recall, less
``MARGIN_SE`` standard errors over the queries, reaches ``index.min_recall`` is kept (so the
target holds on queries the build never saw), and if none does the build is refused. The
version is written to a staging directory, fsynced, renamed into place, and only then does
``CURRENT`` move.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np
from tqdm import tqdm

from index import items
from index.catalog import Catalog
from index.plan import (
    Filled,
    Plan,
    embed_chunk,
    id_keys,
    index_spec,
    sample_threshold,
    train_size,
    training_sample,
)
from index.recall import ExactTopK, K, tune, user_queries
from index.versions import IDS_FILE, INDEX_FILE, prune
from recsys import artifacts
from recsys.config import Config
from recsys.data import MovieLens, temporal_split
from recsys.errors import ArtifactError, DataError
from towers.encoding import FeatureSpace


@dataclass
class BuildResult:
    version: str
    directory: Path
    model_version: str
    items: int
    seconds: float
    recall: float
    index_type: str
    params: dict[str, int]
    phases: dict[str, float] = field(default_factory=dict)
    sweep: list[dict[str, float]] = field(default_factory=list)


@contextlib.contextmanager
def _build_lock(root: Path) -> Iterator[None]:
    """One build at a time per index root; the holder clears staging dirs of dead builds."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".build.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise ArtifactError(f"another index build holds {root / '.build.lock'}") from exc
        for stale in root.glob(".*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        yield


def _fill_locally(plan: Plan, progress: bool) -> Filled:
    """The local engine: the catalog in chunks through this process."""
    catalog, space, tower, index, exact, phases = (
        plan.catalog,
        plan.space,
        plan.tower,
        plan.index,
        plan.exact,
        plan.phases,
    )
    if not index.is_trained:
        _train_locally(plan, progress)
    item_ids: list[str] = []
    genres: list[np.ndarray] = []
    seen: set[str] = set()
    bar = tqdm(total=catalog.size, unit="item", disable=not progress, desc="embed+add")
    for chunk in catalog.chunks():
        t = time.perf_counter()
        ids, vectors, bits = embed_chunk(space, tower, chunk, seen)
        genres.append(bits)
        phases["embed"] += time.perf_counter() - t
        t = time.perf_counter()
        exact.add(vectors, len(item_ids))
        phases["exact"] += time.perf_counter() - t
        item_ids += ids
        t = time.perf_counter()
        index.add(vectors)
        phases["add"] += time.perf_counter() - t
        bar.update(len(ids))
    bar.close()
    return Filled(index, item_ids, items.stack_bits(genres), exact)


def _train_locally(plan: Plan, progress: bool) -> None:
    """A first pass that embeds only the items drawn for the training sample, then trains."""
    t = time.perf_counter()
    needed = train_size(plan.index, plan.kind)
    threshold = sample_threshold(needed, plan.catalog.size)
    ids: list[str] = []
    vectors = []
    seen: set[str] = set()
    bar = tqdm(total=plan.catalog.size, unit="item", disable=not progress, desc="sample")
    for chunk in plan.catalog.chunks():
        drawn = chunk[id_keys(chunk["item_id"]) < threshold]
        if len(drawn):
            drawn_ids, drawn_vectors, _ = embed_chunk(plan.space, plan.tower, drawn, seen)
            ids += drawn_ids
            vectors.append(drawn_vectors)
        bar.update(len(chunk))
    bar.close()
    if not ids:
        raise DataError(f"the catalog {plan.catalog.name} is empty: nothing to index")
    plan.phases["sample"] = time.perf_counter() - t
    t = time.perf_counter()
    plan.index.train(training_sample(ids, np.concatenate(vectors), needed))
    plan.phases["train"] = time.perf_counter() - t


def default_catalog(config: Config, ml: MovieLens) -> Catalog:
    """``index.catalog`` if set, else the synthetic catalog if sized, else ML-100K's."""
    cfg = config.index
    if cfg.catalog is not None:
        return Catalog.parquet(cfg.catalog, chunk=cfg.chunk_items)
    if cfg.synthetic_items:
        return Catalog.synthetic(ml, cfg.synthetic_items, chunk=cfg.chunk_items)
    return Catalog.movielens(ml, chunk=cfg.chunk_items)


def build_index(
    config: Config,
    ml: MovieLens,
    *,
    catalog: Catalog | None = None,
    log: Callable[[str], None] = print,
    publish: bool = True,
    progress: bool = False,
) -> BuildResult:
    """Embeds ``catalog`` (default: ``default_catalog``) with the current model's item tower
    on ``index.engine``, builds, verifies and writes ``indexes/<version>``; publishes it
    unless told not to.

    Raises:
        DataError: an empty catalog, a duplicate or empty item id, or a catalog column
            missing or of the wrong type.
        ArtifactError: recall below ``index.min_recall``, no published model, or a failed
            Spark job (nothing is published then).
        ConfigError: an index kind the engine cannot build.
    """
    from towers.runtime import NumpyItemTower

    cfg = config.index
    catalog = catalog or default_catalog(config, ml)
    started = time.perf_counter()
    phases: dict[str, float] = {}
    model_dir = artifacts.current(config.models_dir)
    model_manifest = artifacts.read_manifest(model_dir)
    space = FeatureSpace.load(model_dir / "features.json")
    tower = NumpyItemTower.load(model_dir)
    queries = user_queries(model_dir, ml, cfg.verify_queries)
    kind, spec = index_spec(cfg, catalog.size)
    index = faiss.index_factory(queries.shape[1], spec, faiss.METRIC_INNER_PRODUCT)
    plan = Plan(catalog, space, tower, index, kind, ExactTopK(queries), phases)
    with _build_lock(config.indexes_dir):
        version = artifacts.new_version()
        if cfg.engine == "spark":
            from index import spark

            filled = spark.fill(config, plan, version)
        else:
            phases.update(sample=0.0, train=0.0, embed=0.0, add=0.0, exact=0.0)
            filled = _fill_locally(plan, progress)
        index, item_ids = filled.index, filled.item_ids
        if not item_ids:
            raise DataError(f"the catalog {catalog.name} is empty: nothing to index")
        t = time.perf_counter()
        params, recall, sweep = tune(index, kind, queries, filled.exact.truth(), cfg.min_recall)
        phases["verify"] = time.perf_counter() - t + phases.pop("exact", 0.0)
        t = time.perf_counter()
        with artifacts.staged_version(config.indexes_dir, version) as staging:
            faiss.write_index(index, str(staging / INDEX_FILE))
            (staging / IDS_FILE).write_text(json.dumps(item_ids))
            past, _ = temporal_split(ml.interactions, config.model.test_fraction)
            rows, shares = items.popular_rows(item_ids, items.interaction_counts(past))
            items.write(staging, filled.genres, rows, shares)
            seconds = time.perf_counter() - started
            artifacts.write_manifest(
                staging,
                {
                    "version": version,
                    "model_version": model_manifest["version"],
                    "catalog": catalog.name,
                    "engine": cfg.engine,
                    **({"engine_stats": filled.stats} if filled.stats else {}),
                    "items": len(item_ids),
                    "dim": int(index.d),
                    "metric": "inner_product",
                    "index_type": spec,
                    "genres": list(space.genres),
                    "params": params,
                    f"recall_at_{K}": round(recall, 4),
                    "min_recall": cfg.min_recall,
                    "verify_queries": len(queries),
                    "sweep": sweep,
                    "phases_seconds": {k: round(v, 3) for k, v in phases.items()},
                    "build_seconds": round(seconds, 3),
                },
            )
        phases["write"] = time.perf_counter() - t
        if publish:
            t = time.perf_counter()
            artifacts.publish(config.indexes_dir, version)
            prune(config.indexes_dir, cfg.keep_versions)
            phases["publish"] = time.perf_counter() - t
    seconds = time.perf_counter() - started
    log(
        f"index {version}: {len(item_ids):,} items × {index.d} dims, {spec} {params or ''} "
        f"recall@{K} {recall:.3f}, from model {model_manifest['version']} in {seconds:.1f}s ("
        + ", ".join(f"{k} {v:.1f}s" for k, v in phases.items())
        + ")"
        + ("" if publish else "; not published")
    )
    return BuildResult(
        version,
        config.indexes_dir / version,
        str(model_manifest["version"]),
        len(item_ids),
        seconds,
        recall,
        spec,
        params,
        phases,
        sweep,
    )
