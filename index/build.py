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

from catalog.fold import CatalogChanges, read_changes
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
from recsys.data import temporal_split
from recsys.data.dataset import Dataset
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
    tags: list[np.ndarray] = []
    seen: set[str] = set()
    bar = tqdm(total=catalog.size, unit="item", disable=not progress, desc="embed+add")
    for chunk in catalog.chunks():
        t = time.perf_counter()
        ids, vectors, bits = embed_chunk(space, tower, chunk, seen)
        tags.append(bits)
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
    return Filled(index, item_ids, items.stack_bits(tags), exact)


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


def default_catalog(config: Config, ml: Dataset) -> Catalog:
    """``index.catalog`` if set, else the synthetic catalog if sized, else the data set's;
    with the catalog topic's changes folded in (``index.fold_catalog_topic``)."""
    cfg = config.index
    if cfg.catalog is not None:
        catalog = Catalog.parquet(cfg.catalog, ml.schema.items, chunk=cfg.chunk_items)
    elif cfg.synthetic_items:
        catalog = Catalog.synthetic(ml, cfg.synthetic_items, chunk=cfg.chunk_items)
    else:
        catalog = Catalog.dataset(ml, chunk=cfg.chunk_items)
    if cfg.fold_catalog_topic:
        changes = read_changes(config, ml.schema)
        if changes is not None:
            catalog = catalog.with_changes(changes)
    return catalog


