"""The overlay against a from-scratch rebuild: after any sequence of upserts and deletes,
applied in any batching, the version searched beside its overlay answers what an index of
the final catalog answers: exact for a flat version, and for an IVF version an IVF on the
same centroids (the overlay shares the version's coarse quantizer). Fast tier: pure logic on
small catalogs."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from catalog.events import ItemChange
from catalog.overlay import Overlay, ivf_of, merge, search
from features.activity import SeenIndex
from index.tuning import with_selector

DIM, WORDS = 8, 1


def _catalog(rng: np.random.Generator, n: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    ids = [f"i{j}" for j in range(n)]
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    tags = rng.integers(0, 4, (n, WORDS)).astype(np.uint64)  # filter bits 0 and 1
    return ids, vectors, tags


def _changes(rng: np.random.Generator, ids: list[str], count: int):
    """Random upserts (of the version's items and new ones) and deletes, with their vectors."""
    pool = ids + [f"new{j}" for j in range(20)]
    out = []
    for e in range(count):
        item = pool[rng.integers(len(pool))]
        if rng.random() < 0.3:
            out.append((ItemChange(f"e{e}", item, e + 1, None), None, None))
        else:
            vector = rng.standard_normal(DIM).astype(np.float32)
            tag = rng.integers(0, 4, WORDS).astype(np.uint64)
            out.append((ItemChange(f"e{e}", item, e + 1, {}), vector, tag))
    return out


def _apply(overlay: Overlay, batch, lookup) -> Overlay:
    ups = [(v, t) for _, v, t in batch if v is not None]
    vectors = np.array([v for v, _ in ups], np.float32).reshape(-1, DIM)
    tags = np.array([t for _, t in ups], np.uint64).reshape(-1, WORDS)
    offset = int(batch[-1][0].event_id[1:]) + 1
    return overlay.apply([c for c, _, _ in batch], vectors, tags, lookup, {0: offset})


NLIST, NPROBE = 8, 3


def _version(kind: str, vectors: np.ndarray, rng: np.random.Generator) -> faiss.Index:
    """The version's index: exact, or an IVF on fixed centroids (as trained)."""
    if kind == "flat":
        index = faiss.IndexFlatIP(DIM)
    else:
        quantizer = faiss.IndexFlatIP(DIM)
        quantizer.add(rng.standard_normal((NLIST, DIM)).astype(np.float32))
        index = faiss.IndexIVFFlat(quantizer, DIM, NLIST, faiss.METRIC_INNER_PRODUCT)
        index.nprobe = NPROBE
    index.add(vectors)
    return index


def _rebuild(version: faiss.Index, vectors: np.ndarray) -> faiss.Index:
    """A from-scratch index of ``vectors`` of the version's kind (an IVF: on its centroids,
    as a rebuild reusing them would assign the items)."""
    ivf = ivf_of(version)
    if ivf is None:
        index = faiss.IndexFlatIP(DIM)
    else:
        index = faiss.IndexIVFFlat(ivf.quantizer, DIM, NLIST, faiss.METRIC_INNER_PRODUCT)
        index.nprobe = NPROBE
    index.add(vectors)
    return index


def _search(
    index: faiss.Index,
    overlay: Overlay,
    base_tags: np.ndarray,
    queries: np.ndarray,
    k: int,
    bit: int | None,
):
    """What a server does: the version's search less its hidden rows (and the filter), the
    overlay's search (with the filter), one top-k."""
    passes = ~overlay.hidden
    added = None
    if bit is not None:
        passes &= (base_tags[:, 0] & np.uint64(1 << bit)) > 0
        added = (overlay.tags[:, 0] & np.uint64(1 << bit)) > 0
    if overlay.combined:  # one search: one selector over the version's rows and the overlay's
        params, _held = overlay.combined_params(passes, added)  # held for the search
        return search(index, overlay, queries, k, params)
    bitmap = np.packbits(passes, bitorder="little")
    params = with_selector(index, faiss.IDSelectorBitmap(len(passes), faiss.swig_ptr(bitmap)))
    return search(index, overlay, queries, k, params, added)


@pytest.mark.parametrize("kind", ["flat", "ivf"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_version_and_its_overlay_answer_as_a_rebuild_of_the_final_catalog(
    seed: int, kind: str
) -> None:
    rng = np.random.default_rng(seed)
    ids, vectors, tags = _catalog(rng, 40 if kind == "flat" else 400)
    index = _version(kind, vectors, rng)
    lookup = SeenIndex(ids).lookup
    overlay = Overlay.empty(len(ids), DIM, WORDS, index=index)
    assert overlay.combined == (kind == "ivf")
    truth = {i: (vectors[j], tags[j]) for j, i in enumerate(ids)}
    changes = _changes(rng, ids, 150)
    start = 0
    while start < len(changes):  # batches of any size, as the feed happens to read them
        size = int(rng.integers(1, 12))
        overlay = _apply(overlay, changes[start : start + size], lookup)
        start += size
    for change, vector, tag in changes:
        if change.deleted:
            truth.pop(change.item_id, None)
        else:
            truth[change.item_id] = (vector, tag)
    assert overlay.changes == 150 and overlay.positions == {0: 150}
    # The rebuild: an index of the version's kind over the final catalog.
    final_ids = np.array(sorted(truth))
    final = np.array([truth[i][0] for i in final_ids])
    final_tags = np.array([truth[i][1] for i in final_ids])
    queries = rng.standard_normal((6, DIM)).astype(np.float32)
    space = [*ids, *overlay.ids]  # row → item id
    for bit in (None, 0, 1):
        keep = (
            np.ones(len(final_ids), bool)
            if bit is None
            else (final_tags[:, 0] & np.uint64(1 << bit)) > 0
        )
        want_scores, want = _rebuild(index, final[keep]).search(queries, 10)
        scores, rows = _search(index, overlay, tags, queries, 10, bit)
        for q in range(len(queries)):
            got = [space[r] for r in rows[q] if r >= 0]
            assert got == [final_ids[keep][j] for j in want[q] if j >= 0]
            assert len(got) == 10  # the probed lists hold enough
            np.testing.assert_allclose(scores[q], want_scores[q], rtol=1e-5)
    # Every alive item resolves to its newest row; a deleted one to none.
    for item in [*ids, *(f"new{j}" for j in range(20))]:
        (row,) = overlay.rows_of([item], lookup)
        if item in truth:
            np.testing.assert_array_equal(
                (vectors[row] if row < len(ids) else overlay.vectors[row - len(ids)]),
                truth[item][0],
            )
        else:
            assert row == -1


def test_a_change_is_never_half_applied() -> None:
    """``apply`` leaves the overlay it was called on as it was: a search holding it sees
    none of the batch."""
    rng = np.random.default_rng(5)
    ids, vectors, _ = _catalog(rng, 10)
    lookup = SeenIndex(ids).lookup
    before = Overlay.empty(len(ids), DIM, WORDS, {0: 7})
    after = _apply(
        before,
        [
            (ItemChange("e7", "i3", 1, None), None, None),
            (ItemChange("e8", "x", 2, {}), vectors[0], np.zeros(WORDS, np.uint64)),
        ],
        lookup,
    )
    assert not before.hidden.any() and before.ids == () and before.positions == {0: 7}
    assert after.hidden[3] and after.ids == ("x",) and after.positions == {0: 9}
    with pytest.raises(ValueError, match="upserts"):
        before.apply(
            [ItemChange("e", "y", 1, {})], np.zeros((0, DIM)), np.zeros((0, WORDS)), lookup, {}
        )


def test_merge_takes_the_best_of_both_lists_and_pads() -> None:
    base = (np.array([[0.9, 0.5, -np.inf]], np.float32), np.array([[3, 1, -1]]))
    added = (np.array([[0.7, 0.1]], np.float32), np.array([[12, 11]]))
    scores, rows = merge(base, added, 4)
    assert rows.tolist() == [[3, 12, 1, 11]]
    np.testing.assert_allclose(scores, [[0.9, 0.7, 0.5, 0.1]])
    empty = Overlay.empty(10, DIM, WORDS)
    s, r = empty.search(np.zeros((2, DIM), np.float32), 3)
    assert (r == -1).all() and np.isneginf(s).all()


def test_merge_keeps_the_first_list_when_the_second_cannot_enter_it() -> None:
    base = (np.array([[0.9, 0.5, 0.4]], np.float32), np.array([[3, 1, 2]]))
    tie = (np.array([[0.5, 0.1]], np.float32), np.array([[12, 11]]))
    assert merge(base, tie, 2)[1].tolist() == [[3, 1]]  # a tie goes to the first list
    assert merge(base, tie, 3)[1].tolist() == [[3, 1, 12]]
    short = (np.array([[0.9, -np.inf]], np.float32), np.array([[3, -1]]))
    assert merge(short, tie, 2)[1].tolist() == [[3, 12]]  # a list that ran out takes more


def test_new_items_alone_need_no_selector_in_a_combined_search() -> None:
    rng = np.random.default_rng(9)
    ids, vectors, _ = _catalog(rng, 300)
    index = _version("ivf", vectors, rng)
    new = rng.standard_normal((40, DIM)).astype(np.float32)
    changes = [ItemChange(f"e{j}", f"new{j}", j + 1, {}) for j in range(40)]
    overlay = Overlay.empty(len(ids), DIM, WORDS, index=index).apply(
        changes, new, np.zeros((40, WORDS), np.uint64), SeenIndex(ids).lookup, {}
    )
    assert overlay.combined and not overlay.hidden.any()
    assert overlay.combined_params(None, None) == (None, None)
    queries = rng.standard_normal((5, DIM)).astype(np.float32)
    scores, rows = search(index, overlay, queries, 10)
    want_scores, want = _rebuild(index, np.concatenate([vectors, new])).search(queries, 10)
    np.testing.assert_array_equal(rows, want)  # rows: the version's, then the overlay's
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5)
    # Probing past the lists there are (nprobe > nlist: FAISS pads with -1) adds nothing twice.
    index.nprobe = NLIST + 2  # as a version is loaded: before its overlay
    overlay = Overlay.empty(len(ids), DIM, WORDS, index=index).apply(
        changes, new, np.zeros((40, WORDS), np.uint64), SeenIndex(ids).lookup, {}
    )
    everything = search(index, overlay, queries, 340)[1]
    assert all(sorted(r) == list(range(340)) for r in everything)
