"""The two-tower retrieval model (TFRS) and its export to SavedModel + NumPy weights.

Which features each tower uses is a ``TowerConfig``, so ablations train the same code.
"""

from __future__ import annotations

from towers.encoding import AGE_BUCKETS, YEAR_BUCKETS, FeatureSpace
from towers.model_config import USER_TABLES, TowerConfig
from towers.tf_env import keras, tf, tfrs

SIDE_DIM = 8
"""Width of the small categorical side-feature embeddings (gender, age, hour, ...)."""


def _masked_mean(embeddings: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
    """Mean over the non-zero ids: ``[batch, n, d]`` → ``[batch, d]``; zeros when none."""
    mask = tf.cast(ids > 0, tf.float32)[..., tf.newaxis]
    return tf.reduce_sum(embeddings * mask, axis=1) / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)


class UserTower(keras.Model):  # type: ignore[misc]  # tf_keras ships no types
    """User id (+ profile, pooled recent items, time context) → ``[batch, dim]``."""

    def __init__(
        self, space: FeatureSpace, config: TowerConfig, item_embedding: keras.layers.Embedding
    ):
        super().__init__(name="user_tower")
        self.config = config
        dim = config.dim
        self.user_emb = keras.layers.Embedding(space.users.size, dim, name="user_id")
        self.gender_emb = keras.layers.Embedding(space.genders.size, SIDE_DIM, name="gender")
        self.age_emb = keras.layers.Embedding(AGE_BUCKETS, SIDE_DIM, name="age")
        self.occupation_emb = keras.layers.Embedding(
            space.occupations.size, SIDE_DIM, name="occupation"
        )
        self.zip_emb = keras.layers.Embedding(space.zips.size, SIDE_DIM, name="zip")
        self.hour_emb = keras.layers.Embedding(24, SIDE_DIM, name="hour")
        self.weekday_emb = keras.layers.Embedding(7, SIDE_DIM, name="weekday")
        self.item_emb = item_embedding
        self.position = None
        if config.history_pooling == "position":
            # One logit per recency rank; zeros start it as the plain mean.
            self.position = keras.layers.Embedding(
                space.history_length, 1, embeddings_initializer="zeros", name="history_position"
            )
        self.hidden = keras.layers.Dense(2 * dim, activation="relu", name="hidden")
        self.out = keras.layers.Dense(dim, name="out")

    def _pool_history(self, ids: tf.Tensor) -> tf.Tensor:
        """``[batch, n]`` recent item ids → ``[batch, dim]``: the plain mean of the known
        items, or their mean weighted by ``exp(logit[rank])``, where rank counts known items
        only (0 = the most recent), as the NumPy runtime compacts them."""
        embeddings = self.item_emb(ids)
        if self.position is None:
            return _masked_mean(embeddings, ids)
        mask = tf.cast(ids > 0, tf.float32)
        rank = tf.maximum(tf.cast(tf.cumsum(mask, axis=1), tf.int32) - 1, 0)
        weights = tf.exp(self.position(rank)[..., 0]) * mask
        total = tf.reduce_sum(weights, axis=1, keepdims=True)
        weights = weights / tf.where(total > 0, total, 1.0)
        return tf.reduce_sum(embeddings * weights[..., tf.newaxis], axis=1)

    def call(self, inputs: dict[str, tf.Tensor]) -> tf.Tensor:
        x = [
            self._pool_history(inputs["history"])
            if table == "item_emb"
            else getattr(self, table)(inputs[USER_TABLES[table]])
            for table in self.config.user_tables()
        ]
        out = self.out(self.hidden(tf.concat(x, axis=-1)))
        return tf.math.l2_normalize(out, axis=-1) if self.config.normalize else out


class ItemTower(keras.Model):  # type: ignore[misc]  # tf_keras ships no types
    """Item id (+ genres, title words, release decade) → ``[batch, dim]``."""

    def __init__(
        self, space: FeatureSpace, config: TowerConfig, item_embedding: keras.layers.Embedding
    ):
        super().__init__(name="item_tower")
        self.config = config
        self.item_emb = item_embedding
        self.year_emb = keras.layers.Embedding(YEAR_BUCKETS, SIDE_DIM, name="year")
        self.genres = keras.layers.Dense(SIDE_DIM, use_bias=False, name="genres")
        self.title_emb = keras.layers.Embedding(space.title_tokens.size, SIDE_DIM, name="title")
        self.hidden = keras.layers.Dense(2 * config.dim, activation="relu", name="hidden")
        self.out = keras.layers.Dense(config.dim, name="out")

    def call(self, inputs: dict[str, tf.Tensor]) -> tf.Tensor:
        parts = self.config.item_parts
        x = [self.item_emb(inputs["item"])]
        if "genres" in parts:
            x.append(self.genres(inputs["genres"]))
        if "title" in parts:
            x.append(_masked_mean(self.title_emb(inputs["title"]), inputs["title"]))
        if "year" in parts:
            x.append(self.year_emb(inputs["year"]))
        out = self.out(self.hidden(tf.concat(x, axis=-1)))
        return tf.math.l2_normalize(out, axis=-1) if self.config.normalize else out


USER_INPUTS = ("user", "gender", "age", "occupation", "zip", "hour", "weekday", "history")
ITEM_INPUTS = ("item", "year", "genres", "title")


class TwoTower(tfrs.Model):  # type: ignore[misc]  # tensorflow_recommenders ships no types
    """In-batch softmax retrieval.

    ``logq``: in-batch negatives are sampled in proportion to popularity, which over-penalises
    popular items; passing each positive's sampling probability lets TFRS subtract ``log q``.
    ``remove_accidental_hits``: a batch holding the same item twice must not treat one copy as
    a negative of the other.
    """

    def __init__(
        self,
        space: FeatureSpace,
        config: TowerConfig,
        *,
        temperature: float | None = None,
        logq: bool = True,
        remove_accidental_hits: bool = True,
    ):
        super().__init__()
        shared = keras.layers.Embedding(space.items.size, config.dim, name="item_id")
        self.user_tower = UserTower(space, config, shared)
        self.item_tower = ItemTower(space, config, shared)
        self.task = tfrs.tasks.Retrieval(
            temperature=temperature, remove_accidental_hits=remove_accidental_hits
        )
        self._logq = logq
        self._remove_accidental_hits = remove_accidental_hits

    def compute_loss(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        users = self.user_tower({k: features[k] for k in USER_INPUTS})
        items = self.item_tower({k: features[k] for k in ITEM_INPUTS})
        return self.task(
            users,
            items,
            sample_weight=features.get("weight"),
            candidate_sampling_probability=features["item_prob"] if self._logq else None,
            candidate_ids=features["item"] if self._remove_accidental_hits else None,
            compute_metrics=False,
        )
