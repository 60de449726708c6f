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
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np
import pandas as pd
from tqdm import tqdm

from index import items
from index.catalog import Catalog
from recsys import artifacts
from recsys.config import Config, IndexConfig
from recsys.data import MovieLens, temporal_split
from recsys.errors import ArtifactError, DataError
from towers.encoding import FeatureSpace

if TYPE_CHECKING:
    from towers.runtime import NumpyItemTower

INDEX_FILE = "index.faiss"
IDS_FILE = "item_ids.json"
K = 10
TIE_EPS = 1e-5
"""Items within this of the k-th exact score are ties: any of them is a correct answer."""
TRUTH_DEPTH = 64
"""Exact results kept per query, enough to hold the k-th score's ties."""
SWEEP = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
MARGIN_SE = 2.0
"""Standard errors the verified recall must clear ``index.min_recall`` by: a setting that
only just reaches it on the verification queries falls short on others about half the
time (measured at 1M items: 0.951 verified, 0.944 held out)."""


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


def embed_catalog(
    model_dir: Path, ml: MovieLens, batch_size: int = 4096
) -> tuple[list[str], np.ndarray]:
    """Runs the exported item-tower SavedModel (raw-feature signature) over ML-100K's items.

    The reference the NumPy runtime and the index are checked against in tests.
    """
    from towers.tf_env import tf

    tower = tf.saved_model.load(str(model_dir / "item_tower")).signatures["serving_default"]
    items = ml.items
    item_ids = list(items["item_id"])
    width = max(1, max(len(g) for g in items["genres"]))
    genres = np.array([list(g) + [""] * (width - len(g)) for g in items["genres"]], dtype=object)
    raw = {
        "item_id": np.array(item_ids, dtype=object),
        "release_year": items["release_year"].to_numpy(np.int32),
        "genres": genres,
        "title": items["title"].to_numpy(dtype=object),
    }
    chunks = []
    for start in range(0, len(item_ids), batch_size):
        part = {k: tf.constant(v[start : start + batch_size]) for k, v in raw.items()}
        chunks.append(tower(**part)["embedding"].numpy())
    return item_ids, np.ascontiguousarray(np.concatenate(chunks), np.float32)


def user_queries(model_dir: Path, ml: MovieLens, n: int, seed: int = 0) -> np.ndarray:
    """``[n, dim]`` user-tower vectors for random ML-100K users at random moments of theirs
    (profile, history up to that moment, that request time): what serving asks."""
    from towers.examples import HistoryIndex, query_inputs
    from towers.runtime import NumpyUserTower

    space = FeatureSpace.load(model_dir / "features.json")
    rows = ml.interactions.sample(min(n, len(ml.interactions)), random_state=seed)
    history = HistoryIndex(ml.interactions, space.history_length)
    moments = [
        (u, int(t) * 1000, int(t) * 1000) for u, t in zip(rows.user_id, rows.timestamp, strict=True)
    ]
    vectors = NumpyUserTower.load(model_dir)(query_inputs(ml, space, history, moments))
    return np.ascontiguousarray(vectors, np.float32)


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


