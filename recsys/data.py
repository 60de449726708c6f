"""MovieLens-100K: fetch it, load it into validated DataFrames, split it by time.

Two on-disk layouts load into identical frames:

* RecBole atomic files (``ml-100k.inter``, ``ml-100k.item``, ``ml-100k.user``): tab-separated
  with typed headers such as ``user_id:token``. This is what :func:`fetch_ml100k` provides,
  because the ``recbole`` wheel on PyPI ships them and PyPI is the only registry reachable
  from every machine this project runs on.
* The official GroupLens ``ml-100k/`` folder (``u.data``, ``u.item``, ``u.user``, optionally
  ``u.genre``).

Canonical form, whatever the source: ids are strings (``"196"``); titles carry no trailing
``(1995)`` because the year lives in ``release_year`` (0 when unknown); genres are tuples in
the order of :data:`ML100K_GENRES`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import numbers
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from recsys.errors import DataError

__all__ = [
    "DATASET_DIR",
    "ML100K_COUNTS",
    "ML100K_GENRES",
    "RECBOLE_FILES",
    "RECBOLE_WHEEL",
    "ExpectedCounts",
    "MovieLens",
    "fetch_ml100k",
    "load_movielens",
    "temporal_split",
]

RECBOLE_REQUIREMENT = "recbole==1.2.1"
RECBOLE_WHEEL = "recbole-1.2.1-py3-none-any.whl"
RECBOLE_WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
"""PyPI files never change once uploaded, so a mismatch means a corrupt or foreign file."""
_WHEEL_MEMBER_DIR = "recbole/dataset_example/ml-100k"
DATASET_DIR = "ml-100k"
"""Folder under the cache directory that :func:`fetch_ml100k` fills."""
RECBOLE_FILES = ("ml-100k.inter", "ml-100k.item", "ml-100k.user")

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

_REMEDY = "re-fetch with `make data` or point data.path at an official ml-100k folder"
_PIP_TIMEOUT_S = 600
_PIP_TAIL_LINES = 20


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


# --------------------------------------------------------------------------------------------
# Fetching


def fetch_ml100k(cache_dir: Path, *, log: Callable[[str], None] = print) -> Path:
    """Makes sure MovieLens-100K is on disk and returns the folder holding it.

    Idempotent: once ``<cache_dir>/ml-100k`` holds the three RecBole files nothing is
    downloaded again. Otherwise the ``recbole`` wheel is fetched with pip (unless it is
    already under ``<cache_dir>/wheels``), its hash checked, and the three files extracted.
    Both the wheel and the data folder are moved into place with a rename, so a run that is
    killed midway leaves either nothing or a complete copy, never half of one.

    Args:
        cache_dir: Folder to keep the wheel and the extracted data in; created if missing.
        log: Receives one line per step, for progress output.

    Returns:
        ``<cache_dir>/ml-100k``, holding ``ml-100k.inter``, ``.item`` and ``.user``.

    Raises:
        DataError: pip failed (the message carries the end of its output), the wheel is not
            the expected file, or the cache folder cannot be written.
    """
    cache_dir = Path(cache_dir)
    target = cache_dir / DATASET_DIR
    if _has_all(target, RECBOLE_FILES):
        log(f"MovieLens-100K already at {target}")
        return target
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        wheel = _ensure_wheel(cache_dir / "wheels", log)
        log(f"extracting MovieLens-100K from {wheel.name} into {target}")
        _extract_atomically(wheel, target)
    except OSError as e:
        raise DataError(f"cannot prepare MovieLens-100K under {cache_dir}: {e}") from e
    log(f"MovieLens-100K ready at {target}")
    return target


def _has_all(folder: Path, names: Iterable[str]) -> bool:
    return all((folder / name).is_file() for name in names)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _ensure_wheel(wheels_dir: Path, log: Callable[[str], None]) -> Path:
    wheel = wheels_dir / RECBOLE_WHEEL
    if wheel.is_file():
        if _sha256(wheel) == RECBOLE_WHEEL_SHA256:
            log(f"using cached {wheel}")
            return wheel
        log(f"cached {wheel} does not match its known SHA-256; downloading it again")
        wheel.unlink()
    wheels_dir.mkdir(parents=True, exist_ok=True)
    log(f"downloading {RECBOLE_REQUIREMENT} from PyPI (it ships MovieLens-100K) ...")
    # pip writes straight into -d, so it gets a private folder and the finished wheel is
    # renamed into place: a killed download must not look like a cached wheel.
    with tempfile.TemporaryDirectory(prefix=".download-", dir=wheels_dir) as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            RECBOLE_REQUIREMENT,
            "-d",
            tmp,
        ]
        try:
            proc = subprocess.run(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=_PIP_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise DataError(
                f"`{' '.join(cmd[2:])}` did not finish within {_PIP_TIMEOUT_S} s; "
                "check that PyPI is reachable and retry"
            ) from e
        downloaded = Path(tmp) / RECBOLE_WHEEL
        if proc.returncode != 0 or not downloaded.is_file():
            tail = "\n".join(proc.stdout.strip().splitlines()[-_PIP_TAIL_LINES:])
            raise DataError(
                f"`{' '.join(cmd[2:])}` failed (exit code {proc.returncode}) so MovieLens-100K "
                f"could not be fetched; check that PyPI is reachable or point data.path at an "
                f"official ml-100k folder. pip said:\n{tail}"
            )
        digest = _sha256(downloaded)
        if digest != RECBOLE_WHEEL_SHA256:
            raise DataError(
                f"downloaded {RECBOLE_WHEEL} has SHA-256 {digest}, expected "
                f"{RECBOLE_WHEEL_SHA256}; the package index served a different file"
            )
        os.replace(downloaded, wheel)
    log(f"saved {wheel}")
    return wheel


def _extract_atomically(wheel: Path, target: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        # mkdtemp makes the folder private (0700); the data set is not secret.
        tmp.chmod(0o755)
        try:
            with zipfile.ZipFile(wheel) as zf:
                for name in RECBOLE_FILES:
                    # Reading through ZipFile checks each member's CRC.
                    data = zf.read(f"{_WHEEL_MEMBER_DIR}/{name}")
                    with (tmp / name).open("wb") as out:
                        out.write(data)
                        out.flush()
                        os.fsync(out.fileno())
        except (zipfile.BadZipFile, KeyError) as e:
            raise DataError(
                f"{wheel} does not hold MovieLens-100K ({e}); delete it and fetch again"
            ) from e
        if _has_all(target, RECBOLE_FILES):
            return  # a concurrent fetch finished first; its copy is as good as ours
        if target.exists():
            # An incomplete folder (e.g. a file deleted by hand) is swapped out whole rather
            # than patched, so readers never see a mix of old and new files.
            stale = Path(tempfile.mkdtemp(prefix=f".{target.name}-stale-", dir=target.parent))
            os.replace(target, stale / target.name)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError:
            # A concurrent fetch may have won the race; its copy is as good as ours.
            if not _has_all(target, RECBOLE_FILES):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Loading


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
            f"run fetch_ml100k (`make data`) or point data.path at an official ml-100k folder"
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


def _load_recbole(files: _Files) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    for p in files:
        _require_file(p)
    inter = _read_recbole(files.interactions, "inter")
    user = _read_recbole(files.users, "user")
    item = _read_recbole(files.items, "item")

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
    titles, years = [], []
    for title, token in zip(item.strings("movie_title"), item.strings("release_year"), strict=True):
        title, year = _recbole_title_year(title, token)
        titles.append(title)
        years.append(year)
    items = pd.DataFrame(
        {
            "item_id": item.ids("item_id"),
            "title": pd.Series(titles, dtype=object),
            "release_year": pd.Series(years, dtype=np.int64),
            "genres": pd.Series(
                [_order_genres(s.split()) for s in item.frame["class"]], dtype=object
            ),
        }
    )
    return interactions, users, items


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

    interactions = pd.DataFrame(
        {
            "user_id": data.ids("user_id"),
            "item_id": data.ids("item_id"),
            "rating": data.floats("rating"),
            "timestamp": data.ints("timestamp"),
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
    items = pd.DataFrame(
        {
            "item_id": item.ids("item_id"),
            "title": pd.Series(titles, dtype=object),
            "release_year": pd.Series(years, dtype=np.int64),
            "genres": pd.Series(
                [_order_genres(names[mask]) for mask in on],
                dtype=object,
            ),
        }
    )
    return interactions, users, items


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


# --------------------------------------------------------------------------------------------
# Splitting


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
