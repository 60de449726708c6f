"""The synthetic shop (``recsys generate-shop``): read through its own schema, with the shape
it promises: no profiles, a category tree as tags, no item seen before its launch, repeat
visits, popularity that drifts, and the same shop for the same seed (fast tier: a small one)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.data.dataset import SECONDS_PER_YEAR, Dataset, load_dataset
from recsys.data.schema import load_schema
from recsys.data.shop import DEPARTMENTS, generate


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    folder = tmp_path_factory.mktemp("shop")
    schema = generate(folder, items=5_000, interactions=60_000, seed=3, log=lambda _: None)
    return load_dataset(load_schema(schema, folder))


def test_the_shop_reads_through_its_schema_without_profiles(shop: Dataset) -> None:
    assert len(shop.interactions) == 60_000 and len(shop.items) == 5_000
    assert shop.schema.users is None and len(shop.users) == 0
    assert set(shop.interactions["event_type"]) == {"view", "cart", "purchase"}
    tree = shop.items["category"]
    assert all(len(t) == 2 and t[1].startswith(f"{t[0]}/") for t in tree)
    assert {t[0] for t in tree} <= set(DEPARTMENTS)
    assert shop.schema.filter == "category"
    assert shop.items["leaf"].str.count("/").eq(2).all()
    assert (shop.items["price"] > 0).all() and shop.items["name"].str.len().gt(0).all()


def test_no_item_is_seen_before_its_launch_and_new_items_keep_arriving(shop: Dataset) -> None:
    launch_s = (shop.items.set_index("item_id")["launched"] - 1970) * SECONDS_PER_YEAR
    events = shop.interactions
    first_seen = events.groupby("item_id")["timestamp"].min()
    assert (first_seen >= launch_s.loc[first_seen.index] - 1).all()
    start, end = events["timestamp"].min(), events["timestamp"].max()
    arriving = launch_s[(launch_s > start) & (launch_s < end)]
    assert len(arriving) > 0.5 * len(launch_s)  # most of the catalog launches during the span
    late = set(arriving[arriving > start + 0.75 * (end - start)].index)
    assert late & set(events["item_id"])  # and the late ones are bought too


def test_visitors_come_back_and_popularity_drifts(shop: Dataset) -> None:
    events = shop.interactions
    per_pair = events.groupby(["user_id", "item_id"]).size()
    assert 0.05 < (per_pair > 1).mean() < 0.6
    per_visitor = events.groupby("user_id")["timestamp"].agg(["min", "max"])
    assert ((per_visitor["max"] - per_visitor["min"]) > 86_400).mean() > 0.3  # several visits
    month = 30 * 86_400
    start, end = events["timestamp"].min(), events["timestamp"].max()
    first = events[events["timestamp"] < start + month]["item_id"].value_counts().index[:50]
    last = events[events["timestamp"] > end - month]["item_id"].value_counts().index[:50]
    assert len(set(first) & set(last)) < 25


def test_the_same_seed_draws_the_same_shop(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", items=500, interactions=3_000, seed=1, log=lambda _: None)
    b = generate(tmp_path / "b", items=500, interactions=3_000, seed=1, log=lambda _: None)
    c = generate(tmp_path / "c", items=500, interactions=3_000, seed=2, log=lambda _: None)
    read = [load_dataset(load_schema(s, s.parent)).interactions for s in (a, b, c)]
    pd.testing.assert_frame_equal(read[0], read[1])
    assert not np.array_equal(read[0]["item_id"], read[2]["item_id"])
