"""The three evaluation protocols this project reports, as plain data splits.

Each protocol turns the interactions frame of :class:`recsys.data.dataset.Dataset` into a
:class:`Split`, so models are trained and scored on exactly the same rows whoever runs them:

* :func:`temporal_split_protocol`: train on the past, test on the future (one global cut time),
  with an optional validation slice at the end of the past. This project's headline protocol.
* :func:`recbole_split`: RecBole's default for general recommenders (``order: RO``,
  ``split: {RS: [0.8, 0.1, 0.1]}``, ``group_by: user``): every user's ratings shuffled and cut
  8:1:1 with RecBole's own rounding. :func:`evaluation.recbole.write_recbole_atomic` exports
  a split so RecBole itself can train on the identical rows (``benchmark_filename: [train,
  valid, test]``).
* :func:`tfrs_split`: the TensorFlow Recommenders tutorials' protocol: one global random
  permutation of all ratings, 80% train and 20% test.

Pure pandas/numpy: importing this module never imports TensorFlow.

Every part of every split is returned in canonical order (timestamp, then user id, then item
id, ids ordered shorter-first then lexicographically like :func:`recsys.data.load_movielens`)
with a fresh RangeIndex, so the parts do not depend on the input's row order.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys.data import temporal_split
from recsys.errors import DataError

INTERACTION_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "value", "timestamp")
"""Columns every input frame must have; other columns are carried along unchanged."""


@dataclass(frozen=True, eq=False)
class Split:
    """One evaluation protocol applied to a set of interactions.

    ``eq=False`` because a generated ``__eq__`` would compare DataFrames elementwise and
    raise; compare the frames with ``pandas.testing`` instead.

    Attributes:
        name: Short protocol name: ``"temporal"``, ``"recbole"`` or ``"tfrs"``.
        train: ``[n_train rows]`` with the input's columns (``user_id`` str, ``item_id`` str,
            ``value`` float32, ``timestamp`` int64 seconds, plus any others).
        valid: ``[n_valid rows]``, same columns, or ``None`` when the protocol has none.
        test: ``[n_test rows]``, same columns.
        description: One sentence saying how the rows were split, parameters included.
    """

    name: str
    train: pd.DataFrame
    valid: pd.DataFrame | None
    test: pd.DataFrame
    description: str

    def parts(self) -> dict[str, pd.DataFrame]:
        """The non-``None`` parts by name, in ``train``, ``valid``, ``test`` order."""
        named = {"train": self.train, "valid": self.valid, "test": self.test}
        return {part: frame for part, frame in named.items() if frame is not None}

    def known_and_evaluated(self, on: str = "test") -> tuple[pd.DataFrame, pd.DataFrame]:
        """What is known before the evaluated part, and that part: ``on="test"`` gives
        (train + valid, test), ``on="valid"`` gives (train, valid).

        Raises:
            ValueError: ``on="valid"`` for a split without a validation part.
        """
        if on == "valid":
            if self.valid is None:
                raise ValueError(f"the {self.name} split has no validation part")
            return self.train, self.valid
        parts = [self.train] if self.valid is None else [self.train, self.valid]
        return pd.concat(parts, ignore_index=True), self.test


# Protocols ---------------------------------------------------------------------------------


def temporal_split_protocol(
    interactions: pd.DataFrame,
    test_fraction: float = 0.2,
    valid_fraction: float | None = 0.1,
) -> Split:
    """Train on the past, test on the future; validate on the end of the past.

    The test cut is :func:`recsys.data.temporal_split` on all interactions. The validation
    part, if any, is the same function applied to the training part alone, so model selection
    never sees the test period: every train time < every valid time < every test time (ties
    at a cut all go to the later part, so the later shares can slightly exceed the fractions).

    Args:
        interactions: ``[n rows]`` with :data:`INTERACTION_COLUMNS`.
        test_fraction: Share of all interactions meant for test, in (0, 1).
        valid_fraction: Share of the *training* part moved to valid, in (0, 1); ``None``
            keeps all of the past for training and sets ``valid`` to ``None``.

    Returns:
        The ``"temporal"`` split.

    Raises:
        DataError: Missing columns, no rows, a fraction outside (0, 1), or a cut that would
            leave a part empty.
    """
    _check_input(interactions)
    if valid_fraction is not None:
        _check_fraction("valid_fraction", valid_fraction)
    frame = _canonical(interactions)
    past, test = temporal_split(frame, test_fraction)
    if valid_fraction is None:
        return Split(
            name="temporal",
            train=past,
            valid=None,
            test=test,
            description=(
                f"global time cut: the latest {test_fraction:g} of interactions (ties at the "
                f"cut included) are test, the rest train; no validation part"
            ),
        )
    train, valid = temporal_split(past, valid_fraction)
    return Split(
        name="temporal",
        train=train,
        valid=valid,
        test=test,
        description=(
            f"global time cuts: the latest {test_fraction:g} of interactions are test, the "
            f"latest {valid_fraction:g} of the remaining past are valid, the rest train "
            f"(ties at a cut go to the later part)"
        ),
    )


def recbole_split(
    interactions: pd.DataFrame,
    seed: int = 2020,
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
) -> Split:
    """RecBole's per-user random ratio split (``order: RO``, ``split: RS``, by user).

    Mirrors ``Dataset.build`` and ``Dataset.split_by_ratio(ratios, group_by=uid_field)`` of
    RecBole 1.2.1: shuffle all interactions once, group them by user keeping the shuffled
    order, and cut each user's list into consecutive parts whose sizes are
    :func:`recbole_split_sizes`. RecBole shuffles with ``torch.randperm``; here the shuffle
    is ``numpy.random.default_rng(seed).permutation`` over the rows first sorted by
    (user, timestamp, item, value), so the split is deterministic for a seed and
    independent of the input's row order, but not the same rows RecBole would draw for the
    same seed. Export it with :func:`evaluation.recbole.write_recbole_atomic` to make RecBole
    use these rows.

    Args:
        interactions: ``[n rows]`` with :data:`INTERACTION_COLUMNS`.
        seed: Seed of the shuffle; 2020 is RecBole's default ``seed``.
        ratios: ``(train, valid, test)`` or ``(train, test)`` weights, each >= 0 with train
            and test > 0; normalised by their sum like RecBole does.

    Returns:
        The ``"recbole"`` split; ``valid`` is ``None`` when two ratios are given.

    Raises:
        DataError: Missing columns, no rows, or invalid ratios.
    """
    weights = _check_ratios(ratios)
    _check_input(interactions)
    by_user = _sorted(interactions, ("user_id", "timestamp", "item_id", "value"))
    n = len(by_user)
    shuffled = by_user.iloc[np.random.default_rng(seed).permutation(n)].reset_index(drop=True)
    users = shuffled["user_id"]
    position = users.groupby(users, sort=False).cumcount().to_numpy()
    counts = users.map(users.value_counts()).to_numpy()
    # Part index per row: 0 = train, 1 = valid (if any), 2 = test. One size computation per
    # distinct user count, not per user.
    part = np.empty(n, np.int64)
    for total in np.unique(counts):
        bounds = np.cumsum(recbole_split_sizes(int(total), weights))[:-1]
        rows = counts == total
        part[rows] = np.searchsorted(bounds, position[rows], side="right")
    frames = [_canonical(shuffled.loc[part == p]) for p in range(len(weights))]
    shown = ", ".join(f"{r:g}" for r in ratios)
    return Split(
        name="recbole",
        train=frames[0],
        valid=frames[1] if len(frames) == 3 else None,
        test=frames[-1],
        description=(
            f"RecBole RO/RS per-user random split: each user's interactions shuffled "
            f"(numpy default_rng({seed})) and cut by ratios [{shown}] with RecBole's "
            f"rounding (later parts int(ratio * n), the rest to train)"
        ),
    )


def recbole_split_sizes(total: int, ratios: Sequence[float]) -> tuple[int, ...]:
    """Part sizes RecBole 1.2.1's ``Dataset._calcu_split_ids`` gives one group.

    Every part after the first gets ``int(ratio * total)`` (rounded down), the first gets the
    rest. Then, walking from the last part backwards and stopping as soon as the first part
    holds 1 row or fewer, a part whose exact share ``ratio * total`` lies strictly between 0
    and 1 takes one row from the first part, so tiny groups still reach valid and test.

    Args:
        total: Rows in the group (a user's interaction count), >= 0.
        ratios: Part weights; normalised by their sum first, exactly as
            ``split_by_ratio`` does (so float rounding matches RecBole's too).

    Returns:
        ``[len(ratios)]`` part sizes summing to ``total``.

    Raises:
        DataError: ``total`` is negative or the ratios are invalid.

    Example:
        ``recbole_split_sizes(29, (0.8, 0.1, 0.1)) == (25, 2, 2)`` and
        ``recbole_split_sizes(5, (0.8, 0.1, 0.1)) == (3, 1, 1)``.
    """
    if total < 0:
        raise DataError(f"a group cannot have {total} rows")
    weights = _check_ratios(ratios)
    tot_ratio = sum(weights)
    shares = [r / tot_ratio for r in weights]
    cnt = [int(shares[i] * total) for i in range(len(shares))]
    cnt[0] = total - sum(cnt[1:])
    for i in range(1, len(shares)):
        if cnt[0] <= 1:
            break
        if 0 < shares[-i] * total < 1:
            cnt[-i] += 1
            cnt[0] -= 1
    return tuple(cnt)


def tfrs_split(interactions: pd.DataFrame, seed: int = 42, train_fraction: float = 0.8) -> Split:
    """The TFRS tutorials' split: one global random permutation, 80% train, 20% test.

    The tutorials do ``ratings.shuffle(100_000, seed=42, reshuffle_each_iteration=False)``
    then ``take(80_000)`` / ``skip(80_000)``. Here the permutation is
    ``numpy.random.default_rng(seed).permutation`` over the rows in canonical order, so the
    protocol is the same (users and items leak freely across the cut, and time is ignored)
    but the drawn rows differ from TensorFlow's shuffle.

    Args:
        interactions: ``[n rows]`` with :data:`INTERACTION_COLUMNS`.
        seed: Permutation seed (42 in the tutorials).
        train_fraction: Share for train, in (0, 1); train gets ``round(train_fraction * n)``
            rows, test the rest.

    Returns:
        The ``"tfrs"`` split, ``valid`` ``None``.

    Raises:
        DataError: Missing columns, no rows, a fraction outside (0, 1), or an empty part.
    """
    _check_fraction("train_fraction", train_fraction)
    _check_input(interactions)
    frame = _canonical(interactions)
    n = len(frame)
    n_train = round(train_fraction * n)
    if not 0 < n_train < n:
        raise DataError(
            f"tfrs_split with train_fraction={train_fraction} leaves a part empty for {n:,} "
            f"interactions"
        )
    order = np.random.default_rng(seed).permutation(n)
    return Split(
        name="tfrs",
        train=_canonical(frame.iloc[order[:n_train]]),
        valid=None,
        test=_canonical(frame.iloc[order[n_train:]]),
        description=(
            f"TFRS tutorial split: one global random permutation (numpy default_rng({seed})), "
            f"first {n_train:,} interactions ({train_fraction:g}) train, the other "
            f"{n - n_train:,} test"
        ),
    )


# Helpers -----------------------------------------------------------------------------------


def check_columns(frame: pd.DataFrame, what: str) -> None:
    """Raises :class:`DataError` naming ``what`` and the columns it lacks, for every reader
    of an interactions frame (the splits here, the RecBole export)."""
    missing = [c for c in INTERACTION_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{what} lacks column(s) {missing}; found {list(frame.columns)}")


def _check_fraction(name: str, value: float) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not (0.0 < float(value) < 1.0)
    ):
        raise DataError(f"{name} must be a number strictly between 0 and 1, got {value!r}")


def _check_ratios(ratios: Sequence[float]) -> list[float]:
    values = list(ratios)
    if len(values) not in (2, 3) or not all(
        isinstance(r, numbers.Real) and not isinstance(r, bool) and math.isfinite(r) and r >= 0
        for r in values
    ):
        raise DataError(
            f"ratios must be 2 or 3 finite non-negative numbers (train, [valid,] test), "
            f"got {ratios!r}"
        )
    if values[0] <= 0 or values[-1] <= 0:
        raise DataError(f"the train and test ratios must be positive, got {ratios!r}")
    return [float(r) for r in values]


def _sorted(interactions: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Rows stably sorted by ``keys``; id columns shorter-first, then lexicographically."""
    columns = []
    for key in keys:
        values = interactions[key].to_numpy()
        if key in ("user_id", "item_id"):
            # Sort the distinct ids only, then every row by its id's rank: integer keys.
            codes, uniques = pd.factorize(values)
            text = pd.Series(uniques).astype(str)
            by_id = pd.DataFrame({"len": text.str.len(), "text": text})
            ranked = by_id.sort_values(["len", "text"], kind="mergesort").index.to_numpy()
            rank = np.empty(len(uniques), np.int64)
            rank[ranked] = np.arange(len(uniques))
            values = rank[codes]
        columns.append(values)
    order = np.lexsort(columns[::-1])
    return interactions.iloc[order].reset_index(drop=True)


def _canonical(interactions: pd.DataFrame) -> pd.DataFrame:
    return _sorted(interactions, ("timestamp", "user_id", "item_id", "value"))


def _check_input(interactions: pd.DataFrame) -> None:
    check_columns(interactions, "the interactions frame")
    if len(interactions) == 0:
        raise DataError("no interactions to split")
