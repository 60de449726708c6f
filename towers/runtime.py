"""The user tower in NumPy, for the serving hot path.

A ``tf.function`` call costs ~0.6 ms here; the same arithmetic on these small matrices in
NumPy costs tens of microseconds, and the serving process never imports TensorFlow. Parity
with the SavedModel (≤ 1e-5) is tested in ``tests/test_towers.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recsys.errors import ArtifactError
from towers.encoding import ItemInputs, UserInputs

USER_WEIGHTS = (
    "item_emb",
    "user_emb",
    "gender_emb",
    "age_emb",
    "occupation_emb",
    "user_hidden_w",
    "user_hidden_b",
    "user_out_w",
    "user_out_b",
)
ITEM_WEIGHTS = (
    "item_emb",
    "year_emb",
    "genres_w",
    "item_hidden_w",
    "item_hidden_b",
    "item_out_w",
    "item_out_b",
)


def load_weights(path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as data:
            return {name: np.ascontiguousarray(data[name], np.float32) for name in names}
    except (OSError, KeyError, ValueError) as exc:
        raise ArtifactError(f"cannot load tower weights from {path}: {exc}") from exc


class NumpyUserTower:
    """``UserInputs`` → ``[batch, dim] float32``, the same function as the SavedModel."""

    def __init__(self, weights: dict[str, np.ndarray]):
        self._w = weights
        self.dim = int(weights["user_out_b"].shape[0])

    @classmethod
    def load(cls, model_dir: Path) -> NumpyUserTower:
        return cls(load_weights(model_dir / "weights.npz", USER_WEIGHTS))

    def __call__(self, inputs: UserInputs) -> np.ndarray:
        w = self._w
        history = inputs.history
        mask = (history > 0).astype(np.float32)[..., np.newaxis]
        pooled = (w["item_emb"][history] * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1.0)
        x = np.concatenate(
            [
                w["user_emb"][inputs.user],
                w["gender_emb"][inputs.gender],
                w["age_emb"][inputs.age],
                w["occupation_emb"][inputs.occupation],
                pooled,
            ],
            axis=-1,
        )
        hidden = np.maximum(x @ w["user_hidden_w"] + w["user_hidden_b"], 0.0)
        return hidden @ w["user_out_w"] + w["user_out_b"]


class NumpyItemTower:
    """``ItemInputs`` → ``[batch, dim] float32``."""

    def __init__(self, weights: dict[str, np.ndarray]):
        self._w = weights

    @classmethod
    def load(cls, model_dir: Path) -> NumpyItemTower:
        return cls(load_weights(model_dir / "weights.npz", ITEM_WEIGHTS))

    def __call__(self, inputs: ItemInputs) -> np.ndarray:
        w = self._w
        x = np.concatenate(
            [w["item_emb"][inputs.item], w["year_emb"][inputs.year], inputs.genres @ w["genres_w"]],
            axis=-1,
        )
        hidden = np.maximum(x @ w["item_hidden_w"] + w["item_hidden_b"], 0.0)
        return hidden @ w["item_out_w"] + w["item_out_b"]
