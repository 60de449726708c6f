"""Two stages on the stream walk: the sources' union ranked by a gradient-boosted ranker,
beside the two towers alone, item-KNN and the validated linear blend, on the same test walk.

The past is cut in three (:func:`pipeline_splits`): the towers train on the oldest part; the
ranker's training rows come from the next slice, walked with the towers' sources and
features exactly as the server would compute them then; validation picks every setting (the
baselines', the blend's share, the ranker's rounds); the test walk is scored once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from candidates.neighbours import cooccurrence_table
from candidates.sources import (
    Candidates,
    NeighbourSource,
    Trending,
    TwoTowerSource,
)
from evaluation.baselines import DAY_MS, ItemKNN
from evaluation.blend import blend_scorer, select_blend
from evaluation.candidates import NEIGHBOURS, Replay, walk_batches, walk_query
from evaluation.metrics import next_item_metrics
from evaluation.protocols import Split
from evaluation.stream import StreamEvaluator, select_baselines
from ranking import ranker
from ranking.features import (
    Catalog,
    Cut,
    ItemState,
    feature_names,
    features,
    first_cut,
    tag_matrix,
)
from ranking.servable import (
    SOURCES,
    ItemFacts,
    Settings,
    base_score,
    candidate_sources,
    window_events,
)
from recsys.data import temporal_split
from recsys.data.dataset import Dataset
from towers.encoding import FeatureSpace

DEPTH = 100
"""Candidates each source proposes (their union is what the ranker orders)."""
RANKER_FRACTION = 0.1
"""The share of the past before validation held out from the towers for the ranker."""
CUTS = (0, 100, 50, 25)
"""First cuts tried (:class:`ranking.features.Cut`: candidates a request keeps, ranked by the
blend, before the ranker; 0: none). The ranker's cost grows with what it ranks."""
CUT_TOLERANCE = 0.01
"""The smallest cut whose validation NDCG@10 is within this share of the best cut's is kept:
a cheaper stage for at most a 1 % loss, measured on validation."""

UserFn = Callable[[Any], np.ndarray]  # Any: encoded user inputs


def pipeline_splits(split: Split, fraction: float = RANKER_FRACTION) -> tuple[Split, Split]:
    """``(stages, final)`` from a temporal split with validation: ``stages`` trains the
    towers (``train``), walks the ranker's slice (``valid``) and validation (``test``);
    ``final`` walks the test part with everything before it known. Both keep the towers'
    part as ``train`` (item-KNN's and the neighbour table's data)."""
    if split.valid is None:
        raise ValueError("the pipeline needs a split with a validation part")
    towers, ranker_slice = temporal_split(split.train, fraction)
    about = f"{split.description}; the latest {fraction:g} of the training part ranks"
    stages = Split("temporal", towers, ranker_slice, split.valid, about)
    past = pd.concat([ranker_slice, split.valid], ignore_index=True)
    return stages, Split("temporal", towers, past, split.test, about)


