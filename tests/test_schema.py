"""The data schema and the reader it drives: every kind read from CSV and Parquet, every time
unit, and each mistake refused with one line naming the file, the column and the fix, before
anything is written (fast tier: small files in a temporary folder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from commands.cli import main
from recsys.data.dataset import load_dataset
from recsys.data.schema import BUILTIN, load_schema
from recsys.errors import ConfigError, DataError

EVENTS = pd.DataFrame(
    {
        "who": ["007", "b", "007", "c"],
        "sku": ["p1", "p2", "p2", "p3"],
        "at": [
            "2024-01-01T10:00:00Z",
            "2024-01-01T10:00:05Z",
            "2024-01-02T00:00:00+01:00",
            "2024-01-03",
        ],
        "qty": [1, 2, 1, 3],
        "kind": ["view", "cart", "purchase", "view"],
    }
)
ITEMS = pd.DataFrame(
    {
        "sku": ["p1", "p2", "p3"],
        "path": ["home|home/kitchen", "toys", ""],
        "brand": ["acme", "", "zed"],
        "price": ["9.5", "120", ""],
        "launched": ["2020-07-02", "2023-01-01T00:00:00Z", ""],
        "name": ["Red Kettle", "Größe Bär", "Zed"],
    }
)
SCHEMA = {
    "name": "shop-test",
    "interactions": {
        "files": ["events.csv"],
        "user": "who",
        "item": "sku",
        "time": "at",
        "time_unit": "iso8601",
        "value": "qty",
        "event_type": "kind",
    },
    "items": {
        "file": "items.csv",
        "id": "sku",
        "features": {
            "category": {"kind": "tags", "column": "path", "separator": "|"},
            "brand": {"kind": "categorical"},
            "price": {"kind": "numeric", "buckets": 4},
            "launched": {"kind": "date"},
            "name": {"kind": "text"},
        },
    },
    "filter": "category",
}


def write(folder: Path, schema: dict | None = None, **frames: pd.DataFrame) -> Path:
    """The schema file and its CSV files (``events``, ``items`` unless replaced)."""
    for name, frame in {"events": EVENTS, "items": ITEMS, **frames}.items():
        frame.to_csv(folder / f"{name}.csv", index=False)
    path = folder / "schema.yaml"
    path.write_text(yaml.safe_dump(schema or SCHEMA))
    return path


def read(folder: Path, schema: dict | None = None, **frames: pd.DataFrame):
    return load_dataset(load_schema(write(folder, schema, **frames), folder))


def test_movielens_ships_as_a_schema_file() -> None:
    schema = load_schema(None, Path("/data"))
    assert schema.path == BUILTIN.absolute() and schema.name == "ml-100k"
    assert list(schema.user_features) == ["gender", "age", "occupation", "zip_code"]
    assert {n: f.kind for n, f in schema.item_features.items()} == {
        "genres": "tags",
        "title": "text",
        "release_year": "year",
    }
    assert schema.filter == "genres"
    assert schema.resolve(schema.items.file) == Path("/data/ml-100k/parquet/items.parquet")


def test_every_kind_is_read_from_csv_into_canonical_columns(tmp_path: Path) -> None:
    data = read(tmp_path)
    inter = data.interactions
    assert list(inter.columns) == ["user_id", "item_id", "timestamp", "value", "event_type"]
    assert inter["user_id"].tolist() == ["007", "b", "007", "c"]  # "007" stays a string
    assert inter["timestamp"].tolist() == [1704103200, 1704103205, 1704150000, 1704240000]
    assert inter["value"].dtype == np.float32 and inter["event_type"].iloc[2] == "purchase"
    items = data.items.set_index("item_id")
    assert items.loc["p1", "category"] == ("home", "home/kitchen")
    assert items.loc["p3", "category"] == () and items.loc["p2", "brand"] == ""
    assert items.loc["p2", "price"] == 120.0 and np.isnan(items.loc["p3", "price"])
    assert items.loc["p1", "launched"] == pytest.approx(2020.5, abs=0.01)
    assert np.isnan(items.loc["p3", "launched"]) and items.loc["p2", "name"] == "Größe Bär"
    assert len(data.users) == 0 and list(data.users.columns) == ["user_id"]
    assert data.item_labels()["p1"] == "Red Kettle"


def test_parquet_types_and_time_units(tmp_path: Path) -> None:
    events = pd.DataFrame(
        {
            "u": [1, 2, 3],
            "i": [10, 20, 10],
            "ms": [1_700_000_000_123, 1_700_000_001_999, 1_700_000_000_000],
        }
    )
    items = pd.DataFrame(
        {
            "id": [10, 20],
            "tags": [["a", "b", "a"], None],
            "born": pd.to_datetime(["2000-01-01", "2010-07-02"], utc=True),
            "year": [1999, None],
        }
    )
    users = pd.DataFrame({"uid": [1, 2], "zip": ["01234", "55455"]})
    events.to_parquet(tmp_path / "e.parquet")
    items.to_parquet(tmp_path / "i.parquet")
    users.to_parquet(tmp_path / "u.parquet")
    schema = {
        "name": "pq",
        "interactions": {"files": ["e.parquet"], "user": "u", "item": "i", "time": "ms"}
        | {"time_unit": "ms"},
        "items": {
            "file": "i.parquet",
            "id": "id",
            "features": {"tags": {"kind": "tags"}, "born": {"kind": "date"}}
            | {"year": {"kind": "year"}},
        },
        "users": {
            "file": "u.parquet",
            "id": "uid",
            "features": {"zip": {"kind": "categorical", "prefix": 3}},
        },
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(schema))
    data = load_dataset(load_schema(tmp_path / "s.yaml", tmp_path))
    assert data.interactions["timestamp"].tolist() == [1_700_000_000, 1_700_000_000, 1_700_000_001]
    assert data.interactions["user_id"].tolist() == ["1", "3", "2"]  # time, then user
    items = data.items.set_index("item_id")
    assert items.loc["10", "tags"] == ("a", "b") and items.loc["20", "tags"] == ()
    assert items.loc["20", "born"] == pytest.approx(2010.5, abs=0.01)
    assert items.loc["10", "year"] == 1999.0 and np.isnan(items.loc["20", "year"])
    assert data.users["zip"].tolist() == ["01234", "55455"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colour": 1}, r"schema\.yaml: colour: Extra inputs are not permitted"),
        (
            {"items": {**SCHEMA["items"], "features": {"x": {"kind": "vector"}}}},
            "items.features.x.kind",
        ),
        (
            {"items": {**SCHEMA["items"], "features": {"x": {"kind": "text", "prefix": 2}}}},
            "option 'prefix' applies to kind categorical, not text",
        ),
        ({"filter": "brand"}, "filter 'brand' must name an item feature of kind tags"),
        (
            {"items": {**SCHEMA["items"], "features": {"history": {"kind": "text"}}}},
            "feature name 'history' must be an identifier and not one of",
        ),
        (
            {
                "items": {
                    **SCHEMA["items"],
                    "features": {"p": {"kind": "numeric", "boundaries": [3, 1]}},
                }
            },
            "strictly ascending",
        ),
        (
            {"interactions": {"files": ["e.csv"], "user": "u", "item": "i"}},
            "interactions.time: Field required",
        ),
    ],
)
def test_a_wrong_schema_names_its_file_and_key(tmp_path: Path, change: dict, message: str) -> None:
    path = tmp_path / "schema.yaml"
    path.write_text(yaml.safe_dump({**SCHEMA, **change}))
    with pytest.raises(ConfigError, match=message) as error:
        load_schema(path, tmp_path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        ({"items": ITEMS.drop(columns=["brand"])}, r"items\.csv has no column 'brand'"),
        ({"events": EVENTS.rename(columns={"at": "when"})}, r"events\.csv has no column 'at'"),
        (
            {"items": ITEMS.assign(price=["cheap", "1", "2"])},
            r"column 'price' row 0: 'cheap' is not a number",
        ),
        ({"events": EVENTS.assign(at=["yesterday"] * 4)}, r"'yesterday' is not an ISO-8601 time"),
        (
            {"events": EVENTS.assign(sku=["p1", "p9", "p2", "p8"])},
            r"2 item id\(s\) missing from the catalog .*items\.csv: 'p9', 'p8'",
        ),
        (
            {"items": pd.concat([ITEMS, ITEMS.iloc[:1]])},
            r"items\.csv repeats 1 id\(s\) in column 'sku': 'p1'",
        ),
        ({"events": EVENTS.assign(who=["a", None, "b", "c"])}, r"column 'who' has 1 empty id\(s\)"),
        ({"events": EVENTS.iloc[:0]}, r"events\.csv is empty"),
    ],
)
def test_bad_data_is_one_line_naming_the_file_and_column(
    tmp_path: Path, frames: dict, message: str
) -> None:
    with pytest.raises(DataError, match=message) as error:
        read(tmp_path, **frames)
    assert "\n" not in str(error.value)  # one line, with what to do after the ";"
    assert ";" in str(error.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    path = write(tmp_path)
    (tmp_path / "items.csv").unlink()
    with pytest.raises(
        DataError, match=r"missing data file .*items\.csv \(declared in .*schema\.yaml\)"
    ):
        load_dataset(load_schema(path, tmp_path))


def test_train_refuses_bad_data_before_writing_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, items=ITEMS.drop(columns=["name"]))
    monkeypatch.setenv("RECSYS_DATA__SCHEMA", str(path))
    monkeypatch.setenv("RECSYS_PATHS__ARTIFACTS", str(tmp_path / "artifacts"))
    assert main(["train"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "has no column 'name'" in err, err
    assert not (tmp_path / "artifacts").exists()
