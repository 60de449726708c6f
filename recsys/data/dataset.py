"""A data set read through its schema (``recsys.data.schema``) into canonical frames, checked
before anything is trained or written.

Canonical form, whatever the files:

* ``interactions``: ``user_id`` (str), ``item_id`` (str), ``timestamp`` (int64 Unix seconds),
  ``value`` (float32; 1 when the schema declares none), and ``event_type`` (str) when
  declared; sorted by time, then user, then item (ids in their natural order: shorter first,
  then lexicographic), with a fresh RangeIndex.
* ``items``: ``item_id`` (str) and one column per declared feature, named after it, sorted by id.
* ``users``: ``user_id`` (str) and one column per declared user feature, sorted by id; no
  rows when the schema declares no users.

Feature values by kind: ``categorical`` and ``text`` str (``""`` when missing); ``tags`` a
tuple of str (empty when missing); ``numeric``, ``year`` and ``date`` float64 (NaN when
missing; a date as a fractional year, 2020.5 for 2 July 2020).
"""

from __future__ import annotations

import glob
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from recsys.data.schema import BUCKETED, DataSchema, Feature, Table
from recsys.errors import DataError

SECONDS_PER_YEAR = 365.2425 * 86_400
_FIX = "fix the file or the schema"


@dataclass(frozen=True, eq=False)
class Dataset:
    """A validated data set in canonical form (module docstring).

    ``eq=False``: compare the frames with ``pandas.testing``. Treat the frames as read-only.
    """

    schema: DataSchema
    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame

    @property
    def name(self) -> str:
        return self.schema.name

    def item_labels(self) -> dict[str, str]:
        """A readable label per item id, for people: its first ``text`` feature (a title, a
        name), else its first ``categorical`` one, else the id itself."""
        for kind in ("text", "categorical"):
            for name, f in self.schema.item_features.items():
                if f.kind == kind:
                    labels = self.items[name].where(self.items[name] != "", self.items["item_id"])
                    return dict(zip(self.items["item_id"], labels, strict=True))
        return {i: i for i in self.items["item_id"]}


def load_dataset(schema: DataSchema) -> Dataset:
    """Reads every file the schema names, converts each column by its kind and checks the
    whole: one ``DataError`` naming the file, the column and the fix for the first problem.

    Raises:
        DataError: a file is missing, empty or unreadable; a declared column is missing or
            holds values of the wrong type; an id is empty or repeated; an interaction names
            an item the catalog lacks.
    """
    items = read_table(schema, schema.items, "items")
    users = (
        read_table(schema, schema.users, "users")
        if schema.users is not None
        else pd.DataFrame({"user_id": pd.Series([], dtype=object)})
    )
    interactions = read_interactions(schema)
    unknown = ~interactions["item_id"].isin(items["item_id"])
    if unknown.any():
        ids = interactions.loc[unknown, "item_id"].unique()
        raise DataError(
            f"{_files(schema)} has {int(unknown.sum()):,} interaction(s) with {len(ids):,} "
            f"item id(s) missing from the catalog {schema.resolve(schema.items.file)}: "
            f"{_examples(ids)}; add them to the catalog or drop those interactions"
        )
    return Dataset(schema, sort_interactions(interactions), items, users)


# Files ------------------------------------------------------------------------------------


def _paths(schema: DataSchema, patterns: Sequence[str]) -> list[Path]:
    out: list[Path] = []
    for pattern in patterns:
        path = schema.resolve(pattern)
        if glob.has_magic(str(path)):
            matched = sorted(Path(p) for p in glob.glob(str(path)))
            if not matched:
                raise DataError(f"no file matches {path} (declared in {schema.path}); {_FIX}")
            out += matched
        elif not path.is_file():
            raise DataError(f"missing data file {path} (declared in {schema.path}); {_FIX}")
        else:
            out.append(path)
    return out


def _files(schema: DataSchema) -> str:
    names = schema.interactions.files
    return str(schema.resolve(names[0])) if len(names) == 1 else f"{schema.name}'s interactions"


def read_file(
    path: Path,
    columns: Sequence[str],
    separator: str,
    source: str,
    strings: Iterable[str] = (),
) -> pa.Table:
    """The named columns of one Parquet or CSV file (by suffix; ``.tsv`` is tab-separated).

    Args:
        source: What declared the columns, for the error message.
        strings: CSV columns read as text whatever they look like (ids, zip codes: "007"
            must not become 7).

    Raises:
        DataError: the file is unreadable, empty, or lacks a column.
    """
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            names = pq.read_schema(path).names
            _check_columns(path, names, columns, source)
            table = pq.read_table(path, columns=list(dict.fromkeys(columns)))
        elif suffix in (".csv", ".tsv", ".txt"):
            sep = "\t" if suffix == ".tsv" else separator
            table = pacsv.read_csv(
                path,
                parse_options=pacsv.ParseOptions(delimiter=sep),
                convert_options=pacsv.ConvertOptions(
                    strings_can_be_null=True,
                    column_types={c: pa.string() for c in strings},
                ),
            )
            _check_columns(path, table.column_names, columns, source)
            table = table.select(list(dict.fromkeys(columns)))
        else:
            raise DataError(f"{path}: unknown file type {suffix!r}; use .parquet, .csv or .tsv")
    except (OSError, pa.ArrowInvalid) as exc:
        raise DataError(f"cannot read {path}: {exc}; {_FIX}") from exc
    if table.num_rows == 0:
        raise DataError(f"{path} is empty (no rows); {_FIX}")
    return table


