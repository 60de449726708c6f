"""Tests for towers.encoding: vocabularies, each feature kind's encoder, batch encoding and the
saved feature space."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.data.schema import Feature
from recsys.errors import ArtifactError
from tests.users import UserRow, tower_inputs
from towers.encoding import FeatureEncoder, FeatureSpace, Inputs, Vocab, words

AGE = FeatureEncoder("age", "numeric", boundaries=(18, 25, 35, 45, 50, 56))
"""MovieLens-1M's age groups, as ``recsys/data/ml-100k.yaml`` declares them."""
DECADES = FeatureEncoder("release_year", "year", boundaries=tuple(range(1930, 2021, 10)))

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


def test_vocab_lookup_many() -> None:
    vocab = Vocab(("x", "y"))
    out = vocab.lookup_many(["y", "nope", "x", "y"])
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, [2, 0, 1, 2])
    assert vocab.lookup_many([]).shape == (0,)


def test_vocab_equality_ignores_the_index_cache() -> None:
    assert Vocab(("a", "b")) == Vocab.fit(["b", "a"])
    assert Vocab(("a", "b")) != Vocab(("a", "c"))


# --------------------------------------------------------------------------------------------
# Kinds


@pytest.mark.parametrize(
    ("age", "bucket"),
    [
        (None, 0),
        (float("nan"), 0),
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
        (17.99, 1),
    ],
)
def test_numeric_buckets_at_declared_boundaries(age: float | None, bucket: int) -> None:
    assert AGE.id(age) == bucket
    assert AGE.size == 8


@pytest.mark.parametrize(
    ("year", "bucket"),
    [
        (None, 0),
        (1895, 1),
        (1929, 1),
        (1930, 2),
        (1995, 8),
        (1999, 8),
        (2000, 9),
        (2020, 11),
        (2030, 11),
        (2999, 11),
    ],
)
def test_years_bucket_by_decade_as_declared_for_movielens(year: int | None, bucket: int) -> None:
    assert DECADES.id(year) == bucket
    assert DECADES.size == 12


def test_quantile_buckets_fit_the_data() -> None:
    values = pd.Series([*range(100), np.nan], dtype=float)
    f = FeatureEncoder.fit("price", Feature(kind="numeric", buckets=4), values)
    assert f.boundaries == (24.75, 49.5, 74.25)
    assert [f.id(v) for v in (0, 30, 60, 99, None)] == [1, 2, 3, 4, 0]
    constant = FeatureEncoder.fit("c", Feature(kind="numeric"), pd.Series([5.0, 5.0]))
    assert constant.boundaries == (5.0,) and constant.id(5.0) == 2
    empty = FeatureEncoder.fit("e", Feature(kind="numeric"), pd.Series([np.nan]))
    assert empty.boundaries == () and empty.id(1.0) == 1 and empty.id(None) == 0


def test_categorical_keeps_a_prefix_and_drops_rare_values() -> None:
    values = pd.Series(["55455", "55123", "T8H1N", "94043", "", "94110"])
    zips = FeatureEncoder.fit("zip", Feature(kind="categorical", prefix=2), values)
    assert zips.vocab.values == ("55", "94", "T8")
    assert [zips.id(v) for v in ("55999", "t8h1n", "", None, "00000")] == [1, 0, 0, 0, 0]
    common = FeatureEncoder.fit("z", Feature(kind="categorical", prefix=2, min_count=2), values)
    assert common.vocab.values == ("55", "94")


def test_tags_keep_the_known_values_smallest_id_first_up_to_the_width() -> None:
    values = pd.Series([("b", "a"), ("c",), (), ("a", "b", "c", "d")], dtype=object)
    tags = FeatureEncoder.fit("tags", Feature(kind="tags", max_values=3), values)
    assert tags.vocab.values == ("a", "b", "c", "d") and tags.width == 3
    assert tags.ids(("d", "nope", "b", "b")) == [2, 4]
    assert tags.ids(("d", "c", "b", "a")) == [1, 2, 3]
    assert tags.ids(()) == [] and tags.ids(None) == []
    np.testing.assert_array_equal(tags.column([("c",), ()]), [[3, 0, 0], [0, 0, 0]])
    narrow = FeatureEncoder.fit("t", Feature(kind="tags"), pd.Series([("a",), ("b",)]))
    assert narrow.width == 1  # the widest set in the data


