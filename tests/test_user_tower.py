"""The one user encoder behind both runtimes, and the NumPy tower's folded kernel split by
the concatenation order the export records (fast tier: a random tower, no training; the
trained model's parity with its SavedModel is ``test_towers.py``)."""

from __future__ import annotations

import dataclasses

import faiss
import numpy as np
import pytest

from features.activity import Activity
from features.user import UserFeatures
from index.items import ItemMeta, tag_bits
from index.tuning import EF_SEARCH, NPROBE, knob, set_knob, with_selector
from recsys.errors import ArtifactError, InvalidRequestError
from serving.filters import GenreFilters
from tests import tiny
from tests.users import UserRow, tower_inputs
from towers.model_config import table_input
from towers.runtime import NumpyUserTower

ROWS = [
    UserRow("u1", "F", 30, "writer", "55123", ("i1", "i2", "nope", "i3"), 889_000_000_000),
    UserRow("u2", "M", 17, "student", "10001", (), 889_100_000_000),
    UserRow("brand-new", recent_items=("nope", "i9"), request_time_ms=1),
    UserRow("u3", "X", 0, "astronaut", "99999", tuple(f"i{i}" for i in range(12)), 5_000),
]


def test_embed_is_the_encoder_then_the_tower_bit_for_bit() -> None:
    space = tiny.space()
    tower = tiny.tower(space)
    users, times = tower_inputs(ROWS)
    np.testing.assert_array_equal(
        tower.embed(space, users, times), tower(space.encode_users(users, times))
    )
    for user, t in zip(users, times, strict=True):  # and one user as a row of the batch
        np.testing.assert_array_equal(
            tower.embed(space, [user], [t])[0], tower.embed(space, users, times)[users.index(user)]
        )


MULTI = [
    UserFeatures(
        "u1", ("F", 30.0, "writer", "55123", ("food", "art"), "Likes the dog!"), Activity()
    ),
    UserFeatures("u2", ("M", None, "", "", ("sport", "art", "food", "x"), "cat cat dog bird")),
    UserFeatures("u3", ("X", 99.0, "doctor", "1", (), ""), Activity(("i1", "i2")), True),
    UserFeatures("brand-new", activity=Activity(("i4",))),
]
"""Users of a space with multi-id features too (``tiny.space(multi=True)``): tags beyond the
width, unknown words and tags, empty values, no profile."""


def test_embed_with_tags_and_text_is_the_encoder_then_the_tower() -> None:
    space = tiny.space(multi=True)
    tower = tiny.tower(space)
    times = [889_000_000_000 + i for i in range(len(MULTI))]
    batch = tower.embed(space, MULTI, times)
    np.testing.assert_array_equal(batch, tower(space.encode_users(MULTI, times)))
    for i, user in enumerate(MULTI):
        np.testing.assert_array_equal(tower.embed(space, [user], [times[i]])[0], batch[i])


def test_a_tag_set_is_summed_and_a_text_averaged() -> None:
    """u1's embedding equals a tower fed the pooled rows by hand: the hidden layer's input
    holds the sum of the two tags' rows and the mean of the two known words' rows."""
    space = tiny.space(multi=True)
    w = tiny.weights(space)
    config = tiny.config(space)
    tower = NumpyUserTower(w, config)
    user, t = MULTI[0], 889_000_000_000
    _singles, lists, _ = space.encode_user(user, t)
    assert lists == [[1, 2], [3, 2]]  # art, food; likes, dog ("the" is unknown)
    inputs = space.encode_users([user], [t])
    parts = []
    for table in config.user_concat:
        ids = inputs[table_input(table)][0]
        rows = w[table][ids]
        if config.pooling(table) == "sum":
            parts.append(rows[ids > 0].sum(axis=0))
        elif table == "item_emb" or config.pooling(table) == "mean":
            known = rows[ids > 0]
            parts.append(known.mean(axis=0) if len(known) else np.zeros(rows.shape[1]))
        else:
            parts.append(rows)
    hidden = np.maximum(np.concatenate(parts) @ w["user_hidden_w"] + w["user_hidden_b"], 0)
    out = hidden @ w["user_out_w"] + w["user_out_b"]
    out /= np.linalg.norm(out)  # the tower's outputs are normalised
    np.testing.assert_allclose(tower.embed(space, [user], [t])[0], out, rtol=1e-4, atol=1e-5)


def test_encode_users_stacks_encode_user() -> None:
    space = tiny.space(multi=True)
    users, times = list(MULTI), [5_000] * len(MULTI)
    inputs = space.encode_users(users, times)
    for row, (user, t) in enumerate(zip(users, times, strict=True)):
        singles, lists, recent = space.encode_user(user, t)
        assert tuple(int(inputs[name][row]) for name in space.user_inputs) == singles
        for name, found in zip(("user_interests", "user_bio"), lists, strict=True):
            assert inputs[name][row].tolist() == found + [0] * (inputs[name].shape[1] - len(found))
        assert inputs["history"][row, : len(recent)].tolist() == recent
        assert not inputs["history"][row, len(recent) :].any()


