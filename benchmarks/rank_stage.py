"""``recsys bench-rank``: what the second stage costs a request, unloaded, on one thread.

The published model's ranker on its index, real users' features read once from the store,
batches of each size through ``Recommender.recommend_batch`` (the rank stage's own timer),
then the stage's parts timed alone on the same batches: the query, each candidate source,
the union with its features (the first cut included) and the compiled ranker. Run twice in
one process, with the version's first cut and without it (every candidate of the union
ranked), so the ratio between them is measured on one machine in one run.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from benchmarks.harness import Table, machine_line
from recsys.config import Config

if TYPE_CHECKING:
    from features.user import UserFeatures
    from serving.bundle import Bundle
    from serving.ranking import RankStage
    from serving.request import Request

T = TypeVar("T")
PARTS = ("query", "two_tower", "neighbours", "trending", "features", "ranker")


def run(
    config: Config, users: Sequence[str], batches: Sequence[int] = (1, 4, 16), calls: int = 800
) -> None:
    """Prints the table; ``users``: the known users the calls cycle through."""
    import faiss

    from benchmarks.serving import _Preloaded
    from features.online.read import FeatureReader
    from recsys.v1 import recommender_pb2 as pb
    from serving.bundle import Bundle
    from serving.ranking import RankStage
    from serving.recommender import Recommender
    from serving.server import one_blas_thread
    from serving.wire import request_from

    faiss.omp_set_num_threads(1)
    one_blas_thread()
    bundle = Bundle.load_current(config.models_dir, config.indexes_dir, ranker="gbdt")
    ranker = bundle.ranker
    assert ranker is not None  # load_current raised otherwise
    reader = _Preloaded(FeatureReader(config))
    requests = [
        request_from(pb.RecommendRequest(user_id=users[i % len(users)], k=10)) for i in range(calls)
    ]
    settings = ranker.settings
    variants = {f"cut {settings.cut_depth}" if settings.cut_depth else "as saved": settings}
    if settings.cut_depth:
        variants["no cut"] = dataclasses.replace(settings, cut_depth=0)
    table = Table(
        [("ranker", "<9"), ("batch", ">6"), ("stage µs/req", ">13"), ("ranked/req", ">11")]
        + [(f"{p} µs", f">{max(len(p) + 4, 9)}") for p in PARTS],
        sep="  ",
    )
    lines = [table.header()]
    for name, chosen in variants.items():
        ranker.settings = chosen
        rec = Recommender(bundle, reader, config.serving)
        ranked = RankStage(ranker, bundle.seen, bundle.meta, bundle.space.history_length)
        for request in requests:  # warm, and read every user's features once
            rec.recommend(request)
        for b in batches:
            stage: list[float] = []
            rows: list[float] = []
            parts: dict[str, list[float]] = {p: [] for p in PARTS}
            for i in range(0, len(requests) - b + 1, b):
                batch = requests[i : i + b]
                served = rec.recommend_batch(batch)
                stage.append(served.stages.rank * 1e6 / b)
                read = reader.read_many([r.user_id for r in batch]) or []
                rows.append(_parts(ranked, bundle, read, batch, parts) / b)
            cells = [f"{np.median(parts[p]):,.0f}" for p in PARTS]
            lines.append(
                table.row(name, b, f"{np.median(stage):,.0f}", f"{np.median(rows):.0f}", *cells)
            )
    ranker.settings = settings
    print("\n".join(lines))
    print("parts: µs a batch, each timed alone (the neighbour sums counted once, in its source)")
    print(machine_line())


def _parts(
    stage: RankStage,
    bundle: Bundle,
    users: Sequence[UserFeatures],
    batch: Sequence[Request],
    parts: dict[str, list[float]],
) -> int:
    """Times the rank stage's parts on ``batch``; returns the candidates it ranked."""
    from candidates.sources import Candidates
    from ranking.features import features
    from serving.ranking import Asked

    ranker = stage.ranker
    now = int(time.time() * 1000)
    vectors = np.ascontiguousarray(
        bundle.tower.embed(bundle.space, users, [now] * len(users)), np.float32
    )
    asked = [
        Asked(u, now, bundle.seen.rows(u.activity), r.k, 0, 0)
        for u, r in zip(users, batch, strict=True)
    ]

    def timed(part: str, fn: Callable[[], T]) -> T:
        t = time.perf_counter()
        out = fn()
        parts[part].append((time.perf_counter() - t) * 1e6)
        return out

    query = timed("query", lambda: stage.query(asked, vectors))
    ranker.knn._last.value = None  # the sums are computed in the neighbour source's time
    lists: dict[str, Candidates] = {}
    for name, source in ranker.sources.items():
        lists[name] = timed(name, partial(source, query, ranker.settings.depth))
    cut = ranker.settings.cut
    found, matrix = timed(
        "features",
        partial(features, query, lists, ranker.catalog, ranker.state, ranker.knn, cut),
    )
    timed("ranker", partial(ranker._predictor.predict, matrix))
    return len(found.rows)
