"""The ranker served: saved into its model version, loaded onto an index's rows, held to
LightGBM's offline scores, one call per batch on the serving thread, and a ranker that fails
answering in the search's order, flagged."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import faiss
import grpc
import numpy as np
import pytest

from candidates.neighbours import NeighbourTable
from candidates.sources import Query, TwoTowerSource
from features.online.read import FeatureReader
from index.items import ItemMeta, tag_bits
from ranking import servable
from ranking.features import WINDOWS_DAYS, blend_score, feature_names, features, first_cut
from ranking.servable import SOURCES, ItemFacts, ServedRanker, Settings
from recsys import artifacts
from recsys.config import Config
from recsys.data.dataset import Dataset
from recsys.errors import ArtifactError
from recsys.v1 import recommender_pb2 as pb
from recsys.v1 import recommender_pb2_grpc as pb_grpc
from serving.answers import Recommendation, ServingPath
from serving.bundle import Bundle, _load_ranker, tag_floats
from serving.recommender import Recommender
from tests.conftest import running_server
from tests.test_batch_answers import mix

NAMES = feature_names(list(SOURCES))


def _booster(seed: int = 0) -> Any:  # Any: a lightgbm.Booster
    import lightgbm as lgb

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2000, len(NAMES)))
    x[rng.random(x.shape) < 0.1] = np.nan  # missing values take their own branch
    y = (np.nan_to_num(x[:, 0]) + 0.5 * np.nan_to_num(x[:, 5]) > 0.5).astype(float)
    params = {"objective": "binary", "num_leaves": 7, "verbosity": -1, "num_threads": 1}
    return lgb.train(params, lgb.Dataset(x, y, feature_name=NAMES), num_boost_round=20), x


def _saved(tmp_path: Path, cut_depth: int = 0) -> tuple[Path, Any, np.ndarray]:
    """A ranker over items a..e saved into ``tmp_path``: ``b`` neighbours ``a`` and ``c``."""
    booster, x = _booster()
    settings = Settings(NAMES, list(SOURCES), 3, 2, 7, 0.5, 20, 0.1, cut_depth, 0.3)
    table = NeighbourTable(
        np.array([[1, -1], [0, 2], [1, -1], [-1, -1], [-1, -1]], np.int32),
        np.array([[0.5, 0], [0.5, 0.25], [0.25, 0], [0, 0], [0, 0]], np.float32),
    )
    facts = ItemFacts(
        item_ids=["a", "b", "c", "d", "e"],
        prior=np.array([5.0, 4, 3, 2, 1]),
        table=table,
        event_rows=np.array([0, 1, 1]),
        event_times=np.array([1_000, 2_000, 3_000]),
        first_seen=np.array([1_000, 2_000, np.iinfo(np.int64).max, 500, 400]),
    )
    servable.save(tmp_path, booster, settings, facts, x)
    return tmp_path, booster, x


def _flat(vectors: np.ndarray) -> TwoTowerSource:
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    return TwoTowerSource(index)


def test_a_loaded_ranker_maps_its_items_onto_the_index_rows(tmp_path: Path) -> None:
    model_dir, _, _ = _saved(tmp_path)
    # The index holds the items in another order, a new item "z", and not "e".
    ids = ["c", "z", "b", "a", "d"]
    vectors = np.eye(5, 4, dtype=np.float32)
    served = ServedRanker.load(
        model_dir, ids, vectors, np.zeros((5, 0), np.float32), _flat(vectors)
    )
    table = served.knn._table
    # "b" (row 2) neighbours "a" (row 3) and "c" (row 0); "z" (row 1) has none.
    np.testing.assert_array_equal(table.neighbours[2], [3, 0])
    np.testing.assert_allclose(table.weights[2], [0.5, 0.25])
    np.testing.assert_array_equal(table.neighbours[1], [-1, -1])
    np.testing.assert_array_equal(served.catalog.prior, [3, 0, 4, 5, 2])
    # Events on "a" and "b", the clock at the newest; "z" never seen.
    np.testing.assert_array_equal(served.state.windows[0].counts_of(np.arange(5)), [0, 0, 2, 1, 0])
    assert served.state.now == 3_000
    assert served.state.first_seen[1] == np.iinfo(np.int64).max
    assert served.state.first_seen[4] == 500


def test_the_compiled_ranker_scores_as_lightgbm_did_and_a_broken_probe_is_refused(
    tmp_path: Path,
) -> None:
    model_dir, booster, x = _saved(tmp_path)
    compiled = servable.Compiled(model_dir / servable.RANKER_DIR / servable.MODEL_FILE)
    offline = booster.predict(x, num_threads=1)
    assert np.abs(compiled.predict(x) - offline).max() <= servable.PARITY
    probe = model_dir / servable.RANKER_DIR / servable.PROBE_FILE
    with np.load(probe) as f:
        rows, scores = f["features"], f["scores"]
    np.savez(probe, features=rows, scores=scores + 1e-3)
    vectors = np.eye(5, 4, dtype=np.float32)
    with pytest.raises(ArtifactError, match="probe"):
        ServedRanker.load(model_dir, list("abcde"), vectors, np.zeros((5, 0)), _flat(vectors))


@pytest.mark.parametrize("cut_depth", [0, 2])
def test_ranking_a_batch_starts_no_thread(tmp_path: Path, cut_depth: int) -> None:
    model_dir, booster, _ = _saved(tmp_path, cut_depth)
    vectors = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    served = ServedRanker.load(model_dir, list("abcde"), vectors, np.zeros((5, 0)), _flat(vectors))
    query = Query(
        recent=np.array([[1, 0], [-1, -1]]),
        times_ms=np.array([4_000, 4_000]),
        vectors=vectors[:2],
        banned=[np.array([1, 0]), np.zeros(0, np.int64)],
        last_ms=np.array([3_500, -1]),
        earlier=np.array([2, 0]),
    )
    before = threading.active_count()
    found, scores = served.rank(query)
    assert threading.active_count() == before
    assert set(found.rows[found.owner == 0].tolist()).isdisjoint({0, 1})  # its seen items
    # The same features LightGBM scored offline, plus the blend it was trained to add to.
    lists = {n: s(query, 3) for n, s in served.sources.items()}
    whole, matrix = features(query, lists, served.catalog, served.state, served.knn)
    if cut_depth:  # the offline rows cut by their own columns: what the ranker trained on
        blend = blend_score(matrix[:, NAMES.index("tower_z")], matrix[:, NAMES.index("knn_z")], 0.3)
        keep = first_cut(whole.owner, blend, cut_depth)
        assert not keep.all() and (found.groups(2) <= cut_depth).all()
        matrix = matrix[keep]
        np.testing.assert_array_equal(found.rows, whole.rows[keep])
    expected = booster.predict(matrix, num_threads=1) + servable.base_score(matrix, NAMES, 0.5)
    np.testing.assert_allclose(scores, expected, atol=servable.PARITY, rtol=0)


def test_tag_floats_decode_the_index_bitsets() -> None:
    names = [f"g{i}" for i in range(70)]  # two words
    tags = [["g0", "g69"], [], ["g64", "g3"]]
    meta = ItemMeta("genre", tuple(names), tag_bits(tags, names), np.zeros(0), np.zeros(0))
    got = tag_floats(meta)
    assert got.shape == (3, 70)
    assert [np.flatnonzero(r).tolist() for r in got] == [[0, 69], [], [3, 64]]


def test_serving_a_ranker_the_model_lacks_is_refused(tmp_path: Path) -> None:
    index = faiss.IndexFlatIP(4)
    meta = ItemMeta(None, (), np.zeros((0, 0), np.uint64), np.zeros(0), np.zeros(0))
    with pytest.raises(ArtifactError, match="has no ranker"):
        _load_ranker(tmp_path, index, [], meta)


# --- on the trained model, its index and the real Feast store ---------------------------


@pytest.fixture(scope="module")
def pair(ranked: Config, feature_store: Config) -> tuple[Config, Recommender, Recommender]:
    """The ranked servable over the session's Feast store: ranker on, and off."""
    on = Bundle.load_current(ranked.models_dir, ranked.indexes_dir, ranker="gbdt")
    off = Bundle.load_current(ranked.models_dir, ranked.indexes_dir)
    features_ = FeatureReader(ranked)
    return (
        ranked,
        Recommender(on, features_, ranked.serving),
        Recommender(off, features_, ranked.serving),
    )