class _ExactTopK:
    """Running exact top ``TRUTH_DEPTH`` (scores, rows) of each query over streamed chunks."""

    def __init__(self, queries: np.ndarray):
        self.queries = queries
        n = len(queries)
        self.scores = np.full((n, 0), -np.inf, np.float32)
        self.rows = np.zeros((n, 0), np.int64)

    def add(self, vectors: np.ndarray, first_row: int) -> None:
        scores = self.queries @ vectors.T
        self.merge(scores, np.arange(first_row, first_row + len(vectors)))

    def merge(self, scores: np.ndarray, rows: np.ndarray) -> None:
        """Folds in ``[queries, n]`` scores of ``rows`` (``[n]``, or ``[queries, n]``: another
        top list, such as a shard's, with its rows made global)."""
        rows = np.broadcast_to(rows, scores.shape)
        scores = np.concatenate([self.scores, scores], axis=1)
        rows = np.concatenate([self.rows, rows], axis=1)
        if scores.shape[1] > TRUTH_DEPTH:
            keep = np.argpartition(-scores, TRUTH_DEPTH - 1, axis=1)[:, :TRUTH_DEPTH]
            scores = np.take_along_axis(scores, keep, axis=1)
            rows = np.take_along_axis(rows, keep, axis=1)
        self.scores, self.rows = scores, rows

    def truth(self, k: int = K) -> list[set[int]]:
        """Per query, every row scoring within ``TIE_EPS`` of its k-th best score."""
        kth = -np.sort(-self.scores, axis=1)[:, min(k, self.scores.shape[1]) - 1]
        return [
            set(rows[scores >= kth_score - TIE_EPS].tolist())
            for scores, rows, kth_score in zip(self.scores, self.rows, kth, strict=True)
        ]


def query_recalls(found: np.ndarray, truth: list[set[int]], k: int = K) -> np.ndarray:
    """``[queries]``: the share of each query's ``k`` results that are correct (ties count as
    correct)."""
    hits = [len(set(row[:k].tolist()) & want) for row, want in zip(found, truth, strict=True)]
    return np.array([min(h, k) / k for h in hits])


def recall_at_k(found: np.ndarray, truth: list[set[int]], k: int = K) -> float:
    """Mean share of each query's ``k`` results that are correct (ties count as correct)."""
    return float(query_recalls(found, truth, k).mean())


def recall_bound(recalls: np.ndarray) -> float:
    """The mean per-query recall less ``MARGIN_SE`` standard errors: what the index is
    expected to reach on queries it was not verified with."""
    if len(recalls) < 2:
        return float(recalls.mean()) if len(recalls) else 0.0
    se = float(recalls.std(ddof=1)) / np.sqrt(len(recalls))
    return float(recalls.mean()) - MARGIN_SE * se


def _set_search_param(index: faiss.Index, kind: str, value: int) -> None:
    if kind.startswith("ivf"):
        faiss.extract_index_ivf(index).nprobe = value
    elif kind == "hnsw":
        hnsw: Any = faiss.downcast_index(index)
        hnsw.hnsw.efSearch = value


def search_params(manifest: dict[str, Any]) -> dict[str, int]:
    return {k: int(v) for k, v in dict(manifest.get("params", {})).items()}