class Stages:
    """The sources and features of one walk, fed from its stream as the walk reaches each
    event.

    Args:
        ev: The walk.
        catalog: The catalog's vectors, tags and training counts.
        vectors: ``[events, dim]`` the walk's user-tower queries.
        window_days: Trending's window.
        neighbour_source: The item-to-item source (it also scores every candidate).
        two_tower: The two-tower source over the catalog's index.
    """

    def __init__(
        self,
        ev: StreamEvaluator,
        catalog: Catalog,
        vectors: np.ndarray,
        window_days: int,
        neighbour_source: NeighbourSource,
        two_tower: TwoTowerSource,
    ):
        self.ev = ev
        self.catalog = catalog
        self.vectors = vectors
        trending = Trending(len(catalog.vectors), window_days * DAY_MS, catalog.prior)
        self.state = ItemState(len(catalog.vectors))
        self.replay = Replay(ev.stream, ev.column, trending, self.state)
        self.knn = neighbour_source
        self.sources = candidate_sources(two_tower, neighbour_source, trending)

    def rows(self, depth: int = DEPTH) -> tuple[ranker.Rows, np.ndarray, np.ndarray]:
        """The walk's candidates and features, a group per event.

        Returns:
            The rows (labels: the event's item), ``[m]`` each row's event and ``[m]`` its
            catalog row.
        """
        parts, owners, items = [], [], []
        for batch in walk_batches(self.ev, self.replay):
            query = walk_query(self.ev, batch, self.vectors)
            lists: dict[str, Candidates] = {
                name: source(query, depth) for name, source in self.sources.items()
            }
            found, matrix = features(query, lists, self.catalog, self.state, self.knn)
            parts.append(matrix)
            owners.append(found.owner + batch.start)
            items.append(found.rows)
        owner, rows = np.concatenate(owners), np.concatenate(items)
        labels = (rows == self.ev.walk.targets[owner]).astype(np.float32)
        groups = np.bincount(owner, minlength=len(self.ev.walk))
        names = feature_names(list(self.sources))
        return ranker.Rows(np.concatenate(parts), labels, groups, names), owner, rows


def pipeline_ranks(
    booster: Any, rows: ranker.Rows, owner: np.ndarray, events: int
) -> np.ndarray:  # Any: a lightgbm.Booster
    """``[events]`` the 0-based rank the ranker gives each event's item (``inf``: not among
    the candidates)."""
    scores = ranker.predict(booster, rows.features, rows.base)
    place = ranker.ranked_positions(owner, scores, events)
    ranks = np.full(events, np.inf)
    hit = rows.labels > 0
    ranks[owner[hit]] = place[hit]
    return ranks


@dataclass(frozen=True)
class Trained:
    """The ranker the pipeline picked, with what serving it needs
    (:func:`ranking.servable.save`'s arguments)."""

    booster: Any  # Any: a lightgbm.Booster
    settings: Settings
    facts: ItemFacts
    probe: np.ndarray


