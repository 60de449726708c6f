"""The stream protocol: predict each next event from the history the stream has just updated.

This is the question the server is asked all day: given everything this user has done up to
now, what do they do next? The model is trained on the past exactly as ``recsys train`` does
(the temporal cut, with a validation tail). Then the evaluated part is walked in event-time
order. Before each event the user tower is queried with the user's state at that moment: the
profile, the activity the ingester would have folded from every earlier event (past ones and
earlier ones of the part, through the same :mod:`features.activity` fold), and the event's own
time as request time. The event's item is ranked against the whole catalog with everything
the user interacted with before excluded.

The walk itself is :mod:`evaluation.walk`. Baselines a team would ship instead of a model
(:mod:`evaluation.baselines`) are scored on the same events by the same ranking, and the model
is scored a second time with histories frozen at the start of the part (a nightly batch
system): the difference is what freshness buys.

Metrics are averaged over events, not users: a heavy user asks more often, as in serving.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import numpy as np
import pandas as pd

from evaluation.baselines import ItemKNN, ItemSimilarity, Popularity, TrailingPopularity, counts
from evaluation.metrics import exclude_seen, next_item_metrics, next_item_ranks
from evaluation.protocols import Split
from evaluation.walk import Scorer, Walk, walk
from recsys.data.dataset import Dataset
from towers.encoding import FeatureSpace, Inputs
from towers.examples import user_inputs

UserFn = Callable[[Inputs], np.ndarray]
"""Encoded user inputs → ``[batch, dim]`` embeddings."""
History = Literal["live", "frozen"]
"""``live``: every earlier event folded in; ``frozen``: the state at the start of the part."""
CHUNK = 2048
"""Events ranked at a time, at most: ``[CHUNK, items]`` float64 is 27 MB for ML-100K's
catalog; larger catalogs rank fewer at a time (``chunk_rows``)."""
CELLS = 32 * 1024 * 1024
"""Scores held at once, at most (256 MB of float64): a 1 M-item catalog ranks 32 events at
a time, enough that the item matrix is read once per 32 events rather than per 4."""
MAX_EVENTS = 50_000
"""Events a part is scored on, at most: a uniform sample of a longer part (its states are
still folded from every event). ML-100K's test part has 20,001, all scored."""