def test_the_ranker_travels_in_its_model_version(ranked: Config) -> None:
    model_dir = artifacts.current(ranked.models_dir)
    manifest = artifacts.read_manifest(model_dir)  # checksums verified
    assert f"{servable.RANKER_DIR}/{servable.MODEL_FILE}" in manifest["files"]
    settings = Settings(**manifest["ranker"])
    assert settings.names == NAMES and settings.rounds > 0
    for row in ("model", "item_knn", "blend", "pipeline"):
        assert manifest["metrics"]["pipeline"][row]["events"] == 300
    stream = manifest["metrics"]["stream"]  # the same walk: retrieval, blend, pipeline
    assert stream["model"] == manifest["metrics"]["pipeline"]["model"]
    assert stream["pipeline"] == manifest["metrics"]["pipeline"]["pipeline"]
    assert "blend" in stream and "item_knn" in stream
    saved = json.loads((model_dir / servable.RANKER_DIR / servable.SETTINGS_FILE).read_text())
    assert saved == manifest["ranker"]
    assert WINDOWS_DAYS  # the windows the item state counts


def test_ranked_answers_are_whole_valid_and_the_same_in_any_batch(pair, ml: Dataset) -> None:
    config, on, off = pair
    requests = mix(config, ml, 120, seed=5)
    alone = [on.recommend_batch([r]).outcomes[0] for r in requests]
    batched = on.recommend_batch(requests).outcomes
    plain = off.recommend_batch(requests).outcomes
    reordered = 0
    for request, a, b, p in zip(requests, alone, batched, plain, strict=True):
        assert isinstance(a, Recommendation) and isinstance(b, Recommendation), request
        assert a.path in (ServingPath.PERSONALIZED, ServingPath.COLD_START), request
        ids = [i.item_id for i in a.items]
        assert ids == [i.item_id for i in b.items], request
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5, rtol=0)
        # As many as the search finds (a rare genre may pass fewer than k), all distinct.
        assert len(ids) == len(set(ids)) == len(p.items), request
        assert not set(ids) & set(request.exclude), request
        assert (np.diff(a.scores) <= 1e-6).all(), request  # best first
        reordered += ids != [i.item_id for i in p.items]
    assert reordered > len(requests) // 2  # the ranker, not the search, ordered them
    assert on.rank_failures == 0


