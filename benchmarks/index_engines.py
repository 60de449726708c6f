"""``recsys bench-index --engine spark``: the same rebuild on both engines in one run.

A synthetic catalog is written as Parquet once; then each engine rebuilds it from that file in
a process of its own (so one's memory and JIT warmth cannot help the other), while this
process samples the resident memory of the build's process tree: the driver, Spark's JVM and
its Python workers. Then, against a brute-force scan of each index's own vectors:

- held-out recall@10 (other queries than the build verified with) at the nprobe each build
  chose;
- single-query search latency, 1 thread, of the merged index against the same vectors kept as
  ``IndexShards`` (one shard per Spark partition, searched in turn and threaded): the
  evidence for merging the shards rather than serving them side by side.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import resource
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from benchmarks.harness import Table, descendants, percentiles, rss_bytes
from benchmarks.index import search_latencies_us
from index.build import build_index
from index.catalog import Catalog
from index.recall import ExactTopK, recall_at_k, user_queries
from index.versions import load_index
from recsys import artifacts
from recsys.config import Config
from recsys.data.dataset import Dataset

ENGINES = ("local", "spark")
HELD_OUT_SEED = 12345


def _rss_and_role(pid: int) -> tuple[int, str]:
    """A process's resident memory and what it is in a Spark build (``(0, "")``: gone)."""
    try:
        rss = rss_bytes(pid)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return 0, ""
    if "java" in cmd.split(" ", 1)[0]:
        return rss, "jvm"
    return rss, "python workers" if "pyspark" in cmd else "other"


class _TreeMemory(threading.Thread):
    """Peak summed RSS of a process's descendants by role, sampled every ``every`` s."""

    def __init__(self, pid: int, every: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.peaks: dict[str, int] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.every):
            now: dict[str, int] = {}
            for pid in descendants(self.pid):
                rss, role = _rss_and_role(pid)
                now[role] = now.get(role, 0) + rss
            for role, rss in now.items():
                self.peaks[role] = max(self.peaks.get(role, 0), rss)


