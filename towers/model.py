"""The two-tower retrieval model (TFRS), and its export to SavedModel + NumPy weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from towers.encoding import AGE_BUCKETS, YEAR_BUCKETS, FeatureSpace
from towers.tf_env import keras, tf, tfrs

SIDE_DIM = 8
"""Width of the small categorical side-feature embeddings (gender, age, ...)."""


class UserTower(keras.Model):
    """User id, profile and pooled recent items → ``[batch, dim]`` embedding."""

    def __init__(self, space: FeatureSpace, dim: int, item_embedding: keras.layers.Embedding):
        super().__init__(name="user_tower")
        self.user_emb = keras.layers.Embedding(space.users.size, dim, name="user_id")
        self.gender_emb = keras.layers.Embedding(space.genders.size, SIDE_DIM, name="gender")
        self.age_emb = keras.layers.Embedding(AGE_BUCKETS, SIDE_DIM, name="age")
        self.occupation_emb = keras.layers.Embedding(
            space.occupations.size, SIDE_DIM, name="occupation"
        )
        self.item_emb = item_embedding
        self.hidden = keras.layers.Dense(2 * dim, activation="relu", name="hidden")
        self.out = keras.layers.Dense(dim, name="out")

    def call(self, inputs: dict[str, tf.Tensor]) -> tf.Tensor:
        history = inputs["history"]
        mask = tf.cast(history > 0, tf.float32)[..., tf.newaxis]
        pooled = tf.reduce_sum(self.item_emb(history) * mask, axis=1) / tf.maximum(
            tf.reduce_sum(mask, axis=1), 1.0
        )
        x = tf.concat(
            [
                self.user_emb(inputs["user"]),
                self.gender_emb(inputs["gender"]),
                self.age_emb(inputs["age"]),
                self.occupation_emb(inputs["occupation"]),
                pooled,
            ],
            axis=-1,
        )
        return self.out(self.hidden(x))


class ItemTower(keras.Model):
    """Item id, release decade and genres → ``[batch, dim]`` embedding."""

    def __init__(self, space: FeatureSpace, dim: int, item_embedding: keras.layers.Embedding):
        super().__init__(name="item_tower")
        self.item_emb = item_embedding
        self.year_emb = keras.layers.Embedding(YEAR_BUCKETS, SIDE_DIM, name="year")
        self.genres = keras.layers.Dense(SIDE_DIM, use_bias=False, name="genres")
        self.hidden = keras.layers.Dense(2 * dim, activation="relu", name="hidden")
        self.out = keras.layers.Dense(dim, name="out")

    def call(self, inputs: dict[str, tf.Tensor]) -> tf.Tensor:
        x = tf.concat(
            [
                self.item_emb(inputs["item"]),
                self.year_emb(inputs["year"]),
                self.genres(inputs["genres"]),
            ],
            axis=-1,
        )
        return self.out(self.hidden(x))


class TwoTower(tfrs.Model):
    """In-batch softmax retrieval with logQ correction.

    In-batch negatives are sampled in proportion to popularity, which over-penalises popular
    items; passing each positive's sampling probability lets TFRS subtract ``log q``.
    """

    def __init__(self, space: FeatureSpace, dim: int):
        super().__init__()
        shared = keras.layers.Embedding(space.items.size, dim, name="item_id")
        self.user_tower = UserTower(space, dim, shared)
        self.item_tower = ItemTower(space, dim, shared)
        self.task = tfrs.tasks.Retrieval()

    def compute_loss(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        users = self.user_tower({k: features[k] for k in USER_INPUTS})
        items = self.item_tower({k: features[k] for k in ITEM_INPUTS})
        return self.task(
            users,
            items,
            candidate_sampling_probability=features["item_prob"],
            compute_metrics=False,
        )


USER_INPUTS = ("user", "gender", "age", "occupation", "history")
ITEM_INPUTS = ("item", "year", "genres")


def _signature(space: FeatureSpace, names: tuple[str, ...]) -> dict[str, tf.TensorSpec]:
    shapes = {
        "history": ([None, space.history_length], tf.int32),
        "genres": ([None, len(space.genres)], tf.float32),
    }
    return {name: tf.TensorSpec(*shapes.get(name, ([None], tf.int32)), name=name) for name in names}


def save_tower(tower: keras.Model, signature: dict[str, tf.TensorSpec], path: Path) -> None:
    """Saves a tower as a SavedModel whose ``serving_default`` returns ``embedding``."""

    @tf.function(input_signature=[signature])
    def serve(inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return {"embedding": tower(inputs)}

    module = tf.Module()
    module.tower = tower
    module.serve = serve
    tf.saved_model.save(module, str(path), signatures={"serving_default": serve})


def export(model: TwoTower, space: FeatureSpace, directory: Path) -> None:
    """Writes ``user_tower/`` and ``item_tower/`` SavedModels and ``weights.npz``.

    ``weights.npz`` holds the same weights as plain arrays for the NumPy serving runtime
    (``towers.runtime``), which is parity-tested against the SavedModel.
    """
    save_tower(model.user_tower, _signature(space, USER_INPUTS), directory / "user_tower")
    save_tower(model.item_tower, _signature(space, ITEM_INPUTS), directory / "item_tower")
    u, i = model.user_tower, model.item_tower
    arrays = {
        "item_emb": u.item_emb.embeddings,
        "user_emb": u.user_emb.embeddings,
        "gender_emb": u.gender_emb.embeddings,
        "age_emb": u.age_emb.embeddings,
        "occupation_emb": u.occupation_emb.embeddings,
        "user_hidden_w": u.hidden.kernel,
        "user_hidden_b": u.hidden.bias,
        "user_out_w": u.out.kernel,
        "user_out_b": u.out.bias,
        "year_emb": i.year_emb.embeddings,
        "genres_w": i.genres.kernel,
        "item_hidden_w": i.hidden.kernel,
        "item_hidden_b": i.hidden.bias,
        "item_out_w": i.out.kernel,
        "item_out_b": i.out.bias,
    }
    np.savez(directory / "weights.npz", **{k: v.numpy() for k, v in arrays.items()})