def test_a_failing_ranker_answers_in_the_searchs_order_flagged(pair, ml: Dataset) -> None:
    config, on, off = pair
    requests = [r for r in mix(config, ml, 40, seed=9) if not r.user_id.startswith("loadtest")]
    stage = on._rank
    assert stage is not None

    def broken(*_: Any) -> Any:
        raise RuntimeError("the ranker is gone")

    original = stage.ranker.rank
    stage.ranker.rank = broken  # type: ignore[method-assign]
    try:
        served = on.recommend_batch(requests).outcomes
    finally:
        stage.ranker.rank = original  # type: ignore[method-assign]
    expected = off.recommend_batch(requests).outcomes
    assert on.rank_failures == 1
    for got, want in zip(served, expected, strict=True):
        assert isinstance(got, Recommendation) and isinstance(want, Recommendation)
        assert [i.item_id for i in got.items] == [i.item_id for i in want.items]
        if want.path is ServingPath.PERSONALIZED:
            assert got.path is ServingPath.UNRANKED
        else:
            assert got.path is want.path


def test_the_server_serves_the_ranker_over_grpc_and_counts_unranked_answers(
    ranked: Config, feature_store: Config
) -> None:
    def broken(*_: Any) -> Any:
        raise RuntimeError("the ranker is gone")

    with running_server(ranked) as stack:
        assert stack.live is not None
        live = stack.live.recommender
        assert live.bundle.ranker is not None and live._rank is not None
        with grpc.insecure_channel(stack.target) as channel:
            stub = pb_grpc.RecommenderStub(channel)
            reply = stub.Recommend(pb.RecommendRequest(user_id="1", k=10), timeout=10)
            live._rank.ranker.rank = broken  # type: ignore[method-assign]
            unranked = stub.Recommend(pb.RecommendRequest(user_id="1", k=10), timeout=10)
        counted = stack.metrics.value("recsys_recommend_requests_total", path="unranked")
    assert reply.path == pb.SERVING_PATH_PERSONALIZED
    assert len(reply.items) == 10
    scores = [i.score for i in reply.items]
    assert scores == sorted(scores, reverse=True)
    assert unranked.path == pb.SERVING_PATH_UNRANKED and len(unranked.items) == 10
    assert counted == 1


