"""Both towers in NumPy: the user tower on the serving hot path, the item tower for checks.

A ``tf.function`` call costs an order of magnitude more than the same arithmetic on these
small matrices in NumPy (BENCHMARKS.md, the figures behind the code), and the serving
process never imports TensorFlow. Parity with the SavedModels (≤ 1e-5) is tested in
``tests/test_towers.py``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from features.user import UserFeatures
from recsys.errors import ArtifactError
from towers.encoding import USER_SCALARS, FeatureSpace, ItemInputs, UserInputs
from towers.model_config import USER_TABLES, TowerConfig


def load_weights(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as data:
            return {name: np.ascontiguousarray(data[name], np.float32) for name in data.files}
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot load tower weights from {path}: {exc}") from exc


def _masked_mean(table: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """``[batch, n]`` ids → ``[batch, d]`` mean of the non-zero ids' rows; zeros when none."""
    mask = (ids > 0).astype(np.float32)[..., np.newaxis]
    mean: np.ndarray = (table[ids] * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1.0)
    return mean


_MLP_PARTS = ("hidden_w", "hidden_b", "out_w", "out_b")


def _mlp(x: np.ndarray, w: dict[str, np.ndarray], prefix: str, normalize: bool) -> np.ndarray:
    hidden = np.maximum(x @ w[f"{prefix}_hidden_w"] + w[f"{prefix}_hidden_b"], 0.0)
    return _output(hidden, w, prefix, normalize)