def test_text_keeps_known_words_in_order_up_to_the_width() -> None:
    titles = pd.Series(["Star Wars (1977)", "Star Trek", "The Wars", "Größe Straße"])
    text = FeatureEncoder.fit("title", Feature(kind="text", max_tokens=2, min_count=2), titles)
    assert text.vocab.values == ("star", "wars")  # words of at least two titles
    assert text.ids("Wars, star and WARS") == [2, 1]
    assert text.ids("") == [] and text.ids("unknown") == []


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("Star Wars (1977)", ["star", "wars", "1977"]),
        ("Se7en", ["se7en"]),
        ("Cité des enfants perdus, La", ["cité", "des", "enfants", "perdus", "la"]),
        ("snake_case Größe", ["snake", "case", "größe"]),
        ("", []),
    ],
)
def test_words_are_letters_and_digits_of_any_script(text: str, tokens: list[str]) -> None:
    assert words(text) == tokens


# --------------------------------------------------------------------------------------------
# FeatureSpace


@pytest.fixture
def space() -> FeatureSpace:
    return FeatureSpace(
        users=Vocab.fit(["u1", "u2", "u3"]),
        items=Vocab.fit(["i1", "i2", "i3", "i4", "i5"]),
        user_features=(
            FeatureEncoder("gender", "categorical", Vocab.fit(["F", "M"])),
            AGE,
            FeatureEncoder(
                "occupation", "categorical", Vocab.fit(["artist", "engineer", "student"])
            ),
            FeatureEncoder("zip_code", "categorical", Vocab.fit(["55", "94", "T8"]), prefix=2),
        ),
        item_features=(
            FeatureEncoder("genres", "tags", Vocab(("Action", "Comedy", "Drama")), width=2),
            FeatureEncoder("title", "text", Vocab.fit(["star", "wars", "the"]), width=6),
            DECADES,
        ),
        history_length=3,
        filter="genres",
    )


def _users(space: FeatureSpace, *rows: tuple) -> Inputs:
    return space.encode_users(*tower_inputs([UserRow(*row) for row in rows]))