def _check_columns(path: Path, found: Sequence[str], wanted: Iterable[str], source: str) -> None:
    for column in wanted:
        if column not in found:
            raise DataError(
                f"{path} has no column {column!r} ({source}); its columns: {list(found)}; {_FIX}"
            )


# Interactions ------------------------------------------------------------------------------


def read_interactions(schema: DataSchema) -> pd.DataFrame:
    spec = schema.interactions
    wanted = {"user_id": spec.user, "item_id": spec.item, "timestamp": spec.time}
    if spec.value is not None:
        wanted["value"] = spec.value
    if spec.event_type is not None:
        wanted["event_type"] = spec.event_type
    frames = []
    for path in _paths(schema, spec.files):
        source = f"declared under interactions in {schema.path}"
        ids = (spec.user, spec.item)
        table = read_file(path, list(wanted.values()), spec.separator, source, ids)
        column = {name: table.column(col) for name, col in wanted.items()}
        frame = pd.DataFrame(
            {
                "user_id": ids_of(column["user_id"], path, spec.user),
                "item_id": ids_of(column["item_id"], path, spec.item),
                "timestamp": _seconds(column["timestamp"], spec.time_unit, path, spec.time),
            }
        )
        if "value" in column:
            frame["value"] = _numbers(column["value"], path, str(spec.value)).astype(np.float32)
            if frame["value"].isna().any():
                raise DataError(f"{path} column {spec.value!r} has empty values; {_FIX}")
        else:
            frame["value"] = np.float32(1.0)
        if "event_type" in column:
            frame["event_type"] = _strings(column["event_type"])
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _seconds(column: pa.ChunkedArray, unit: str, path: Path, name: str) -> pd.Series:
    if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
        values = column.cast(pa.timestamp("s")).to_pandas()
        seconds = values.astype("int64") // 10**9 if values.dtype.kind == "M" else values
    elif unit == "iso8601":
        text = column.to_pandas()
        parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
        _refuse(parsed.isna() & text.notna(), text, path, name, "an ISO-8601 time")
        seconds = (parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    else:
        numbers = _numbers(column, path, name)
        seconds = numbers // 1000 if unit == "ms" else np.floor(numbers)
    seconds = pd.Series(seconds)
    if seconds.isna().any():
        raise DataError(f"{path} column {name!r} has empty times; {_FIX}")
    return seconds.astype(np.int64)


def sort_interactions(interactions: pd.DataFrame) -> pd.DataFrame:
    keys = pd.DataFrame(
        {
            "timestamp": interactions["timestamp"].to_numpy(),
            "user": _id_rank(interactions["user_id"]),
            "item": _id_rank(interactions["item_id"]),
        }
    )
    order = keys.sort_values(["timestamp", "user", "item"], kind="stable").index
    return interactions.iloc[order].reset_index(drop=True)


# Item and user tables ----------------------------------------------------------------------


def read_table(schema: DataSchema, table: Table, what: str) -> pd.DataFrame:
    """An item or user table in canonical form, sorted by id."""
    (path,) = _paths(schema, [table.file])
    columns = [table.id] + [f.source(name) for name, f in table.features.items()]
    text = [table.id] + [
        f.source(n) for n, f in table.features.items() if f.kind in ("categorical", "text", "tags")
    ]
    source = f"declared under {what} in {schema.path}"
    arrow = read_file(path, columns, table.separator, source, text)
    id_name = "item_id" if what == "items" else "user_id"
    frame = pd.DataFrame({id_name: ids_of(arrow.column(table.id), path, table.id)})
    duplicated = frame[id_name].duplicated()
    if duplicated.any():
        raise DataError(
            f"{path} repeats {int(duplicated.sum()):,} id(s) in column {table.id!r}: "
            f"{_examples(frame.loc[duplicated, id_name])}; keep one row per id"
        )
    for name, feature in table.features.items():
        frame[name] = convert(arrow.column(feature.source(name)), feature, path, name)
    return sort_by_id(frame, id_name)


def convert(column: pa.ChunkedArray, feature: Feature, path: Path, name: str) -> pd.Series:
    """One feature's stored values in canonical form for its kind (module docstring)."""
    source = feature.source(name)
    if feature.kind in ("categorical", "text"):
        return pd.Series(_strings(column), dtype=object)
    if feature.kind == "tags":
        return pd.Series(_tags(column, feature.separator, path, source), dtype=object)
    if feature.kind == "date":
        return _years(column, feature.time_unit, path, source)
    assert feature.kind in BUCKETED
    return _numbers(column, path, source)


def _tags(
    column: pa.ChunkedArray, separator: str | None, path: Path, name: str
) -> list[tuple[str, ...]]:
    kind = column.type
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return [
            () if v is None else tuple(dict.fromkeys(str(t) for t in v if t is not None))
            for v in column.to_pylist()
        ]
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind):
        out: list[tuple[str, ...]] = []
        for v in column.to_pylist():
            if not v:
                out.append(())
            else:
                parts = v.split(separator) if separator else [v]
                out.append(tuple(dict.fromkeys(p.strip() for p in parts if p.strip())))
        return out
    raise DataError(
        f"{path} column {name!r} is {kind}, not a list of strings or a string (kind tags); {_FIX}"
    )


