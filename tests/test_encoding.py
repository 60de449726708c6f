"""Tests for towers.encoding: vocabularies, buckets, batch encoding and the saved feature space."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from recsys.errors import ArtifactError
from tests.users import UserRow, tower_inputs
from towers.encoding import (
    AGE_BUCKETS,
    DECADES,
    TITLE_TOKENS,
    YEAR_BUCKETS,
    FeatureSpace,
    UserInputs,
    Vocab,
    age_bucket,
    title_tokens,
    year_bucket,
)

# --------------------------------------------------------------------------------------------
# Vocab


def test_vocab_reserves_zero_for_unknown() -> None:
    vocab = Vocab(("a", "b", "c"))
    assert [vocab.lookup(v) for v in ("a", "b", "c")] == [1, 2, 3]
    assert vocab.lookup("zzz") == 0
    assert vocab.lookup("") == 0


def test_vocab_size_includes_the_unknown_bucket() -> None:
    assert Vocab(("a", "b", "c")).size == 4
    assert Vocab(()).size == 1


def test_vocab_fit_sorts_and_dedupes() -> None:
    vocab = Vocab.fit(["m", "b", "m", "a", "b"])
    assert vocab.values == ("a", "b", "m")
    assert vocab.lookup("a") == 1
    assert vocab.lookup("m") == 3
    assert vocab.size == 4


def test_vocab_lookup_many() -> None:
    vocab = Vocab(("x", "y"))
    out = vocab.lookup_many(["y", "nope", "x", "y"])
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, [2, 0, 1, 2])
    empty = vocab.lookup_many([])
    assert empty.shape == (0,)
    assert empty.dtype == np.int32


def test_vocab_equality_ignores_the_index_cache() -> None:
    assert Vocab(("a", "b")) == Vocab.fit(["b", "a"])
    assert Vocab(("a", "b")) != Vocab(("a", "c"))


# --------------------------------------------------------------------------------------------
# Buckets


@pytest.mark.parametrize(
    ("age", "bucket"),
    [
        (0, 0),
        (-3, 0),
        (1, 1),
        (17, 1),
        (18, 2),
        (24, 2),
        (25, 3),
        (34, 3),
        (35, 4),
        (45, 5),
        (49, 5),
        (50, 6),
        (55, 6),
        (56, 7),
        (90, 7),
    ],
)
def test_age_bucket(age: int, bucket: int) -> None:
    assert age_bucket(age) == bucket


def test_age_buckets_cover_every_bucket() -> None:
    assert AGE_BUCKETS == 8
    assert {age_bucket(a) for a in range(0, 120)} == set(range(AGE_BUCKETS))


@pytest.mark.parametrize(
    ("year", "bucket"),
    [
        (0, 0),
        (-1, 0),
        (1895, 1),
        (1919, 1),
        (1920, 1),
        (1929, 1),
        (1930, 2),
        (1995, 8),
        (1999, 8),
        (2000, 9),
        (2020, DECADES),
        (2030, DECADES),
        (2999, DECADES),
    ],
)
def test_year_bucket(year: int, bucket: int) -> None:
    assert year_bucket(year) == bucket


def test_year_buckets_cover_every_bucket() -> None:
    assert DECADES == 11
    assert YEAR_BUCKETS == DECADES + 1
    assert {year_bucket(y) for y in [0, *range(1900, 2100)]} == set(range(YEAR_BUCKETS))


# --------------------------------------------------------------------------------------------
# FeatureSpace


@pytest.fixture
def space() -> FeatureSpace:
    return FeatureSpace(
        users=Vocab.fit(["u1", "u2", "u3"]),
        items=Vocab.fit(["i1", "i2", "i3", "i4", "i5"]),
        genders=Vocab.fit(["F", "M"]),
        occupations=Vocab.fit(["artist", "engineer", "student"]),
        zips=Vocab.fit(["55", "94", "T8"]),
        genres=("Action", "Comedy", "Drama"),
        title_tokens=Vocab.fit(["star", "wars", "the"]),
        history_length=3,
    )


def _users(space: FeatureSpace, *rows: tuple) -> UserInputs:
    return space.encode_users(*tower_inputs([UserRow(*row) for row in rows]))


def test_encode_users_pads_history_with_zero(space: FeatureSpace) -> None:
    out = _users(
        space,
        ("u1", "F", 30, "student", "55455", ("i2",)),
        ("u2", "M", 17, "artist", "94043", ()),
    )
    assert out.history.shape == (2, 3)
    assert out.history.dtype == np.int32
    np.testing.assert_array_equal(out.history, [[2, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(out.user, [1, 2])
    np.testing.assert_array_equal(out.gender, [1, 2])
    np.testing.assert_array_equal(out.age, [3, 1])
    np.testing.assert_array_equal(out.occupation, [3, 1])
    np.testing.assert_array_equal(out.zip, [1, 2])
    assert out.age.dtype == np.int32


def test_encode_users_truncates_history_keeping_the_most_recent(space: FeatureSpace) -> None:
    # Histories are most recent first, so the first history_length survive.
    out = _users(space, ("u1", "F", 30, "student", "", ("i5", "i4", "i3", "i2", "i1")))
    np.testing.assert_array_equal(out.history, [[5, 4, 3]])


def test_encode_users_maps_unknowns_to_zero(space: FeatureSpace) -> None:
    out = _users(space, ("stranger", "X", 0, "astronaut", "00000", ("i1", "new-item", "i3")))
    np.testing.assert_array_equal(out.user, [0])
    np.testing.assert_array_equal(out.gender, [0])
    np.testing.assert_array_equal(out.age, [0])
    np.testing.assert_array_equal(out.occupation, [0])
    np.testing.assert_array_equal(out.zip, [0])
    np.testing.assert_array_equal(out.history, [[1, 0, 3]])


def test_encode_users_zip_prefix_is_case_insensitive(space: FeatureSpace) -> None:
    out = _users(space, ("u1", "", 0, "", "t8h1n", ()))
    np.testing.assert_array_equal(out.zip, [3])


def test_encode_users_time_context_from_request_time(space: FeatureSpace) -> None:
    # 2026-11-27 (a Friday) 14:30 UTC.
    t = 1_795_789_800_000
    out = _users(space, ("u1", "", 0, "", "", (), t), ("u1",))
    np.testing.assert_array_equal(out.hour, [14, 0])
    np.testing.assert_array_equal(out.weekday, [4, 3])  # 1970-01-01 was a Thursday


def test_encode_users_refuses_times_that_do_not_match_the_users(space: FeatureSpace) -> None:
    users, times = tower_inputs([UserRow("u1"), UserRow("u2")])
    with pytest.raises(ValueError, match="2 users but 1 request times"):
        space.encode_users(users, times[:1])
    with pytest.raises(ValueError, match="2 users but 3 request times"):
        space.encode_users(users, [*times, 0])


def test_encode_users_as_dict_has_every_input(space: FeatureSpace) -> None:
    out = _users(space, ("u3", "M", 56, "engineer", "", ("i4",)))
    d = out.as_dict()
    assert set(d) == {"user", "gender", "age", "occupation", "zip", "hour", "weekday", "history"}
    assert d["user"][0] == 3
    assert d["age"][0] == 7
    assert d["history"].tolist() == [[4, 0, 0]]


def test_encode_items_multi_hot_genres_and_title_tokens(space: FeatureSpace) -> None:
    out = space.encode_items(
        ["i1", "i2", "unknown"],
        [1995, 0, 2030],
        [("Action", "Drama"), (), ("Comedy", "Western")],  # Western is not in the space
        ["Star Wars", "The Unknown Film", ""],
    )
    assert out.genres.dtype == np.float32
    np.testing.assert_array_equal(out.genres, [[1, 0, 1], [0, 0, 0], [0, 1, 0]])
    np.testing.assert_array_equal(out.item, [1, 2, 0])
    np.testing.assert_array_equal(out.year, [8, 0, DECADES])
    assert out.title.shape == (3, TITLE_TOKENS)
    # Known words only, in title order; unknown words are dropped rather than bucketed.
    np.testing.assert_array_equal(out.title[:, :2], [[1, 3], [2, 0], [0, 0]])
    assert set(out.as_dict()) == {"item", "year", "genres", "title"}


def test_encode_items_repeated_genre_is_still_one(space: FeatureSpace) -> None:
    out = space.encode_items(["i1"], [1950], [["Drama", "Drama"]], ["x"])
    np.testing.assert_array_equal(out.genres, [[0, 0, 1]])


@pytest.mark.parametrize(
    ("title", "tokens"),
    [
        ("Star Wars (1977)", ["star", "wars", "1977"]),
        ("Se7en", ["se7en"]),
        ("Cité des enfants perdus, La", ["cit", "des", "enfants", "perdus", "la"]),
        ("", []),
    ],
)
def test_title_tokens(title: str, tokens: list[str]) -> None:
    assert title_tokens(title) == tokens


def test_feature_space_json_round_trip(space: FeatureSpace, tmp_path: Path) -> None:
    path = tmp_path / "features.json"
    space.save(path)
    assert json.loads(path.read_text())["history_length"] == 3
    loaded = FeatureSpace.load(path)
    assert loaded == space
    # The loaded vocabularies work, not just compare equal.
    assert loaded.items.lookup("i5") == 5
    assert loaded.genres == ("Action", "Comedy", "Drama")
    assert FeatureSpace.from_json(space.to_json()) == space


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "[1, 2, 3]",
        '{"users": []}',
        json.dumps(
            {
                "users": [],
                "items": [],
                "genders": [],
                "occupations": [],
                "zips": [],
                "genres": [],
                "title_tokens": [],
                "history_length": "twenty",
            }
        ),
        json.dumps(
            {
                "users": 5,
                "items": [],
                "genders": [],
                "occupations": [],
                "genres": [],
                "history_length": 3,
            }
        ),
    ],
)
def test_load_malformed_feature_space_raises_artifact_error(text: str, tmp_path: Path) -> None:
    path = tmp_path / "features.json"
    path.write_text(text)
    with pytest.raises(ArtifactError):
        FeatureSpace.load(path)


def test_load_missing_feature_space_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.json"
    with pytest.raises(ArtifactError, match=r"missing\.json"):
        FeatureSpace.load(path)


def test_one_user_encodes_as_the_same_row_of_a_batch(space: FeatureSpace) -> None:
    rows = [
        UserRow("u1", "F", 30, "student", "55455", ("i2", "nope", "i3"), 1_795_789_800_000),
        UserRow("stranger", "X", 0, "astronaut", "t8h1n", (), 0),
        UserRow("u3", "M", 56, "engineer", "", ("i5", "i4", "i3", "i2", "i1"), 42),
    ]
    batch = space.encode_users(*tower_inputs([*rows, rows[0]])).as_dict()
    for i, row in enumerate(rows):
        one = space.encode_users(*tower_inputs([row])).as_dict()
        for name, value in one.items():
            assert value.dtype == batch[name].dtype and value.shape[0] == 1
            np.testing.assert_array_equal(value[0], batch[name][i], err_msg=name)
