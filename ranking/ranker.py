"""The gradient-boosted ranker: LightGBM (``rank_xendcg``) over the candidates' features, one
group per request, the next event's item the one relevant candidate.

Prediction runs on one thread: LightGBM's OpenMP pool, sized to the machine, costs more
than it saves on a few hundred rows and would fight the server's other threads for the core.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PARAMS: dict[str, Any] = {  # Any: LightGBM's mixed-type parameters
    "objective": "rank_xendcg",
    "metric": "ndcg",
    "eval_at": [10],
    "learning_rate": 0.02,
    "num_leaves": 15,
    "min_data_in_leaf": 200,
    "feature_fraction": 0.7,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 10.0,
    "verbosity": -1,
    "seed": 0,
    "deterministic": True,
    "force_row_wise": True,
}
"""The ranker's LightGBM parameters (``num_threads`` set per use), picked on the ML-100K
validation walk (docs/benchmarks/quality.md, issue 34): ``rank_xendcg`` with small, regularized
trees beat ``lambdarank`` (NDCG@10 0.1041 against 0.0945 at defaults, 0.0954 regularized):
one relevant item among ~190 candidates and 5,000 groups overfit larger trees in 20 rounds."""
MAX_ROUNDS = 1000
PATIENCE = 50


@dataclass
class Rows:
    """A walk's training rows: ``[m, features]`` features, ``[m]`` 0/1 labels, each group's
    size (one group a request, in order)."""

    features: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    names: list[str] = field(default_factory=list)
    base: np.ndarray | None = None
    """``[m]`` a score the ranker starts from and adds to (LightGBM's ``init_score``)."""

    def with_base(self, base: np.ndarray | None) -> Rows:
        return Rows(self.features, self.labels, self.groups, self.names, base)

    def with_a_positive(self) -> Rows:
        """Only the groups whose next item is among the candidates (the others carry no
        ranking signal)."""
        ends = np.cumsum(self.groups)
        starts = ends - self.groups
        hits = np.add.reduceat(self.labels, starts) if len(starts) else np.zeros(0)
        keep = (hits > 0) & (self.groups > 0)
        rows = np.concatenate(
            [np.arange(s, e) for s, e in zip(starts[keep], ends[keep], strict=True)]
        )
        base = None if self.base is None else self.base[rows]
        return Rows(self.features[rows], self.labels[rows], self.groups[keep], self.names, base)


def train(
    rows: Rows, valid: Rows, params: dict[str, Any] | None = None, threads: int = 1
) -> tuple[Any, dict[str, Any]]:  # Any: a lightgbm.Booster; a JSON report
    """Trains on ``rows`` (groups with a positive), stopping early on ``valid``'s NDCG@10.

    One thread by default: with two OpenMP threads on this 2-core machine a boosting round
    took 0.48 s on 57,000 rows while another process held a core (the pool waits on a core
    it does not get), against 6 ms on one thread beside the same process: 80×.

    Returns:
        The booster at its best round, and ``{"rounds", "valid_ndcg@10"}``.
    """
    import lightgbm as lgb

    train_rows, valid_rows = rows.with_a_positive(), valid.with_a_positive()
    settings = {**PARAMS, **(params or {}), "num_threads": threads}
    data = lgb.Dataset(
        train_rows.features,
        train_rows.labels,
        group=train_rows.groups,
        init_score=train_rows.base,
        feature_name=rows.names or "auto",
    )
    check = lgb.Dataset(
        valid_rows.features,
        valid_rows.labels,
        group=valid_rows.groups,
        init_score=valid_rows.base,
        reference=data,
    )
    booster = lgb.train(
        settings,
        data,
        num_boost_round=MAX_ROUNDS,
        valid_sets=[check],
        callbacks=[lgb.early_stopping(PATIENCE, verbose=False)],
    )
    best = booster.best_score["valid_0"]["ndcg@10"]
    return booster, {"rounds": int(booster.best_iteration), "valid_ndcg@10": float(best)}


def predict(
    booster: Any, features: np.ndarray, base: np.ndarray | None = None
) -> np.ndarray:  # Any: a lightgbm.Booster
    """``[m] float64`` scores (plus ``base``, the score it was trained to add to), one
    thread, at the booster's best round."""
    scores: np.ndarray = booster.predict(
        features, num_iteration=booster.best_iteration or None, num_threads=1
    )
    return scores if base is None else scores + base


def ranked_positions(owner: np.ndarray, scores: np.ndarray, requests: int) -> np.ndarray:
    """``[m]`` each candidate's 0-based place in its request's list by descending score
    (ties by the candidates' order)."""
    order = np.lexsort((-scores, owner))
    starts = np.searchsorted(owner[order], np.arange(requests))
    place = np.empty(len(owner), np.int64)
    place[order] = np.arange(len(owner)) - starts[owner[order]]
    return place


def importance(booster: Any, names: Sequence[str]) -> dict[str, float]:  # Any: a Booster
    """Each feature's share of the total gain."""
    gains = booster.feature_importance(importance_type="gain")
    total = float(gains.sum()) or 1.0
    return {n: round(float(g) / total, 4) for n, g in zip(names, gains, strict=True)}