def tune(
    index: faiss.Index, kind: str, queries: np.ndarray, truth: list[set[int]], min_recall: float
) -> tuple[dict[str, int], float, list[dict[str, float]]]:
    """Smallest nprobe / efSearch whose recall, less ``MARGIN_SE`` standard errors over the
    queries, reaches ``min_recall``; the sweep is returned for the record (recall, that
    bound and mean batch search time per query at each setting)."""
    if kind == "flat":
        _, rows = index.search(queries, K)
        return {}, recall_at_k(rows, truth), []
    name = "nprobe" if kind.startswith("ivf") else "efSearch"
    limit = faiss.extract_index_ivf(index).nlist if kind.startswith("ivf") else SWEEP[-1]
    sweep = []
    for value in [v for v in SWEEP if v <= limit and (name == "nprobe" or v >= K)]:
        _set_search_param(index, kind, value)
        started = time.perf_counter()
        _, rows = index.search(queries, K)
        per_query_us = (time.perf_counter() - started) / len(queries) * 1e6
        recalls = query_recalls(rows, truth)
        recall, bound = float(recalls.mean()), recall_bound(recalls)
        sweep.append(
            {
                name: value,
                "recall": recall,
                "recall_bound": bound,
                "batch_us_per_query": per_query_us,
            }
        )
        if bound >= min_recall:
            return {name: value}, recall, sweep
    best = max(sweep, key=lambda s: s["recall_bound"])
    raise ArtifactError(
        f"the {kind} index reaches recall@{K} {best['recall']:.3f} at best ({name}="
        f"{int(best[name])}; {best['recall_bound']:.3f} less {MARGIN_SE:g} standard errors), "
        f"below index.min_recall {min_recall}; nothing published "
        "(raise nlist or hnsw_m, pick index.type flat, or lower index.min_recall)"
    )


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
    """One catalog chunk through the item tower, as both engines run it.

    Returns:
        The ids (checked by ``check_ids``), ``[n, dim] float32`` vectors and ``[n] uint64``
        genre bits.
    """
    ids = check_ids(chunk, seen)
    inputs = space.encode_items(
        ids, list(chunk["release_year"]), list(chunk["genres"]), list(chunk["title"])
    )
    vectors = np.ascontiguousarray(tower(inputs), np.float32)
    return ids, vectors, items.genre_bits(chunk["genres"], space.genres)


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
        genres: ``[items] uint64`` genre bits.
        exact: The verification queries' exact top results over every item.
        stats: Engine facts for the manifest (the Spark engine's partitions, task retries).
    """

    index: faiss.Index
    item_ids: list[str]
    genres: np.ndarray
    exact: _ExactTopK
    stats: dict[str, Any] = field(default_factory=dict)


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
    exact: _ExactTopK
    phases: dict[str, float]


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
    plan = Plan(catalog, space, tower, index, kind, _ExactTopK(queries), phases)
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


def versions(root: Path) -> list[str]:
    """Complete index versions under ``root``, oldest first (staging dirs are not versions)."""
    if not root.is_dir():
        return []
    return sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / artifacts.MANIFEST).is_file()
    )


def prune(root: Path, keep: int) -> list[str]:
    """Deletes all but the newest ``keep`` versions; never the current one."""
    current = artifacts.current(root).name
    old = [v for v in versions(root) if v != current][: max(0, len(versions(root)) - keep)]
    for version in old:
        shutil.rmtree(root / version, ignore_errors=True)
    return old


def rollback(root: Path, to: str | None = None) -> str:
    """Points ``CURRENT`` at ``to`` (default: the newest version older than the current one)
    after verifying its checksums; returns the version now current."""
    current = artifacts.current(root).name
    if to is None:
        older = [v for v in versions(root) if v < current]
        if not older:
            raise ArtifactError(f"no index version older than {current} to roll back to")
        to = older[-1]
    if to not in versions(root):
        raise ArtifactError(f"no index version {to!r} in {root}; see `recsys index list`")
    load_index(root / to)  # checksums, id count and dimension, before anything moves
    artifacts.publish(root, to)
    return to


def read_item_ids(directory: Path) -> list[str]:
    """The item ids of an index version, row-aligned with its vectors."""
    try:
        ids: list[str] = json.loads((directory / IDS_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"cannot read {directory / IDS_FILE}: {exc}") from exc
    return ids


def load_index(directory: Path) -> tuple[faiss.Index, list[str], dict[str, Any]]:
    """Loads and verifies an index version: checksums, id count and dimension agree; the
    search parameters chosen at build time are set."""
    manifest = artifacts.read_manifest(directory)
    try:
        index = faiss.read_index(str(directory / INDEX_FILE))
    except RuntimeError as exc:
        raise ArtifactError(f"cannot load index {directory}: {exc}") from exc
    item_ids = read_item_ids(directory)
    if index.ntotal != len(item_ids) or index.ntotal != manifest["items"]:
        raise ArtifactError(
            f"index {directory} holds {index.ntotal} vectors but {len(item_ids)} ids "
            f"(manifest says {manifest['items']}); rebuild it"
        )
    if index.d != manifest["dim"]:
        raise ArtifactError(f"index {directory} has dim {index.d}, manifest says {manifest['dim']}")
    for name, value in search_params(manifest).items():
        _set_search_param(index, "ivf" if name == "nprobe" else "hnsw", value)
    return index, item_ids, manifest
