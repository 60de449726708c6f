"""Parsers for the two MovieLens-100K layouts: RecBole atomic files and the GroupLens
``ml-100k/`` folder. Each returns raw ``(interactions, users, items)`` frames in canonical
form; :func:`recsys.data.movielens.load_movielens` validates and sorts them."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from recsys.errors import DataError

ML100K_GENRES: tuple[str, ...] = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
"""The 19 genres in GroupLens ``u.genre`` order. RecBole's ``class:token_seq`` uses the same
spellings (none contains a space, so its space-separated lists split cleanly)."""

_REMEDY = (
    "re-fetch with `make data` or point paths.dataset (env RECSYS_PATHS__DATASET) at an "
    "official ml-100k folder"
)


class _Files(NamedTuple):
    interactions: Path
    users: Path
    items: Path


@dataclass(frozen=True, eq=False)
class _Table:
    """A delimited file read as strings, with the file line number of every data row."""

    path: Path
    frame: pd.DataFrame
    lines: np.ndarray

    def fail(self, row: int, problem: str) -> DataError:
        return DataError(
            f"malformed row in {self.path} line {int(self.lines[row])}: {problem}; {_REMEDY}"
        )

    def strings(self, column: str) -> pd.Series:
        return self.frame[column].str.strip().astype(object)

    def ids(self, column: str) -> pd.Series:
        # Ids are kept verbatim: they are join keys, and stripping 200,000 interaction ids
        # would cost more than the rest of the parse for a flaw the files do not have.
        return self.frame[column].astype(object)

    def ints(self, column: str) -> pd.Series:
        values = pd.to_numeric(self.frame[column], errors="coerce")
        bad = (values.isna() | (values != np.floor(values))).to_numpy()
        if bad.any():
            raise self._bad_value(column, bad, "an integer")
        return values.astype(np.int64)

    def floats(self, column: str) -> pd.Series:
        values = pd.to_numeric(self.frame[column], errors="coerce")
        bad = values.isna().to_numpy()
        if bad.any():
            raise self._bad_value(column, bad, "a number")
        return values.astype(np.float64)

    def _bad_value(self, column: str, bad: np.ndarray, kind: str) -> DataError:
        row = int(np.argmax(bad))
        value = self.frame[column].iloc[row]
        return self.fail(row, f"{column} {value!r} is not {kind} ({int(bad.sum()):,} such rows)")


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise DataError(f"missing data file {path}; {_REMEDY}")


def _read_table(
    path: Path,
    *,
    sep: str,
    encoding: str,
    columns: Sequence[str] | None = None,
) -> _Table:
    """Reads a delimited file as strings, turning every parse problem into a DataError.

    Args:
        path: The file.
        sep: Field separator.
        encoding: Text encoding.
        columns: Column names for a headerless file; ``None`` takes them from the first line.
    """
    _require_file(path)
    try:
        text = path.read_bytes().decode(encoding)
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from e
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not valid {encoding} text ({e}); {_REMEDY}") from e
    # Split on the terminators pandas knows; str.splitlines would also break at characters
    # such as U+0085, which latin-1 titles may legitimately contain.
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    # pandas skips empty lines, so data rows map to the line numbers of the others.
    line_numbers = np.flatnonzero(np.fromiter(map(bool, lines), bool, len(lines))) + 1
    if len(line_numbers) == 0:
        raise DataError(f"{path} is empty; {_REMEDY}")
    first = lines[line_numbers[0] - 1]
    n_fields = len(columns) if columns is not None else first.count(sep) + 1
    _check_field_counts(path, text, lines, line_numbers, sep, n_fields)
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            sep=sep,
            header=None if columns is not None else 0,
            names=list(columns) if columns is not None else None,
            dtype=str,
            # Values such as "none" (an occupation) or "NA" must stay strings.
            keep_default_na=False,
            quoting=csv.QUOTE_NONE,  # titles hold quote marks that are not CSV quoting
            engine="c",
        )
    except pd.errors.ParserError as e:
        raise DataError(f"malformed row in {path}: {str(e).strip()}; {_REMEDY}") from e
    data_lines = line_numbers if columns is not None else line_numbers[1:]
    return _Table(path=path, frame=frame, lines=data_lines)


def _check_field_counts(
    path: Path,
    text: str,
    lines: list[str],
    line_numbers: np.ndarray,
    sep: str,
    n_fields: int,
) -> None:
    # pandas pads a short row with empty strings instead of failing, so rows are counted
    # here. One count over the whole text settles the common case; long rows cannot cancel
    # short ones out unnoticed because pandas rejects rows longer than the first.
    if text.count(sep) == (n_fields - 1) * len(line_numbers):
        return
    for number in line_numbers:
        found = lines[number - 1].count(sep) + 1
        if found != n_fields:
            raise DataError(
                f"malformed row in {path} line {number}: expected {n_fields} fields "
                f"separated by {sep!r}, found {found}; {_REMEDY}"
            )


_TITLE_YEAR = re.compile(r"^(?P<title>.*\S)\s+\((?P<year>\d{4})\)(?:\s+\(V\))?$")
"""``Toy Story (1995)``; one title ends ``(1995) (V)`` (V = released on video)."""
_RELEASE_DATE_YEAR = re.compile(r"^\d{1,2}-[A-Za-z]{3}-(?P<year>\d{4})$")
_RECBOLE_TITLE_FIXES = {"unkonwn": "unknown"}
"""RecBole's item 267 misspells GroupLens's placeholder title."""


def _split_title(full_title: str) -> tuple[str, int | None]:
    match = _TITLE_YEAR.match(full_title)
    if match is None:
        return full_title, None
    return match["title"], int(match["year"])


# RecBole atomic files --------------------------------------------------------------------


_RECBOLE_COLUMNS = {
    "inter": ("user_id", "item_id", "rating", "timestamp"),
    "user": ("user_id", "age", "gender", "occupation", "zip_code"),
    "item": ("item_id", "movie_title", "release_year", "class"),
}


def _read_recbole(path: Path, kind: str) -> _Table:
    table = _read_table(path, sep="\t", encoding="utf-8")
    names: dict[str, str] = {}
    for typed in table.frame.columns:
        name, colon, _type = str(typed).rpartition(":")
        if not colon or not name:
            raise DataError(
                f"{path} header column {typed!r} is not a RecBole typed name such as "
                f"'user_id:token'; {_REMEDY}"
            )
        names[typed] = name
    frame = table.frame.rename(columns=names)
    missing = [c for c in _RECBOLE_COLUMNS[kind] if c not in frame.columns]
    if missing:
        raise DataError(f"{path} lacks column(s) {missing}; found {list(frame.columns)}; {_REMEDY}")
    return _Table(path=path, frame=frame, lines=table.lines)


def _interactions_and_users(inter: _Table, user: _Table) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ratings and user frames, the same columns from either format."""
    interactions = pd.DataFrame(
        {
            "user_id": inter.ids("user_id"),
            "item_id": inter.ids("item_id"),
            "rating": inter.floats("rating"),
            # Typed "float" by RecBole but whole seconds in practice.
            "timestamp": inter.ints("timestamp"),
        }
    )
    users = pd.DataFrame(
        {
            "user_id": user.ids("user_id"),
            "age": user.ints("age"),
            "gender": user.strings("gender"),
            "occupation": user.strings("occupation"),
            "zip_code": user.strings("zip_code"),
        }
    )
    return interactions, users


