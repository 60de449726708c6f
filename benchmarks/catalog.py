"""``recsys bench-catalog``: what the catalog overlay costs the search stage and memory, and
what applying a batch of changes to it costs, by overlay size, on the published index.

Real users' queries (their features read once from the store, the user tower at one time),
one query a search as the hot path's first search runs it (``MIN_FETCH`` candidates), the
version alone and the version with each overlay timed alternately on the same queries, so
each ratio is measured in one run. An overlay of ``n`` new items carries real items' features
(``catalog.synthetic``), embedded by the model's item tower as the server's feed embeds them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from benchmarks.harness import machine_line
from recsys.config import Config
from recsys.data.dataset import Dataset

if TYPE_CHECKING:
    from catalog.events import ItemChange
    from serving.bundle import Bundle
    from towers.runtime import NumpyItemTower

BATCH = 100
"""Changes in the batch whose apply (and the new view the feed swaps in) is timed (a feed
batch at 100 changes a second, polled every 100 ms, holds ~10; 100 is a burst)."""


def run(
    config: Config, ml: Dataset, sizes: Sequence[int] = (1_000, 10_000, 100_000), calls: int = 1000
) -> None:
    import faiss

    from catalog.events import ItemChange, decode
    from catalog.overlay import Overlay, ivf_of
    from catalog.synthetic import synthetic_changes
    from features.online.read import FeatureReader
    from serving.bundle import Bundle
    from serving.catalog_view import CatalogView
    from serving.recommender import MIN_FETCH
    from serving.server import one_blas_thread
    from towers.runtime import NumpyItemTower

    faiss.omp_set_num_threads(1)
    one_blas_thread()
    bundle = Bundle.load_current(config.models_dir, config.indexes_dir)
    users = sorted(ml.interactions["user_id"].unique())[:calls]
    read = FeatureReader(config).read_many(users) or []
    now = int(time.time() * 1000)
    queries = np.ascontiguousarray(
        bundle.tower.embed(bundle.space, read, [now] * len(read)), np.float32
    )
    tower = NumpyItemTower.load(config.models_dir / bundle.model_version)
    schema = ml.schema
    base, dim = bundle.index.ntotal, bundle.index.d
    words = bundle.meta.tags.shape[1]
    ivf = ivf_of(bundle.index)
    shape = f"IVF nlist {ivf.nlist} nprobe {ivf.nprobe}" if ivf else type(bundle.index).__name__
    print(
        f"index {bundle.index_version}: {base:,} items, {shape}; "
        f"{len(queries):,} real users' queries, one a search, fetch {MIN_FETCH}"
    )
    head = (
        f"{'overlay':>22}  {'search µs p50':>13}  {'version µs p50':>14}  {'× version':>9}  "
        f"{'memory MB':>9}  {'apply 100 ms':>12}"
    )
    print(head)
    largest = max(sizes)
    raw = synthetic_changes(
        ml.items, schema, largest + BATCH, delete_share=0.0, seed=7, start_ms=now
    )
    changes: list[ItemChange] = [decode(v, schema) for _, _, v in raw]
    t = time.perf_counter()
    vectors, tags = _embed(changes, bundle, tower)
    embed_s = time.perf_counter() - t
    lookup = bundle.seen.lookup
    hidden = [ItemChange(f"d{i}", bundle.item_ids[i], 1, None) for i in range(0, base, 17)]
    variants: list[tuple[str, Overlay]] = [
        (
            f"{len(hidden):,} deleted",
            Overlay.empty(base, dim, words, index=bundle.index).apply(
                hidden, np.zeros((0, dim)), np.zeros((0, words), np.uint64), lookup, {}
            ),
        )
    ]
    for n in sizes:
        overlay = Overlay.empty(base, dim, words, index=bundle.index).apply(
            changes[:n], vectors[:n], tags[:n], lookup, {}
        )
        variants.append((f"{n:,} new items", overlay))
    plain = CatalogView(bundle)
    for name, overlay in variants:
        view = CatalogView(bundle, overlay)
        with_overlay, alone = [], []
        for q in queries:
            one = q[None, :]
            t = time.perf_counter()
            view.search(one, MIN_FETCH, 0, 0)
            with_overlay.append(time.perf_counter() - t)
            t = time.perf_counter()
            plain.search(one, MIN_FETCH, 0, 0)
            alone.append(time.perf_counter() - t)
        memory = (
            overlay.vectors.nbytes * 2  # the arrays and the exact index's copy
            + overlay.tags.nbytes
            + overlay.hidden.nbytes
        ) / 2**20
        batch = changes[largest : largest + BATCH]
        t = time.perf_counter()
        applied = overlay.apply(
            batch, vectors[largest : largest + BATCH], tags[largest : largest + BATCH], lookup, {}
        )
        CatalogView(bundle, applied)  # what the feed swaps in
        apply_ms = (time.perf_counter() - t) * 1000
        w, a = np.median(with_overlay) * 1e6, np.median(alone) * 1e6
        print(
            f"{name:>22}  {w:>13,.1f}  {a:>14,.1f}  {w / a:>9.2f}  {memory:>9.1f}  "
            f"{apply_ms:>12.1f}"
        )
    print(
        f"embedding {len(changes):,} new items took {embed_s:.1f}s "
        f"({len(changes) / embed_s:,.0f} items/s, the feed's cost a change)"
    )
    print(machine_line())


def _embed(
    changes: list[ItemChange], bundle: Bundle, tower: NumpyItemTower
) -> tuple[np.ndarray, np.ndarray]:
    """The changes' item-tower vectors and filter bits, 10,000 at a time."""
    from catalog.events import catalog_frame
    from index.plan import embed_chunk

    vectors, tags = [], []
    for start in range(0, len(changes), 10_000):
        frame = catalog_frame(changes[start : start + 10_000])
        _, v, b = embed_chunk(bundle.space, tower, frame, set())
        vectors.append(v)
        tags.append(b)
    return np.concatenate(vectors), np.concatenate(tags)