def test_encode_users_one_input_per_feature_and_history_padded(space: FeatureSpace) -> None:
    out = _users(
        space,
        ("u1", "F", 30, "student", "55455", ("i2",)),
        ("u2", "M", 17, "artist", "94043", ()),
    )
    assert set(out) == {
        *("user", "user_gender", "user_age", "user_occupation", "user_zip_code"),
        *("hour", "weekday", "history"),
    }
    assert all(v.dtype == np.int32 for v in out.values())
    np.testing.assert_array_equal(out["history"], [[2, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(out["user"], [1, 2])
    np.testing.assert_array_equal(out["user_gender"], [1, 2])
    np.testing.assert_array_equal(out["user_age"], [3, 1])
    np.testing.assert_array_equal(out["user_occupation"], [3, 1])
    np.testing.assert_array_equal(out["user_zip_code"], [1, 2])


def test_encode_users_truncates_history_keeping_the_most_recent(space: FeatureSpace) -> None:
    out = _users(space, ("u1", "F", 30, "student", "", ("i5", "i4", "i3", "i2", "i1")))
    np.testing.assert_array_equal(out["history"], [[5, 4, 3]])


def test_encode_users_maps_unknowns_and_missing_profiles_to_zero(space: FeatureSpace) -> None:
    out = _users(space, ("stranger", "X", 0, "astronaut", "00000", ("i1", "new-item", "i3")))
    for name in ("user", "user_gender", "user_age", "user_occupation", "user_zip_code"):
        np.testing.assert_array_equal(out[name], [0], err_msg=name)
    np.testing.assert_array_equal(out["history"], [[1, 0, 3]])
    from features.user import UserFeatures

    bare = space.encode_users([UserFeatures("u1")], [0])
    assert [int(bare[n][0]) for n in space.user_inputs] == [1, 0, 0, 0, 0, 0, 3]


def test_encode_users_time_context_from_request_time(space: FeatureSpace) -> None:
    t = 1_795_789_800_000  # 2026-11-27 (a Friday) 14:30 UTC
    out = _users(space, ("u1", "", 0, "", "", (), t), ("u1",))
    np.testing.assert_array_equal(out["hour"], [14, 0])
    np.testing.assert_array_equal(out["weekday"], [4, 3])  # 1970-01-01 was a Thursday


def test_encode_users_refuses_times_that_do_not_match_the_users(space: FeatureSpace) -> None:
    users, times = tower_inputs([UserRow("u1"), UserRow("u2")])
    with pytest.raises(ValueError, match="2 users but 1 request times"):
        space.encode_users(users, times[:1])


def test_encode_items_one_input_per_feature(space: FeatureSpace) -> None:
    items = pd.DataFrame(
        {
            "item_id": ["i1", "i2", "unknown"],
            "genres": [("Drama", "Action"), (), ("Comedy", "Western", "Comedy")],
            "title": ["Star Wars", "The Unknown Film", ""],
            "release_year": [1995.0, np.nan, 2030.0],
        }
    )
    out = space.encode_items(items)
    assert set(out) == {"item", "item_genres", "item_title", "item_release_year"}
    np.testing.assert_array_equal(out["item"], [1, 2, 0])
    np.testing.assert_array_equal(out["item_genres"], [[1, 3], [0, 0], [2, 0]])
    np.testing.assert_array_equal(out["item_release_year"], [8, 0, 11])
    assert out["item_title"].shape == (3, 6)
    np.testing.assert_array_equal(out["item_title"][:, :2], [[1, 3], [2, 0], [0, 0]])
    assert space.filter_values == ("Action", "Comedy", "Drama")


def test_feature_space_json_round_trip(space: FeatureSpace, tmp_path: Path) -> None:
    path = tmp_path / "features.json"
    space.save(path)
    assert json.loads(path.read_text())["history_length"] == 3
    loaded = FeatureSpace.load(path)
    assert loaded == space
    assert loaded.items.lookup("i5") == 5  # the loaded vocabularies work, not just compare
    assert loaded.item_feature("title").ids("the star") == [2, 1]
    assert loaded.user_features[3].id("T8H1N") == 3


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "[1, 2, 3]",
        '{"users": []}',
        # A feature space from before the data schema: retrain.
        json.dumps({"users": [], "items": [], "genders": [], "genres": [], "history_length": 3}),
        json.dumps(
            {
                "users": [],
                "items": [],
                "user_features": [{"name": "a", "kind": "numeric"}],
                "item_features": [],
                "history_length": 3,
                "filter": None,
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
    with pytest.raises(ArtifactError, match=r"missing\.json"):
        FeatureSpace.load(tmp_path / "missing.json")


def test_one_user_encodes_as_the_same_row_of_a_batch(space: FeatureSpace) -> None:
    rows = [
        UserRow("u1", "F", 30, "student", "55455", ("i2", "nope", "i3"), 1_795_789_800_000),
        UserRow("stranger", "X", 0, "astronaut", "t8h1n", (), 0),
        UserRow("u3", "M", 56, "engineer", "", ("i5", "i4", "i3", "i2", "i1"), 42),
    ]
    batch = space.encode_users(*tower_inputs([*rows, rows[0]]))
    for i, row in enumerate(rows):
        one = space.encode_users(*tower_inputs([row]))
        for name, value in one.items():
            assert value.dtype == batch[name].dtype and value.shape[0] == 1
            np.testing.assert_array_equal(value[0], batch[name][i], err_msg=name)
