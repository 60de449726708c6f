"""The catalog topic folded into a rebuild's catalog: each changed item's newest change wins,
old rows of changed items are dropped, new items come last, and the size is exact, for the
data set's, a synthetic and a Parquet catalog (fast tier: small files)."""

from __future__ import annotations

from pathlib import Path

from catalog.events import ItemChange, catalog_frame
from catalog.fold import fold
from index.catalog import Catalog
from tests.test_schema import read


def _upsert(event: str, item: str, name: str) -> ItemChange:
    features = {"category": ("new",), "brand": "b", "price": 1.0, "launched": 2024.0}
    return ItemChange(event, item, 1, {**features, "name": name})


def _items(catalog: Catalog) -> dict[str, str]:
    frames = list(catalog.chunks())
    return {i: n for f in frames for i, n in zip(f["item_id"], f["name"], strict=True)}


def test_the_newest_change_of_each_item_wins(tmp_path: Path) -> None:
    changes = fold(
        [
            _upsert("e1", "p9", "first"),
            ItemChange("e2", "p1", 2, None),
            _upsert("e3", "p9", "second"),
            _upsert("e4", "p2", "renamed"),
            ItemChange("e5", "p8", 5, None),  # deleting what never was: nothing
            _upsert("e6", "p7", "gone soon"),
            ItemChange("e7", "p7", 7, None),
        ],
        {0: 7},
    )
    assert [c.item_id for c in changes.upserts] == ["p2", "p9"]
    data = read(tmp_path)
    base = Catalog.dataset(data, chunk=2)
    folded = base.with_changes(changes)
    items = _items(folded)
    assert items == {"p2": "renamed", "p3": "Zed", "p9": "second"}
    assert folded.size == len(items) == 3 and base.size == 3
    assert list(folded.chunks())[-1]["item_id"].tolist() == ["p2", "p9"]  # new rows last
    # A Parquet catalog folds the same way.
    parquet = Catalog.parquet(base.write_parquet(tmp_path / "c.parquet"), data.schema.items)
    assert _items(parquet.with_changes(changes)) == items
    assert parquet.with_changes(changes).size == 3


def test_a_synthetic_catalog_counts_its_generated_items(tmp_path: Path) -> None:
    data = read(tmp_path)
    synthetic = Catalog.synthetic(data, 10, chunk=4)
    changes = fold([ItemChange("e1", "s0", 1, None), _upsert("e2", "x", "new")], {0: 2})
    folded = synthetic.with_changes(changes)
    ids = [i for f in folded.chunks() for i in f["item_id"]]
    assert "s0" not in ids and "s6" in ids and ids[-1] == "x"
    assert folded.size == len(ids) == 10
    assert list(catalog_frame(changes.upserts)["item_id"]) == ["x"]
