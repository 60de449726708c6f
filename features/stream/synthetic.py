"""Synthetic interaction streams for ``recsys replay --synthetic``: as many events as wanted,
shaped like the real ones.

Users and items are drawn with a power-law skew over their real popularity ranks (the most
active users and most watched items come up most often), plus a share of new users the model
never saw. Rows have the columns of ``Dataset.interactions``, so ``replay`` sends them
like real ratings.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from recsys.data.dataset import Dataset
from recsys.errors import DataError


def _ranked(ids: pd.Series, counts: pd.Series) -> np.ndarray:
    """``ids`` ordered by ``counts`` (most first), ties by id so the order is stable."""
    frame = pd.DataFrame({"id": ids.to_numpy()})
    frame["count"] = frame["id"].map(counts).fillna(0).to_numpy()
    ordered = frame.sort_values(["count", "id"], ascending=[False, True])
    ranked: np.ndarray = ordered["id"].to_numpy()
    return ranked


def _power_law(rng: np.random.Generator, size: int, n: int, exponent: float) -> np.ndarray:
    """``n`` ranks in ``[0, size)`` with P(rank r) proportional to (r + 1) ** -exponent."""
    weights = np.arange(1, size + 1, dtype=np.float64) ** -exponent
    return rng.choice(size, size=n, p=weights / weights.sum())


def synthetic_interactions(
    ml: Dataset,
    n: int,
    *,
    seed: int = 0,
    exponent: float = 1.0,
    new_user_fraction: float = 0.05,
    per_second: float = 1000.0,
    start_s: int | None = None,
) -> pd.DataFrame:
    """``n`` synthetic events (user_id, item_id, value, timestamp), in time order.

    Args:
        ml: The data set whose users, items and popularity the stream follows.
        n: Number of events.
        seed: Same seed, same stream.
        exponent: Power-law exponent of the user and item skew (1.0: Zipf).
        new_user_fraction: Share of events from users the data set does not have.
        per_second: Event-time density: timestamps advance by one second per this many events.
        start_s: Event time of the first event in epoch seconds (default: now).

    Raises:
        DataError: ``n`` below 1 or a parameter out of range.
    """
    if n < 1:
        raise DataError(f"a synthetic stream needs at least 1 event, got {n}")
    if not 0.0 <= new_user_fraction <= 1.0:
        raise DataError(f"new_user_fraction must be in [0, 1], got {new_user_fraction}")
    if exponent < 0 or per_second <= 0:
        raise DataError(f"exponent must be >= 0 and per_second > 0, got {exponent}, {per_second}")
    rng = np.random.default_rng(seed)
    inter = ml.interactions
    items = _ranked(ml.items["item_id"], inter["item_id"].value_counts())
    users = _ranked(pd.Series(inter["user_id"].unique()), inter["user_id"].value_counts())
    user_ids = users[_power_law(rng, len(users), n, exponent)].astype(object)
    new = rng.random(n) < new_user_fraction
    pool = max(100, n // 100)
    user_ids[new] = [f"synthetic-{k}" for k in _power_law(rng, pool, int(new.sum()), exponent)]
    start = int(time.time()) if start_s is None else start_s
    return pd.DataFrame(
        {
            "user_id": user_ids.astype(str),
            "item_id": items[_power_law(rng, len(items), n, exponent)].astype(str),
            "timestamp": start + (np.arange(n) / per_second).astype(np.int64),
            "value": rng.integers(1, 6, size=n).astype(np.float32),
        }
    )
