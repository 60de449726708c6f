"""The index build: exact and ANN indexes over item-tower embeddings, verified against exact
search before publishing, versioned, rolled back, paired with their model, and refused
when anything is off."""

from __future__ import annotations

import shutil

import faiss
import numpy as np
import pandas as pd
import pytest

from index.build import build_index
from index.catalog import Catalog
from index.plan import embed_catalog
from index.recall import ExactTopK, query_recalls, recall_at_k, recall_bound, tune
from index.versions import INDEX_FILE, load_index, prune, rollback, versions
from recsys import artifacts
from recsys.errors import ArtifactError, DataError
from serving.bundle import Bundle


@pytest.fixture
def scratch(trained, tmp_path):
    """A config whose indexes live in a fresh folder, next to the session's trained model."""
    root = tmp_path / "artifacts"
    root.mkdir()
    (root / "models").symlink_to(trained.models_dir)
    return trained.with_overrides({"paths": {"artifacts": str(root)}})


def test_index_returns_the_exact_top_k_of_the_item_tower_savedmodel(trained, ml) -> None:
    index, item_ids, manifest = load_index(artifacts.current(trained.indexes_dir))
    model_dir = artifacts.current(trained.models_dir)
    assert manifest["model_version"] == model_dir.name
    assert manifest["index_type"] == "Flat" and manifest["recall_at_10"] == 1.0
    ids, vectors = embed_catalog(model_dir, ml)
    assert ids == item_ids and manifest["items"] == len(ml.items)
    queries = np.random.default_rng(0).normal(size=(8, vectors.shape[1])).astype(np.float32)
    scores, _ = index.search(queries, 10)
    exact = -np.sort(-(queries @ vectors.T), axis=1)[:, :10]
    np.testing.assert_allclose(scores, exact, atol=1e-4)


def test_ivf_on_a_synthetic_catalog_reaches_the_recall_it_records(scratch, ml) -> None:
    config = scratch.with_overrides({"index": {"type": "ivf", "nlist": 64}})
    catalog = Catalog.synthetic(ml, 30_000, chunk=7_000)
    result = build_index(config, ml, catalog=catalog, log=lambda _: None)
    index, ids, manifest = load_index(artifacts.current(config.indexes_dir))
    assert manifest["index_type"] == "IVF64,Flat" and len(ids) == 30_000 == index.ntotal
    assert ids[: len(ml.items)] == list(ml.items["item_id"])
    assert faiss.extract_index_ivf(index).nprobe == result.params["nprobe"]
    assert manifest["recall_at_10"] >= 0.95 and result.sweep[-1]["recall"] >= 0.95
    # Recall on other queries than the build verified with, against a brute-force scan.
    from index.recall import user_queries

    queries = user_queries(artifacts.current(config.models_dir), ml, 200, seed=7)
    exact = faiss.IndexFlatIP(index.d)
    exact.add(index_vectors(index))
    truth = ExactTopK(queries)
    truth.add(index_vectors(index), 0)
    _, found = index.search(queries, 10)
    assert recall_at_k(found, truth.truth()) >= 0.9
    _, flat = exact.search(queries, 10)
    assert recall_at_k(flat, truth.truth()) == 1.0