def test_the_kernel_is_split_by_the_recorded_concatenation_order() -> None:
    """The same model with its concatenation recorded in another order (the kernel's row
    blocks moved to match) embeds alike: the runtime follows the record, not its own copy."""
    space = tiny.space()
    weights = tiny.weights(space)
    config = tiny.config()
    order = list(config.user_concat)
    widths = {t: weights[t].shape[1] for t in order}
    starts = dict(zip(order, np.cumsum([0, *widths.values()]).tolist(), strict=False))
    moved = order[::-1]
    kernel = weights["user_hidden_w"]
    blocks = [kernel[starts[t] : starts[t] + widths[t]] for t in moved]
    reordered = {**weights, "user_hidden_w": np.concatenate(blocks)}
    other = NumpyUserTower(reordered, dataclasses.replace(config, user_concat=tuple(moved)))
    users, times = tower_inputs(ROWS)
    np.testing.assert_allclose(
        other.embed(space, users, times),
        NumpyUserTower(weights, config).embed(space, users, times),
        rtol=1e-5,
        atol=1e-6,
    )
    wrong = NumpyUserTower(reordered, config)  # moved blocks read in the old order
    assert not np.allclose(wrong.embed(space, users, times), other.embed(space, users, times))


def test_a_tower_without_its_recorded_order_is_refused() -> None:
    space = tiny.space()
    config = tiny.config()
    with pytest.raises(ArtifactError, match="retrain"):
        NumpyUserTower(tiny.weights(space), dataclasses.replace(config, user_concat=()))
    with pytest.raises(ArtifactError, match="user_parts"):
        NumpyUserTower(tiny.weights(space), dataclasses.replace(config, user_concat=("user_emb",)))


def test_every_table_is_indexed_by_an_encoded_input() -> None:
    space = tiny.space(multi=True)
    inputs = space.encode_users(list(MULTI), [0] * len(MULTI))
    assert {table_input(t) for t in tiny.config(space).user_tables()} == set(inputs)


def test_filter_masks_pass_one_included_and_no_excluded_value() -> None:
    names = ("A", "B", "C")
    genres = [("A",), ("B",), ("A", "C"), (), ("B", "C")]
    meta = ItemMeta("g", names, tag_bits(genres, names), np.arange(5), np.ones(5, np.float32))
    a, b, c = (meta.filter_mask([n]) for n in names)
    assert meta.passing(a | b, 0).tolist() == [True, True, True, False, True]
    assert meta.passing(0, c).tolist() == [True, True, False, True, False]
    assert meta.passing(b, c).tolist() == [False, True, False, False, False]
    assert meta.passing(a, 0, np.array([4, 2, 0])).tolist() == [False, True, True]


def test_filtered_searches_keep_the_index_setting_and_pass_only_matching_rows() -> None:
    bundle = tiny.bundle()
    vectors = bundle.index.reconstruct_n(0, bundle.index.ntotal)
    ivf = faiss.index_factory(tiny.DIM, "IVF4,Flat", faiss.METRIC_INNER_PRODUCT)
    ivf.train(vectors)
    ivf.add(vectors)
    set_knob(ivf, NPROBE, 3)
    horror = bundle.meta.filter_mask(["Horror"])
    params = GenreFilters(ivf, bundle.meta).params(horror, 0)
    assert params.nprobe == 3
    _, rows = ivf.search(vectors[:5], 20, params=params)
    found = rows[rows >= 0]
    assert len(found) and bundle.meta.passing(horror, 0, found).all()
    assert GenreFilters(ivf, bundle.meta).params(0, 0) is None


def test_each_index_kind_has_its_one_knob() -> None:
    assert [knob(k) for k in ("flat", "ivf", "ivf-sq8", "hnsw")] == [
        None,
        NPROBE,
        NPROBE,
        EF_SEARCH,
    ]
    hnsw = faiss.IndexHNSWFlat(tiny.DIM, 8)
    set_knob(hnsw, EF_SEARCH, 77)
    assert hnsw.hnsw.efSearch == 77
    assert with_selector(hnsw, faiss.IDSelectorRange(0, 1)).efSearch == 77
    with pytest.raises(ValueError, match="nprobe or efSearch"):
        set_knob(hnsw, "depth", 3)


def test_filters_over_more_than_64_values_use_several_words() -> None:
    names = tuple(f"t{i}" for i in range(150))
    tags = [("t0",), ("t70",), ("t149", "t3"), (), ("t64", "t65")]
    bits = tag_bits(tags, names)
    assert bits.shape == (5, 3)
    meta = ItemMeta("t", names, bits, np.arange(5), np.ones(5, np.float32))
    assert meta.passing(meta.filter_mask(["t149"]), 0).tolist() == [0, 0, 1, 0, 0]
    assert meta.passing(meta.filter_mask(["t70", "t64"]), 0).tolist() == [0, 1, 0, 0, 1]
    assert meta.passing(0, meta.filter_mask(["t3", "t0"])).tolist() == [0, 1, 0, 1, 1]
    with pytest.raises(InvalidRequestError, match="unknown t value 'nope'"):
        meta.filter_mask(["nope"])


def test_a_catalog_without_a_filter_field_refuses_filters_clearly() -> None:
    meta = ItemMeta(None, (), tag_bits([(), ()], ()), np.arange(2), np.ones(2, np.float32))
    assert meta.tags.shape == (2, 0)
    assert meta.passing(0, 0).tolist() == [True, True]
    with pytest.raises(InvalidRequestError, match="no filter field"):
        meta.filter_mask(["Drama"])
