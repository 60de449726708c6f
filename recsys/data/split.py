"""Splitting interactions into train and test sets by time."""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd

from recsys.errors import DataError


def temporal_split(
    interactions: pd.DataFrame, test_fraction: float = 0.2
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Splits interactions at one global cut time, so no training row is newer than a test row.

    The cut is the timestamp at position ``round((1 - test_fraction) * n)`` of the sorted
    timestamps. Train holds rows strictly before the cut and test rows at or after it, so
    ties at the cut all go to test and the test share can exceed ``test_fraction`` slightly.

    Args:
        interactions: Needs a ``timestamp`` column; other columns are carried along.
        test_fraction: Share of interactions meant for the test side, strictly between 0 and 1.

    Returns:
        ``(train, test)``, each keeping the input's row order, with a fresh RangeIndex.

    Raises:
        DataError: ``test_fraction`` is not in (0, 1), ``timestamp`` is missing, there are
            no rows, or train would be empty (too few rows, or all timestamps equal).
    """
    if (
        isinstance(test_fraction, bool)
        or not isinstance(test_fraction, numbers.Real)
        or not (0.0 < test_fraction < 1.0)
    ):
        raise DataError(
            f"test_fraction must be a number strictly between 0 and 1, got {test_fraction!r}"
        )
    if "timestamp" not in interactions.columns:
        raise DataError(
            f"temporal_split needs a 'timestamp' column, found {list(interactions.columns)}"
        )
    n = len(interactions)
    if n == 0:
        raise DataError("temporal_split got no interactions to split")
    timestamps = interactions["timestamp"].to_numpy()
    position = min(round((1.0 - test_fraction) * n), n - 1)
    cut = np.partition(timestamps, position)[position]
    is_train = timestamps < cut
    if not is_train.any():
        # The cut is always a row's own timestamp, so test is never empty; train can be.
        raise DataError(
            f"temporal_split with test_fraction={test_fraction} leaves train empty "
            f"({n:,} interactions, cut at timestamp {cut}); use more data or a smaller fraction"
        )
    train = interactions.loc[is_train].reset_index(drop=True)
    test = interactions.loc[~is_train].reset_index(drop=True)
    return train, test
