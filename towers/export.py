"""Export: each tower as a SavedModel with a signature on raw features, plus NumPy weights.

``serving_default`` takes what the online store and the catalog hold (strings, ages, years,
times) and does the encoding in TensorFlow, with the vocabularies as lookup tables, so the
SavedModel serves on its own. ``encoded`` takes the integer inputs ``towers.encoding``
produces. Tests hold the two signatures, the NumPy runtime and the Python encoding together.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from towers.encoding import (
    AGE_BOUNDARIES,
    DECADES,
    FIRST_DECADE,
    TITLE_TOKENS,
    ZIP_PREFIX,
    FeatureSpace,
)
from towers.model import ITEM_INPUTS, USER_INPUTS, TwoTower
from towers.tf_env import keras, tf


def _table(values: Sequence[str]) -> tf.lookup.StaticHashTable:
    """String → index + 1, unknown → 0 (the ``Vocab`` convention)."""
    keys = tf.constant(list(values) or [""], tf.string)
    ids = tf.range(1, len(values) + 1, dtype=tf.int32) if values else tf.constant([0], tf.int32)
    return tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, ids), 0)


def _encoded_signature(space: FeatureSpace, names: tuple[str, ...]) -> dict[str, tf.TensorSpec]:
    shapes = {
        "history": ([None, space.history_length], tf.int32),
        "genres": ([None, len(space.genres)], tf.float32),
        "title": ([None, TITLE_TOKENS], tf.int32),
    }
    return {name: tf.TensorSpec(*shapes.get(name, ([None], tf.int32)), name=name) for name in names}


def _fit(ids: tf.RaggedTensor | tf.Tensor, width: int) -> tf.Tensor:
    """Pads or truncates the last axis to ``width`` with zeros: ``[batch, width] int32``."""
    if isinstance(ids, tf.RaggedTensor):
        ids = ids.to_tensor(0)
    ids = ids[:, :width]
    return tf.pad(ids, [[0, 0], [0, width - tf.shape(ids)[1]]])


class UserTowerModule(tf.Module):  # type: ignore[misc]  # tensorflow ships no types
    """The user tower with its vocabularies: raw features in, ``embedding`` out."""

    def __init__(self, tower: keras.Model, space: FeatureSpace):
        super().__init__(name="user_tower")
        self.tower = tower
        self.history_length = space.history_length
        self.users = _table(space.users.values)
        self.genders = _table(space.genders.values)
        self.occupations = _table(space.occupations.values)
        self.zips = _table(space.zips.values)
        self.items = _table(space.items.values)
        self.encoded = tf.function(
            lambda inputs: {"embedding": self.tower(inputs)},
            input_signature=[_encoded_signature(space, USER_INPUTS)],
        )

    @tf.function(  # type: ignore[untyped-decorator]  # tensorflow ships no types
        input_signature=[
            {
                "user_id": tf.TensorSpec([None], tf.string, name="user_id"),
                "gender": tf.TensorSpec([None], tf.string, name="gender"),
                "age": tf.TensorSpec([None], tf.int32, name="age"),
                "occupation": tf.TensorSpec([None], tf.string, name="occupation"),
                "zip_code": tf.TensorSpec([None], tf.string, name="zip_code"),
                "recent_items": tf.TensorSpec([None, None], tf.string, name="recent_items"),
                "request_time_ms": tf.TensorSpec([None], tf.int64, name="request_time_ms"),
            }
        ]
    )
    def serve(self, raw: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Args: ``recent_items`` ``[batch, n]`` most recent first, ``""``-padded."""
        age = raw["age"]
        bucket = 1 + tf.add_n([tf.cast(age >= b, tf.int32) for b in AGE_BOUNDARIES])
        t = raw["request_time_ms"]
        zip_prefix = tf.strings.upper(tf.strings.substr(raw["zip_code"], 0, ZIP_PREFIX))
        inputs = {
            "user": self.users.lookup(raw["user_id"]),
            "gender": self.genders.lookup(raw["gender"]),
            "age": tf.where(age > 0, bucket, 0),
            "occupation": self.occupations.lookup(raw["occupation"]),
            "zip": self.zips.lookup(zip_prefix),
            "hour": tf.cast(t // 3_600_000 % 24, tf.int32),
            "weekday": tf.cast((t // 86_400_000 + 3) % 7, tf.int32),
            "history": _fit(self.items.lookup(raw["recent_items"]), self.history_length),
        }
        return {"embedding": self.tower(inputs)}


class ItemTowerModule(tf.Module):  # type: ignore[misc]  # tensorflow ships no types
    """The item tower with its vocabularies: raw catalog fields in, ``embedding`` out."""

    def __init__(self, tower: keras.Model, space: FeatureSpace):
        super().__init__(name="item_tower")
        self.tower = tower
        self.items = _table(space.items.values)
        self.genre_columns = _table(space.genres)
        self.n_genres = len(space.genres)
        self.words = _table(space.title_tokens.values)
        self.encoded = tf.function(
            lambda inputs: {"embedding": self.tower(inputs)},
            input_signature=[_encoded_signature(space, ITEM_INPUTS)],
        )

    @tf.function(  # type: ignore[untyped-decorator]  # tensorflow ships no types
        input_signature=[
            {
                "item_id": tf.TensorSpec([None], tf.string, name="item_id"),
                "release_year": tf.TensorSpec([None], tf.int32, name="release_year"),
                "genres": tf.TensorSpec([None, None], tf.string, name="genres"),
                "title": tf.TensorSpec([None], tf.string, name="title"),
            }
        ]
    )
    def serve(self, raw: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Args: ``genres`` ``[batch, n]`` genre names, ``""``-padded."""
        year = raw["release_year"]
        decade = 1 + tf.clip_by_value((year - FIRST_DECADE) // 10, 0, DECADES - 1)
        columns = self.genre_columns.lookup(raw["genres"])
        multi_hot = tf.reduce_max(tf.one_hot(columns, self.n_genres + 1), axis=1)[:, 1:]
        # The same words as towers.encoding.title_tokens: lower-case ASCII letters and digits.
        text = tf.strings.regex_replace(tf.strings.lower(raw["title"]), "[^a-z0-9]+", " ")
        words = self.words.lookup(tf.strings.split(text))
        known = tf.ragged.boolean_mask(words, words > 0)
        inputs = {
            "item": self.items.lookup(raw["item_id"]),
            "year": tf.where(year > 0, decade, 0),
            "genres": multi_hot,
            "title": _fit(known, TITLE_TOKENS),
        }
        return {"embedding": self.tower(inputs)}


def _save(module: tf.Module, path: Path) -> None:
    tf.saved_model.save(
        module, str(path), signatures={"serving_default": module.serve, "encoded": module.encoded}
    )


def export(model: TwoTower, space: FeatureSpace, directory: Path) -> None:
    """Writes ``user_tower/`` and ``item_tower/`` SavedModels, ``weights.npz``, ``tower.json``.

    ``weights.npz`` holds the same weights as plain arrays for the NumPy serving runtime
    (``towers.runtime``).
    """
    _save(UserTowerModule(model.user_tower, space), directory / "user_tower")
    _save(ItemTowerModule(model.item_tower, space), directory / "item_tower")
    config = model.user_tower.config
    # The concatenation order the model used, for the NumPy runtime's folded kernel.
    dataclasses.replace(config, user_concat=config.user_tables()).save(directory / "tower.json")
    u, i = model.user_tower, model.item_tower
    layers = {
        "item_emb": u.item_emb,
        "user_emb": u.user_emb,
        "gender_emb": u.gender_emb,
        "age_emb": u.age_emb,
        "occupation_emb": u.occupation_emb,
        "zip_emb": u.zip_emb,
        "hour_emb": u.hour_emb,
        "weekday_emb": u.weekday_emb,
        "user_hidden": u.hidden,
        "user_out": u.out,
        "year_emb": i.year_emb,
        "genres": i.genres,
        "title_emb": i.title_emb,
        "item_hidden": i.hidden,
        "item_out": i.out,
    }
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