def _items_frame(
    item: _Table, titles: list[str], years: list[int], genres: list[tuple[str, ...]]
) -> pd.DataFrame:
    """The items frame, the same columns from either format."""
    return pd.DataFrame(
        {
            "item_id": item.ids("item_id"),
            "title": pd.Series(titles, dtype=object),
            "release_year": pd.Series(years, dtype=np.int64),
            "genres": pd.Series(genres, dtype=object),
        }
    )


def _load_recbole(files: _Files) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    for p in files:
        _require_file(p)
    inter = _read_recbole(files.interactions, "inter")
    user = _read_recbole(files.users, "user")
    item = _read_recbole(files.items, "item")

    interactions, users = _interactions_and_users(inter, user)
    titles, years = [], []
    for title, token in zip(item.strings("movie_title"), item.strings("release_year"), strict=True):
        title, year = _recbole_title_year(title, token)
        titles.append(title)
        years.append(year)
    genres = [_order_genres(s.split()) for s in item.frame["class"]]
    return interactions, users, _items_frame(item, titles, years, genres)


def _recbole_title_year(title: str, token: str) -> tuple[str, int]:
    title = _RECBOLE_TITLE_FIXES.get(title, title)
    if token.isdigit():
        return title, int(token)
    if token in ("", "unknown", "unkonwn"):
        return title, 0
    # RecBole split the GroupLens title at its last "(...)", which for a "(1995) (V)" title
    # left "V" as the year; rejoin and parse like GroupLens so both layouts agree.
    parsed_title, year = _split_title(f"{title} ({token})")
    return (title, 0) if year is None else (parsed_title, year)


