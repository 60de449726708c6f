"""The synthetic event stream: shaped like the data set, skewed, reproducible, sendable."""

from __future__ import annotations

import numpy as np
import pytest

from features.events import encode
from features.stream.fold import check
from features.stream.synthetic import synthetic_interactions
from recsys.errors import DataError

N = 20_000


@pytest.fixture(scope="module")
def stream(ml):
    return synthetic_interactions(ml, N, seed=1, start_s=1_700_000_000)


def test_same_seed_same_stream_and_columns_like_the_data_set(ml, stream) -> None:
    again = synthetic_interactions(ml, N, seed=1, start_s=1_700_000_000)
    assert stream.equals(again)
    assert not stream.equals(synthetic_interactions(ml, N, seed=2, start_s=1_700_000_000))
    assert list(stream.columns) == list(ml.interactions.columns)
    assert dict(stream.dtypes) == dict(ml.interactions.dtypes)
    assert len(stream) == N


def test_items_are_catalog_items_skewed_towards_the_popular(ml, stream) -> None:
    assert stream["item_id"].isin(ml.items["item_id"]).all()
    share = stream["item_id"].value_counts(normalize=True)
    top_decile = share.head(len(ml.items) // 10).sum()
    assert top_decile > 0.5, f"the top 10% of items drew only {top_decile:.0%} of events"
    real_top = ml.interactions["item_id"].value_counts().index[0]
    assert share.index[0] == real_top


def test_a_share_of_new_users_and_known_users_skewed(ml, stream) -> None:
    known = stream["user_id"].isin(ml.users["user_id"])
    assert 0.03 < 1 - known.mean() < 0.07
    assert stream.loc[~known, "user_id"].str.startswith("synthetic-").all()
    counts = stream.loc[known, "user_id"].value_counts()
    assert counts.iloc[0] > 20 * counts.median()


def test_time_ordered_at_the_asked_density_and_every_event_passes_the_ingester(ml, stream) -> None:
    ts = stream["timestamp"].to_numpy()
    assert (np.diff(ts) >= 0).all()
    assert ts[0] == 1_700_000_000 and ts[-1] == 1_700_000_000 + (N - 1) // 1000
    catalog = set(ml.items["item_id"])
    for row in stream.head(200).itertuples():
        _, value = encode("e", row.user_id, row.item_id, int(row.timestamp) * 1000)
        check(value, catalog, now_ms=1_700_000_100_000)


@pytest.mark.parametrize(
    "kwargs", [{"n": 0}, {"n": 5, "new_user_fraction": 1.5}, {"n": 5, "per_second": 0}]
)
def test_bad_parameters_are_refused(ml, kwargs) -> None:
    n = kwargs.pop("n")
    with pytest.raises(DataError):
        synthetic_interactions(ml, n, **kwargs)
