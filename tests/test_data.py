"""Tests for recsys.data against the real MovieLens-100K and small hand-made folders."""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys import data
from recsys.data import (
    ML100K_COUNTS,
    ML100K_GENRES,
    RECBOLE_FILES,
    RECBOLE_WHEEL,
    MovieLens,
    fetch_ml100k,
    load_movielens,
    temporal_split,
)
from recsys.data import fetch as data_fetch
from recsys.errors import DataError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def ml100k_dir() -> Path:
    return fetch_ml100k(REPO / ".cache" / "data", log=lambda _line: None)


@pytest.fixture(scope="session")
def ml100k(ml100k_dir: Path) -> MovieLens:
    return load_movielens(ml100k_dir)


# --------------------------------------------------------------------------------------------
# Helpers that write small data sets


def _write_lines(path: Path, lines: Iterable[str], encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines), encoding=encoding)
    return path


INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
USER_HEADER = "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token"
ITEM_HEADER = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"


def _write_recbole(
    folder: Path,
    *,
    inter: Sequence[str] = (
        "1\t10\t3\t100",
        "2\t10\t5\t200",
        "1\t20\t4\t300",
        "2\t30\t1\t400",
    ),
    users: Sequence[str] = ("1\t24\tM\ttechnician\t85711", "2\t53\tF\tother\t01040"),
    items: Sequence[str] = (
        "10\tToy Story\t1995\tAnimation Children's Comedy",
        "20\tGoldenEye\t1995\tAction Adventure Thriller",
        "30\tunkonwn\tunkonwn\tunknown",
    ),
) -> Path:
    _write_lines(folder / "ml-100k.inter", [INTER_HEADER, *inter])
    _write_lines(folder / "ml-100k.user", [USER_HEADER, *users])
    _write_lines(folder / "ml-100k.item", [ITEM_HEADER, *items])
    return folder


def _grouplens_date(year: int) -> str:
    return f"01-Jan-{year}" if year else ""