def _build_child(config: Config, ml: Dataset, out: Path) -> None:
    """In a fresh process: one rebuild; its result and the driver's peak RSS to ``out``."""
    result = build_index(config, ml, progress=True)
    manifest = artifacts.read_manifest(result.directory)
    out.write_text(
        json.dumps(
            {
                "seconds": result.seconds,
                "phases": result.phases,
                "params": result.params,
                "recall": result.recall,
                "stats": manifest.get("engine_stats", {}),
                "driver_peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            }
        )
    )


# Any: the rebuild's JSON report.
def _rebuild(config: Config, ml: Dataset, root: Path, engine: str) -> dict[str, Any]:
    (root / "models").symlink_to(config.models_dir)
    cfg = config.with_overrides({"paths": {"artifacts": str(root)}, "index": {"engine": engine}})
    out = root / "result.json"
    child = multiprocessing.get_context("spawn").Process(target=_build_child, args=(cfg, ml, out))
    child.start()
    assert child.pid is not None
    memory = _TreeMemory(child.pid)
    memory.start()
    child.join()
    memory.done.set()
    memory.join()
    if child.exitcode != 0:
        raise RuntimeError(f"the {engine} rebuild failed (exit {child.exitcode}); see above")
    got: dict[str, Any] = json.loads(out.read_text())  # Any: JSON
    got["tree_peaks"] = memory.peaks
    got["directory"] = artifacts.current(cfg.indexes_dir)
    return got


def _vectors(index: faiss.Index) -> np.ndarray:
    ivf = faiss.extract_index_ivf(index)
    ivf.make_direct_map()
    vectors: np.ndarray = ivf.reconstruct_n(0, ivf.ntotal)
    return vectors


def _held_out_recall(index: faiss.Index, vectors: np.ndarray, queries: np.ndarray) -> float:
    truth = ExactTopK(queries)
    for start in range(0, len(vectors), 100_000):
        truth.add(vectors[start : start + 100_000], start)
    _, found = index.search(queries, 10)
    return recall_at_k(found, truth.truth())


def _as_shards(
    index: faiss.Index, vectors: np.ndarray, parts: int, threaded: bool
) -> tuple[faiss.IndexShards, list[faiss.Index]]:
    """The merged index's rows as ``parts`` contiguous shards (Spark's partitions, merged in
    order) on copies of its trained quantizer, behind ``IndexShards`` (successive ids); the
    shards are returned too, as ``IndexShards`` only points at them."""
    shards = faiss.IndexShards(index.d, threaded)
    bounds = np.linspace(0, len(vectors), parts + 1).astype(int)
    keep = []
    for lo, hi in itertools.pairwise(bounds):
        shard = faiss.clone_index(index)
        shard.reset()
        shard.add(vectors[lo:hi])
        faiss.extract_index_ivf(shard).nprobe = faiss.extract_index_ivf(index).nprobe
        shards.add_shard(shard)
        keep.append(shard)
    return shards, keep


# Any: JSON reports by engine.
def run(config: Config, ml: Dataset, items: int, queries: int = 1000) -> dict[str, Any]:
    cfg = config.with_overrides({"index": {"type": "ivf", "catalog": None}})
    with tempfile.TemporaryDirectory(prefix="recsys-bench-engines-") as tmp:
        scratch = Path(tmp)
        t = time.perf_counter()
        path = Catalog.synthetic(ml, items, chunk=cfg.index.chunk_items).write_parquet(
            scratch / "catalog.parquet"
        )
        write_seconds = time.perf_counter() - t
        cfg = cfg.with_overrides({"index": {"catalog": str(path)}})
        runs = {}
        for engine in ENGINES:
            print(f"==> {engine} engine: rebuild of {items:,} items from {path.name}", flush=True)
            root = scratch / engine
            root.mkdir()
            runs[engine] = _rebuild(cfg, ml, root, engine)
        faiss.omp_set_num_threads(1)
        test = user_queries(artifacts.current(config.models_dir), ml, queries, HELD_OUT_SEED)
        for engine, got in runs.items():
            index, _, _ = load_index(got["directory"])
            vectors = _vectors(index)
            got["held_out_recall"] = _held_out_recall(index, vectors, test)
            if engine == "spark":
                parts = int(got["stats"]["partitions"])
                latency = {"merged": search_latencies_us(index, test)}
                for threaded in (False, True):
                    faiss.omp_set_num_threads(1)
                    shards, _parts = _as_shards(index, vectors, parts, threaded)
                    name = f"{parts} shards, " + ("threaded" if threaded else "in turn")
                    latency[name] = search_latencies_us(shards, test)
                got["latency"] = latency
                got["shard_recall"] = _held_out_recall(shards, vectors, test)
            del index, vectors
    _report(items, write_seconds, runs, len(test), cfg.index.min_recall)
    return runs


# Any: JSON reports by engine.
def _report(
    items: int, write_seconds: float, runs: dict[str, Any], queries: int, min_recall: float
) -> None:
    local, spark = runs["local"], runs["spark"]
    mib = 2**20
    print(f"\n{items:,} synthetic items written as Parquet in {write_seconds:.1f}s")
    phases = list(dict.fromkeys([*spark["phases"], *local["phases"]]))
    table = Table([("phase (s)", "<12"), ("local", ">8.1f"), ("spark", ">8.1f")], sep=" ")
    print(table.header())
    for name in phases:
        print(table.row(name, *(r["phases"].get(name) for r in (local, spark))))
    print(table.row("total", local["seconds"], spark["seconds"]))
    print(f"spark / local: {spark['seconds'] / local['seconds']:.2f}×  (target ≤ 1.5×)")
    stats = spark["stats"]
    per_million = stats["executor_embed_seconds"] / (items / 1e6)
    print(
        f"executor embed {stats['executor_embed_seconds']:.1f}s = {per_million:.1f}s per 1M items"
        f" (target ≤ 30); {stats['partitions']} partitions on {stats['master']},"
        f" {stats['python_workers']} Python workers, tower loaded {stats['tower_loads']}×,"
        f" {stats['failed_tasks']} failed tasks"
    )
    for name, got in runs.items():
        peaks = ", ".join(f"{k} {v / mib:,.0f}" for k, v in sorted(got["tree_peaks"].items()) if v)
        print(
            f"{name}: driver peak RSS {got['driver_peak'] / mib:,.0f} MiB"
            + (" (target ≤ 1024)" if name == "spark" else "")
            + (f"; children's peaks (MiB): {peaks}" if peaks else "")
        )
    print(f"held-out recall@10 ({queries} queries, seed {HELD_OUT_SEED}; target ≥ {min_recall}):")
    for name, got in runs.items():
        print(
            f"  {name}: {got['held_out_recall']:.4f} at nprobe {got['params'].get('nprobe')}"
            f" (build verified {got['recall']:.4f})"
        )
    print(
        f"single-query search, 1 thread, spark's index (recall {spark['shard_recall']:.4f} as"
        " shards):"
    )
    layouts = Table([("layout", "<24"), ("p50 µs", ">8.0f"), ("p99 µs", ">8.0f")], sep=" ")
    print(f"  {layouts.header()}")
    for name, lat in spark["latency"].items():
        pcts = percentiles(lat, (50, 99))
        print(f"  {layouts.row(name, pcts['p50'], pcts['p99'])}")
