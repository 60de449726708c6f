"""The two-tower retrieval model (TFRS), built from the feature space: one input per declared
feature, embedded by its kind.

Which parts each tower uses is a ``TowerConfig``, so ablations train the same code.
"""

from __future__ import annotations

from towers.encoding import TIME_INPUTS, FeatureEncoder, FeatureSpace
from towers.model_config import TowerConfig, table_input
from towers.tf_env import keras, tf, tfrs

SIDE_DIM = 8
"""Width of every side-feature embedding (a categorical value, a bucket, a tag, a word)."""


def _masked_mean(embeddings: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
    """Mean over the non-zero ids: ``[batch, n, d]`` → ``[batch, d]``; zeros when none."""
    mask = tf.cast(ids > 0, tf.float32)[..., tf.newaxis]
    return tf.reduce_sum(embeddings * mask, axis=1) / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)


def _masked_sum(embeddings: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
    """Sum over the non-zero ids: ``[batch, n, d]`` → ``[batch, d]`` (a multi-hot product)."""
    return tf.reduce_sum(embeddings * tf.cast(ids > 0, tf.float32)[..., tf.newaxis], axis=1)


def side_embedding(feature: FeatureEncoder) -> keras.layers.Embedding:
    """A feature's table. A tag set is summed, as a dense layer over its multi-hot vector
    would, and starts from the same Glorot-uniform draw such a layer's kernel would."""
    init = "glorot_uniform" if feature.pooling == "sum" else "uniform"
    return keras.layers.Embedding(
        feature.size, SIDE_DIM, embeddings_initializer=init, name=feature.name
    )


def pooled(table: keras.layers.Embedding, ids: tf.Tensor, pooling: str) -> tf.Tensor:
    """A feature's embedding: its one row, or its rows' sum or mean."""
    rows = table(ids)
    if pooling == "sum":
        return _masked_sum(rows, ids)
    if pooling == "mean":
        return _masked_mean(rows, ids)
    return rows


class UserTower(keras.Model):  # type: ignore[misc]  # tf_keras ships no types
    """User id (+ declared profile features, pooled recent items, time context) →
    ``[batch, dim]``."""

    def __init__(
        self, space: FeatureSpace, config: TowerConfig, item_embedding: keras.layers.Embedding
    ):
        super().__init__(name="user_tower")
        self.config = config
        dim = config.dim
        self.tables: dict[str, keras.layers.Embedding] = {
            "user_emb": keras.layers.Embedding(space.users.size, dim, name="user_id"),
            "item_emb": item_embedding,
        }
        for f in space.user_features:
            self.tables[f"user_{f.name}_emb"] = side_embedding(f)
        for name, size in TIME_INPUTS:
            self.tables[f"{name}_emb"] = keras.layers.Embedding(size, SIDE_DIM, name=name)
        # Keras tracks layers held in attributes: the dict's values are the tower's weights.
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
        embeddings = self.tables["item_emb"](ids)
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
            else pooled(self.tables[table], inputs[table_input(table)], self.config.pooling(table))
            for table in self.config.user_tables()
        ]
        out = self.out(self.hidden(tf.concat(x, axis=-1)))
        return tf.math.l2_normalize(out, axis=-1) if self.config.normalize else out


class ItemTower(keras.Model):  # type: ignore[misc]  # tf_keras ships no types
    """Item id (+ the declared item features it reads) → ``[batch, dim]``."""

    def __init__(
        self, space: FeatureSpace, config: TowerConfig, item_embedding: keras.layers.Embedding
    ):
        super().__init__(name="item_tower")
        self.config = config
        self.item_emb = item_embedding
        self.tables = {
            name: side_embedding(space.item_feature(name)) for name, _ in config.item_features
        }
        self.hidden = keras.layers.Dense(2 * config.dim, activation="relu", name="hidden")
        self.out = keras.layers.Dense(config.dim, name="out")

    def call(self, inputs: dict[str, tf.Tensor]) -> tf.Tensor:
        x = [self.item_emb(inputs["item"])]
        for name, pooling in self.config.item_features:
            x.append(pooled(self.tables[name], inputs[f"item_{name}"], pooling))
        out = self.out(self.hidden(tf.concat(x, axis=-1)))
        return tf.math.l2_normalize(out, axis=-1) if self.config.normalize else out


def user_input_names(space: FeatureSpace) -> tuple[str, ...]:
    """Every user-tower input ``FeatureSpace.encode_users`` gives."""
    multi = tuple(f"user_{f.name}" for f in space.user_features if f.multi)
    return (*space.user_inputs, *multi, "history")


def item_input_names(space: FeatureSpace) -> tuple[str, ...]:
    """Every item-tower input ``FeatureSpace.encode_items`` gives."""
    return ("item", *(f"item_{f.name}" for f in space.item_features))


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
        self.user_inputs = user_input_names(space)
        self.item_inputs = item_input_names(space)
        self.task = tfrs.tasks.Retrieval(
            temperature=temperature, remove_accidental_hits=remove_accidental_hits
        )
        self._logq = logq
        self._remove_accidental_hits = remove_accidental_hits

    def compute_loss(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        users = self.user_tower({k: features[k] for k in self.user_inputs})
        items = self.item_tower({k: features[k] for k in self.item_inputs})
        return self.task(
            users,
            items,
            sample_weight=features.get("weight"),
            candidate_sampling_probability=features["item_prob"] if self._logq else None,
            # The item itself, also where training dropped its id (``item_key``).
            candidate_ids=(
                features.get("item_key", features["item"]) if self._remove_accidental_hits else None
            ),
            compute_metrics=False,
        )
