"""The catalog event: an upsert decodes to the row the catalog file would give for the same
item (every kind), a delete to none, and each kind of bad event is refused with its reason
(fast tier; the round trip through a real broker is in ``test_catalog_topic``)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from catalog.events import (
    ItemChange,
    catalog_frame,
    check,
    decode,
    encode_delete,
    encode_upsert,
)
from recsys.data.schema import load_schema
from recsys.errors import DataError
from recsys.v1 import catalog_pb2
from tests.test_schema import read, write


def _schema(tmp_path: Path):
    return load_schema(write(tmp_path), tmp_path)


def test_an_upsert_is_the_row_the_catalog_file_gives(tmp_path: Path) -> None:
    """The same three items as the test catalog file, sent as events: equal rows."""
    schema = _schema(tmp_path)
    file_rows = read(tmp_path).items.set_index("item_id")
    sent = {
        "p1": {
            "category": ["home", "home/kitchen", "home"],  # duplicates dropped, order kept
            "brand": "acme",
            "price": 9.5,
            "launched": "2020-07-02",
            "name": "Red Kettle",
        },
        "p2": {
            "category": ["toys"],
            "price": 120,
            "launched": 1672531200,  # 2023-01-01T00:00:00Z as Unix seconds
            "name": "Größe Bär",
        },  # no brand: missing, as the file's empty cell
        "p3": {"brand": "zed", "name": "Zed"},
    }
    for item_id, features in sent.items():
        _, raw = encode_upsert(item_id, features, 1_700_000_000_000, f"e-{item_id}")
        change = decode(raw, schema)
        assert (change.item_id, change.event_id, change.time_ms) == (
            item_id,
            f"e-{item_id}",
            1_700_000_000_000,
        )
        assert not change.deleted and change.features is not None
        assert list(change.features) == list(schema.item_features)
        for name, value in change.features.items():
            want = file_rows.loc[item_id, name]
            if isinstance(want, float) and math.isnan(want):
                assert math.isnan(value), (item_id, name)
            else:
                assert value == pytest.approx(want, abs=1e-9), (item_id, name)
    frame = catalog_frame([check(i, f, schema) for i, f in sent.items()])
    assert list(frame.columns) == ["item_id", *schema.item_features]
    assert frame["category"].tolist() == [("home", "home/kitchen"), ("toys",), ()]


def test_a_delete_has_no_features(tmp_path: Path) -> None:
    _, raw = encode_delete("p2", 5, "gone")
    change = decode(raw, _schema(tmp_path))
    assert change == ItemChange("gone", "p2", 5, None) and change.deleted


def _raw(**fields: object) -> bytes:
    return catalog_pb2.CatalogEvent(**fields).SerializeToString()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: b"\xff\xff\xff", "undecodable"),
        (lambda: _raw(event_id="e", event_time_ms=1, delete={}), "no item_id"),
        (lambda: _raw(item_id="p", event_time_ms=1, delete={}), "no event_id"),
        (lambda: _raw(item_id="p", event_id="e", delete={}), "no event_time_ms"),
        (lambda: _raw(item_id="p", event_id="e", event_time_ms=1), "neither an upsert nor"),
        (lambda: encode_upsert("p", {"colour": "red", "brand": "x"}, 1)[1], "unknown feature"),
        (lambda: encode_upsert("p", {"category": "toys"}, 1)[1], "needs a list of strings"),
        (lambda: encode_upsert("p", {"price": "cheap"}, 1)[1], "needs a number, got a string"),
        (lambda: encode_upsert("p", {"name": 3}, 1)[1], "needs a string, got a number"),
        (lambda: encode_upsert("p", {"price": float("nan")}, 1)[1], "not a finite number"),
        (lambda: encode_upsert("p", {"launched": "last tuesday"}, 1)[1], "not an ISO-8601"),
    ],
)
def test_a_bad_event_is_refused_with_its_reason(tmp_path: Path, make, reason: str) -> None:
    with pytest.raises(DataError, match=reason):
        decode(make(), _schema(tmp_path))


def test_unknown_features_are_named_with_what_the_schema_declares(tmp_path: Path) -> None:
    with pytest.raises(DataError) as refused:
        check("p", {"colour": "red"}, _schema(tmp_path))
    assert "'colour'" in str(
        refused.value
    ) and "declares brand, category, launched, name, price" in str(refused.value)


def test_a_value_of_no_json_type_is_refused_before_it_is_sent() -> None:
    for value in (True, {"a": 1}, None):
        with pytest.raises(DataError, match="not a string, a number or a list"):
            encode_upsert("p", {"brand": value}, 1)


def test_movielens_items_decode_to_the_towers_columns() -> None:
    schema = load_schema(None, Path("/data"))
    _, raw = encode_upsert(
        "new-film", {"genres": ["Comedy", "Drama"], "title": "A New Film", "release_year": 2026}, 9
    )
    features = decode(raw, schema).features
    assert features == {
        "genres": ("Comedy", "Drama"),
        "title": "A New Film",
        "release_year": 2026.0,
    }
    assert np.isnan(decode(encode_upsert("x", {}, 9)[1], schema).features["release_year"])  # type: ignore[index]