def test_genre_filters_run_inside_an_ivf_search_at_its_own_nprobe(
    scratch, feature_store, ml
) -> None:
    """A filtered search on an IVF index keeps the nprobe the build chose and gives the first
    k passing items of the same probed lists: what fetching them all and filtering gives."""
    from features.online.read import FeatureReader
    from serving.recommender import Recommender
    from serving.request import Request

    config = scratch.with_overrides({"index": {"type": "ivf", "nlist": 64}})
    build_index(config, ml, catalog=Catalog.synthetic(ml, 20_000, chunk=7_000), log=lambda _: None)
    bundle = Bundle.load_current(config.models_dir, config.indexes_dir)
    nprobe = faiss.extract_index_ivf(bundle.index).nprobe
    assert nprobe > 1
    rec = Recommender(bundle, FeatureReader(config), config.serving)
    genres = bundle.meta.filter_values
    horror, drama = 1 << genres.index("Horror"), 1 << genres.index("Drama")
    for user in ("196", "1", "42"):
        t = 889_000_000_000
        query = rec.user_vector(FeatureReader(config).read(user), t)
        _, everything = bundle.index.search(query, bundle.index.ntotal)
        rows = everything[0][everything[0] >= 0]
        g = bundle.meta.tags[rows][:, 0]  # 19 genres: one 64-bit word
        for include, exclude, k in ((horror, 0, 20), (0, drama, 50), (horror, drama, 10)):
            passing = rows[
                ((g & np.uint64(include)) != 0 if include else True)
                & ((g & np.uint64(exclude)) == 0)
            ]
            answer = rec.recommend(
                Request(
                    user,
                    k=k,
                    include_seen=True,
                    request_time_ms=t,
                    include_genres=["Horror"] if include else [],
                    exclude_genres=["Drama"] if exclude else [],
                )
            )
            assert answer.rows.tolist() == passing[:k].tolist()
    assert faiss.extract_index_ivf(bundle.index).nprobe == nprobe  # untouched by the filters


def index_vectors(index: faiss.Index) -> np.ndarray:
    """The stored vectors of an IVF-Flat index, in id order."""
    ivf = faiss.extract_index_ivf(index)
    ivf.make_direct_map()
    return ivf.reconstruct_n(0, ivf.ntotal)


def test_recall_bound_is_the_mean_less_two_standard_errors() -> None:
    recalls = np.array([1.0, 0.9, 0.8, 1.0])
    se = recalls.std(ddof=1) / 2
    assert recall_bound(recalls) == pytest.approx(recalls.mean() - 2 * se)
    assert recall_bound(np.ones(50)) == 1.0


def test_tune_wants_the_target_cleared_by_the_margin_not_just_reached() -> None:
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((20_000, 16)).astype(np.float32)
    queries = rng.standard_normal((300, 16)).astype(np.float32)
    exact = faiss.IndexFlatIP(16)
    exact.add(vectors)
    _, rows = exact.search(queries, 10)
    truth = [set(r.tolist()) for r in rows]
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(16), 16, 64, faiss.METRIC_INNER_PRODUCT)
    ivf.train(vectors)
    ivf.add(vectors)
    ivf.nprobe = 4
    _, found = ivf.search(queries, 10)
    at_4 = query_recalls(found, truth)
    assert at_4.std() > 0 and at_4.mean() < 1.0

    params, recall, sweep = tune(ivf, "ivf-flat", queries, truth, min_recall=float(at_4.mean()))
    assert params["nprobe"] > 4  # the plain mean reached the target at 4
    assert recall > at_4.mean()
    chosen = next(s for s in sweep if s["nprobe"] == params["nprobe"])
    assert chosen["recall_bound"] >= at_4.mean()
    assert all(s["recall_bound"] < at_4.mean() for s in sweep[:-1])


def test_recall_below_the_threshold_is_refused_and_nothing_published(scratch, ml) -> None:
    build_index(scratch, ml, log=lambda _: None)
    before = artifacts.current(scratch.indexes_dir)
    config = scratch.with_overrides({"index": {"type": "ivf-sq8", "nlist": 64, "min_recall": 1.0}})
    with pytest.raises(ArtifactError, match=r"below index\.min_recall"):
        build_index(config, ml, catalog=Catalog.synthetic(ml, 20_000), log=lambda _: None)
    assert artifacts.current(scratch.indexes_dir) == before
    assert len(versions(scratch.indexes_dir)) == 1