def chunk_rows(items: int) -> int:
    """Events ranked at a time for a catalog of ``items``."""
    return max(1, min(CHUNK, CELLS // max(items, 1)))


RANK_THREADS = 2
"""Chunks ranked at once: a large catalog's ranking is element-wise NumPy work, which a
second core shares (each chunk holds its ``CELLS`` scores)."""


TRAILING_WINDOWS_DAYS = (1, 7, 30)
"""Trailing-popularity windows :func:`select_baselines` picks from on validation."""
KNN_LAST_ITEMS = (1, 2, 3, 5, 10, 20)
"""Item-KNN ``last_items`` settings :func:`select_baselines` picks from on validation."""


class StreamEvaluator:
    """One part's stream walk, encoded once, scored for any model or baseline.

    Args:
        ml: The data set (profiles, catalog).
        space: The model's vocabularies (history length included).
        split: A temporal split.
        on: ``"test"`` (known = train + valid) or ``"valid"`` (known = train).
        max_events: Score a uniform sample of this many of the part's events, at most.
    """

    def __init__(
        self,
        ml: Dataset,
        space: FeatureSpace,
        split: Split,
        on: str = "test",
        max_events: int = MAX_EVENTS,
    ):
        known, part = split.known_and_evaluated(on)
        self.column = {item: c for c, item in enumerate(ml.items["item_id"])}
        self.train = split.train
        self.train_counts = counts(split.train, self.column)
        self.stream = pd.concat([known, part], ignore_index=True)
        self.walk = walk(known, part, self.column, space.history_length, max_events)
        self.chunk = chunk_rows(len(self.column))
        w = self.walk
        codes = space.items.lookup_many(list(self.column))
        users = np.asarray(w.users, object)
        self._inputs: dict[History, Inputs] = {
            "live": user_inputs(ml, space, codes, users, w.recent, w.times_ms),
            "frozen": user_inputs(ml, space, codes, users, w.frozen_recent, w.times_ms),
        }

    @property
    def live_inputs(self) -> Inputs:
        """The encoded user-tower inputs before each walk event, live histories."""
        return self._inputs["live"]

    @property
    def users(self) -> int:
        return len(set(self.walk.users))

    def ranks(self, scorer: Scorer, seen: History = "live") -> np.ndarray:
        """``[events]`` each event's target rank under ``scorer``, ``seen`` items excluded:
        ``RANK_THREADS`` chunks at a time (NumPy's scoring and counting release the GIL)."""
        excluded = self.walk.seen if seen == "live" else self.walk.frozen_seen

        def ranked(start: int) -> np.ndarray:
            rows = slice(start, start + self.chunk)
            return next_item_ranks(scorer(self.walk, rows), excluded[rows], self.walk.targets[rows])

        starts = range(0, len(self.walk), self.chunk)
        if len(starts) == 1:
            return ranked(0)
        with ThreadPoolExecutor(RANK_THREADS) as pool:
            return np.concatenate(list(pool.map(ranked, starts)))

    def model(
        self,
        user_fn: UserFn,
        item_vecs: np.ndarray,
        histories: History = "live",
        seen: History | None = None,
    ) -> dict[str, float]:
        """The model's metrics, its queries built from ``histories`` (and excluding what was
        ``seen`` by then; the same as ``histories`` unless given)."""
        scorer = self._model_scorer(user_fn, item_vecs, histories)
        return next_item_metrics(self.ranks(scorer, seen or histories))

    def new_item(
        self, user_fn: UserFn, item_vecs: np.ndarray, new_vecs: np.ndarray
    ) -> dict[str, float]:
        """Each event's target as if it were a new item, among the catalog as it is: its
        score from ``new_vecs`` (the item tower's vector of the item's features under the
        unknown id, what a server embeds for an item that arrives on the catalog topic), every
        other item's from ``item_vecs``. Where a new item lands for the user who takes it
        next: what item-id dropout in training moves."""
        users = np.asarray(user_fn(self._inputs["live"]), np.float64)
        items = np.asarray(item_vecs, np.float64)
        new = np.asarray(new_vecs, np.float64)

        def scorer(walk: Walk, rows: slice) -> np.ndarray:
            scores = users[rows] @ items.T
            targets = walk.targets[rows]
            scores[np.arange(len(targets)), targets] = np.einsum(
                "ij,ij->i", users[rows], new[targets]
            )
            return scores

        return next_item_metrics(self.ranks(scorer))

    def top(self, user_fn: UserFn, item_vecs: np.ndarray, k: int = 10) -> np.ndarray:
        """``[events, k] int64`` the catalog columns the model ranks first before each event,
        live histories, everything seen excluded, ties by column (as :meth:`model` ranks):
        what the server should answer at that moment."""
        scorer = self._model_scorer(user_fn, item_vecs, "live")
        out = []
        for start in range(0, len(self.walk), self.chunk):
            rows = slice(start, start + self.chunk)
            masked = exclude_seen(scorer(self.walk, rows), self.walk.seen[rows])
            out.append(np.argsort(-masked, axis=1, kind="stable")[:, :k])
        return np.concatenate(out)

    def _model_scorer(self, user_fn: UserFn, item_vecs: np.ndarray, histories: History) -> Scorer:
        users = np.asarray(user_fn(self._inputs[histories]), np.float64)
        items = np.asarray(item_vecs, np.float64)

        def scorer(walk: Walk, rows: slice) -> np.ndarray:
            return users[rows] @ items.T

        return scorer

    def __call__(self, user_fn: UserFn, item_vecs: np.ndarray) -> dict[str, float]:
        """The model's metrics on live histories (the number training selects epochs on)."""
        return self.model(user_fn, item_vecs)

    def baseline(self, scorer: Scorer) -> dict[str, float]:
        return next_item_metrics(self.ranks(scorer))


def select_baselines(
    valid: StreamEvaluator, log: Callable[[str], None] | None = None
) -> dict[str, dict[str, Any]]:  # Any: each family's settings, of mixed types
    """Each baseline family's setting with the best validation NDCG@10.

    Returns:
        ``{"trailing_popularity": {"window_days": d, "valid": metrics...}, "item_knn":
        {"last_items": n, "valid": ...}}``.
    """
    chosen: dict[str, dict[str, Any]] = {}  # Any: settings of mixed types
    trailing = {
        d: valid.baseline(TrailingPopularity(valid.stream, valid.column, d, valid.train_counts))
        for d in TRAILING_WINDOWS_DAYS
    }
    best = max(trailing, key=lambda d: trailing[d]["ndcg@10"])
    chosen["trailing_popularity"] = {"window_days": best, "valid": trailing}
    similarity = ItemSimilarity(valid.train, valid.column)
    knn = {
        n: valid.baseline(ItemKNN(valid.train, valid.column, n, valid.train_counts, similarity))
        for n in KNN_LAST_ITEMS
    }
    best = max(knn, key=lambda n: knn[n]["ndcg@10"])
    chosen["item_knn"] = {"last_items": best, "valid": knn}
    if log is not None:
        log(
            "baselines picked on validation NDCG@10: trailing popularity "
            + ", ".join(f"{d}d {m['ndcg@10']:.4f}" for d, m in trailing.items())
            + f" → {chosen['trailing_popularity']['window_days']}d; item-KNN over last "
            + ", ".join(f"{n} {m['ndcg@10']:.4f}" for n, m in knn.items())
            + f" → {chosen['item_knn']['last_items']}"
        )
    return chosen


def evaluate_stream(
    ml: Dataset,
    space: FeatureSpace,
    user_fn: UserFn,
    item_vecs: np.ndarray,
    split: Split,
    *,
    chosen: dict[str, dict[str, Any]] | None = None,  # Any: settings of mixed types
    log: Callable[[str], None] | None = None,
    max_events: int = MAX_EVENTS,
    new_vecs: np.ndarray | None = None,
) -> dict[str, Any]:
    """The model (live and frozen histories) and every baseline on the test part's stream.

    Args:
        chosen: Baseline settings from :func:`select_baselines`; picked on ``split.valid``
            here when not given (a split without validation uses the middle settings).
        new_vecs: The catalog's vectors under the unknown id: adds ``"new_item"``
            (:meth:`StreamEvaluator.new_item`).

    Returns:
        ``{"model", "frozen", "frozen_features", "popularity", "trailing_popularity",
        "item_knn"}`` metrics (``frozen``: features and exclusions at the cut, a nightly
        batch system; ``frozen_features``: features at the cut, exclusions live), plus
        ``"freshness_lift"`` (live NDCG@10 over frozen), ``"settings"`` and ``"users"``.
    """
    if chosen is None:
        if split.valid is not None:
            # Not kept in a variable: its walk, frames and item-KNN similarity go before the
            # test part's come (keeping the similarity for the test part's item-KNN saved its
            # 37 s at 1 M items, but held 1.6 GB while the test walk was built: peak RSS
            # 8.44 GiB against 7.25).
            chosen = select_baselines(StreamEvaluator(ml, space, split, "valid", max_events), log)
        else:
            chosen = {"trailing_popularity": {"window_days": 7}, "item_knn": {"last_items": 5}}
    test = StreamEvaluator(ml, space, split, "test", max_events)
    days = int(chosen["trailing_popularity"]["window_days"])
    last = int(chosen["item_knn"]["last_items"])
    results: dict[str, Any] = {  # Any: a JSON report
        "model": test.model(user_fn, item_vecs),
        "frozen": test.model(user_fn, item_vecs, "frozen"),
        "frozen_features": test.model(user_fn, item_vecs, "frozen", seen="live"),
        "popularity": test.baseline(Popularity(test.train_counts)),
        "trailing_popularity": test.baseline(
            TrailingPopularity(test.stream, test.column, days, test.train_counts)
        ),
        "item_knn": test.baseline(ItemKNN(test.train, test.column, last, test.train_counts)),
    }
    if new_vecs is not None:
        results["new_item"] = test.new_item(user_fn, item_vecs, new_vecs)
    results["freshness_lift"] = results["model"]["ndcg@10"] / max(
        results["frozen"]["ndcg@10"], 1e-12
    )
    results["settings"] = {"trailing_window_days": days, "knn_last_items": last}
    results["users"] = test.users
    return results


ROWS: Sequence[tuple[str, str]] = (
    ("model", "two towers, live histories"),
    ("frozen", "two towers, frozen at the cut"),
    ("frozen_features", "  features frozen, seen live"),
    ("new_item", "  the next item as a new item"),
    ("item_knn", "item-KNN"),
    ("trailing_popularity", "trailing popularity"),
    ("popularity", "popularity (training period)"),
)
"""The stream results' rows as a report shows them, with their labels."""


def stream_table(results: dict[str, Any]) -> str:  # Any: a JSON report
    """The stream results as an aligned table, one row per model variant and baseline."""
    settings = results["settings"]
    labels = {
        "item_knn": f"item-KNN, last {settings['knn_last_items']} items",
        "trailing_popularity": f"popularity, trailing {settings['trailing_window_days']}d",
    }
    keys = ("ndcg@10", "recall@10", "mrr@10", "recall@50")
    lines = [f"  {'':<32}" + "".join(f"{k:>11}" for k in keys)]
    for name, label in ROWS:
        if name not in results:  # a report without the optional rows
            continue
        row = results[name]
        lines.append(f"  {labels.get(name, label):<32}" + "".join(f"{row[k]:>11.4f}" for k in keys))
    return "\n".join(lines)


def stream_summary(results: dict[str, Any]) -> str:  # Any: a JSON report
    """What ``recsys train`` and the demo print first: the table, the best baseline and the
    freshness lift."""
    model = results["model"]["ndcg@10"]
    best = max(
        ("item_knn", "trailing_popularity", "popularity"), key=lambda n: results[n]["ndcg@10"]
    )
    best_pop = max(results["trailing_popularity"]["ndcg@10"], results["popularity"]["ndcg@10"])
    return (
        f"stream protocol: each of {int(results['model']['events']):,} test events predicted "
        f"from the history the stream had just updated ({results['users']:,} users, seen "
        f"items excluded)\n{stream_table(results)}\n"
        f"  NDCG@10 {model:.4f}: {model / max(results[best]['ndcg@10'], 1e-12):.2f}x the best "
        f"baseline ({best.replace('_', ' ')}), {model / max(best_pop, 1e-12):.2f}x the best "
        f"popularity; freshness (live over frozen histories) {results['freshness_lift']:.2f}x"
    )
