"""Export: each tower as a SavedModel with a signature on raw features, plus NumPy weights.

``serving_default`` takes what the online store and the catalog hold (ids, and each declared
feature in its canonical form: strings, string lists, numbers with NaN for missing, recent
item ids, the request time) and does the encoding in TensorFlow, with the vocabularies as
lookup tables, so the SavedModel serves on its own. ``encoded`` takes the integer inputs
``towers.encoding`` produces. Tests hold the two signatures, the NumPy runtime and the Python
encoding together.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from recsys.data.schema import BUCKETED
from towers.encoding import FeatureEncoder, FeatureSpace
from towers.model import TwoTower, item_input_names, user_input_names
from towers.tf_env import keras, tf

WORD_PATTERN = r"[^\p{L}\p{N}]+"
"""What separates words: ``towers.encoding.words`` in RE2."""


def _table(values: Sequence[str]) -> tf.lookup.StaticHashTable:
    """String → index + 1, unknown → 0 (the ``Vocab`` convention)."""
    keys = tf.constant(list(values) or [""], tf.string)
    ids = tf.range(1, len(values) + 1, dtype=tf.int32) if values else tf.constant([0], tf.int32)
    return tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, ids), 0)


def _fit(ids: tf.RaggedTensor | tf.Tensor, width: int) -> tf.Tensor:
    """Pads or truncates the last axis to ``width`` with zeros: ``[batch, width] int32``."""
    if isinstance(ids, tf.RaggedTensor):
        ids = ids.to_tensor(0)
    ids = ids[:, :width]
    return tf.pad(ids, [[0, 0], [0, width - tf.shape(ids)[1]]])


def _encoded_signature(space: FeatureSpace, names: Sequence[str]) -> dict[str, tf.TensorSpec]:
    widths = {"history": space.history_length}
    widths.update({f"user_{f.name}": f.width for f in space.user_features if f.multi})
    widths.update({f"item_{f.name}": f.width for f in space.item_features if f.multi})
    return {
        name: tf.TensorSpec([None, widths[name]] if name in widths else [None], tf.int32, name=name)
        for name in names
    }


def _raw_spec(feature: FeatureEncoder) -> tf.TensorSpec:
    """The raw signature's input for a feature: its canonical value (``recsys.data.dataset``)."""
    name = feature.name
    if feature.kind in BUCKETED:
        return tf.TensorSpec([None], tf.float64, name=name)
    if feature.kind == "tags":
        return tf.TensorSpec([None, None], tf.string, name=name)
    return tf.TensorSpec([None], tf.string, name=name)


class _Encoder(tf.Module):  # type: ignore[misc]  # tensorflow ships no types
    """One feature's ``FeatureEncoder`` in TensorFlow."""

    def __init__(self, feature: FeatureEncoder):
        super().__init__(name=f"encode_{feature.name}")
        self.feature = feature
        self.vocab = _table(feature.vocab.values)
        self.boundaries = tf.constant(feature.boundaries or (0.0,), tf.float64)

    def __call__(self, raw: tf.Tensor) -> tf.Tensor:
        f = self.feature
        if f.kind in BUCKETED:
            bounds = self.boundaries[: len(f.boundaries)]
            bucket = 1 + tf.reduce_sum(
                tf.cast(raw[:, tf.newaxis] >= bounds[tf.newaxis, :], tf.int32), axis=1
            )
            return tf.where(tf.math.is_nan(raw), 0, bucket)
        if f.kind == "categorical":
            if f.prefix:
                raw = tf.strings.substr(raw, 0, f.prefix, unit="UTF8_CHAR")
            return self.vocab.lookup(raw)
        if f.kind == "text":
            text = tf.strings.regex_replace(
                tf.strings.lower(raw, encoding="utf-8"), WORD_PATTERN, " "
            )
            found = self.vocab.lookup(tf.strings.split(text))
            return _fit(tf.ragged.boolean_mask(found, found > 0), f.width)
        # tags: the known ids of the set, smallest first, without repeats (``ids``).
        found = self.vocab.lookup(raw)
        big = tf.int32.max
        ordered = tf.sort(tf.where(found > 0, found, big), axis=1)
        repeat = tf.concat(
            [tf.zeros_like(ordered[:, :1], tf.bool), ordered[:, 1:] == ordered[:, :-1]], axis=1
        )
        ordered = tf.sort(tf.where(repeat, big, ordered), axis=1)
        return _fit(tf.where(ordered == big, 0, ordered), f.width)


