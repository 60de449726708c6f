"""``recsys bench-index``: a full rebuild of a synthetic catalog, then single-query search
latency and recall across index parameters, the version's size on disk and the resident memory of
a real `recsys serve` on it.

The rebuild runs in a scratch artifacts folder (the real models are linked in), so nothing
of the project's published indexes changes. Recall is measured on other queries than the
build verified with, against a brute-force scan of the same vectors.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from benchmarks.harness import Table, percentiles, rss_bytes
from index.build import build_index
from index.recall import SWEEP, ExactTopK, recall_at_k, user_queries
from index.versions import load_index
from recsys import artifacts
from recsys.config import Config
from recsys.data.dataset import Dataset


def search_latencies_us(index: faiss.Index, queries: np.ndarray, k: int = 10) -> np.ndarray:
    """Single-query search times for the top ``k``, one query at a time (how a server asks):
    ``[n]`` µs for ``queries`` ``[n, dim] float32``."""
    times = np.empty(len(queries))
    for i in range(len(queries)):
        started = time.perf_counter()
        index.search(queries[i : i + 1], k)
        times[i] = time.perf_counter() - started
    return times * 1e6


def exact_truth(queries: np.ndarray, vectors: np.ndarray) -> list[set[int]]:
    """Each query's exact top 10 rows (ties included) over ``vectors``, 100k rows at a time."""
    truth = ExactTopK(queries)
    for start in range(0, len(vectors), 100_000):
        truth.add(vectors[start : start + 100_000], start)
    return truth.truth()


def run(
    config: Config, ml: Dataset, items: int, out_png: Path, queries: int = 1000
) -> dict[str, object]:
    cfg = config.with_overrides({"index": {"synthetic_items": items}})
    with tempfile.TemporaryDirectory(prefix="recsys-bench-index-") as tmp:
        root = Path(tmp)
        (root / "models").symlink_to(config.models_dir)
        cfg = cfg.with_overrides({"paths": {"artifacts": str(root)}})
        result = build_index(cfg, ml, progress=True)
        faiss.omp_set_num_threads(1)
        server_rss, server_load = _served(cfg, root, ml)
        version = artifacts.current(cfg.indexes_dir)
        on_disk = sum(f.stat().st_size for f in version.iterdir())
        index, ids, manifest = load_index(version)
    test = user_queries(artifacts.current(config.models_dir), ml, queries, seed=12345)
    ivf = faiss.extract_index_ivf(index)
    ivf.make_direct_map()
    vectors = ivf.reconstruct_n(0, ivf.ntotal)
    exact = faiss.IndexFlatIP(index.d)
    exact.add(vectors)
    want = exact_truth(test, vectors)
    exact_us = search_latencies_us(exact, test[:50])
    exact_pcts = percentiles(exact_us, (50, 99))
    del vectors, exact
    chosen = int(ivf.nprobe)
    rows: list[dict[str, float]] = []
    for nprobe in sorted({1, 2, 4, 8, 16, 32, 64, 128, *(v for v in SWEEP if v <= 2 * chosen)}):
        ivf.nprobe = nprobe
        _, found = index.search(test, 10)
        lat = percentiles(search_latencies_us(index, test), (50, 99))
        rows.append(
            {
                "nprobe": nprobe,
                "recall": recall_at_k(found, want),
                "p50_us": lat["p50"],
                "p99_us": lat["p99"],
            }
        )
    ivf.nprobe = chosen
    print(
        f"\n{items:,} items: rebuild {result.seconds:.1f}s ("
        + ", ".join(f"{k} {v:.1f}s" for k, v in result.phases.items())
        + f"); {result.index_type}, nprobe {chosen} chosen at build recall {result.recall:.3f}"
    )
    print(f"index version on disk: {on_disk / 2**20:,.0f} MiB ({len(ids):,} ids)")
    print(
        f"recsys serve on it: {server_rss / 2**20:,.0f} MiB RSS after 100 calls, "
        f"SERVING {server_load:.0f} s after start"
    )
    print(
        f"exact IndexFlatIP, 1 thread, single query: p50 {exact_pcts['p50']:,.0f} µs, "
        f"p99 {exact_pcts['p99']:,.0f} µs"
    )
    table = Table(
        [("nprobe", ">7"), ("recall@10", ">10.4f"), ("p50 µs", ">8.0f"), ("p99 µs", ">8.0f")],
        sep=" ",
    )
    print(table.header() + f"   ({len(test)} held-out queries)")
    for r in rows:
        mark = "  <- chosen" if r["nprobe"] == chosen else ""
        print(table.row(r["nprobe"], r["recall"], r["p50_us"], r["p99_us"]) + mark)
    _plot(rows, chosen, items, out_png, exact_pcts["p99"])
    print(f"recall/latency curve: {out_png}")
    return {
        "result": result,
        "on_disk": on_disk,
        "server_rss": server_rss,
        "rows": rows,
        "exact_us": exact_us,
        "manifest": manifest,
    }


def _served(config: Config, work: Path, ml: Dataset) -> tuple[int, float]:
    """A real ``recsys serve`` on the new index (the model, tower and features as configured):
    its resident memory after 100 calls, and the seconds from start to SERVING."""
    from localservices.procs import child, serving_ports, write_config
    from serving.client import RecommendClient

    cfg = config.with_overrides({"serving": serving_ports(config)})
    path = write_config(cfg, work / "serve.yaml")
    started = time.perf_counter()
    with child("bench-index-serve", path, ["serve"], work, quiet=True) as process:
        with RecommendClient(f"{cfg.serving.host}:{cfg.serving.port}") as client:
            client.wait_until_serving(timeout=3600, process=process)
            loaded = time.perf_counter() - started
            users = ml.interactions["user_id"].unique()[:100]
            for user in users:
                client.recommend(str(user), k=10)
        return rss_bytes(process.pid), loaded


def _plot(
    rows: list[dict[str, float]], chosen: int, items: int, out: Path, exact_p99: float
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.plot([r["p99_us"] for r in rows], [r["recall"] for r in rows], "o-", label="p99")
    ax.plot([r["p50_us"] for r in rows], [r["recall"] for r in rows], "s--", alpha=0.6, label="p50")
    for r in rows:
        ax.annotate(
            f"nprobe {r['nprobe']}",
            (r["p99_us"], r["recall"]),
            fontsize=7,
            xytext=(4, -10),
            textcoords="offset points",
        )
    ax.axhline(0.95, color="grey", lw=0.8, ls=":")
    ax.axvline(500, color="red", lw=0.8, ls=":", label="p99 target 500 µs")
    ax.set_xscale("log")
    ax.set_xlabel("single-query search latency, 1 thread (µs)")
    ax.set_ylabel("recall@10 vs exact (held-out queries)")
    ax.set_title(f"IVF-Flat, {items:,} items × 64 (exact scan p99 {exact_p99 / 1000:.0f} ms)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