def _years(column: pa.ChunkedArray, unit: str | None, path: Path, name: str) -> pd.Series:
    kind = column.type
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        seconds = column.cast(pa.timestamp("s")).cast(pa.int64()).to_pandas().astype(np.float64)
    elif unit == "iso8601" or (
        unit is None and (pa.types.is_string(kind) or pa.types.is_large_string(kind))
    ):
        text = column.to_pandas()
        parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
        _refuse(parsed.isna() & text.notna(), text, path, name, "an ISO-8601 date")
        seconds = (parsed - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    else:
        seconds = _numbers(column, path, name)
        if unit == "ms":
            seconds = seconds / 1000
    return pd.Series(1970.0 + seconds.to_numpy(np.float64) / SECONDS_PER_YEAR)


def _numbers(column: pa.ChunkedArray, path: Path, name: str) -> pd.Series:
    kind = column.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_null(kind):
        return pd.Series(column.to_pandas(), dtype=np.float64)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        text = column.to_pandas()
        numbers = pd.to_numeric(text, errors="coerce")
        _refuse(numbers.isna() & text.notna() & (text != ""), text, path, name, "a number")
        return pd.Series(numbers, dtype=np.float64)
    raise DataError(f"{path} column {name!r} is {kind}, not a number; {_FIX}")


def _strings(column: pa.ChunkedArray) -> np.ndarray:
    values = column.to_pandas()
    if values.dtype.kind == "f":
        # Integers with gaps arrive as floats; 3.0 is the category "3".
        whole = values.notna() & (values == np.floor(values))
        values = values.astype(object).where(~whole, values[whole].astype(np.int64).astype(str))
    strings: np.ndarray = (
        values.astype(object).where(values.notna(), "").astype(str).to_numpy(dtype=object)
    )
    return strings


def ids_of(column: pa.ChunkedArray | pa.Array, path: Path, name: str) -> pd.Series:
    kind = column.type
    if not (
        pa.types.is_integer(kind)
        or pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_dictionary(kind)
    ):
        raise DataError(f"{path} id column {name!r} is {kind}, not a string or integer; {_FIX}")
    values = column.to_pandas()
    empty = values.isna()
    if not empty.all() and values.dtype == object:
        empty |= values == ""
    if empty.any():
        raise DataError(
            f"{path} column {name!r} has {int(empty.sum()):,} empty id(s), the first in row "
            f"{int(np.argmax(empty.to_numpy()))}; {_FIX}"
        )
    return pd.Series(values.astype(str).to_numpy(dtype=object), dtype=object)


def _refuse(bad: pd.Series, values: pd.Series, path: Path, name: str, wanted: str) -> None:
    if bad.any():
        row = int(np.argmax(bad.to_numpy()))
        raise DataError(
            f"{path} column {name!r} row {row}: {values.iloc[row]!r} is not {wanted} "
            f"({int(bad.sum()):,} such rows); {_FIX}"
        )


def _examples(values: Iterable[object], limit: int = 5) -> str:
    return ", ".join(repr(v) for v in list(values)[:limit])


def _id_rank(ids: pd.Series) -> np.ndarray:
    """Each id's rank in the natural order: shorter first, then lexicographic (numeric order
    for plain integer ids, a total order for any strings)."""
    codes, uniques = pd.factorize(ids)
    lengths = np.fromiter(map(len, uniques), np.int64, len(uniques))
    order = np.lexsort((np.asarray(uniques, dtype=str), lengths))
    rank = np.empty(len(uniques), np.int64)
    rank[order] = np.arange(len(uniques))
    ranks: np.ndarray = rank[codes]
    return ranks


def sort_by_id(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    order = np.argsort(_id_rank(frame[column]), kind="stable")
    return frame.iloc[order].reset_index(drop=True)
