"""``recsys bench-index --factories``: FAISS index factories side by side on one synthetic
catalog, each at the cheapest setting that holds recall, measured one query at a time.

The catalog goes through the item tower once; each factory string is built over the same
vectors (a quantizer trained on the build's own hash-drawn sample), its search setting
(``nprobe``, ``efSearch``, and a refine stage's ``k_factor_rf``) tuned on verification queries
by the build's rule (``index.min_recall`` less ``MARGIN_SE`` standard errors), then measured
on other, held-out queries: recall@10 against exact search,
single-query latency at k 10 and at the server's first fetch (``FIRST_FETCH`` candidates,
what a user with a seen set asks), and the serialized size. This is what chooses which
kinds ``index.type`` offers; the choice among those is made under load
(``recsys loadtest --compare --index-items N --index-kinds ...``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import faiss
import numpy as np

from benchmarks.harness import Table, percentiles
from benchmarks.index import exact_truth, search_latencies_us
from index.catalog import Catalog
from index.plan import embed_chunk, training_sample
from index.recall import SWEEP, query_recalls, recall_bound, user_queries
from recsys import artifacts
from recsys.config import Config
from recsys.data.dataset import Dataset
from serving.recommender import FIRST_FETCH
from towers.encoding import FeatureSpace

K_FACTORS = (1, 2, 4, 8, 16)
"""Refine depths tried (candidates re-scored exactly, per result asked)."""


def catalog_vectors(config: Config, ml: Dataset, items: int) -> tuple[list[str], np.ndarray]:
    """The synthetic catalog's ids and ``[items, dim] float32`` vectors through the current
    model's item tower."""
    from towers.runtime import NumpyItemTower

    model_dir = artifacts.current(config.models_dir)
    space = FeatureSpace.load(model_dir / "features.json")
    tower = NumpyItemTower.load(model_dir)
    seen: set[str] = set()
    ids: list[str] = []
    chunks = []
    for chunk in Catalog.synthetic(ml, items).chunks():
        chunk_ids, vectors, _ = embed_chunk(space, tower, chunk, seen)
        ids += chunk_ids
        chunks.append(vectors)
    return ids, np.ascontiguousarray(np.concatenate(chunks))


def settings(index: faiss.Index, spec: str) -> list[str]:
    """The ``ParameterSpace`` strings to try, cheapest first."""
    if "IVF" in spec:
        nlist = faiss.extract_index_ivf(index).nlist
        knobs = [f"nprobe={v}" for v in SWEEP if v <= nlist]
    elif "HNSW" in spec:
        knobs = [f"efSearch={v}" for v in SWEEP if v >= 10]
    else:
        knobs = [""]
    if "RFlat" in spec or "Refine" in spec:
        return [f"{k},k_factor_rf={f}".lstrip(",") for k in knobs for f in K_FACTORS]
    return knobs


def run(
    config: Config, ml: Dataset, items: int, factories: Sequence[str], queries: int = 1000
) -> list[dict[str, object]]:
    print(f"embedding a {items:,}-item synthetic catalog")
    ids, vectors = catalog_vectors(config, ml, items)
    model_dir = artifacts.current(config.models_dir)
    verify = user_queries(model_dir, ml, config.index.verify_queries)
    test = user_queries(model_dir, ml, queries, seed=12345)
    truths = [exact_truth(q, vectors) for q in (verify, test)]
    min_recall = config.index.min_recall
    rows: list[dict[str, object]] = []
    for spec in factories:
        faiss.omp_set_num_threads(0)  # the build uses every core, as build-index does
        started = time.perf_counter()
        index = faiss.index_factory(vectors.shape[1], spec, faiss.METRIC_INNER_PRODUCT)
        if not index.is_trained:
            # The build's own sample (64 vectors a list, drawn by id hash), so a factory's
            # row is what `recsys build-index` would get from the same quantizer.
            nlist = faiss.extract_index_ivf(index).nlist if "IVF" in spec else 1024
            index.train(training_sample(ids, vectors, min(len(vectors), 64 * nlist)))
        index.add(vectors)
        build = time.perf_counter() - started
        size = faiss.serialize_index(index).nbytes
        space = faiss.ParameterSpace()
        chosen = None
        for setting in settings(index, spec):
            if setting:
                space.set_index_parameters(index, setting)  # type: ignore[arg-type]  # str overload missing from the stubs
            _, found = index.search(verify, 10)
            if recall_bound(query_recalls(found, truths[0])) >= min_recall:
                chosen = setting
                break
        if chosen is None:
            print(f"{spec}: no setting reaches recall@10 {min_recall} with the margin")
            continue
        faiss.omp_set_num_threads(1)  # one query at a time on one thread, as a server runs it
        _, found = index.search(test, 10)
        at_10 = percentiles(search_latencies_us(index, test, 10), (50, 99))
        at_fetch = percentiles(search_latencies_us(index, test, FIRST_FETCH), (50, 99))
        row = {
            "factory": spec,
            "setting": chosen or "-",
            "recall": float(query_recalls(found, truths[1]).mean()),
            "p50": at_10["p50"],
            "p99": at_10["p99"],
            "fetch_p50": at_fetch["p50"],
            "fetch_p99": at_fetch["p99"],
            "mib": size / 2**20,
            "build_s": build,
        }
        rows.append(row)
        print(
            f"{spec}: {row['setting']}, held-out recall@10 {row['recall']:.4f}, "
            f"p99 {row['p99']:.0f} µs (k 10), {row['fetch_p99']:.0f} µs (k {FIRST_FETCH})",
            flush=True,
        )
        del index
    table = Table(
        [
            ("factory", "<26"),
            ("setting", "<24"),
            ("recall@10", ">9.4f"),
            ("p50 µs", ">7.0f"),
            ("p99 µs", ">7.0f"),
            (f"k{FIRST_FETCH} p50", ">9.0f"),
            (f"k{FIRST_FETCH} p99", ">9.0f"),
            ("MiB", ">6.0f"),
            ("build s", ">8.1f"),
        ],
        sep=" ",
    )
    print(
        f"\n{items:,} items × {vectors.shape[1]}, {len(test)} held-out queries, one thread, "
        f"one query at a time (settings tuned on {len(verify)} others to recall@10 "
        f"{min_recall} with the margin)"
    )
    print(table.header())
    for r in rows:
        print(table.row(*r.values()))
    return rows