def evaluate_pipeline(
    ml: Dataset,
    space: FeatureSpace,
    user_fn: UserFn,
    item_vecs: np.ndarray,
    stages: Split,
    final: Split,
    max_events: int,
    log: Callable[[str], None] = print,
) -> tuple[dict[str, Any], Trained]:  # Any: a JSON report
    """The towers, item-KNN, the blend and the ranked pipeline on ``final``'s test walk, and
    the ranker it scored (its item state as the stream stood when the test part begins)."""
    began = time.perf_counter()
    slice_ev = StreamEvaluator(ml, space, stages, "valid", max_events)
    valid = StreamEvaluator(ml, space, stages, "test", max_events)
    test = StreamEvaluator(ml, space, final, "test", max_events)
    chosen = select_baselines(valid, log)
    last = int(chosen["item_knn"]["last_items"])
    days = int(chosen["trailing_popularity"]["window_days"])
    share, shares = select_blend(valid, user_fn, item_vecs, last)
    log(f"blend: item-KNN share {share} picked on validation NDCG@10 ({_fmt(shares)})")
    items = len(valid.column)
    train = valid.train
    table = cooccurrence_table(
        train["user_id"].to_numpy(object),
        train["item_id"].map(valid.column).to_numpy(np.int64),
        items,
        NEIGHBOURS,
    )
    tags = (
        tag_matrix(ml.items[space.filter], space.filter_values)
        if space.filter
        else np.zeros((items, 0), np.float32)
    )
    catalog = Catalog(np.asarray(item_vecs, np.float32), tags, valid.train_counts)
    two_tower = TwoTowerSource.exact(item_vecs)
    neighbours = NeighbourSource(table, last, valid.train_counts)

    def stages_of(ev: StreamEvaluator) -> Stages:
        vectors = np.asarray(user_fn(ev.live_inputs), np.float32)
        return Stages(ev, catalog, vectors, days, neighbours, two_tower)

    walked = {}
    for name, ev in (("ranker", slice_ev), ("valid", valid), ("test", test)):
        t = time.perf_counter()
        walked[name] = stages_of(ev).rows()
        rows = walked[name][0]
        log(
            f"{name} walk: {len(ev.walk):,} events, {len(rows.labels):,} candidates, the next "
            f"item among them for {rows.labels.sum() / len(ev.walk):.3f} "
            f"({time.perf_counter() - t:.0f}s)"
        )
    # For each first cut, the ranker alone and the ranker boosting from the blend's score;
    # the cut, the start and the rounds are picked on validation.
    tried: dict[tuple[int, str], tuple[Any, dict[str, Any], float | None]] = {}  # Any: Booster
    for depth in CUTS:
        cut = Cut(depth, share) if depth else None
        train_walk = _cut(walked["ranker"], cut, len(slice_ev.walk))
        valid_walk = _cut(walked["valid"], cut, len(valid.walk))
        for start in ("features only", "from the blend"):
            base_share = share if start == "from the blend" else None
            train_rows = _based(train_walk[0], base_share)
            valid_rows = _based(valid_walk[0], base_share)
            t = time.perf_counter()
            booster, fit = ranker.train(train_rows, valid_rows)
            fit["train_seconds"] = round(time.perf_counter() - t, 1)
            ranks = pipeline_ranks(booster, valid_rows, valid_walk[1], len(valid.walk))
            fit["valid"] = next_item_metrics(ranks)
            log(
                f"ranker, cut {depth or 'none'}, {start}: {fit['rounds']} rounds, validation "
                f"NDCG@10 {fit['valid']['ndcg@10']:.4f} ({fit['train_seconds']}s)"
            )
            tried[depth, start] = (booster, fit, base_share)
    best = max(v[1]["valid"]["ndcg@10"] for v in tried.values())
    per_cut = {
        d: max((k for k in tried if k[0] == d), key=lambda k: tried[k][1]["valid"]["ndcg@10"])
        for d in CUTS
    }
    good = [
        d
        for d, k in per_cut.items()
        if tried[k][1]["valid"]["ndcg@10"] >= (1 - CUT_TOLERANCE) * best
    ]
    depth = min(good, key=lambda d: d or np.inf)
    booster, fit, base_share = tried[per_cut[depth]]
    cut = Cut(depth, share) if depth else None
    fit["start"] = per_cut[depth][1]
    fit["cut"] = depth
    fit["tried"] = {
        f"cut {k[0] or 'none'}, {k[1]}": v[1]["valid"]["ndcg@10"] for k, v in tried.items()
    }
    log(
        f"ranker kept: cut {depth or 'none'} (the smallest within {CUT_TOLERANCE:.0%} of the "
        f"best on validation), {fit['start']}, {fit['rounds']} rounds"
    )
    union_recall = float(walked["test"][0].labels.sum() / len(test.walk))
    rows, owner, _ = _cut(walked["test"], cut, len(test.walk))
    rows = _based(rows, base_share)
    knn = ItemKNN(test.train, test.column, last, test.train_counts)
    results: dict[str, Any] = {  # Any: a JSON report
        "model": test.model(user_fn, item_vecs),
        "item_knn": test.baseline(knn),
        "blend": test.baseline(blend_scorer(test, user_fn, item_vecs, last, share)),
        "pipeline": next_item_metrics(pipeline_ranks(booster, rows, owner, len(test.walk))),
        "valid_pipeline": fit["valid"],
        "candidates_recall": float(rows.labels.sum() / len(test.walk)),
        "union_recall": union_recall,
        "settings": {
            "knn_last_items": last,
            "trending_window_days": days,
            "blend_share": share,
            "depth": DEPTH,
            "ranker_fraction": RANKER_FRACTION,
        },
        "ranker": {
            **fit,
            "training_rows": len(walked["ranker"][0].labels),
            "importance": ranker.importance(booster, rows.names),
        },
        "seconds": round(time.perf_counter() - began, 1),
    }
    past = final.train if final.valid is None else pd.concat([final.train, final.valid])
    rows_seen = past["item_id"].map(test.column).to_numpy(np.int64)
    times_seen = past["timestamp"].to_numpy(np.int64) * 1000
    first_seen = np.full(items, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first_seen, rows_seen, times_seen)
    event_rows, event_times = window_events(rows_seen, times_seen, int(times_seen.max()) + 1)
    trained = Trained(
        booster,
        Settings(
            names=list(rows.names),
            sources=list(SOURCES),
            depth=DEPTH,
            knn_last_items=last,
            trending_window_days=days,
            base_share=base_share,
            rounds=int(fit["rounds"]),
            valid_ndcg=float(fit["valid"]["ndcg@10"]),
            cut_depth=depth,
            cut_share=share,
        ),
        ItemFacts(
            item_ids=list(test.column),
            prior=np.asarray(test.train_counts, np.float64),
            table=table,
            event_rows=event_rows,
            event_times=event_times,
            first_seen=first_seen,
        ),
        _cut(walked["valid"], cut, len(valid.walk))[0].features,
    )
    return results, trained


