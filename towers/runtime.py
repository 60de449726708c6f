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
from towers.encoding import FeatureSpace, Inputs
from towers.model_config import TowerConfig, table_input


def load_weights(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as data:
            return {name: np.ascontiguousarray(data[name], np.float32) for name in data.files}
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot load tower weights from {path}: {exc}") from exc


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
    """``Inputs`` (or raw features) → ``[batch, dim] float32``, the same function as the
    SavedModel.

    The first dense layer is folded into the embedding tables at load: its input is the
    concatenation of embedding rows (and pooled rows: the recent items', a tag set's, a
    text's words'), so ``concat(rows) @ W`` equals the weighted sum of each row's
    ``row @ W_slice``, and each table is multiplied by its slice once, ahead of time. The
    folded tables are stacked (with one zero row at the end, for padding), so a user is ``R``
    rows of the stack and ``R`` weights: 1 for each single-id input and each tag, ``1/n``
    for each of ``n`` recent items or words, 0 for padding. A batch is then one gather and one
    weighted sum.

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
        """The zero row: padding slots of pooled inputs point here."""
        self._singles = [n for n in names if config.pooling(n) == "one"]
        self._multi = [n for n in names if n != "item_emb" and config.pooling(n) != "one"]
        self._history = "item_emb" in names
        self._out = np.concatenate([weights["user_out_w"], weights["user_out_b"][np.newaxis]])
        self._tables: dict[int, np.ndarray] = {}
        self._position: np.ndarray | None = None
        if self._history and config.history_pooling == "position":
            if "history_position" not in weights:
                raise ArtifactError("tower weights lack history_position; re-export the model")
            self._position = np.exp(weights["history_position"][:, 0])
        self._picks: dict[int, list[tuple[int, int]]] = {}
        self._combined: dict[tuple[int, int], np.ndarray] = {}

    @classmethod
    def load(cls, model_dir: Path) -> NumpyUserTower:
        return cls(load_weights(model_dir / "weights.npz"), load_tower_config(model_dir))

    def __call__(self, inputs: Inputs) -> np.ndarray:
        """Encoded inputs (training's and evaluation's form) → ``[batch, dim]``."""
        o = self._offset
        n = len(inputs["user"])
        parts = [
            o[t] + inputs[table_input(t)].astype(np.intp)[:, np.newaxis] for t in self._singles
        ]
        weights = [np.ones((n, len(parts)), np.float32)]
        for t in self._multi:
            ids = inputs[table_input(t)].astype(np.intp)
            known = ids > 0  # known ids come first (encode_user drops unknown ones)
            parts.append(np.where(known, ids + o[t], self._pad))
            weights.append(_pooling_weights(known, self.config.pooling(t)))
        counts = np.zeros(n, np.intp)
        if self._history:
            history = inputs["history"].astype(np.intp)
            known = history > 0
            # Known items first, in order (unknown ones and padding are masked out).
            order = np.argsort(~known, axis=1, kind="stable")
            history = np.take_along_axis(history, order, axis=1)
            counts = known.sum(axis=1)
            slots = np.arange(history.shape[1]) < counts[:, np.newaxis]
            parts.append(np.where(slots, history + o["item_emb"], self._pad))
            weights.append(self._history_table(history.shape[1])[counts])
        return self._forward(np.concatenate(parts, axis=1), np.concatenate(weights, axis=1))

    def _picks_for(self, space: FeatureSpace) -> list[tuple[int, int]]:
        """Which of ``encode_user``'s single ids each single-id row is, and its table's
        offset (per feature space: a bundle's space never changes)."""
        picks = self._picks.get(id(space))
        if picks is None:
            order = space.user_inputs
            picks = [(order.index(table_input(t)), self._offset[t]) for t in self._singles]
            self._picks = {id(space): picks}
        return picks

    def embed(
        self, space: FeatureSpace, users: Sequence[UserFeatures], times_ms: Sequence[int]
    ) -> np.ndarray:
        """Users' features at their request times → ``[len(users), dim]``: the one encoder
        (``space.encode_user``) straight into rows of the stack, then ``_forward`` (the
        serving hot path; ``__call__`` of ``encode_users`` gives the same bits)."""
        encode, picks, pad = space.encode_user, self._picks_for(space), self._pad
        history, item = self._history, self._offset.get("item_emb", 0)
        length = space.history_length if history else 0
        multi = [
            (self._offset[f"user_{f.name}_emb"], f.width, f.pooling)
            for f in space.user_features
            if f.multi and self._multi
        ]
        rows: list[int] = []
        counts: list[int] = []
        pooled: list[float] = []
        for u, t in zip(users, times_ms, strict=True):
            singles, lists, recent = encode(u, t)
            rows += [offset + singles[i] for i, offset in picks]
            for (offset, width, pooling), found in zip(multi, lists, strict=False):
                rows += [offset + i for i in found]
                rows += _pads(pad, width - len(found))
                share = 1.0 if pooling == "sum" else 1.0 / max(len(found), 1)
                pooled += [share] * len(found) + [0.0] * (width - len(found))
            if history:
                known = [item + i for i in recent if i]
                rows += known
                rows += _pads(pad, length - len(known))
                counts.append(len(known))
        width = len(picks) + sum(w for _, w, _ in multi) + length
        grid = np.fromiter(rows, np.intp, len(users) * width).reshape(len(users), width)
        counted = np.array(counts or [0] * len(users), np.intp)
        if not multi:
            return self._forward(grid, self._weight_table(len(picks), length)[counted])
        extra = np.array(pooled, np.float32).reshape(len(users), -1)
        ones = np.ones((len(users), len(picks)), np.float32)
        weights = np.concatenate([ones, extra, self._history_table(length)[counted]], axis=1)
        return self._forward(grid, weights)

    def _forward(self, rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """``[batch, R]`` rows of the stack and ``[batch, R]`` their weights →
        ``[batch, dim]``, one user's arithmetic independent of the rest of the batch."""
        hidden = weights[:, np.newaxis, :] @ self._stack[rows]  # [batch, 1, hidden + 1]
        np.maximum(hidden, 0.0, out=hidden)
        out: np.ndarray = (hidden @ self._out)[:, 0, :]
        if self.config.normalize:
            # tf.math.l2_normalize: x / sqrt(max(sum(x^2), 1e-12)); the sum as a one-row product
            norm = (out[:, np.newaxis, :] @ out[:, :, np.newaxis])[:, 0, :]
            out /= np.sqrt(np.maximum(norm, 1e-12, out=norm), out=norm)
        return out

    def _weight_table(self, singles: int, slots: int) -> np.ndarray:
        """``[slots + 1, singles + slots]``: ``_history_table`` after ``singles`` ones, so a
        batch without multi-id user features gets its weights in one gather."""
        key = (singles, slots)
        table = self._combined.get(key)
        if table is None:
            ones = np.ones((slots + 1, singles), np.float32)
            table = np.concatenate([ones, self._history_table(slots)], axis=1)
            self._combined[key] = table
        return table

    def _history_table(self, slots: int) -> np.ndarray:
        """``[slots + 1, slots] float32``; row n: the weights of a user with n known recent
        items (1/n each, or with position pooling ``exp(logit[rank])`` normalised over the
        n; 0 for padding), so a batch's history weights are one gather."""
        table = self._tables.get(slots)
        if table is None:
            table = np.zeros((slots + 1, slots), np.float32)
            for n in range(1, slots + 1):
                if self._position is None:
                    table[n, :n] = np.float32(1.0) / np.float32(n)
                else:
                    weights = self._position[:n]
                    table[n, :n] = weights / weights.sum()
            self._tables[slots] = table
        return table


def _pooling_weights(known: np.ndarray, pooling: str) -> np.ndarray:
    """``[batch, width]`` weights of a pooled input's slots: 1 (sum) or 1/n (mean) for the
    known ids, 0 for padding."""
    weights = known.astype(np.float32)
    if pooling == "mean":
        weights /= np.maximum(known.sum(axis=1, keepdims=True), 1).astype(np.float32)
    return weights


@functools.cache
def _pads(pad: int, n: int) -> tuple[int, ...]:
    return (pad,) * n


class NumpyItemTower(_Tower):
    """``Inputs`` → ``[batch, dim] float32``."""

    def __init__(self, weights: dict[str, np.ndarray], config: TowerConfig):
        needs = ["item_emb", "item_hidden_w", "item_hidden_b", "item_out_w", "item_out_b"]
        needs += [f"item_{name}_emb" for name, _ in config.item_features]
        super().__init__(weights, config, needs)

    @classmethod
    def load(cls, model_dir: Path) -> NumpyItemTower:
        return cls(load_weights(model_dir / "weights.npz"), load_tower_config(model_dir))

    def __call__(self, inputs: Inputs) -> np.ndarray:
        w = self._w
        x = [w["item_emb"][inputs["item"]]]
        for name, pooling in self.config.item_features:
            table, ids = w[f"item_{name}_emb"], inputs[f"item_{name}"]
            if pooling == "one":
                x.append(table[ids])
            else:
                known = ids > 0
                share = _pooling_weights(known, pooling)[..., np.newaxis]
                x.append((table[ids] * share).sum(axis=1))
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

    def __call__(self, inputs: Inputs) -> np.ndarray:
        tensors = {name: self._tf.constant(value) for name, value in inputs.items()}
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