def test_a_build_that_dies_midway_publishes_nothing_and_leaves_no_version(
    scratch, ml, monkeypatch
) -> None:
    build_index(scratch, ml, log=lambda _: None)
    before = artifacts.current(scratch.indexes_dir)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(faiss, "write_index", crash)
    with pytest.raises(OSError, match="disk full"):
        build_index(scratch, ml, log=lambda _: None)
    assert artifacts.current(scratch.indexes_dir) == before
    assert versions(scratch.indexes_dir) == [before.name]
    assert not list(scratch.indexes_dir.glob(".*.tmp"))


def test_stale_staging_of_a_killed_build_is_cleared_and_never_listed(scratch, ml) -> None:
    stale = scratch.indexes_dir / ".20200101T000000Z-dead00.tmp"
    stale.mkdir(parents=True)
    (stale / INDEX_FILE).write_bytes(b"half")
    assert versions(scratch.indexes_dir) == []
    build_index(scratch, ml, log=lambda _: None)
    assert not stale.exists()


def test_rollback_list_and_pruning(scratch, ml) -> None:
    root = scratch.indexes_dir
    built = [build_index(scratch, ml, log=lambda _: None).version for _ in range(3)]
    assert versions(root) == built and artifacts.current(root).name == built[-1]
    assert rollback(root) == built[1] and artifacts.current(root).name == built[1]
    assert rollback(root, built[2]) == built[2]
    with pytest.raises(ArtifactError, match="no index version"):
        rollback(root, "nope")
    # A corrupt target is refused before CURRENT moves.
    data = bytearray((root / built[0] / INDEX_FILE).read_bytes())
    data[-1] ^= 0xFF
    (root / built[0] / INDEX_FILE).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="corrupt"):
        rollback(root, built[0])
    assert artifacts.current(root).name == built[2]
    assert prune(root, keep=2) == [built[0]] and versions(root) == built[1:]


def test_corrupt_or_truncated_index_file_is_refused(trained, tmp_path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(artifacts.current(trained.indexes_dir), copy)
    data = bytearray((copy / INDEX_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / INDEX_FILE).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="corrupt"):
        load_index(copy)
    (copy / INDEX_FILE).write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ArtifactError, match="corrupt"):
        load_index(copy)


def test_manifest_dimension_mismatch_is_refused(trained, tmp_path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(artifacts.current(trained.indexes_dir), copy)
    manifest = artifacts.read_manifest(copy)
    artifacts.write_manifest(copy, {**manifest, "dim": manifest["dim"] + 1})
    with pytest.raises(ArtifactError, match="dim"):
        load_index(copy)


def test_index_with_another_models_user_tower_is_refused(trained) -> None:
    index_dir = artifacts.current(trained.indexes_dir)
    with pytest.raises(ArtifactError, match="cannot serve model"):
        Bundle.load(trained.models_dir, index_dir, model_version="20990101T000000Z-other0")
    bundle = Bundle.load(
        trained.models_dir, index_dir, model_version=artifacts.current(trained.models_dir).name
    )
    assert bundle.index_version == index_dir.name


def test_index_naming_a_missing_model_is_refused(trained, tmp_path) -> None:
    with pytest.raises(ArtifactError):
        Bundle.load(tmp_path / "no-models", artifacts.current(trained.indexes_dir))


def _catalog(ml, items: pd.DataFrame) -> Catalog:
    class Fixed(Catalog):
        def chunks(self):
            yield items

    return Fixed("fixed", len(items), ml.schema.items, ml)


def test_empty_catalog_and_duplicate_ids_are_refused(scratch, ml) -> None:
    with pytest.raises(DataError, match="empty"):
        build_index(scratch, ml, catalog=_catalog(ml, ml.items.head(0)), log=lambda _: None)
    doubled = pd.concat([ml.items.head(5), ml.items.head(1)])
    with pytest.raises(DataError, match="duplicate item id"):
        build_index(scratch, ml, catalog=_catalog(ml, doubled), log=lambda _: None)
    assert versions(scratch.indexes_dir) == []
