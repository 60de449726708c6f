"""Candidate sources on the stream walk: how much of the next event each source recalls at a
depth, alone and in union, and what each costs a request.

The sources are :mod:`candidates.sources`' own objects, asked what the server asks them: each
walk event becomes a request with the user's recent items, seen set and user-tower query as
they were just before the event. A :class:`candidates.sources.Trending` is fed the stream's
events as the walk reaches them (:class:`Replay`). Every setting is picked on the validation
walk; the test walk is scored with it once.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import pandas as pd

from candidates.neighbours import NeighbourTable, cooccurrence_table, vector_neighbours
from candidates.sources import (
    NeighbourSource,
    Query,
    Source,
    Trending,
    TrendingSource,
    TwoTowerSource,
)
from evaluation.baselines import DAY_MS
from evaluation.stream import KNN_LAST_ITEMS, TRAILING_WINDOWS_DAYS, StreamEvaluator

DEPTHS = (100, 200)
"""The depths each source's and the union's recall is reported at."""
NEIGHBOURS = 200
"""Neighbours kept per item in a source's table."""
BATCH = 256
"""Walk events asked of a source at once (a source without time-dependent state)."""
COST_REQUESTS = 500
"""Single-request calls a source is timed on."""
UNION = ("two_tower", "neighbours", "trending")
"""The sources whose union is reported (the issue's three)."""


class Observer(Protocol):
    """What the stream keeps current: a :class:`Trending`, a ranking feature's item state."""

    def observe(self, rows: np.ndarray, times_ms: np.ndarray) -> None: ...

    def advance(self, now_ms: int) -> None: ...


class Replay:
    """The stream's events fed to observers (:class:`Trending`, …) as a walk reaches them:
    before a request at ``t``, every event strictly before ``t``, and the clock moved to
    ``t``.

    Args:
        stream: Every interaction the stream could have seen (``item_id``, ``timestamp`` s).
        column: Item id → catalog row.
        observers: Fed in place.
    """

    def __init__(self, stream: pd.DataFrame, column: dict[str, int], *observers: Observer):
        times = stream["timestamp"].to_numpy(np.int64) * 1000
        order = np.argsort(times, kind="stable")
        self._times = times[order]
        self._rows = stream["item_id"].map(column).to_numpy(np.int64)[order]
        self._fed = 0
        self.observers = observers

    def until(self, t_ms: int) -> None:
        end = int(np.searchsorted(self._times, t_ms, side="left"))
        for observer in self.observers:
            if end > self._fed:
                observer.observe(self._rows[self._fed : end], self._times[self._fed : end])
            observer.advance(t_ms)
        self._fed = max(self._fed, end)


def walk_query(ev: StreamEvaluator, rows: slice, vectors: np.ndarray | None) -> Query:
    """The walk's events ``rows`` as the server's requests: recent items, times, user-tower
    queries and seen sets just before each."""
    w = ev.walk
    return Query(
        recent=w.recent[rows],
        times_ms=w.times_ms[rows],
        vectors=None if vectors is None else vectors[rows],
        banned=w.seen[rows],
        last_ms=None if w.last_ms is None else w.last_ms[rows],
        earlier=None if w.earlier is None else w.earlier[rows],
    )


def walk_lists(
    ev: StreamEvaluator,
    source: Source,
    n: int,
    vectors: np.ndarray | None = None,
    replay: Replay | None = None,
) -> np.ndarray:
    """``[events, n] int64`` the source's candidates before each walk event (``-1``-padded).
    With a ``replay``, events are asked in groups of one request time, each after the
    stream's earlier events are fed."""
    out = np.empty((len(ev.walk), n), np.int64)
    for rows in walk_batches(ev, replay):
        out[rows] = source(walk_query(ev, rows, vectors), n).rows
    return out


def walk_batches(ev: StreamEvaluator, replay: Replay | None = None) -> Iterator[slice]:
    """The walk's events in the batches they are asked in: :data:`BATCH` at a time, or with
    a ``replay``, one request time at a time, each after the stream's earlier events are
    fed."""
    times = ev.walk.times_ms
    if replay is None:
        bounds = [*range(0, len(times), BATCH), len(times)]
    else:
        bounds = [0, *(np.flatnonzero(np.diff(times)) + 1).tolist(), len(times)]
    for start, end in itertools.pairwise(bounds):
        if replay is not None:
            replay.until(int(times[start]))
        yield slice(start, end)


