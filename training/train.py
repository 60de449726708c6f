"""Training: point-in-time examples → two-tower model, the best epoch picked on validation,
evaluated on the held-out part, and (for ``recsys train``) exported as a versioned artifact."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from evaluation.experiments import Evaluator, evaluate_split, item_vectors
from evaluation.protocols import Split, temporal_split_protocol
from evaluation.stream import StreamEvaluator, evaluate_stream, stream_summary
from recsys import artifacts
from recsys.config import Config, ModelConfig
from recsys.data.dataset import Dataset
from recsys.errors import ConfigError
from towers.encoding import FeatureSpace, Inputs
from towers.examples import fit_feature_space, training_examples
from towers.model_config import TowerConfig

if TYPE_CHECKING:
    from towers.model import TwoTower  # imports TensorFlow: only for the annotation

Log = Callable[[str], None]


@dataclass
class Fitted:
    """A trained model and how it got there."""

    model: TwoTower
    space: FeatureSpace
    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0
    valid_new_item: dict[str, float] | None = None
    """The kept epoch's stream metrics on validation with each target as a new item."""
    kept_vectors: tuple[np.ndarray, np.ndarray] | None = None
    """The kept weights' catalog and new-item vectors, once the validation embedded them."""

    def user_fn(self, inputs: Inputs) -> np.ndarray:
        return np.asarray(self.model.user_tower(inputs, training=False))

    def item_vectors(self, ml: Dataset) -> np.ndarray:
        return item_vectors(
            lambda x: np.asarray(self.model.item_tower(x, training=False)), ml, self.space
        )

    def new_item_vectors(self, ml: Dataset) -> np.ndarray:
        """The catalog's vectors as new items: each item's features under the unknown id
        (what the server embeds for an item the catalog topic brings)."""

        def unknown(x: Inputs) -> np.ndarray:
            return np.asarray(
                self.model.item_tower({**x, "item": np.zeros_like(x["item"])}, training=False)
            )

        return item_vectors(unknown, ml, self.space)