def _order_genres(names: Iterable[str]) -> tuple[str, ...]:
    # Known genres in u.genre order, any others after them alphabetically, so the same item
    # has the same tuple whichever file it came from.
    rank = {g: i for i, g in enumerate(ML100K_GENRES)}
    unique = dict.fromkeys(names)
    return tuple(sorted(unique, key=lambda g: (rank.get(g, len(rank)), g)))


# GroupLens files ---------------------------------------------------------------------------


def _read_genres(path: Path) -> tuple[str, ...]:
    if not path.exists():
        return ML100K_GENRES
    try:
        lines = path.read_text(encoding="latin-1").splitlines()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from e
    entries: list[tuple[int, str]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        name, sep, index = line.rpartition("|")
        if not sep or not name.strip() or not index.strip().isdigit():
            raise DataError(
                f"malformed row in {path} line {number}: {line!r} is not 'name|index'; {_REMEDY}"
            )
        entries.append((int(index), name.strip()))
    indices = sorted(i for i, _ in entries)
    names = [name for _, name in sorted(entries)]
    if indices != list(range(len(entries))) or len(set(names)) != len(names):
        raise DataError(
            f"{path} must list distinct genres numbered 0..{len(entries) - 1}, found "
            f"{sorted(entries)}; {_REMEDY}"
        )
    return tuple(names)


_GROUPLENS_ITEM_COLUMNS = ("item_id", "title", "release_date", "video_release_date", "url")


def _load_grouplens(
    files: _Files, genre_path: Path
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    for p in files:
        _require_file(p)
    genres = _read_genres(genre_path)
    data = _read_table(
        files.interactions,
        sep="\t",
        encoding="latin-1",
        columns=("user_id", "item_id", "rating", "timestamp"),
    )
    user = _read_table(
        files.users,
        sep="|",
        encoding="latin-1",
        columns=("user_id", "age", "gender", "occupation", "zip_code"),
    )
    # Genre flags get positional names so odd names in u.genre cannot clash with ours.
    flag_columns = [f"genre_{i}" for i in range(len(genres))]
    item = _read_table(
        files.items,
        sep="|",
        encoding="latin-1",
        columns=(*_GROUPLENS_ITEM_COLUMNS, *flag_columns),
    )

    interactions, users = _interactions_and_users(data, user)

    flags = item.frame[flag_columns].apply(lambda s: s.str.strip()).to_numpy()
    bad = ~np.isin(flags, ["0", "1"]).all(axis=1)
    if bad.any():
        row = int(np.argmax(bad))
        raise item.fail(row, f"genre flags must be 0 or 1, found {flags[row].tolist()}")
    on = flags == "1"
    names = np.asarray(genres, dtype=object)
    titles, years = [], []
    for row, (full_title, date) in enumerate(
        zip(item.strings("title"), item.strings("release_date"), strict=True)
    ):
        title, year = _split_title(full_title)
        if year is None:
            year = _release_date_year(item, row, date)
        titles.append(title)
        years.append(year)
    item_genres = [_order_genres(names[mask]) for mask in on]
    return interactions, users, _items_frame(item, titles, years, item_genres)


def _release_date_year(item: _Table, row: int, date: str) -> int:
    # Only consulted when the title has no "(YYYY)": the title year is the film's year (what
    # RecBole keeps), whereas the date is often a later US release (Taxi Driver (1976) is
    # dated 16-Feb-1996).
    if not date:
        return 0
    match = _RELEASE_DATE_YEAR.match(date)
    if match is None:
        raise item.fail(row, f"release date {date!r} is not like '01-Jan-1995'")
    return int(match["year"])