def _output(
    hidden: np.ndarray, w: dict[str, np.ndarray], prefix: str, normalize: bool
) -> np.ndarray:
    out: np.ndarray = hidden @ w[f"{prefix}_out_w"] + w[f"{prefix}_out_b"]
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
    """``UserInputs`` (or raw features) → ``[batch, dim] float32``, the same function as the
    SavedModel.

    The first dense layer is folded into the embedding tables at load: its input is the
    concatenation of embedding rows (and the mean of the recent items' rows), so
    ``concat(rows) @ W`` equals the sum of each row's ``row @ W_slice``, and each table is
    multiplied by its slice once, ahead of time. The folded tables are stacked (with one zero
    row at the end, for history padding), so a user is ``R`` rows of the stack and ``R``
    weights: 1 for each scalar input, ``1/n`` for each of ``n`` recent items, 0 for padding.
    A batch is then one gather and one weighted sum.

    Batch-invariant: every matrix product is a stack of one-row products, so a user's
    embedding is bit-for-bit the same alone or in any batch (a 2-D ``[B, h] @ [h, d]`` lets
    BLAS pick kernels by ``B``, which moves the last bits and can swap near-tied items). The
    folded tables take ``rows × hidden`` floats (1.3 MB for ML-100K's vocabularies).
    """

    def __init__(self, weights: dict[str, np.ndarray], config: TowerConfig):
        names = list(config.user_concat)
        if not names:
            raise ArtifactError(
                "tower.json does not record the user tower's input order (user_concat); "
                "the model was exported before it was: retrain it with `recsys train`"
            )
        if sorted(names) != sorted(config.user_tables()):
            raise ArtifactError(
                f"tower.json's user_concat {names} does not match user_parts "
                f"{list(config.user_parts)}; re-export the model"
            )
        history = "item_emb" in names
        super().__init__(weights, config, names + [f"user_{p}" for p in _MLP_PARTS])
        # The hidden kernel's input rows follow the concatenation the model recorded.
        kernel = weights["user_hidden_w"]
        widths = {n: weights[n].shape[1] for n in names}
        if sum(widths.values()) != kernel.shape[0]:
            raise ArtifactError(
                f"user_hidden_w has {kernel.shape[0]} input rows, the tables "
                f"{sum(widths.values())}; re-export the model"
            )
        bounds = dict(zip(names, np.cumsum([0, *widths.values()]).tolist(), strict=False))
        folded = {n: weights[n] @ kernel[bounds[n] : bounds[n] + widths[n]] for n in names}
        # Every query has exactly one user-id row at weight 1, so the hidden bias is added to
        # those rows once, here, instead of to every query.
        folded["user_emb"] = folded["user_emb"] + weights["user_hidden_b"]
        hidden = kernel.shape[1]
        stack = np.concatenate([*folded.values(), np.zeros((1, hidden), np.float32)])
        # One more column, 1 in the user-id rows: the hidden layer then carries a constant 1
        # (ReLU keeps it), and the output bias rides on it as one more row of the output
        # kernel, so the output layer is one product.
        starts = np.cumsum([0] + [len(t) for t in folded.values()]).tolist()
        self._offset = dict(zip(names, starts[:-1], strict=False))
        ones = np.zeros((len(stack), 1), np.float32)
        user = self._offset["user_emb"]
        ones[user : user + len(folded["user_emb"])] = 1.0
        self._stack = np.concatenate([stack, ones], axis=1)
        self._pad = starts[-1]
        """The zero row: history slots beyond a user's recent items point here."""
        self._scalars = [n for n in names if n != "item_emb"]
        self._picks = [(USER_SCALARS.index(USER_TABLES[n]), self._offset[n]) for n in self._scalars]
        """Which of ``encode_user``'s ids each scalar row is, and its table's offset."""
        self._history = history
        self._out = np.concatenate([weights["user_out_w"], weights["user_out_b"][np.newaxis]])
        self._tables: dict[int, np.ndarray] = {}
        self._position: np.ndarray | None = None
        if history and config.history_pooling == "position":
            if "history_position" not in weights:
                raise ArtifactError("tower weights lack history_position; re-export the model")
            self._position = np.exp(weights["history_position"][:, 0])

    @classmethod
    def load(cls, model_dir: Path) -> NumpyUserTower:
        return cls(load_weights(model_dir / "weights.npz"), load_tower_config(model_dir))

    def __call__(self, inputs: UserInputs) -> np.ndarray:
        """Encoded inputs (training's and evaluation's form) → ``[batch, dim]``."""
        o = self._offset
        parts = [
            o[n] + getattr(inputs, USER_TABLES[n]).astype(np.intp)[:, np.newaxis]
            for n in self._scalars
        ]
        counts = np.zeros(len(inputs.user), np.intp)
        if self._history:
            history = inputs.history.astype(np.intp)
            known = history > 0
            # Known items first, in order (unknown ones and padding are masked out).
            order = np.argsort(~known, axis=1, kind="stable")
            history = np.take_along_axis(history, order, axis=1)
            counts = known.sum(axis=1)
            slots = np.arange(history.shape[1]) < counts[:, np.newaxis]
            parts.append(np.where(slots, history + o["item_emb"], self._pad))
        return self._forward(np.concatenate(parts, axis=1), counts)

    def embed(
        self, space: FeatureSpace, users: Sequence[UserFeatures], times_ms: Sequence[int]
    ) -> np.ndarray:
        """Users' features at their request times → ``[len(users), dim]``: the one encoder
        (``space.encode_user``) straight into rows of the stack, then ``_forward`` (the
        serving hot path; ``__call__`` of ``encode_users`` gives the same bits)."""
        encode, picks, pad, length = space.encode_user, self._picks, self._pad, 0
        history, item = self._history, self._offset.get("item_emb", 0)
        if history:
            length = space.history_length
        rows: list[int] = []
        counts: list[int] = []
        for u, t in zip(users, times_ms, strict=True):
            scalars, recent = encode(u, t)
            rows += [offset + scalars[i] for i, offset in picks]
            if history:
                known = [item + i for i in recent if i]
                rows += known
                rows += _pads(pad, length - len(known))
                counts.append(len(known))
        width = len(picks) + length
        grid = np.fromiter(rows, np.intp, len(users) * width).reshape(len(users), width)
        return self._forward(grid, np.array(counts or [0] * len(users), np.intp))

    def _forward(self, rows: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """``[batch, R]`` rows of the stack (the scalar inputs, then the known recent items,
        then padding) and ``[batch]`` how many recent items are known → ``[batch, dim]``, one
        user's arithmetic independent of the rest of the batch."""
        weights = self._weight_table(rows.shape[1])[counts][:, np.newaxis, :]
        hidden = weights @ self._stack[rows]  # [batch, 1, hidden + 1]
        np.maximum(hidden, 0.0, out=hidden)
        out: np.ndarray = (hidden @ self._out)[:, 0, :]
        if self.config.normalize:
            # tf.math.l2_normalize: x / sqrt(max(sum(x^2), 1e-12)); the sum as a one-row product
            norm = (out[:, np.newaxis, :] @ out[:, :, np.newaxis])[:, 0, :]
            out /= np.sqrt(np.maximum(norm, 1e-12, out=norm), out=norm)
        return out

    def _weight_table(self, width: int) -> np.ndarray:
        """``[slots + 1, width] float32``; row n: the weights of a user with n known recent
        items (1 for each scalar input; for the recent items 1/n each, or with position
        pooling ``exp(logit[rank])`` normalised over the n; 0 for padding), so a batch's
        weights are one gather."""
        table = self._tables.get(width)
        if table is None:
            scalars = len(self._scalars)
            table = np.zeros((width - scalars + 1, width), np.float32)
            table[:, :scalars] = 1.0
            for n in range(1, width - scalars + 1):
                if self._position is None:
                    table[n, scalars : scalars + n] = np.float32(1.0) / np.float32(n)
                else:
                    weights = self._position[:n]
                    table[n, scalars : scalars + n] = weights / weights.sum()
            self._tables[width] = table
        return table


@functools.cache
def _pads(pad: int, n: int) -> tuple[int, ...]:
    return (pad,) * n


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
        embedding: np.ndarray = self._fn(**tensors)["embedding"].numpy()
        return embedding

    def embed(
        self, space: FeatureSpace, users: Sequence[UserFeatures], times_ms: Sequence[int]
    ) -> np.ndarray:
        return np.asarray(self(space.encode_users(users, times_ms)), np.float32)


def load_user_tower(
    model_dir: Path, runtime: str = "numpy"
) -> NumpyUserTower | SavedModelUserTower:
    """The user tower on the named runtime: ``numpy`` or ``savedmodel``."""
    if runtime == "savedmodel":
        return SavedModelUserTower(model_dir)
    return NumpyUserTower.load(model_dir)