def _write_grouplens(
    folder: Path, ml: MovieLens, *, genre_file: bool = True, seed: int = 0
) -> Path:
    """Writes ``ml`` in the official GroupLens layout, rows shuffled to prove order is ours."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)

    inter = ml.interactions.iloc[rng.permutation(len(ml.interactions))]
    ratings = inter["rating"].astype(int).astype(str)
    _write_lines(
        folder / "u.data",
        (
            f"{u}\t{i}\t{r}\t{t}"
            for u, i, r, t in zip(
                inter["user_id"], inter["item_id"], ratings, inter["timestamp"], strict=True
            )
        ),
    )

    users = ml.users.iloc[rng.permutation(len(ml.users))]
    _write_lines(
        folder / "u.user",
        ("|".join(str(v) for v in row) for row in users.itertuples(index=False)),
    )

    item_lines = []
    items = ml.items.iloc[rng.permutation(len(ml.items))]
    for item_id, title, year, genres in items.itertuples(index=False):
        full_title = f"{title} ({year})" if year else title
        flags = "|".join("1" if g in genres else "0" for g in ML100K_GENRES)
        url = f"http://us.imdb.com/M/title-exact?{item_id}"
        item_lines.append(f"{item_id}|{full_title}|{_grouplens_date(year)}||{url}|{flags}")
    _write_lines(folder / "u.item", item_lines, encoding="latin-1")

    if genre_file:
        genre_lines = [f"{g}|{i}" for i, g in enumerate(ML100K_GENRES)]
        _write_lines(folder / "u.genre", [*genre_lines, ""], encoding="latin-1")
    return folder


def _assert_same(a: MovieLens, b: MovieLens) -> None:
    pd.testing.assert_frame_equal(a.interactions, b.interactions)
    pd.testing.assert_frame_equal(a.users, b.users)
    pd.testing.assert_frame_equal(a.items, b.items)


def _copy_real(ml100k_dir: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in RECBOLE_FILES:
        shutil.copyfile(ml100k_dir / name, dest / name)
    return dest


# --------------------------------------------------------------------------------------------
# Fetching


def test_fetch_is_idempotent(ml100k_dir: Path) -> None:
    lines: list[str] = []
    again = fetch_ml100k(ml100k_dir.parent, log=lines.append)
    assert again == ml100k_dir
    assert all((again / name).is_file() for name in RECBOLE_FILES)
    assert len(lines) == 1 and "already" in lines[0]


def _forbid_pip(monkeypatch: pytest.MonkeyPatch) -> None:
    def run(*_args: object, **_kwargs: object) -> subprocess.CompletedProcess[str]:
        raise AssertionError("pip must not run when the wheel is cached")

    monkeypatch.setattr(data_fetch.subprocess, "run", run)


def test_fetch_extracts_from_cached_wheel_without_pip(
    ml100k_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = ml100k_dir.parent / "wheels" / RECBOLE_WHEEL
    (tmp_path / "wheels").mkdir()
    shutil.copyfile(wheel, tmp_path / "wheels" / RECBOLE_WHEEL)
    _forbid_pip(monkeypatch)
    lines: list[str] = []
    out = fetch_ml100k(tmp_path, log=lines.append)
    assert out == tmp_path / "ml-100k"
    for name in RECBOLE_FILES:
        assert (out / name).read_bytes() == (ml100k_dir / name).read_bytes()
    assert any("extracting" in line for line in lines)
    # Nothing but the data set and the wheel: no temporary folders left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ml-100k", "wheels"]
    assert sorted(p.name for p in (tmp_path / "wheels").iterdir()) == [RECBOLE_WHEEL]


def test_fetch_replaces_an_incomplete_data_folder(
    ml100k_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "wheels").mkdir()
    shutil.copyfile(
        ml100k_dir.parent / "wheels" / RECBOLE_WHEEL, tmp_path / "wheels" / RECBOLE_WHEEL
    )
    (tmp_path / "ml-100k").mkdir()
    (tmp_path / "ml-100k" / "ml-100k.inter").write_text("half a file")
    _forbid_pip(monkeypatch)
    out = fetch_ml100k(tmp_path, log=lambda _line: None)
    assert (out / "ml-100k.inter").read_bytes() == (ml100k_dir / "ml-100k.inter").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ml-100k", "wheels"]


def test_fetch_reports_pip_failure_with_output_tail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []

    def failing_pip(cmd: list[str], **_kwargs: object) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        out = "Looking in indexes: ...\nERROR: No matching distribution found for recbole==1.2.1\n"
        return subprocess.CompletedProcess(cmd, 1, stdout=out)

    monkeypatch.setattr(data_fetch.subprocess, "run", failing_pip)
    # A corrupt cached wheel must be noticed and fetched again rather than trusted.
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / RECBOLE_WHEEL).write_bytes(b"not a wheel")
    lines: list[str] = []
    with pytest.raises(DataError, match="No matching distribution found") as info:
        fetch_ml100k(tmp_path, log=lines.append)
    assert "exit code 1" in str(info.value)
    assert any("does not match" in line for line in lines)
    cmd = calls[0]
    assert cmd[1:5] == ["-m", "pip", "download", "--no-deps"] and "recbole==1.2.1" in cmd
    assert not (tmp_path / "ml-100k").exists()
    assert list((tmp_path / "wheels").iterdir()) == []


# --------------------------------------------------------------------------------------------
# The real data set


def test_real_counts_and_dtypes(ml100k: MovieLens) -> None:
    inter, users, items = ml100k.interactions, ml100k.users, ml100k.items
    assert (len(inter), len(users), len(items)) == tuple(ML100K_COUNTS)
    assert list(inter.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert inter.dtypes.to_dict() == {
        "user_id": np.dtype(object),
        "item_id": np.dtype(object),
        "rating": np.dtype(np.float32),
        "timestamp": np.dtype(np.int64),
    }
    assert list(users.columns) == ["user_id", "age", "gender", "occupation", "zip_code"]
    assert users["age"].dtype == np.int64
    assert list(items.columns) == ["item_id", "title", "release_year", "genres"]
    assert items["release_year"].dtype == np.int64
    for column in (inter["user_id"], inter["item_id"], users["zip_code"], items["title"]):
        assert all(isinstance(v, str) for v in column)
    assert all(isinstance(g, tuple) for g in items["genres"])
    assert set(inter["rating"]) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert users["user_id"].tolist() == [str(i) for i in range(1, 944)]
    assert items["item_id"].tolist() == [str(i) for i in range(1, 1683)]


def test_real_example_rows(ml100k: MovieLens) -> None:
    inter = ml100k.interactions
    row = inter[(inter["user_id"] == "196") & (inter["item_id"] == "242")]
    assert len(row) == 1
    assert row["rating"].iloc[0] == 3.0 and row["timestamp"].iloc[0] == 881250949

    users = ml100k.users.set_index("user_id")
    assert users.loc["1"].tolist() == [24, "M", "technician", "85711"]
    # Zip codes are strings: leading zeros survive and some are Canadian postcodes.
    assert users["zip_code"].str.startswith("0").sum() > 0
    assert users.loc["74", "zip_code"] == "T8H1N"

    items = ml100k.items.set_index("item_id")
    assert items.loc["1"].tolist() == ["Toy Story", 1995, ("Animation", "Children's", "Comedy")]
    assert items.loc["543", "title"] == "Misérables, Les"
    # RecBole's odd rows come out in canonical form (see recsys.data).
    assert items.loc["267"].tolist() == ["unknown", 0, ("unknown",)]
    assert items.loc["1412"].tolist() == [
        "Land Before Time III: The Time of the Great Giving",
        1995,
        ("Animation", "Children's"),
    ]


def test_real_genre_vocabulary(ml100k: MovieLens) -> None:
    counts = Counter(g for genres in ml100k.items["genres"] for g in genres)
    assert set(counts) == set(ML100K_GENRES) and len(ML100K_GENRES) == 19
    assert counts["unknown"] == 2 and counts["Drama"] == 725
    rank = {g: i for i, g in enumerate(ML100K_GENRES)}
    assert all(list(g) == sorted(g, key=rank.__getitem__) for g in ml100k.items["genres"])


def test_real_interactions_are_sorted(ml100k: MovieLens) -> None:
    inter = ml100k.interactions
    assert inter.index.equals(pd.RangeIndex(len(inter)))
    keys = list(
        zip(
            inter["timestamp"],
            inter["user_id"].astype(int),
            inter["item_id"].astype(int),
            strict=True,
        )
    )
    assert keys == sorted(keys)


def test_grouplens_layout_loads_identically(ml100k: MovieLens, tmp_path: Path) -> None:
    folder = _write_grouplens(tmp_path / "ml-100k", ml100k)
    _assert_same(load_movielens(folder), ml100k)


def test_grouplens_official_quirks_match_recbole(ml100k: MovieLens, tmp_path: Path) -> None:
    # u.item rows as GroupLens ships them (URLs shortened), where title and date disagree.
    def item_line(item_id: str, rest: str, genres: Sequence[str]) -> str:
        return f"{item_id}|{rest}|" + "|".join("1" if g in genres else "0" for g in ML100K_GENRES)

    folder = tmp_path / "gl"
    _write_lines(
        folder / "u.item",
        [
            item_line(
                "23",
                "Taxi Driver (1976)|16-Feb-1996||http://us.imdb.com/M/title-exact?Taxi%20Driver%20(1976)",
                ["Drama", "Thriller"],
            ),
            item_line("267", "unknown|||", ["unknown"]),
            item_line(
                "1412",
                "Land Before Time III: The Time of the Great Giving (1995) (V)|01-Jan-1995||"
                "http://us.imdb.com/M/title-exact?Land%20Before%20Time%20III",
                ["Animation", "Children's"],
            ),
        ],
        encoding="latin-1",
    )
    _write_lines(folder / "u.user", ["196|49|M|writer|55105"])
    _write_lines(folder / "u.data", ["196\t23\t4\t1", "196\t267\t3\t2", "196\t1412\t2\t3"])
    loaded = load_movielens(folder, expected_counts=None)  # no u.genre: standard list
    real = ml100k.items.set_index("item_id").loc[["23", "267", "1412"]].reset_index()
    pd.testing.assert_frame_equal(loaded.items, real)


def test_grouplens_year_falls_back_to_release_date(tmp_path: Path) -> None:
    flags = "|".join("0" for _ in ML100K_GENRES)
    _write_lines(tmp_path / "u.item", [f"5|No Year Here|14-Aug-1995||url|{flags}"])
    _write_lines(tmp_path / "u.user", ["1|30|F|other|00000"])
    _write_lines(tmp_path / "u.data", ["1\t5\t5\t10"])
    items = load_movielens(tmp_path, expected_counts=None).items
    assert items.iloc[0].tolist() == ["5", "No Year Here", 1995, ()]


def test_recbole_columns_found_by_name(tmp_path: Path) -> None:
    plain = load_movielens(_write_recbole(tmp_path / "plain"), expected_counts=None)
    shuffled = tmp_path / "shuffled"
    _write_lines(
        shuffled / "ml-100k.inter",
        [
            "timestamp:float\textra:float\trating:float\titem_id:token\tuser_id:token",
            "300\t0\t4\t20\t1",
            "100\t0\t3\t10\t1",
            "400\t0\t1\t30\t2",
            "200\t0\t5\t10\t2",
        ],
    )
    shutil.copyfile(tmp_path / "plain" / "ml-100k.user", shuffled / "ml-100k.user")
    _write_lines(
        shuffled / "ml-100k.item",
        [
            "class:token_seq\titem_id:token\trelease_year:token\tmovie_title:token_seq",
            "Comedy Animation Children's\t10\t1995\tToy Story",
            "Action Adventure Thriller\t20\t1995\tGoldenEye",
            "unknown\t30\tunkonwn\tunkonwn",
        ],
    )
    _assert_same(load_movielens(shuffled, expected_counts=None), plain)
    assert plain.users["zip_code"].tolist() == ["85711", "01040"]
    assert plain.items["genres"].iloc[0] == ("Animation", "Children's", "Comedy")


# --------------------------------------------------------------------------------------------
# Bad input


def test_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match="does not exist") as info:
        load_movielens(missing)
    assert str(missing) in str(info.value)


def test_folder_without_data_files(tmp_path: Path) -> None:
    (tmp_path / "README").write_text("hi")
    with pytest.raises(DataError, match="neither RecBole") as info:
        load_movielens(tmp_path)
    assert str(tmp_path) in str(info.value) and "README" in str(info.value)


@pytest.mark.parametrize("name", ["ml-100k.user", "ml-100k.item"])
def test_missing_recbole_file(tmp_path: Path, name: str) -> None:
    folder = _write_recbole(tmp_path / "d")
    (folder / name).unlink()
    with pytest.raises(DataError, match="missing data file") as info:
        load_movielens(folder, expected_counts=None)
    assert str(folder / name) in str(info.value)


def test_missing_grouplens_file(ml100k: MovieLens, tmp_path: Path) -> None:
    folder = _write_grouplens(tmp_path / "gl", ml100k)
    (folder / "u.user").unlink()
    with pytest.raises(DataError, match="missing data file") as info:
        load_movielens(folder)
    assert str(folder / "u.user") in str(info.value)


def test_truncated_inter_file(ml100k_dir: Path, tmp_path: Path) -> None:
    folder = _copy_real(ml100k_dir, tmp_path / "ml-100k")
    inter = folder / "ml-100k.inter"
    lines = inter.read_text().splitlines(keepends=True)
    inter.write_text("".join(lines[:-1]))
    with pytest.raises(DataError) as info:
        load_movielens(folder)
    message = str(info.value)
    assert f"expected 100,000 ratings in {inter}, found 99,999" in message
    assert "make data" in message


@pytest.mark.parametrize(
    ("bad_row", "expected"),
    [
        ("3\t10\t4", "line 6: expected 4 fields separated by '\\t', found 3"),
        ("1\t10\t4\t100\t7", "line 6: expected 4 fields separated by '\\t', found 5"),
        ("1\t40\tfour\t500", "line 6: rating 'four' is not a number"),
        ("1\t40\t4\tyesterday", "line 6: timestamp 'yesterday' is not an integer"),
    ],
)
def test_malformed_inter_row(tmp_path: Path, bad_row: str, expected: str) -> None:
    inter = ["1\t10\t3\t100", "2\t10\t5\t200", "1\t20\t4\t300", "2\t30\t1\t400", bad_row]
    folder = _write_recbole(tmp_path / "d", inter=inter)
    with pytest.raises(DataError, match="malformed row") as info:
        load_movielens(folder, expected_counts=None)
    message = str(info.value)
    assert str(folder / "ml-100k.inter") in message and expected in message


def test_line_numbers_count_blank_lines(tmp_path: Path) -> None:
    inter = ["1\t10\t3\t100", "", "2\t10\t5\t200", "1\t20\t4.5.1\t300"]
    folder = _write_recbole(tmp_path / "d", inter=inter)
    with pytest.raises(DataError, match=r"line 5: rating '4\.5\.1' is not a number"):
        load_movielens(folder, expected_counts=None)


def test_malformed_grouplens_item_row(ml100k: MovieLens, tmp_path: Path) -> None:
    folder = _write_grouplens(tmp_path / "gl", ml100k)
    path = folder / "u.item"
    lines = path.read_text(encoding="latin-1").splitlines()
    lines[9] = lines[9].rsplit("|", 1)[0]  # drop the last genre flag of line 10
    _write_lines(path, lines, encoding="latin-1")
    with pytest.raises(DataError, match="malformed row") as info:
        load_movielens(folder)
    assert str(path) in str(info.value) and "line 10" in str(info.value)


def test_missing_recbole_column(tmp_path: Path) -> None:
    folder = _write_recbole(tmp_path / "d")
    text = (folder / "ml-100k.user").read_text().replace("zip_code:token", "zip:token")
    (folder / "ml-100k.user").write_text(text)
    with pytest.raises(DataError, match=r"lacks column\(s\) \['zip_code'\]") as info:
        load_movielens(folder, expected_counts=None)
    assert str(folder / "ml-100k.user") in str(info.value)


def test_unknown_user_in_interactions(tmp_path: Path) -> None:
    folder = _write_recbole(tmp_path / "d", inter=["1\t10\t3\t100", "99\t20\t4\t200"])
    with pytest.raises(DataError, match="missing from") as info:
        load_movielens(folder, expected_counts=None)
    message = str(info.value)
    assert str(folder / "ml-100k.inter") in message
    assert str(folder / "ml-100k.user") in message and "'99'" in message


def test_unknown_item_in_interactions(tmp_path: Path) -> None:
    folder = _write_recbole(tmp_path / "d", inter=["1\t10\t3\t100", "2\t77\t4\t200"])
    with pytest.raises(DataError, match=r"item id.*missing from") as info:
        load_movielens(folder, expected_counts=None)
    assert "'77'" in str(info.value)


def test_duplicate_item_id(tmp_path: Path) -> None:
    items = ["10\tToy Story\t1995\tComedy", "20\tGoldenEye\t1995\tAction", "10\tAgain\t1995\tDrama"]
    folder = _write_recbole(tmp_path / "d", items=items, inter=["1\t10\t3\t100"])
    with pytest.raises(DataError, match="duplicate item id") as info:
        load_movielens(folder, expected_counts=None)
    assert str(folder / "ml-100k.item") in str(info.value) and "'10'" in str(info.value)


def test_duplicate_user_id(tmp_path: Path) -> None:
    users = ["1\t24\tM\ttechnician\t85711", "1\t53\tF\tother\t01040"]
    folder = _write_recbole(tmp_path / "d", users=users, inter=["1\t10\t3\t100"])
    with pytest.raises(DataError, match="duplicate user id") as info:
        load_movielens(folder, expected_counts=None)
    assert str(folder / "ml-100k.user") in str(info.value)


@pytest.mark.parametrize("rating", ["0", "6", "4.5e9"])
def test_rating_out_of_range(tmp_path: Path, rating: str) -> None:
    folder = _write_recbole(tmp_path / "d", inter=["1\t10\t3\t100", f"2\t20\t{rating}\t200"])
    with pytest.raises(DataError, match=r"within 1\.\.5") as info:
        load_movielens(folder, expected_counts=None)
    assert str(folder / "ml-100k.inter") in str(info.value)


def test_repeated_user_item_pair(tmp_path: Path) -> None:
    folder = _write_recbole(tmp_path / "d", inter=["1\t10\t3\t100", "1\t10\t4\t200"])
    with pytest.raises(DataError, match="more than once"):
        load_movielens(folder, expected_counts=None)


def test_expected_counts_checked_for_users_and_items(tmp_path: Path) -> None:
    folder = _write_recbole(tmp_path / "d")
    assert len(load_movielens(folder, expected_counts=data.ExpectedCounts(4, 2, 3)).items) == 3
    with pytest.raises(DataError, match=r"expected 5 users in .*ml-100k\.user, found 2"):
        load_movielens(folder, expected_counts=data.ExpectedCounts(4, 5, 3))


# --------------------------------------------------------------------------------------------
# Temporal split


def test_temporal_split_on_real_data(ml100k: MovieLens) -> None:
    inter = ml100k.interactions
    train, test = temporal_split(inter)
    assert train["timestamp"].max() < test["timestamp"].min()
    assert abs(len(test) / len(inter) - 0.2) < 0.01
    both = pd.concat([train, test], ignore_index=True)
    pd.testing.assert_frame_equal(both, inter)  # inter is time-sorted, so order is kept too
    assert train.index.equals(pd.RangeIndex(len(train)))


def test_temporal_split_ties_go_to_test() -> None:
    frame = pd.DataFrame({"timestamp": [5, 1, 2, 3, 3, 3, 4], "x": range(7)})
    train, test = temporal_split(frame, test_fraction=0.5)
    # Sorted: 1 2 3 3 3 4 5; position round(3.5) = 4 holds 3, so every 3 is test.
    assert sorted(train["timestamp"]) == [1, 2]
    assert sorted(test["timestamp"]) == [3, 3, 3, 4, 5]
    assert train["x"].tolist() == [1, 2]  # input order kept


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5, float("nan"), True, "0.2", None])
def test_temporal_split_rejects_bad_fraction(ml100k: MovieLens, fraction: object) -> None:
    with pytest.raises(DataError, match="test_fraction"):
        temporal_split(ml100k.interactions, test_fraction=fraction)  # type: ignore[arg-type]


def test_temporal_split_rejects_degenerate_input() -> None:
    with pytest.raises(DataError, match="train empty"):
        temporal_split(pd.DataFrame({"timestamp": [7, 7, 7]}))
    with pytest.raises(DataError, match="no interactions"):
        temporal_split(pd.DataFrame({"timestamp": pd.Series([], dtype=np.int64)}))
    with pytest.raises(DataError, match="'timestamp' column"):
        temporal_split(pd.DataFrame({"time": [1, 2]}))
