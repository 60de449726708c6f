"""Scoring a trained model under each evaluation protocol, beside a popularity baseline.

Every protocol ranks the whole catalog. ``temporal`` and ``recbole`` exclude the items the
user interacted with in the training (and validation) data and report Recall/NDCG/Hit/MRR;
``tfrs`` reproduces the TFRS tutorials' factorized top-100 accuracy with nothing masked.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from evaluation.baselines import counts
from evaluation.metrics import rank_metrics, topk_accuracy
from evaluation.protocols import Split
from evaluation.stream import chunk_rows
from recsys.data.dataset import Dataset
from towers.encoding import FeatureSpace, Inputs
from towers.examples import HistoryIndex, catalog_inputs, query_inputs

UserFn = Callable[[Inputs], np.ndarray]
"""Encoded user inputs → ``[batch, dim]`` embeddings."""
MS = 1000


class Evaluator:
    """One protocol's queries, encoded once, scored for any model (e.g. after every epoch).

    ``temporal`` and ``recbole``: each user with held-out interactions is queried once, with
    everything ``known`` excluded from the ranking, at the time of their first held-out
    interaction (temporal) or after all their known interactions (recbole). ``tfrs``: each
    held-out (user, item) pair is queried at its own time; top-100 accuracy, nothing masked.

    Args:
        ml: The data set (profiles, catalog).
        space: The model's vocabularies.
        split: The protocol's split.
        on: ``"test"`` (known = train + valid) or ``"valid"`` (known = train).
        max_queries: Query a seeded uniform sample of this many users (``temporal``,
            ``recbole``) at most; ``None``: every one.
    """

    def __init__(
        self,
        ml: Dataset,
        space: FeatureSpace,
        split: Split,
        on: str = "test",
        max_queries: int | None = None,
    ):
        known, target = split.known_and_evaluated(on)
        self._chunk = chunk_rows(len(ml.items))
        self.protocol = split.name
        column = {item: c for c, item in enumerate(ml.items["item_id"])}
        history = HistoryIndex(known, space.history_length)
        self._known_counts = counts(known, column).astype(np.float32)
        if split.name == "tfrs":
            times = (target["timestamp"].to_numpy(np.int64) * MS).tolist()
            queries = list(zip(target["user_id"], times, times, strict=True))
            self._positives = np.array([column[i] for i in target["item_id"]], np.int64)
        else:
            first = target.groupby("user_id")["timestamp"].min()
            users = sorted(first.index, key=lambda u: (len(u), u))
            if max_queries is not None and len(users) > max_queries:
                keep = np.random.default_rng(0).choice(len(users), max_queries, replace=False)
                users = [users[i] for i in np.sort(keep)]
                known = known[known["user_id"].isin(users)]
                history = HistoryIndex(known, space.history_length)
            queries = []
            for u in users:
                if split.name == "temporal":
                    t = int(first[u]) * MS
                    queries.append((u, t, t))
                else:
                    t = history.last_time(u)
                    queries.append((u, t + 1, t))
            seen_by = known.groupby("user_id")["item_id"].agg(list).to_dict()
            rel_by = target.groupby("user_id")["item_id"].agg(list).to_dict()
            self._seen = [
                np.array([column[i] for i in seen_by.get(u, [])], np.int64) for u in users
            ]
            self._relevant = [np.array([column[i] for i in rel_by[u]], np.int64) for u in users]
        self._inputs = query_inputs(ml, space, history, queries)

    def _score(self, scores: Callable[[slice], np.ndarray]) -> dict[str, float]:
        """Metrics over every query, from ``scores(rows)`` ranked a chunk of rows at a time
        (a 1 M-item catalog holds 32 rows of scores at once)."""
        n = len(self._inputs["user"])
        if self.protocol == "tfrs":
            return {"top100_accuracy": topk_accuracy(scores(slice(0, n)), self._positives, 100)}
        parts = [
            rank_metrics(scores(rows), self._seen[rows], self._relevant[rows])
            for rows in (slice(s, s + self._chunk) for s in range(0, n, self._chunk))
        ]
        users = sum(p["users"] for p in parts)
        out = {k: sum(p[k] * p["users"] for p in parts) / users for k in parts[0]}
        out["users"] = users
        return out

    def __call__(self, user_fn: UserFn, item_vecs: np.ndarray) -> dict[str, float]:
        """The model's metrics."""
        users = np.asarray(user_fn(self._inputs))
        return self._score(lambda rows: users[rows] @ item_vecs.T)

    def popularity(self) -> dict[str, float]:
        """The same metrics for ranking by popularity in the known interactions."""
        counts, n = self._known_counts, len(self._inputs["user"])
        return self._score(lambda rows: np.tile(counts, (len(range(n)[rows]), 1)))


def evaluate_split(
    ml: Dataset,
    space: FeatureSpace,
    user_fn: UserFn,
    item_vecs: np.ndarray,
    split: Split,
    *,
    on: str = "test",
    max_queries: int | None = None,
) -> dict[str, dict[str, float]]:
    """The model's and the popularity baseline's metrics under the split's protocol."""
    evaluator = Evaluator(ml, space, split, on, max_queries)
    return {"model": evaluator(user_fn, item_vecs), "popularity": evaluator.popularity()}


def item_vectors(
    item_fn: Callable[[dict[str, np.ndarray]], np.ndarray], ml: Dataset, space: FeatureSpace
) -> np.ndarray:
    """``[items, dim]`` embeddings of the whole catalog, in catalog order."""
    _, inputs = catalog_inputs(ml, space)
    return item_fn(inputs)
