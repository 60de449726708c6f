"""Tests for evaluation.protocols on the real MovieLens-100K: the three splits and the RecBole
atomic export."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evaluation.protocols import (
    Split,
    recbole_split,
    recbole_split_sizes,
    temporal_split_protocol,
    tfrs_split,
)
from evaluation.recbole import RECBOLE_HEADER, write_recbole_atomic
from recsys.data import load_movielens
from recsys.data.dataset import Dataset
from recsys.errors import DataError

REPO = Path(__file__).resolve().parents[1]
RECBOLE_INTER = REPO / ".cache" / "data" / "ml-100k" / "ml-100k.inter"


def by_pair(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows in (user, item) order: a unique key in ML-100K, so equal sets compare equal."""
    return frame.sort_values(["user_id", "item_id"], kind="mergesort").reset_index(drop=True)


def assert_partition(split: Split, interactions: pd.DataFrame) -> None:
    """No row lost, none duplicated, none altered, across the split's parts."""
    parts = list(split.parts().values())
    assert sum(len(p) for p in parts) == len(interactions)
    together = pd.concat(parts, ignore_index=True)
    assert not together.duplicated(["user_id", "item_id"]).any()
    pd.testing.assert_frame_equal(by_pair(together), by_pair(interactions))
    for part in parts:
        assert list(part.columns) == list(interactions.columns)
        assert part.index.equals(pd.RangeIndex(len(part)))


def shuffled_rows(interactions: pd.DataFrame, seed: int) -> pd.DataFrame:
    order = np.random.default_rng(seed).permutation(len(interactions))
    return interactions.iloc[order].reset_index(drop=True)


# Temporal ---------------------------------------------------------------------------------


def test_temporal_partitions_and_orders_train_valid_test(ml: Dataset) -> None:
    split = temporal_split_protocol(ml.interactions)
    assert split.name == "temporal"
    assert split.valid is not None
    assert_partition(split, ml.interactions)
    train_t, valid_t, test_t = (p["timestamp"] for p in (split.train, split.valid, split.test))
    # Strictly before: model selection on valid never sees the test period.
    assert train_t.max() < valid_t.min()
    assert valid_t.max() < test_t.min()
    # Ties at a cut go to the later part, so the later shares are at least the fractions.
    assert len(split.test) >= 20_000
    assert 0.1 * (len(split.train) + len(split.valid)) <= len(split.valid)
    assert len(split.test) < 20_100 and len(split.valid) < 8_100


def test_temporal_without_valid(ml: Dataset) -> None:
    split = temporal_split_protocol(ml.interactions, test_fraction=0.2, valid_fraction=None)
    assert split.valid is None
    assert_partition(split, ml.interactions)
    assert split.train["timestamp"].max() < split.test["timestamp"].min()
    with_valid = temporal_split_protocol(ml.interactions)
    # The test period is the same with or without a validation slice.
    pd.testing.assert_frame_equal(split.test, with_valid.test)


def test_temporal_rejects_bad_fractions(ml: Dataset) -> None:
    for bad in (0.0, 1.0, -0.1, True):
        with pytest.raises(DataError):
            temporal_split_protocol(ml.interactions, valid_fraction=bad)
    with pytest.raises(DataError):
        temporal_split_protocol(ml.interactions, test_fraction=1.5)


# RecBole ----------------------------------------------------------------------------------


def test_recbole_sizes_mirror_calcu_split_ids() -> None:
    # RecBole 1.2.1 Dataset._calcu_split_ids: later parts int(ratio * n), the first the rest;
    # then, from the last part backwards while the first has > 1 row, a part whose exact
    # share is in (0, 1) takes one row from the first.
    ratios = (0.8, 0.1, 0.1)
    assert recbole_split_sizes(20, ratios) == (16, 2, 2)  # 0.1 * 20 = 2.0
    assert recbole_split_sizes(29, ratios) == (25, 2, 2)  # int(2.9) = 2: the rest to train
    assert recbole_split_sizes(45, ratios) == (37, 4, 4)  # int(4.5) = 4
    assert recbole_split_sizes(737, ratios) == (591, 73, 73)  # int(73.7) = 73
    # Small groups: [5, 0, 0] -> test +1 -> valid +1.
    assert recbole_split_sizes(5, ratios) == (3, 1, 1)
    # [2, 0, 0] -> test +1 -> train has 1 row left: stop, valid stays empty.
    assert recbole_split_sizes(2, ratios) == (1, 0, 1)
    assert recbole_split_sizes(1, ratios) == (1, 0, 0)
    assert recbole_split_sizes(0, ratios) == (0, 0, 0)
    # Ratios are normalised by their sum first.
    assert recbole_split_sizes(29, (8, 1, 1)) == (25, 2, 2)
    assert recbole_split_sizes(10, (0.7, 0.3)) == (7, 3)