def build_index(
    config: Config,
    ml: Dataset,
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
    return Builder(config, ml, catalog or default_catalog(config, ml), progress).run(
        publish=publish, log=log
    )


@dataclass(frozen=True)
class Tuned:
    """What verification chose: the search parameters and the recall they reach."""

    params: dict[str, int]
    recall: float
    sweep: list[dict[str, float]]


class Builder:
    """One rebuild, phase by phase: fill (embed and add, on the configured engine), verify
    (tune the search parameters against exact truth), write (a staged, checksummed
    version), publish (move ``CURRENT``, prune). ``phases`` times each."""

    def __init__(self, config: Config, ml: Dataset, catalog: Catalog, progress: bool = False):
        """Loads the current model's item tower and the verification queries, and makes
        the empty index the catalog's size calls for."""
        from towers.runtime import NumpyItemTower

        self.config = config
        self.ml = ml
        self.progress = progress
        self.started = time.perf_counter()
        self.phases: dict[str, float] = {}
        model_dir = artifacts.current(config.models_dir)
        self.model_version = str(artifacts.read_manifest(model_dir)["version"])
        space = FeatureSpace.load(model_dir / "features.json")
        self.queries = user_queries(model_dir, ml, config.index.verify_queries)
        kind, self.spec = index_spec(config.index, catalog.size)
        index = faiss.index_factory(self.queries.shape[1], self.spec, faiss.METRIC_INNER_PRODUCT)
        self.plan = Plan(
            catalog,
            space,
            NumpyItemTower.load(model_dir),
            index,
            kind,
            ExactTopK(self.queries),
            self.phases,
        )

    def run(self, *, publish: bool = True, log: Callable[[str], None] = print) -> BuildResult:
        """All the phases, under the index root's build lock."""
        with _build_lock(self.config.indexes_dir):
            version = artifacts.new_version()
            filled = self.fill(version)
            tuned = self.verify(filled)
            self.write(version, filled, tuned)
            if publish:
                self.publish(version)
        seconds = time.perf_counter() - self.started
        index = filled.index
        log(
            f"index {version}: {len(filled.item_ids):,} items × {index.d} dims, {self.spec} "
            f"{tuned.params or ''} recall@{K} {tuned.recall:.3f}, from model "
            f"{self.model_version} in {seconds:.1f}s ("
            + ", ".join(f"{k} {v:.1f}s" for k, v in self.phases.items())
            + ")"
            + ("" if publish else "; not published")
        )
        return BuildResult(
            version,
            self.config.indexes_dir / version,
            self.model_version,
            len(filled.item_ids),
            seconds,
            tuned.recall,
            self.spec,
            tuned.params,
            self.phases,
            tuned.sweep,
        )

    def fill(self, version: str) -> Filled:
        """Every item embedded and added to the index, with its exact top-K per query.

        Raises:
            DataError: the catalog is empty.
        """
        if self.config.index.engine == "spark":
            from index import spark

            filled = spark.fill(self.config, self.plan, version)
        else:
            self.phases.update(sample=0.0, train=0.0, embed=0.0, add=0.0, exact=0.0)
            filled = _fill_locally(self.plan, self.progress)
        if not filled.item_ids:
            raise DataError(f"the catalog {self.plan.catalog.name} is empty: nothing to index")
        return filled

    def verify(self, filled: Filled) -> Tuned:
        """The smallest search setting that meets ``index.min_recall`` with a margin.

        Raises:
            ArtifactError: no setting does.
        """
        t = time.perf_counter()
        params, recall, sweep = tune(
            filled.index,
            self.plan.kind,
            self.queries,
            filled.exact.truth(),
            self.config.index.min_recall,
        )
        self.phases["verify"] = time.perf_counter() - t + self.phases.pop("exact", 0.0)
        return Tuned(params, recall, sweep)

    def write(self, version: str, filled: Filled, tuned: Tuned) -> None:
        """The version's files and manifest, staged, fsynced and renamed into place."""
        t = time.perf_counter()
        cfg, index, item_ids = self.config.index, filled.index, filled.item_ids
        with artifacts.staged_version(self.config.indexes_dir, version) as staging:
            faiss.write_index(index, str(staging / INDEX_FILE))
            (staging / IDS_FILE).write_text(json.dumps(item_ids))
            past, _ = temporal_split(self.ml.interactions, self.config.model.test_fraction)
            rows, shares = items.popular_rows(item_ids, items.interaction_counts(past))
            items.write(staging, filled.tags, rows, shares)
            artifacts.write_manifest(
                staging,
                {
                    "version": version,
                    "model_version": self.model_version,
                    "catalog": self.plan.catalog.name,
                    "catalog_topic": _topic_record(self.config, self.plan.catalog.changes),
                    "engine": cfg.engine,
                    **({"engine_stats": filled.stats} if filled.stats else {}),
                    "items": len(item_ids),
                    "dim": int(index.d),
                    "metric": "inner_product",
                    "index_type": self.spec,
                    "filter": {
                        "field": self.plan.space.filter,
                        "values": list(self.plan.space.filter_values),
                    },
                    "params": tuned.params,
                    f"recall_at_{K}": round(tuned.recall, 4),
                    "min_recall": cfg.min_recall,
                    "verify_queries": len(self.queries),
                    "sweep": tuned.sweep,
                    "phases_seconds": {k: round(v, 3) for k, v in self.phases.items()},
                    "build_seconds": round(time.perf_counter() - self.started, 3),
                },
            )
        self.phases["write"] = time.perf_counter() - t

    def publish(self, version: str) -> None:
        """``CURRENT`` moves to ``version``; versions past ``index.keep_versions`` go."""
        t = time.perf_counter()
        artifacts.publish(self.config.indexes_dir, version)
        prune(self.config.indexes_dir, self.config.index.keep_versions)
        self.phases["publish"] = time.perf_counter() - t


def _topic_record(config: Config, changes: CatalogChanges | None) -> dict[str, object] | None:
    """What the version holds of the catalog topic: the offsets it read up to (a server's
    overlay starts there) and how many items it changed; ``None``: the topic was not read."""
    if changes is None:
        return None
    return {
        "topic": config.kafka.catalog_topic,
        "positions": {str(p): o for p, o in sorted(changes.positions.items())},
        "changed_items": len(changes.latest),
        "skipped": changes.skipped,
    }