class UserTowerModule(tf.Module):  # type: ignore[misc]  # tensorflow ships no types
    """The user tower with its vocabularies: raw features in, ``embedding`` out."""

    def __init__(self, tower: keras.Model, space: FeatureSpace):
        super().__init__(name="user_tower")
        self.tower = tower
        self.history_length = space.history_length
        self.users = _table(space.users.values)
        self.items = _table(space.items.values)
        self.features = [_Encoder(f) for f in space.user_features]
        self.encoded = tf.function(
            lambda inputs: {"embedding": self.tower(inputs)},
            input_signature=[_encoded_signature(space, user_input_names(space))],
        )
        self.serve = tf.function(
            self._serve,
            input_signature=[
                {
                    "user_id": tf.TensorSpec([None], tf.string, name="user_id"),
                    **{f.name: _raw_spec(f) for f in space.user_features},
                    "recent_items": tf.TensorSpec([None, None], tf.string, name="recent_items"),
                    "request_time_ms": tf.TensorSpec([None], tf.int64, name="request_time_ms"),
                }
            ],
        )

    def _serve(self, raw: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Args: ``recent_items`` ``[batch, n]`` most recent first, ``""``-padded."""
        t = raw["request_time_ms"]
        inputs = {
            "user": self.users.lookup(raw["user_id"]),
            "hour": tf.cast(t // 3_600_000 % 24, tf.int32),
            "weekday": tf.cast((t // 86_400_000 + 3) % 7, tf.int32),
            "history": _fit(self.items.lookup(raw["recent_items"]), self.history_length),
        }
        for encoder in self.features:
            inputs[f"user_{encoder.feature.name}"] = encoder(raw[encoder.feature.name])
        return {"embedding": self.tower(inputs)}


class ItemTowerModule(tf.Module):  # type: ignore[misc]  # tensorflow ships no types
    """The item tower with its vocabularies: raw catalog fields in, ``embedding`` out."""

    def __init__(self, tower: keras.Model, space: FeatureSpace):
        super().__init__(name="item_tower")
        self.tower = tower
        self.items = _table(space.items.values)
        self.features = [_Encoder(f) for f in space.item_features]
        self.encoded = tf.function(
            lambda inputs: {"embedding": self.tower(inputs)},
            input_signature=[_encoded_signature(space, item_input_names(space))],
        )
        self.serve = tf.function(
            self._serve,
            input_signature=[
                {
                    "item_id": tf.TensorSpec([None], tf.string, name="item_id"),
                    **{f.name: _raw_spec(f) for f in space.item_features},
                }
            ],
        )

    def _serve(self, raw: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Args: a ``tags`` feature ``[batch, n]``, ``""``-padded."""
        inputs = {"item": self.items.lookup(raw["item_id"])}
        for encoder in self.features:
            inputs[f"item_{encoder.feature.name}"] = encoder(raw[encoder.feature.name])
        return {"embedding": self.tower(inputs)}


def _save(module: tf.Module, path: Path) -> None:
    tf.saved_model.save(
        module, str(path), signatures={"serving_default": module.serve, "encoded": module.encoded}
    )


def export(model: TwoTower, space: FeatureSpace, directory: Path) -> None:
    """Writes ``user_tower/`` and ``item_tower/`` SavedModels, ``weights.npz``, ``tower.json``.

    ``weights.npz`` holds the same weights as plain arrays for the NumPy serving runtime
    (``towers.runtime``): each table by its ``TowerConfig`` name, each dense layer as
    ``<name>_w`` and ``<name>_b``.
    """
    _save(UserTowerModule(model.user_tower, space), directory / "user_tower")
    _save(ItemTowerModule(model.item_tower, space), directory / "item_tower")
    config = model.user_tower.config
    # The concatenation order the model used, for the NumPy runtime's folded kernel.
    dataclasses.replace(config, user_concat=config.user_tables()).save(directory / "tower.json")
    u, i = model.user_tower, model.item_tower
    layers: dict[str, keras.layers.Layer] = dict(u.tables)
    layers.update({"user_hidden": u.hidden, "user_out": u.out})
    layers.update({f"item_{name}_emb": table for name, table in i.tables.items()})
    layers.update({"item_hidden": i.hidden, "item_out": i.out})
    if u.position is not None:
        layers["history_position"] = u.position
    arrays: dict[str, np.ndarray] = {}
    for name, layer in layers.items():
        if not layer.built:  # a part this configuration leaves out
            continue
        if isinstance(layer, keras.layers.Embedding):
            arrays[name] = layer.embeddings.numpy()
        else:
            arrays[f"{name}_w"] = layer.kernel.numpy()
            if layer.use_bias:
                arrays[f"{name}_b"] = layer.bias.numpy()
    np.savez(directory / "weights.npz", **arrays)  # type: ignore[arg-type]  # **arrays vs allow_pickle