def test_recbole_per_user_sizes_on_ml100k(ml: Dataset) -> None:
    split = recbole_split(ml.interactions)
    assert split.name == "recbole"
    assert split.valid is not None
    assert_partition(split, ml.interactions)
    counts = {part: frame["user_id"].value_counts() for part, frame in split.parts().items()}
    # Users with 20 (the ML-100K minimum), 29, 45, 115 and 737 (the maximum) ratings.
    expected = {
        "364": (16, 2, 2),
        "657": (25, 2, 2),
        "368": (37, 4, 4),
        "690": (93, 11, 11),
        "405": (591, 73, 73),
    }
    for user, sizes in expected.items():
        assert (ml.interactions["user_id"] == user).sum() == sum(sizes)
        got = tuple(int(counts[part].get(user, 0)) for part in ("train", "valid", "test"))
        assert got == sizes, user
    # Every user: valid and test each get int(0.1 * n) (n >= 20, so never the small-group
    # bump), train the rest.
    totals = ml.interactions["user_id"].value_counts()
    tenth = (totals * 0.1).astype(np.int64)
    pd.testing.assert_series_equal(
        counts["test"].sort_index(), tenth.sort_index(), check_names=False
    )
    pd.testing.assert_series_equal(
        counts["valid"].sort_index(), tenth.sort_index(), check_names=False
    )
    assert len(split.test) == len(split.valid) == int(tenth.sum())


def test_recbole_is_random_within_each_user_not_temporal(ml: Dataset) -> None:
    split = recbole_split(ml.interactions)
    last_train = split.train.groupby("user_id")["timestamp"].max()
    first_test = split.test.groupby("user_id")["timestamp"].min()
    # Under a random per-user split, test rarely lies wholly after train.
    assert (first_test > last_train.loc[first_test.index]).mean() < 0.05


def test_recbole_is_deterministic_and_seeded(ml: Dataset) -> None:
    a = recbole_split(ml.interactions, seed=2020)
    b = recbole_split(ml.interactions, seed=2020)
    c = recbole_split(ml.interactions, seed=7)
    for part in ("train", "valid", "test"):
        pd.testing.assert_frame_equal(a.parts()[part], b.parts()[part])
    assert not by_pair(a.test).equals(by_pair(c.test))
    # Another seed draws other rows but the same per-user sizes.
    pd.testing.assert_series_equal(
        a.test["user_id"].value_counts().sort_index(),
        c.test["user_id"].value_counts().sort_index(),
    )


def test_recbole_ignores_input_row_order(ml: Dataset) -> None:
    a = recbole_split(ml.interactions)
    b = recbole_split(shuffled_rows(ml.interactions, seed=1))
    for part in ("train", "valid", "test"):
        pd.testing.assert_frame_equal(a.parts()[part], b.parts()[part])


def test_recbole_two_ratios_has_no_valid(ml: Dataset) -> None:
    split = recbole_split(ml.interactions, ratios=(0.8, 0.2))
    assert split.valid is None
    assert_partition(split, ml.interactions)


def test_recbole_rejects_bad_ratios(ml: Dataset) -> None:
    for bad in ((0.8, 0.1, 0.1, 0.0), (1.0,), (0.8, -0.1, 0.3), (0.0, 0.5, 0.5), (0.9, 0.1, 0)):
        with pytest.raises(DataError):
            recbole_split(ml.interactions, ratios=bad)


# TFRS -------------------------------------------------------------------------------------


def test_tfrs_sizes_and_partition(ml: Dataset) -> None:
    split = tfrs_split(ml.interactions)
    assert split.name == "tfrs"
    assert split.valid is None
    assert len(split.train) == 80_000
    assert len(split.test) == 20_000
    assert_partition(split, ml.interactions)