Walked = tuple[ranker.Rows, np.ndarray, np.ndarray]
"""A walk's rows, each row's event and its catalog row (:meth:`Stages.rows`)."""


def _cut(walked: Walked, cut: Cut | None, events: int) -> Walked:
    """The walk's rows that ``cut`` keeps (the rows the server ranks with that cut)."""
    if cut is None:
        return walked
    rows, owner, items = walked
    keep = first_cut(owner, base_score(rows.features, rows.names, cut.share), cut.depth)
    kept = ranker.Rows(
        rows.features[keep],
        rows.labels[keep],
        np.bincount(owner[keep], minlength=events),
        rows.names,
    )
    return kept, owner[keep], items[keep]


def _based(rows: ranker.Rows, share: float | None) -> ranker.Rows:
    """``rows`` starting from the blend's score (``share`` of item-KNN) or from nothing."""
    return rows.with_base(None if share is None else base_score(rows.features, rows.names, share))


def _cut_label(depth: int) -> str:
    return f"blend's top {depth}" if depth else "union (no cut)"


def _fmt(tried: dict[float, float]) -> str:
    return ", ".join(f"{k:g} {v:.4f}" for k, v in tried.items())


def pipeline_summary(results: dict[str, Any]) -> str:  # Any: a JSON report
    """The test walk's rows and the ratios the issue's targets read."""
    keys = ("ndcg@10", "recall@10", "mrr@10", "recall@50")
    rows = {
        "two towers (retrieval only)": results["model"],
        f"item-KNN, last {results['settings']['knn_last_items']}": results["item_knn"],
        f"blend (item-KNN share {results['settings']['blend_share']:g})": results["blend"],
        "pipeline (ranked union)": results["pipeline"],
    }
    lines = [f"  {'':<32}" + "".join(f"{k:>11}" for k in keys)]
    for label, m in rows.items():
        lines.append(f"  {label:<32}" + "".join(f"{m[k]:>11.4f}" for k in keys))
    best = max(results["model"]["ndcg@10"], results["item_knn"]["ndcg@10"])
    ndcg = results["pipeline"]["ndcg@10"]
    lines.append(
        f"  pipeline NDCG@10 {ndcg:.4f}: {ndcg / best:.3f}x the best single source, "
        f"{ndcg / results['blend']['ndcg@10']:.3f}x the blend; the next item among the "
        f"union for {results['union_recall']:.3f} of events, among the ranked "
        f"{_cut_label(results['ranker']['cut'])} for {results['candidates_recall']:.3f}"
    )
    return "\n".join(lines)