def fit(
    mc: ModelConfig, ml: Dataset, split: Split, *, log: Log = print, progress: bool = True
) -> Fitted:
    """Trains on ``split.train``; with ``split.valid``, keeps the epoch with the best
    validation NDCG@10 (on the stream protocol for a temporal split; top-100 accuracy for
    the TFRS protocol).

    Deterministic for ``mc.seed`` (op determinism on, seeded shuffles and id dropout).
    """
    from towers.model import TwoTower
    from towers.tf_env import keras, tf

    tf.keras.utils.set_random_seed(mc.seed)
    tf.config.experimental.enable_op_determinism()
    began = time.perf_counter()
    space = fit_feature_space(ml, split.train, mc.history_length)
    examples = training_examples(ml, split.train, space)
    log(
        f"{len(examples.item_rows):,} examples with point-in-time histories "
        f"({time.perf_counter() - began:.0f}s)"
    )
    counts = np.bincount(examples.item_rows, minlength=len(ml.items))
    features = {
        **examples.users,
        "item_prob": (counts[examples.item_rows] / len(examples.item_rows)).astype(np.float32),
        "weight": recency_weights(examples.times_s, mc.recency_half_life_days),
    }
    config = tower_config(mc, space)
    model = TwoTower(
        space,
        config,
        temperature=mc.temperature,
        logq=mc.logq,
        remove_accidental_hits=mc.remove_accidental_hits,
    )
    from training.optimizers import LazyAdam

    optimizers = {
        "adam": keras.optimizers.Adam,
        "lazy_adam": LazyAdam,
        "adagrad": keras.optimizers.Adagrad,
    }
    model.compile(optimizer=optimizers[mc.optimizer](mc.learning_rate))
    rng = np.random.default_rng(mc.seed)
    fitted = Fitted(model, space)
    validate: Callable[[Callable[[Inputs], np.ndarray], np.ndarray], dict[str, float]] | None
    if split.valid is None:
        validate = None
    elif split.name == "temporal":
        # The epoch is picked on the primary protocol: the validation tail's next events.
        began = time.perf_counter()
        validate = StreamEvaluator(ml, space, split, "valid", mc.stream_events(len(ml.items)))
        log(
            f"validation: {len(validate.walk):,} events of the stream walk "
            f"({time.perf_counter() - began:.0f}s)"
        )
    else:
        validate = Evaluator(ml, space, split, on="valid")
    verbose = 1 if progress and sys.stdout.isatty() else 2 if progress else 0
    best_score, best_weights = -np.inf, None
    started = time.perf_counter()
    batches = _Batches(features, examples.catalog, examples.item_rows, mc.batch_size)
    known_users = features["user"]
    del features, examples  # the batches hold their own copy (in TensorFlow)
    for epoch in range(1, mc.epochs + 1):
        # A fresh share of examples loses its user id each epoch, so the unknown-user
        # bucket is trained on every kind of user.
        n = len(known_users)
        users = np.where(rng.random(n) < mc.oov_rate, 0, known_users).astype(np.int32)
        blank = rng.random(n) < mc.history_dropout
        order = rng.permutation(n)
        cold = rng.random(n) < mc.item_oov_rate if mc.item_oov_rate else None
        dataset = batches.epoch(order, users, blank, cold)
        if progress:
            log(f"epoch {epoch}/{mc.epochs}")
        result = model.fit(dataset, epochs=1, verbose=verbose)
        row = {"epoch": float(epoch), "loss": float(result.history["loss"][-1])}
        if validate is not None:
            metrics = validate(fitted.user_fn, fitted.item_vectors(ml))
            row.update({f"valid_{k}": v for k, v in metrics.items() if k != "users"})
            score = metrics.get("ndcg@10", metrics.get("top100_accuracy", 0.0))
            if score > best_score:
                best_score, best_weights, fitted.best_epoch = score, model.get_weights(), epoch
            log(f"  loss {row['loss']:.2f}, validation {_headline(metrics)}")
        fitted.epochs.append(row)
    if best_weights is not None:
        model.set_weights(best_weights)
        log(f"kept epoch {fitted.best_epoch} (best on validation)")
        if isinstance(validate, StreamEvaluator):
            # What model.item_oov_rate is chosen on, beside the NDCG@10 epochs are kept on.
            fitted.kept_vectors = (fitted.item_vectors(ml), fitted.new_item_vectors(ml))
            fitted.valid_new_item = validate.new_item(fitted.user_fn, *fitted.kept_vectors)
            log(f"  validation, the next item as a new item: {_headline(fitted.valid_new_item)}")
    else:
        fitted.best_epoch = mc.epochs
    fitted.seconds = time.perf_counter() - started
    return fitted