def recall(lists: Sequence[np.ndarray], targets: np.ndarray, depth: int) -> float:
    """Share of events whose target is in the first ``depth`` of any of ``lists``."""
    hit = np.zeros(len(targets), bool)
    for rows in lists:
        hit |= (rows[:, :depth] == targets[:, None]).any(axis=1)
    return float(hit.mean())


def union_size(lists: Sequence[np.ndarray], depth: int) -> float:
    """Mean number of distinct candidates the first ``depth`` of ``lists`` give an event."""
    both = np.sort(np.concatenate([rows[:, :depth] for rows in lists], axis=1), axis=1)
    distinct = (both >= 0) & np.concatenate(
        [np.ones((len(both), 1), bool), np.diff(both, axis=1) != 0], axis=1
    )
    return float(distinct.sum(axis=1).mean())


def source_cost(
    ev: StreamEvaluator,
    source: Source,
    n: int,
    vectors: np.ndarray | None = None,
    replay: Replay | None = None,
    requests: int = COST_REQUESTS,
) -> dict[str, float]:
    """p50/p99 µs of one request's call of ``source`` for ``n`` candidates, over the walk's
    first ``requests`` events (a replay's feeding is not timed)."""
    spent = []
    for i in range(min(requests, len(ev.walk))):
        if replay is not None:
            replay.until(int(ev.walk.times_ms[i]))
        query = walk_query(ev, slice(i, i + 1), vectors)
        began = time.perf_counter()
        source(query, n)
        spent.append(time.perf_counter() - began)
    micros = np.array(spent) * 1e6
    return {"p50_us": float(np.median(micros)), "p99_us": float(np.percentile(micros, 99))}


class Sources:
    """The sources of one walk, built from the known past: the item index, the co-occurrence
    and item-tower neighbour tables, and trending counts fed from the stream."""

    def __init__(
        self,
        ev: StreamEvaluator,
        item_vecs: np.ndarray,
        cooccurrence: NeighbourTable,
        tower_table: NeighbourTable,
    ):
        self.ev = ev
        self.two_tower = TwoTowerSource.exact(item_vecs)
        self.cooccurrence = cooccurrence
        self.tower_table = tower_table

    def neighbours(self, last_items: int, table: NeighbourTable | None = None) -> NeighbourSource:
        return NeighbourSource(table or self.cooccurrence, last_items, self.ev.train_counts)

    def trending(self, window_days: int) -> tuple[TrendingSource, Replay]:
        trending = Trending(len(self.ev.column), window_days * DAY_MS, self.ev.train_counts)
        return TrendingSource(trending), Replay(self.ev.stream, self.ev.column, trending)

    def lists(self, chosen: dict[str, int], vectors: np.ndarray, n: int) -> dict[str, np.ndarray]:
        """Each source's ``[events, n]`` lists with the chosen settings."""
        source, replay = self.trending(chosen["trending_window_days"])
        return {
            "two_tower": walk_lists(self.ev, self.two_tower, n, vectors),
            "neighbours": walk_lists(self.ev, self.neighbours(chosen["neighbour_last_items"]), n),
            "tower_neighbours": walk_lists(
                self.ev, self.neighbours(chosen["tower_last_items"], self.tower_table), n
            ),
            "trending": walk_lists(self.ev, source, n, replay=replay),
        }


