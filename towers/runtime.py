"""Both towers in NumPy: the user tower on the serving hot path, the item tower for checks.

A ``tf.function`` call costs ~0.6 ms here; the same arithmetic on these small matrices in
NumPy costs tens of microseconds, and the serving process never imports TensorFlow. Parity
with the SavedModels (≤ 1e-5) is tested in ``tests/test_towers.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recsys.errors import ArtifactError
from towers.encoding import ItemInputs, UserInputs
from towers.model_config import TowerConfig


def load_weights(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as data:
            return {name: np.ascontiguousarray(data[name], np.float32) for name in data.files}
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot load tower weights from {path}: {exc}") from exc


def _masked_mean(table: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """``[batch, n]`` ids → ``[batch, d]`` mean of the non-zero ids' rows; zeros when none."""
    mask = (ids > 0).astype(np.float32)[..., np.newaxis]
    return (table[ids] * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1.0)


def _mlp(x: np.ndarray, w: dict[str, np.ndarray], prefix: str, normalize: bool) -> np.ndarray:
    hidden = np.maximum(x @ w[f"{prefix}_hidden_w"] + w[f"{prefix}_hidden_b"], 0.0)
    out = hidden @ w[f"{prefix}_out_w"] + w[f"{prefix}_out_b"]
    if normalize:
        # tf.math.l2_normalize: x / sqrt(max(sum(x^2), 1e-12))
        out = out / np.sqrt(np.maximum((out * out).sum(axis=-1, keepdims=True), 1e-12))
    return out


class _Tower:
    def __init__(self, weights: dict[str, np.ndarray], config: TowerConfig, needs: list[str]):
        missing = [n for n in needs if n not in weights]
        if missing:
            raise ArtifactError(f"tower weights lack {missing} for parts {config}; re-export")
        self._w = weights
        self.config = config
        self.dim = config.dim


def load_tower_config(model_dir: Path) -> TowerConfig:
    try:
        return TowerConfig.load(model_dir / "tower.json")
    except (OSError, KeyError, ValueError) as exc:
        raise ArtifactError(f"cannot read {model_dir / 'tower.json'}: {exc}") from exc


class NumpyUserTower(_Tower):
    """``UserInputs`` → ``[batch, dim] float32``, the same function as the SavedModel."""

    def __init__(self, weights: dict[str, np.ndarray], config: TowerConfig):
        needs = ["user_emb", "user_hidden_w", "user_hidden_b", "user_out_w", "user_out_b"]
        if "profile" in config.user_parts:
            needs += ["gender_emb", "age_emb", "occupation_emb", "zip_emb"]
        if "history" in config.user_parts:
            needs.append("item_emb")
        if "time" in config.user_parts:
            needs += ["hour_emb", "weekday_emb"]
        super().__init__(weights, config, needs)

    @classmethod
    def load(cls, model_dir: Path) -> NumpyUserTower:
        return cls(load_weights(model_dir / "weights.npz"), load_tower_config(model_dir))

    def __call__(self, inputs: UserInputs) -> np.ndarray:
        w, parts = self._w, self.config.user_parts
        x = [w["user_emb"][inputs.user]]
        if "profile" in parts:
            x += [
                w["gender_emb"][inputs.gender],
                w["age_emb"][inputs.age],
                w["occupation_emb"][inputs.occupation],
                w["zip_emb"][inputs.zip],
            ]
        if "history" in parts:
            x.append(_masked_mean(w["item_emb"], inputs.history))
        if "time" in parts:
            x += [w["hour_emb"][inputs.hour], w["weekday_emb"][inputs.weekday]]
        return _mlp(np.concatenate(x, axis=-1), w, "user", self.config.normalize)


class NumpyItemTower(_Tower):
    """``ItemInputs`` → ``[batch, dim] float32``."""

    def __init__(self, weights: dict[str, np.ndarray], config: TowerConfig):
        needs = ["item_emb", "item_hidden_w", "item_hidden_b", "item_out_w", "item_out_b"]
        part_weights = {"genres": "genres_w", "title": "title_emb", "year": "year_emb"}
        needs += [part_weights[p] for p in config.item_parts]
        super().__init__(weights, config, needs)

    @classmethod
    def load(cls, model_dir: Path) -> NumpyItemTower:
        return cls(load_weights(model_dir / "weights.npz"), load_tower_config(model_dir))

    def __call__(self, inputs: ItemInputs) -> np.ndarray:
        w, parts = self._w, self.config.item_parts
        x = [w["item_emb"][inputs.item]]
        if "genres" in parts:
            x.append(inputs.genres @ w["genres_w"])
        if "title" in parts:
            x.append(_masked_mean(w["title_emb"], inputs.title))
        if "year" in parts:
            x.append(w["year_emb"][inputs.year])
        return _mlp(np.concatenate(x, axis=-1), w, "item", self.config.normalize)


class SavedModelUserTower:
    """The user tower's SavedModel (``encoded`` signature) behind the NumPy tower's interface:
    the reference runtime, selectable in serving for comparison. Imports TensorFlow."""

    def __init__(self, model_dir: Path):
        from towers.tf_env import tf

        try:
            self._fn = tf.saved_model.load(str(model_dir / "user_tower")).signatures["encoded"]
        except (OSError, KeyError, ValueError) as exc:
            raise ArtifactError(f"cannot load {model_dir / 'user_tower'}: {exc}") from exc
        self._tf = tf
        self.config = load_tower_config(model_dir)
        self.dim = self.config.dim

    def __call__(self, inputs: UserInputs) -> np.ndarray:
        tensors = {name: self._tf.constant(value) for name, value in inputs.as_dict().items()}
        return self._fn(**tensors)["embedding"].numpy()


def load_user_tower(
    model_dir: Path, runtime: str = "numpy"
) -> NumpyUserTower | SavedModelUserTower:
    """The user tower on the named runtime: ``numpy`` or ``savedmodel``."""
    if runtime == "savedmodel":
        return SavedModelUserTower(model_dir)
    return NumpyUserTower.load(model_dir)
