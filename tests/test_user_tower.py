"""The one user encoder behind both runtimes, and the NumPy tower's folded kernel split by
the concatenation order the export records (fast tier: a random tower, no training; the
trained model's parity with its SavedModel is ``test_towers.py``)."""

from __future__ import annotations

import dataclasses

import faiss
import numpy as np
import pytest

from index.items import ItemMeta, genre_bits
from index.tuning import EF_SEARCH, NPROBE, knob, set_knob, with_selector
from recsys.errors import ArtifactError
from serving.filters import GenreFilters
from tests import tiny
from tests.users import UserRow, tower_inputs
from towers.encoding import USER_SCALARS
from towers.model_config import USER_TABLES
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


def test_encode_users_stacks_encode_user() -> None:
    space = tiny.space()
    users, times = tower_inputs(ROWS)
    inputs = space.encode_users(users, times)
    for row, (user, t) in enumerate(zip(users, times, strict=True)):
        scalars, recent = space.encode_user(user, t)
        assert tuple(int(getattr(inputs, name)[row]) for name in USER_SCALARS) == scalars
        assert inputs.history[row, : len(recent)].tolist() == recent
        assert not inputs.history[row, len(recent) :].any()


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
    assert {v for v in USER_TABLES.values() if v != "history"} == set(USER_SCALARS)
    assert set(tiny.config().user_tables()) == set(USER_TABLES)


def test_genre_masks_pass_one_included_and_no_excluded_genre() -> None:
    names = ("A", "B", "C")
    genres = [("A",), ("B",), ("A", "C"), (), ("B", "C")]
    meta = ItemMeta(names, genre_bits(genres, names), np.arange(5), np.ones(5, np.float32))
    a, b, c = (meta.genre_mask([n]) for n in names)
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
    horror = bundle.meta.genre_mask(["Horror"])
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