def evaluate_candidates(
    valid: StreamEvaluator,
    test: StreamEvaluator,
    user_fn: Callable[[Any], np.ndarray],  # Any: encoded user inputs
    item_vecs: np.ndarray,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:  # Any: a JSON report
    """Each source's recall at :data:`DEPTHS` alone, the union's, the union's size and each
    source's cost a request, on the test walk, with every setting picked on validation
    (neighbours' last items and trending's window, by the source's own recall@100).

    The neighbour tables and the two-tower index hold what the model was trained on
    (``split.train``), as a version built with the model would.
    """
    depth = max(DEPTHS)
    began = time.perf_counter()
    items = len(valid.column)
    train = valid.train
    rows = train["item_id"].map(valid.column).to_numpy(np.int64)
    cooccurrence = cooccurrence_table(train["user_id"].to_numpy(object), rows, items, NEIGHBOURS)
    tower_table = vector_neighbours(item_vecs, NEIGHBOURS)
    log(f"neighbour tables: {items:,} items × {NEIGHBOURS} ({time.perf_counter() - began:.0f}s)")
    on_valid = Sources(valid, item_vecs, cooccurrence, tower_table)
    targets = valid.walk.targets
    pick = DEPTHS[0]
    chosen: dict[str, int] = {}
    tried: dict[str, dict[int, float]] = {}
    for key, table in (("neighbour_last_items", None), ("tower_last_items", tower_table)):
        tried[key] = {
            n: recall([walk_lists(valid, on_valid.neighbours(n, table), pick)], targets, pick)
            for n in KNN_LAST_ITEMS
        }
        chosen[key] = _best(tried[key])
    tried["trending_window_days"] = {}
    for days in TRAILING_WINDOWS_DAYS:
        source, replay = on_valid.trending(days)
        trended = walk_lists(valid, source, pick, replay=replay)
        tried["trending_window_days"][days] = recall([trended], targets, pick)
    chosen["trending_window_days"] = _best(tried["trending_window_days"])
    log(
        "candidate settings picked on validation recall@100: "
        + "; ".join(
            f"{key} "
            + ", ".join(f"{v} {r:.3f}" for v, r in tried[key].items())
            + f" → {chosen[key]}"
            for key in tried
        )
    )
    report: dict[str, Any] = {"settings": chosen, "tried_on_valid": tried}  # Any: JSON
    on_test = Sources(test, item_vecs, cooccurrence, tower_table)
    queries = {
        name: np.asarray(user_fn(ev.live_inputs), np.float32)
        for name, ev in (("valid", valid), ("test", test))
    }
    for name, sources in (("valid", on_valid), ("test", on_test)):
        ev = sources.ev
        lists = sources.lists(chosen, queries[name], depth)
        t = ev.walk.targets
        part: dict[str, Any] = {  # Any: JSON
            source: {f"recall@{d}": recall([rows], t, d) for d in DEPTHS}
            for source, rows in lists.items()
        }
        union = [lists[s] for s in UNION]
        pair = [lists["two_tower"], lists["neighbours"]]
        for key, group in (("union", union), ("two_tower+neighbours", pair)):
            part[key] = {f"recall@{d}": recall(group, t, d) for d in DEPTHS}
            part[key].update({f"size@{d}": union_size(group, d) for d in DEPTHS})
        part["events"] = len(t)
        report[name] = part
    trend, replay = on_test.trending(chosen["trending_window_days"])
    report["cost_us"] = {
        "two_tower": source_cost(test, on_test.two_tower, depth, queries["test"]),
        "neighbours": source_cost(test, on_test.neighbours(chosen["neighbour_last_items"]), depth),
        "trending": source_cost(test, trend, depth, replay=replay),
    }
    return report


def _best(scores: dict[int, float]) -> int:
    """The setting with the highest score (the first on a tie)."""
    return max(scores, key=lambda setting: scores[setting])


def candidates_table(report: dict[str, Any]) -> str:  # Any: a JSON report
    """The report as an aligned table: each source's and the unions' recall on the test walk
    (validation beside it), sizes and costs."""
    keys = [f"recall@{d}" for d in DEPTHS]
    lines = [
        f"  {'':<24}"
        + "".join(f"{'test ' + k:>17}" for k in keys)
        + "".join(f"{'valid ' + k:>18}" for k in keys)
        + f"{'union size':>14}{'p50 µs':>10}"
    ]
    s = report["settings"]
    labels = {
        "two_tower": "two-tower search",
        "neighbours": f"co-occurrence, last {s['neighbour_last_items']}",
        "tower_neighbours": f"item-tower nbrs, last {s['tower_last_items']}",
        "trending": f"trending, {s['trending_window_days']}d",
        "two_tower+neighbours": "two-tower ∪ co-occur.",
        "union": "union of the three",
    }
    for key, label in labels.items():
        test, valid = report["test"][key], report["valid"][key]
        size = test.get(f"size@{DEPTHS[0]}")
        cost = report["cost_us"].get(key, {}).get("p50_us")
        lines.append(
            f"  {label:<24}"
            + "".join(f"{test[k]:>17.4f}" for k in keys)
            + "".join(f"{valid[k]:>18.4f}" for k in keys)
            + (f"{size:>14.0f}" if size is not None else f"{'':>14}")
            + (f"{cost:>10.0f}" if cost is not None else "")
        )
    return "\n".join(lines)