def test_the_item_feed_adds_the_topics_new_events_and_skips_what_the_state_holds(
    ranked: Config, kafka: str
) -> None:
    from kafka import KafkaProducer

    from features.events import encode
    from serving.item_feed import ItemFeed

    bundle = Bundle.load_current(ranked.models_dir, ranked.indexes_dir, ranker="gbdt")
    ranker = bundle.ranker
    assert ranker is not None
    clock = ranker.state.now
    item = bundle.item_ids[7]
    row = 7
    day = ranker.state.windows[0]
    before = float(day.counts_of(np.array([row]))[0])
    kc = ranked.kafka.model_copy(update={"bootstrap_servers": kafka, "topic": "ranker-feed-test"})
    producer = KafkaProducer(bootstrap_servers=kafka, acks="all")
    events = [  # two after the saved state's clock, one at it (already counted), one garbage
        encode("f-1", "u1", item, clock + 60_000),
        encode("f-2", "u2", item, clock + 120_000),
        encode("f-0", "u3", item, clock),
        (b"u4", b"\xff not an event"),
        encode("f-3", "u5", "no-such-item", clock + 60_000),
    ]
    for key, value in events:
        producer.send(kc.topic, key=key, value=value)
    producer.flush()
    producer.close()
    feed = ItemFeed(kc, ranker, bundle.seen).start()
    try:
        assert feed.caught_up.wait(60), "the feed never caught up with the topic"
    finally:
        feed.stop()
    assert feed.events == 2
    assert float(day.counts_of(np.array([row]))[0]) == before + 2
    assert ranker.state.now == clock + 120_000  # the clock follows the stream


def test_the_item_feed_outlives_a_broker_that_is_not_there(ranked: Config) -> None:
    from serving.item_feed import ItemFeed

    bundle = Bundle.load_current(ranked.models_dir, ranked.indexes_dir, ranker="gbdt")
    assert bundle.ranker is not None
    kc = ranked.kafka.model_copy(update={"bootstrap_servers": "127.0.0.1:9"})  # nothing there
    feed = ItemFeed(kc, bundle.ranker, bundle.seen).start()
    try:
        assert not feed.caught_up.wait(2.5)  # past its first failed connection
        assert feed._thread is not None and feed._thread.is_alive()
    finally:
        feed.stop(timeout=10)
    assert feed._thread is not None and not feed._thread.is_alive()  # stopped, not left behind
    assert feed.events == 0