def test_tfrs_is_one_global_permutation(ml: Dataset) -> None:
    split = tfrs_split(ml.interactions, seed=42)
    order = np.random.default_rng(42).permutation(len(ml.interactions))
    # ml.interactions is already in canonical order, so the permutation indexes it directly.
    expected_test = ml.interactions.iloc[order[80_000:]]
    pd.testing.assert_frame_equal(by_pair(split.test), by_pair(expected_test))
    again = tfrs_split(shuffled_rows(ml.interactions, seed=3), seed=42)
    pd.testing.assert_frame_equal(again.test, split.test)
    other = tfrs_split(ml.interactions, seed=43)
    assert not by_pair(other.test).equals(by_pair(split.test))


# RecBole atomic export --------------------------------------------------------------------


def read_atomic(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(
        path,
        sep="\t",
        dtype={"user_id:token": str, "item_id:token": str},
        keep_default_na=False,
    )
    frame.columns = [c.rpartition(":")[0] for c in frame.columns]
    frame = frame.rename(columns={"rating": "value"})[["user_id", "item_id", "timestamp", "value"]]
    return frame.astype({"value": np.float32, "timestamp": np.int64})


def test_atomic_files_match_recbole_format(ml: Dataset, tmp_path: Path) -> None:
    split = recbole_split(ml.interactions)
    paths = write_recbole_atomic(split, tmp_path / "ml-100k", "ml-100k")
    assert [p.name for p in paths] == [
        "ml-100k.train.inter",
        "ml-100k.valid.inter",
        "ml-100k.test.inter",
    ]
    original = RECBOLE_INTER.read_text(encoding="utf-8").split("\n")
    header, *original_rows = (line for line in original if line)
    assert header == RECBOLE_HEADER
    written_rows: list[str] = []
    for path, frame in zip(paths, split.parts().values(), strict=True):
        raw = path.read_bytes()
        assert raw.endswith(b"\n") and b"\r" not in raw
        lines = raw.decode("utf-8").split("\n")[:-1]
        assert lines[0] == RECBOLE_HEADER
        assert len(lines) == len(frame) + 1
        written_rows += lines[1:]
        pd.testing.assert_frame_equal(read_atomic(path), frame)
    # Byte-for-byte the same rows as RecBole's own file, e.g. "196\t242\t3\t881250949".
    assert sorted(written_rows) == sorted(original_rows)
    assert not list((tmp_path / "ml-100k").glob(".*.tmp"))


def test_atomic_files_round_trip_through_recsys_reader(ml: Dataset, tmp_path: Path) -> None:
    split = temporal_split_protocol(ml.interactions)
    paths = write_recbole_atomic(split, tmp_path / "out", "ml")
    for path, frame in zip(paths, split.parts().values(), strict=True):
        # load_movielens wants one <stem>.inter with its <stem>.user and <stem>.item.
        folder = tmp_path / path.stem
        folder.mkdir()
        shutil.copy(path, folder / path.name)
        for kind in ("user", "item"):
            shutil.copy(RECBOLE_INTER.with_suffix(f".{kind}"), folder / f"{path.stem}.{kind}")
        loaded = load_movielens(folder, expected_counts=None).interactions
        as_values = loaded.rename(columns={"rating": "value"})[list(frame.columns)]
        pd.testing.assert_frame_equal(as_values, frame)


def test_atomic_writer_handles_fractional_ratings_and_stale_valid(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "user_id": ["1", "2"],
            "item_id": ["10", "20"],
            "value": np.array([3.5, 4.0], np.float32),
            "timestamp": np.array([100, 200], np.int64),
        }
    )
    with_valid = Split("x", frame, frame.iloc[:1], frame, "test")
    write_recbole_atomic(with_valid, tmp_path, "toy")
    assert (tmp_path / "toy.valid.inter").exists()
    without = Split("x", frame, None, frame, "test")
    paths = write_recbole_atomic(without, tmp_path, "toy")
    assert [p.name for p in paths] == ["toy.train.inter", "toy.test.inter"]
    assert not (tmp_path / "toy.valid.inter").exists()
    text = paths[0].read_text(encoding="utf-8")
    assert text == f"{RECBOLE_HEADER}\n1\t10\t3.5\t100\n2\t20\t4\t200\n"


def test_atomic_writer_rejects_unstorable_ids(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "user_id": ["a\tb"],
            "item_id": ["1"],
            "value": np.array([3.0], np.float32),
            "timestamp": np.array([1], np.int64),
        }
    )
    with pytest.raises(DataError):
        write_recbole_atomic(Split("x", frame, None, frame, ""), tmp_path, "bad")
    with pytest.raises(DataError):
        write_recbole_atomic(Split("x", frame, None, frame, ""), tmp_path, "../escape")
    assert not list(tmp_path.iterdir())