class _Batches:
    """An epoch's batches, gathered from one copy of the examples: the user inputs by
    example and the item inputs from the catalog by each example's item row, so memory
    holds the examples once whatever the epochs and the item features."""

    def __init__(self, features: Inputs, catalog: Inputs, item_rows: np.ndarray, batch_size: int):
        from towers.tf_env import tf

        self._n = len(item_rows)
        self._batch_size = batch_size
        self._features = {k: tf.constant(v) for k, v in features.items()}
        self._catalog = {k: tf.constant(v) for k, v in catalog.items()}
        self._item_rows = tf.constant(item_rows)

    def epoch(
        self, order: np.ndarray, users: np.ndarray, blank: np.ndarray, cold: np.ndarray | None
    ) -> Any:
        """The batches in ``order``, with this epoch's user ids (some dropped to the unknown
        bucket), histories blanked where ``blank`` and, where ``cold``, the item tower's item
        id dropped to the unknown bucket (``item_key`` keeps it for the accidental hits); a
        ``tf.data.Dataset``."""
        from towers.tf_env import tf

        order_t, users_t, blank_t = tf.constant(order), tf.constant(users), tf.constant(blank)
        cold_t = None if cold is None else tf.constant(cold)
        features, catalog, item_rows = self._features, self._catalog, self._item_rows
        size = self._batch_size

        def batch(start: tf.Tensor) -> dict[str, tf.Tensor]:
            at = order_t[start : start + size]
            out = {k: tf.gather(v, at) for k, v in features.items()}
            out["user"] = tf.gather(users_t, at)
            out["history"] = tf.where(tf.gather(blank_t, at)[:, tf.newaxis], 0, out["history"])
            rows = tf.gather(item_rows, at)
            out.update({k: tf.gather(v, rows) for k, v in catalog.items()})
            if cold_t is not None:
                out["item_key"] = out["item"]
                out["item"] = tf.where(tf.gather(cold_t, at), 0, out["item"])
            return out

        return (
            tf.data.Dataset.range(0, self._n, size)
            .map(batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .prefetch(tf.data.AUTOTUNE)
        )


def tower_config(mc: ModelConfig, space: FeatureSpace) -> TowerConfig:
    """The architecture for the data set's features: every declared user feature (when the
    ``profile`` part is on) and the item features ``model.item_parts`` names (all by default).

    Raises:
        ConfigError: ``item_parts`` names a feature the data schema does not declare.
    """
    declared = [f.name for f in space.item_features]
    chosen = declared if mc.item_parts is None else list(mc.item_parts)
    unknown = [name for name in chosen if name not in declared]
    if unknown:
        raise ConfigError(
            f"model.item_parts names {unknown}, which the data schema's items do not declare "
            f"(declared: {declared})"
        )
    return TowerConfig(
        mc.embedding_dim,
        mc.user_parts,
        user_features=tuple((f.name, f.pooling) for f in space.user_features),
        item_features=tuple((f.name, f.pooling) for f in space.item_features if f.name in chosen),
        normalize=mc.normalize,
        history_pooling=mc.history_pooling,
    )


def recency_weights(times_s: np.ndarray, half_life_days: float | None) -> np.ndarray:
    """``[n] float32`` example weights, mean 1: ``0.5 ** (age / half-life)`` from the newest
    time, or all ones without a half-life."""
    if half_life_days is None or not len(times_s):
        return np.ones(len(times_s), np.float32)
    age_days = (times_s.max() - times_s) / 86_400
    weights = 0.5 ** (age_days / half_life_days)
    normalised: np.ndarray = (weights / weights.mean()).astype(np.float32)
    return normalised


def _headline(metrics: dict[str, float]) -> str:
    return ", ".join(
        f"{k} {v:.4f}"
        for k, v in metrics.items()
        if k in ("ndcg@10", "recall@10", "top100_accuracy")
    )


def save_report(fitted: Fitted, metrics: dict[str, Any], directory: Path) -> None:  # Any: JSON
    """``metrics.json`` and ``training.png`` (loss and validation curve per epoch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (directory / "metrics.json").write_text(
        json.dumps(
            {"test": metrics, "epochs": fitted.epochs, "best_epoch": fitted.best_epoch}, indent=2
        )
    )
    epochs = [r["epoch"] for r in fitted.epochs]
    fig, left = plt.subplots(figsize=(7, 4))
    left.plot(epochs, [r["loss"] for r in fitted.epochs], "o-", color="tab:blue")
    left.set_xlabel("epoch")
    left.set_ylabel("training loss", color="tab:blue")
    valid = [k for k in ("valid_ndcg@10", "valid_top100_accuracy") if k in fitted.epochs[0]]
    if valid:
        right = left.twinx()
        right.plot(epochs, [r[valid[0]] for r in fitted.epochs], "s-", color="tab:orange")
        right.set_ylabel(valid[0].replace("_", " "), color="tab:orange")
        right.axvline(fitted.best_epoch, color="grey", linestyle=":")
    left.set_title("two-tower training")
    fig.tight_layout()
    fig.savefig(directory / "training.png", dpi=100)
    plt.close(fig)


@dataclass(frozen=True)
class TrainResult:
    version: str
    directory: Path
    manifest: dict[str, Any]  # Any: JSON


def train(config: Config, ml: Dataset, *, log: Log = print, publish: bool = True) -> TrainResult:
    """Trains on the past, picks the epoch on the end of the past, evaluates on the future,
    and writes ``models/<version>/`` (towers, weights, vocabularies, report, manifest).

    Args:
        config: The project configuration; ``config.model`` sets the hyper-parameters.
        ml: The data set.
        log: Progress sink.
        publish: Point ``models/CURRENT`` at the new version.
    """
    from towers.export import export

    mc = config.model
    split = temporal_split_protocol(ml.interactions, mc.test_fraction, mc.valid_fraction or None)
    log(
        f"training on {len(split.train):,} interactions, validating on "
        f"{0 if split.valid is None else len(split.valid):,}, testing on {len(split.test):,} "
        f"(temporal split), up to {mc.epochs} epochs"
    )
    stages = final = None
    if mc.ranker:
        from evaluation.pipeline import pipeline_splits

        stages, final = pipeline_splits(split)
        log(f"two stages: the towers on {len(stages.train):,}, the ranker on the next slice")
    fitted = fit(mc, ml, split if stages is None else stages, log=log)
    vectors, new_vectors = fitted.kept_vectors or (
        fitted.item_vectors(ml),
        fitted.new_item_vectors(ml),
    )
    metrics = {
        "stream": evaluate_stream(
            ml,
            fitted.space,
            fitted.user_fn,
            vectors,
            split,
            log=log,
            max_events=mc.stream_events(len(ml.items)),
            new_vecs=new_vectors,
        ),
        "temporal": evaluate_split(
            ml,
            fitted.space,
            fitted.user_fn,
            vectors,
            split,
            max_queries=mc.stream_events(len(ml.items)),
        ),
    }
    trained = None
    if stages is not None and final is not None:
        from evaluation.pipeline import evaluate_pipeline, pipeline_summary

        metrics["pipeline"], trained = evaluate_pipeline(
            ml,
            fitted.space,
            fitted.user_fn,
            vectors,
            stages,
            final,
            mc.stream_events(len(ml.items)),
            log,
        )
        log(pipeline_summary(metrics["pipeline"]))
        # The same test walk as the stream section's (the towers' row is the same row):
        # the blend and the ranked pipeline beside its baselines.
        for row in ("blend", "pipeline"):
            metrics["stream"][row] = metrics["pipeline"][row]
    version = artifacts.new_version()
    with artifacts.staged_version(config.models_dir, version) as staging:
        export(fitted.model, fitted.space, staging)
        if trained is not None:
            from ranking import servable

            servable.save(staging, trained.booster, trained.settings, trained.facts, trained.probe)
        fitted.space.save(staging / "features.json")
        save_report(fitted, metrics, staging)
        manifest = {
            "version": version,
            "kind": "two-tower",
            "embedding_dim": mc.embedding_dim,
            "history_length": mc.history_length,
            "train_seconds": round(fitted.seconds, 2),
            "best_epoch": fitted.best_epoch,
            "valid_new_item": fitted.valid_new_item,
            "split": {
                "protocol": split.name,
                "description": split.description,
                "train": len(split.train),
                "valid": 0 if split.valid is None else len(split.valid),
                "test": len(split.test),
            },
            "metrics": metrics,
            "ranker": None if trained is None else asdict(trained.settings),
            "hyperparameters": mc.model_dump(mode="json"),
        }
        artifacts.write_manifest(staging, manifest)
    if publish:
        artifacts.publish(config.models_dir, version)
    log(f"model {version}: trained in {fitted.seconds:.1f}s (best epoch {fitted.best_epoch})")
    log(stream_summary(metrics["stream"]))
    m, p = metrics["temporal"]["model"], metrics["temporal"]["popularity"]
    log(
        f"temporal protocol (each test user once, at their first future event; mostly cold "
        f"start): NDCG@10 {m['ndcg@10']:.4f} (popularity {p['ndcg@10']:.4f})"
    )
    return TrainResult(version, config.models_dir / version, manifest)
