"""``recsys evaluate``: train and score the towers under each protocol, and ablations.

``stream`` is the primary protocol (:mod:`evaluation.stream`): every test event predicted from
the history the stream had just updated, beside popularity, trailing popularity and item-KNN
baselines and the same model on frozen histories. The other protocols each train their own
model on their own training part (the best epoch picked on its validation part, where it has
one) and are scored beside a popularity baseline computed by the same evaluator. Results go
to the console and to a JSON file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from evaluation.experiments import evaluate_split
from evaluation.protocols import Split, recbole_split, temporal_split_protocol, tfrs_split
from evaluation.recbole import write_recbole_atomic
from evaluation.stream import StreamEvaluator, evaluate_stream, select_baselines, stream_summary
from recsys.config import ModelConfig
from recsys.data.dataset import Dataset
from towers.examples import fit_feature_space
from training.train import Fitted, fit

PROTOCOLS = ("stream", "temporal", "recbole", "tfrs", "pipeline")
SETTINGS_BY_PROTOCOL: dict[str, dict[str, Any]] = {  # Any: mixed-type settings
    "recbole": {
        "user_parts": ("profile",),
        "oov_rate": 0.0,
        "item_oov_rate": 0.0,
        "epochs": 50,
        "embedding_dim": 128,
    }
}
"""Model settings that differ from the configured model, per protocol, each chosen on that
protocol's validation part (BENCHMARKS.md). RecBole's protocol holds out interactions drawn
at random across each user's whole timeline and queries once after all of them, so recent
items and the request's hour describe the wrong moment: there they cost NDCG; the temporal
and TFRS protocols query each user at the moment of the held-out interaction, where they
help. Every RecBole test user is a training user, so user-id dropout (which trains the
new-user bucket) only costs there, and its random per-user split trains for longer. Every
test item is a training item too, so item-id dropout (which trains the new-item bucket) is
off there as well: that protocol trains as it did before the option existed."""
ABLATIONS: dict[str, tuple[str, ...]] = {
    "ids only": (),
    "+ profile": ("profile",),
    "+ history": ("profile", "history"),
    "+ time context": ("profile", "history", "time"),
}
"""User-tower inputs beside the user id, cumulatively (item tower unchanged)."""


def make_split(protocol: str, ml: Dataset, mc: ModelConfig) -> Split:
    if protocol in ("stream", "temporal", "pipeline"):
        return temporal_split_protocol(ml.interactions, mc.test_fraction, mc.valid_fraction or None)
    if protocol == "recbole":
        return recbole_split(ml.interactions)
    if protocol == "tfrs":
        return tfrs_split(ml.interactions)
    raise ValueError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")


def _pipeline(
    mc: ModelConfig, ml: Dataset, split: Split, log: Callable[[str], None]
) -> dict[str, Any]:  # Any: a JSON report
    """Towers on the oldest part (epoch picked on the ranker's slice), then the two-stage
    report of :mod:`evaluation.pipeline`."""
    from evaluation.pipeline import evaluate_pipeline, pipeline_splits, pipeline_summary

    stages, final = pipeline_splits(split)
    assert stages.valid is not None  # the ranker's slice
    log(f"towers on {len(stages.train):,} interactions, ranker rows from {len(stages.valid):,}")
    fitted = fit(mc, ml, stages, log=log, progress=False)
    results, _ = evaluate_pipeline(
        ml,
        fitted.space,
        fitted.user_fn,
        fitted.item_vectors(ml),
        stages,
        final,
        mc.stream_events(len(ml.items)),
        log,
    )
    results["best_epoch"] = fitted.best_epoch
    log(pipeline_summary(results))
    return results


def run(
    mc: ModelConfig,
    ml: Dataset,
    protocols: Sequence[str],
    *,
    ablation: bool = False,
    export_dir: Path | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:  # Any: a JSON report
    """Trains and scores one model per protocol (and per ablation row on ``stream``).

    ``stream`` and ``temporal`` share one split, so they share one trained model.
    """
    results: dict[str, Any] = {}  # Any: a JSON report
    fitted_by_split: dict[str, Fitted] = {}
    for protocol in protocols:
        pmc = mc
        if protocol in SETTINGS_BY_PROTOCOL:
            pmc = mc.model_copy(update=SETTINGS_BY_PROTOCOL[protocol])
        split = make_split(protocol, ml, pmc)
        if export_dir is not None:
            for path in write_recbole_atomic(split, export_dir, f"ml-100k-{protocol}"):
                log(f"wrote {path}")
        log(f"\n== {protocol}: {split.description}; user tower: id + {', '.join(pmc.user_parts)}")
        if protocol == "pipeline":
            results[protocol] = _pipeline(pmc, ml, split, log)
            continue
        fitted = fitted_by_split.get(split.name)
        if fitted is None:
            fitted = fit(pmc, ml, split, log=log, progress=False)
            fitted_by_split[split.name] = fitted
        about = {
            "best_epoch": fitted.best_epoch,
            "user_parts": list(pmc.user_parts),
            "train_seconds": round(fitted.seconds, 1),
            "description": split.description,
        }
        vectors = fitted.item_vectors(ml)
        if protocol == "stream":
            stream = evaluate_stream(
                ml,
                fitted.space,
                fitted.user_fn,
                vectors,
                split,
                log=log,
                max_events=pmc.stream_events(len(ml.items)),
            )
            results[protocol] = {**stream, **about}
            log(stream_summary(stream))
            continue
        metrics = evaluate_split(
            ml,
            fitted.space,
            fitted.user_fn,
            vectors,
            split,
            max_queries=pmc.stream_events(len(ml.items)),
        )
        results[protocol] = {**metrics, **about}
        log(_table({protocol: metrics["model"], "popularity": metrics["popularity"]}))
    if ablation:
        split = make_split("stream", ml, mc)
        space = fit_feature_space(ml, split.train, mc.history_length)
        valid = StreamEvaluator(ml, space, split, "valid", mc.stream_events(len(ml.items)))
        chosen = select_baselines(valid)
        rows: dict[str, dict[str, float]] = {}
        baselines: dict[str, dict[str, float]] = {}
        for name, parts in ABLATIONS.items():
            log(f"\n== ablation on stream: {name}")
            variant = mc.model_copy(update={"user_parts": parts})
            fitted = fit(variant, ml, split, log=log, progress=False)
            stream = evaluate_stream(
                ml,
                fitted.space,
                fitted.user_fn,
                fitted.item_vectors(ml),
                split,
                chosen=chosen,
                max_events=mc.stream_events(len(ml.items)),
            )
            rows[name] = stream["model"]
            rows[f"{name}, frozen"] = stream["frozen"]
            for baseline in ("item_knn", "trailing_popularity", "popularity"):
                baselines[baseline] = stream[baseline]
        rows.update(baselines)
        results["ablation"] = rows
        log("\n" + _table(rows))
    return results


def _table(rows: dict[str, dict[str, float]]) -> str:
    keys = [k for k in next(iter(rows.values())) if k not in ("users", "events")]
    lines = [f"{'':<18}" + "".join(f"{k:>16}" for k in keys)]
    lines += [f"{name:<18}" + "".join(f"{m[k]:>16.4f}" for k in keys) for name, m in rows.items()]
    return "\n".join(lines)


def save(results: dict[str, Any], path: Path) -> None:  # Any: a JSON report
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))
