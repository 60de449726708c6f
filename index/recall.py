"""How good an ANN index is: exact top-k ground truth over a sample of real user-tower
queries, recall@k with ties, and the tuning of ``nprobe``/``efSearch`` with a margin.
"""

from __future__ import annotations

import time
from pathlib import Path

import faiss
import numpy as np

from index.tuning import NPROBE, knob, set_knob
from recsys.data.dataset import Dataset
from recsys.errors import ArtifactError
from towers.encoding import FeatureSpace

K = 10
TIE_EPS = 1e-5
"""Items within this of the k-th exact score are ties: any of them is a correct answer."""
TRUTH_DEPTH = 64
"""Exact results kept per query, enough to hold the k-th score's ties."""
SWEEP = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
"""nprobe / efSearch values tried, in half-octave steps: the search cost grows about linearly
in them, so octave steps would spend up to twice the search needed (at 1 M items, nprobe 24
holds recall where 16 does not, and 32 costs a third more)."""
MARGIN_SE = 2.0
"""Standard errors the verified recall must clear ``index.min_recall`` by: a setting that
only just reaches it on the verification queries falls short on others about half the
time (measured at 1M items: 0.951 verified, 0.944 held out)."""


def user_queries(model_dir: Path, ml: Dataset, n: int, seed: int = 0) -> np.ndarray:
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


class ExactTopK:
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
    se: float = float(recalls.std(ddof=1)) / np.sqrt(len(recalls))
    return float(recalls.mean()) - MARGIN_SE * se


def tune(
    index: faiss.Index, kind: str, queries: np.ndarray, truth: list[set[int]], min_recall: float
) -> tuple[dict[str, int], float, list[dict[str, float]]]:
    """Smallest nprobe / efSearch whose recall, less ``MARGIN_SE`` standard errors over the
    queries, reaches ``min_recall``; the sweep is returned for the record (recall, that
    bound and mean batch search time per query at each setting)."""
    name = knob(kind)
    if name is None:
        _, rows = index.search(queries, K)
        return {}, recall_at_k(rows, truth), []
    ivf = name == NPROBE
    limit = faiss.extract_index_ivf(index).nlist if ivf else SWEEP[-1]
    sweep = []
    for value in [v for v in SWEEP if v <= limit and (ivf or v >= K)]:
        set_knob(index, name, value)
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
