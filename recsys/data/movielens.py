"""The MovieLens data set: the validated :class:`MovieLens` frames and :func:`load_movielens`,
which reads either layout, validates the rows and sorts them."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from recsys.data.fetch import DATASET_DIR, RECBOLE_FILES, fetch_ml100k
from recsys.data.readers import _REMEDY, _Files, _load_grouplens, _load_recbole
from recsys.errors import DataError


class ExpectedCounts(NamedTuple):
    """Row counts a loaded data set must have."""

    ratings: int
    users: int
    items: int


ML100K_COUNTS = ExpectedCounts(ratings=100_000, users=943, items=1_682)


@dataclass(frozen=True, eq=False)
class MovieLens:
    """A validated MovieLens data set.

    ``eq=False`` because comparing DataFrames with ``==`` is elementwise, which would make a
    generated ``__eq__`` raise; compare the frames with ``pandas.testing`` instead. The frames
    themselves stay mutable: treat them as read-only or copy them.

    Attributes:
        interactions: ``user_id`` (str), ``item_id`` (str), ``rating`` (float32),
            ``timestamp`` (int64, Unix seconds); sorted by timestamp, then user, then item,
            with a fresh RangeIndex.
        users: ``user_id`` (str), ``age`` (int64), ``gender`` (str), ``occupation`` (str),
            ``zip_code`` (str: some are Canadian postcodes, others keep leading zeros);
            sorted by id.
        items: ``item_id`` (str), ``title`` (str), ``release_year`` (int64, 0 when unknown),
            ``genres`` (tuple of str, in :data:`ML100K_GENRES` order); sorted by id.
    """

    interactions: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame


def load_movielens(
    path: Path, *, expected_counts: ExpectedCounts | None = ML100K_COUNTS
) -> MovieLens:
    """Loads and validates MovieLens-100K from a RecBole or a GroupLens folder.

    The layout is detected from the files present: ``*.inter`` (RecBole atomic files, columns
    found by the names in their typed headers, so column order does not matter) or ``u.data``
    (GroupLens). Both give identical frames for the same data.

    Args:
        path: The folder holding the files.
        expected_counts: Exact numbers of ratings, users and items required; the default is
            MovieLens-100K's. ``None`` skips the count check (for small synthetic sets).

    Returns:
        The validated data set.

    Raises:
        DataError: The folder or a file is missing, a row is malformed, a count is off, an id
            is duplicated, a rating is outside 1..5, or an interaction names an unknown user
            or item. The message names the file and says what to do.
    """
    path = Path(path)
    if not path.is_dir():
        raise DataError(
            f"MovieLens data folder {path} does not exist or is not a folder; "
            f"run fetch_ml100k (`make data`) or point paths.dataset at an official ml-100k folder"
        )
    inter_files = sorted(path.glob("*.inter"))
    if len(inter_files) > 1:
        # Prefer the canonical name so a stray extra file does not make loading ambiguous.
        preferred = path / RECBOLE_FILES[0]
        inter_files = [preferred] if preferred in inter_files else inter_files
    if len(inter_files) > 1:
        names = ", ".join(p.name for p in inter_files)
        raise DataError(f"{path} holds several RecBole .inter files ({names}); keep one")
    if inter_files:
        stem = inter_files[0].with_suffix("")
        files = _Files(inter_files[0], Path(f"{stem}.user"), Path(f"{stem}.item"))
        interactions, users, items = _load_recbole(files)
    elif (path / "u.data").exists():
        files = _Files(path / "u.data", path / "u.user", path / "u.item")
        interactions, users, items = _load_grouplens(files, path / "u.genre")
    else:
        found = sorted(p.name for p in path.iterdir())[:10]
        raise DataError(
            f"{path} holds neither RecBole atomic files ({', '.join(RECBOLE_FILES)}) nor "
            f"GroupLens files (u.data, u.item, u.user); found {found or 'nothing'}; {_REMEDY}"
        )
    _validate(interactions, users, items, files, expected_counts)
    return MovieLens(
        interactions=_sort_interactions(interactions),
        users=_sort_by_id(users, "user_id"),
        items=_sort_by_id(items, "item_id"),
    )


# Validation and ordering -------------------------------------------------------------------


def _examples(values: Iterable[object], limit: int = 5) -> str:
    shown = list(values)[:limit]
    return ", ".join(repr(v) for v in shown)


def _validate(
    interactions: pd.DataFrame,
    users: pd.DataFrame,
    items: pd.DataFrame,
    files: _Files,
    expected: ExpectedCounts | None,
) -> None:
    if expected is not None:
        for what, frame, path, want in (
            ("ratings", interactions, files.interactions, expected.ratings),
            ("users", users, files.users, expected.users),
            ("items", items, files.items, expected.items),
        ):
            if len(frame) != want:
                raise DataError(
                    f"expected {want:,} {what} in {path}, found {len(frame):,}; {_REMEDY}"
                )

    for what, frame, column, path in (
        ("user", users, "user_id", files.users),
        ("item", items, "item_id", files.items),
    ):
        empty = frame[column] == ""
        if empty.any():
            raise DataError(f"{path} has {int(empty.sum()):,} empty {what} id(s); {_REMEDY}")
        dup = frame[column].duplicated()
        if dup.any():
            raise DataError(
                f"duplicate {what} id(s) in {path}: {_examples(frame.loc[dup, column])} "
                f"({int(dup.sum()):,} duplicates); {_REMEDY}"
            )

    rating = interactions["rating"]
    out_of_range = (rating < 1) | (rating > 5)
    if out_of_range.any():
        row = int(np.argmax(out_of_range.to_numpy()))
        raise DataError(
            f"ratings must be within 1..5 in {files.interactions}, found {rating.iloc[row]:g} "
            f"for user {interactions['user_id'].iloc[row]!r} and item "
            f"{interactions['item_id'].iloc[row]!r} ({int(out_of_range.sum()):,} such rows); "
            f"{_REMEDY}"
        )

    for what, column, table, table_path in (
        ("user", "user_id", users, files.users),
        ("item", "item_id", items, files.items),
    ):
        unknown = ~interactions[column].isin(table[column])
        if unknown.any():
            ids = interactions.loc[unknown, column].unique()
            raise DataError(
                f"{files.interactions} has {int(unknown.sum()):,} rating(s) by {len(ids):,} "
                f"{what} id(s) missing from {table_path}: {_examples(ids)}; {_REMEDY}"
            )

    pairs = interactions.duplicated(["user_id", "item_id"])
    if pairs.any():
        row = int(np.argmax(pairs.to_numpy()))
        raise DataError(
            f"{files.interactions} rates the same (user, item) pair more than once, e.g. user "
            f"{interactions['user_id'].iloc[row]!r} and item "
            f"{interactions['item_id'].iloc[row]!r} ({int(pairs.sum()):,} repeats); {_REMEDY}"
        )


def _id_rank(ids: pd.Series) -> pd.Series:
    # Shorter first, then lexicographic: numeric order for plain integer ids like ML-100K's,
    # yet still a total order for any other strings.
    order = sorted(pd.unique(ids), key=lambda s: (len(s), s))
    rank = {value: i for i, value in enumerate(order)}
    return ids.map(rank).astype(np.int64)


def _sort_by_id(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    keys = _id_rank(frame[column])
    return frame.iloc[np.argsort(keys.to_numpy(), kind="stable")].reset_index(drop=True)


def _sort_interactions(interactions: pd.DataFrame) -> pd.DataFrame:
    keys = pd.DataFrame(
        {
            "timestamp": interactions["timestamp"],
            "user": _id_rank(interactions["user_id"]),
            "item": _id_rank(interactions["item_id"]),
        }
    )
    order = keys.sort_values(["timestamp", "user", "item"], kind="stable").index
    out = interactions.loc[order].reset_index(drop=True)
    out["rating"] = out["rating"].astype(np.float32)
    return out


# The schema's files --------------------------------------------------------------------------

PARQUET_DIR = "parquet"
"""Folder under the MovieLens-100K folder that ``prepare_ml100k`` fills, which
``recsys/data/ml-100k.yaml`` names."""
PARQUET_FILES = ("interactions.parquet", "items.parquet", "users.parquet")


def prepare_ml100k(
    data_dir: Path, dataset: Path | None = None, *, log: Callable[[str], None] = print
) -> Path:
    """Makes sure MovieLens-100K is on disk as the Parquet files its schema names, and
    returns their folder: fetched from the ``recbole`` wheel (or read from ``dataset``, an
    official GroupLens folder), checked, and written once (idempotent). Each file is renamed
    into place, so a killed run leaves no half-written file.
    """
    folder = Path(data_dir) / DATASET_DIR / PARQUET_DIR
    if all((folder / name).is_file() for name in PARQUET_FILES):
        return folder
    ml = load_movielens(dataset or fetch_ml100k(Path(data_dir), log=log))
    folder.mkdir(parents=True, exist_ok=True)
    items = ml.items.assign(
        release_year=ml.items["release_year"].where(ml.items["release_year"] > 0).astype("Int64"),
        genres=[list(g) for g in ml.items["genres"]],
    )
    for name, frame in zip(PARQUET_FILES, (ml.interactions, items, ml.users), strict=True):
        tmp = folder / f".{name}.tmp"
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, folder / name)
    log(f"MovieLens-100K written as Parquet to {folder}")
    return folder
