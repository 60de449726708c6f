"""Batching changes nothing about the answers: on the load test's own request mix, every
request gets the same items and scores in any batch as served alone, with exclusions, genre
filters, cold-start, invalid, late and degraded requests mixed in one batch; and through the
real gRPC server under concurrent traffic, across a hot swap, every answer equals what its
pair gives that request alone. A bad or late request fails alone."""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from features.online.read import FeatureReader
from index.build import build_index
from loadtest.run import traffic_spec
from loadtest.traffic import Traffic
from recsys import artifacts
from recsys.errors import DeadlineExceededError, InvalidRequestError
from recsys.v1 import recommender_pb2_grpc as pb_grpc
from serving.answers import Recommendation, ServingPath
from serving.bundle import Bundle
from serving.recommender import Recommender
from serving.request import Request
from serving.wire import request_from
from tests.conftest import running_server, wait_until

T = 889_000_000_000


def mix(config, ml, n: int, seed: int = 7) -> list[Request]:
    """``n`` requests of the load test's mix, at fixed moments (time features included)."""
    traffic = Traffic(traffic_spec(config, ml), seed=seed)
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        r = request_from(traffic.request())
        out.append(
            r._replace(
                request_time_ms=T + rng.randrange(7 * 86_400_000),
                exclude=tuple(r.exclude),  # hashable, to key the expected answers
                include_genres=tuple(r.include_genres),
                exclude_genres=tuple(r.exclude_genres),
            )
        )
    return out


def assert_same(batched, alone, request) -> None:
    if isinstance(alone, Exception):
        assert type(batched) is type(alone), request
        return
    assert isinstance(batched, Recommendation), (request, batched)
    assert batched.path is alone.path, request
    assert [i.item_id for i in batched.items] == [i.item_id for i in alone.items], request
    np.testing.assert_allclose(batched.scores, alone.scores, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def rec(feature_store) -> Recommender:
    bundle = Bundle.load_current(feature_store.models_dir, feature_store.indexes_dir)
    return Recommender(bundle, FeatureReader(feature_store), feature_store.serving)


def test_the_load_test_mix_gets_the_same_answers_in_any_batch(rec, feature_store, ml) -> None:
    requests = mix(feature_store, ml, 600)
    requests[5] = requests[5]._replace(k=0)  # invalid
    requests[17] = requests[17]._replace(include_genres=("Noir-ish",))  # invalid
    requests[30] = requests[30]._replace(user_id="brand-new-batch-user")  # popular items
    requests[31] = requests[31]._replace(include_seen=True)
    kinds = {
        "exclusions": any(r.exclude for r in requests),
        "genre filters": any(r.include_genres or r.exclude_genres for r in requests),
        "new users": any(r.user_id.startswith("loadtest-new-") for r in requests),
    }
    assert all(kinds.values()), kinds
    alone = [rec.recommend_batch([r]).outcomes[0] for r in requests]
    paths = {a.path for a in alone if isinstance(a, Recommendation)}
    assert paths == {ServingPath.PERSONALIZED, ServingPath.COLD_START}
    assert sum(isinstance(a, InvalidRequestError) for a in alone) == 2
    rng = random.Random(3)
    order = list(range(len(requests)))
    rng.shuffle(order)
    start = 0
    sizes = []
    while start < len(order):
        size = rng.randint(2, 24)
        members = order[start : start + size]
        start += size
        sizes.append(len(members))
        late = members[0]  # the first of each batch had already given up
        deadlines = [time.monotonic() - 1 if i == late else None for i in members]
        served = rec.recommend_batch([requests[i] for i in members], deadlines)
        assert served.stages.batch == len(members)
        for i, outcome in zip(members, served.outcomes, strict=True):
            if i == late and not isinstance(alone[i], InvalidRequestError):
                assert isinstance(outcome, DeadlineExceededError)
            else:
                assert_same(outcome, alone[i], requests[i])
    assert max(sizes) > 8


def test_a_batch_answered_while_the_store_is_locked_is_degraded_alike(feature_store, ml) -> None:
    config = feature_store.with_overrides(
        {"serving": {"store_timeout_ms": 30, "store_retry_seconds": 60}}
    )
    bundle = Bundle.load_current(config.models_dir, config.indexes_dir)
    rec = Recommender(bundle, FeatureReader(config), config.serving)
    requests = mix(config, ml, 120, seed=11)
    lock = sqlite3.connect(config.feast_dir / "online.db", timeout=0)
    lock.execute("BEGIN EXCLUSIVE")  # a writer that never lets go
    try:
        batched = rec.recommend_batch(requests).outcomes
        alone = [rec.recommend_batch([r]).outcomes[0] for r in requests]
    finally:
        lock.rollback()
        lock.close()
    assert {a.path for a in batched} == {ServingPath.DEGRADED}
    for b, a, r in zip(batched, alone, requests, strict=True):
        assert_same(b, a, r)


class Caller:
    """One thread of sequential calls; each reply kept with its request."""

    def __init__(self, target: str, requests: list[Request]):
        self._requests = requests
        self._channel = grpc.insecure_channel(
            target, options=[("grpc.use_local_subchannel_pool", 1)]
        )
        self._stub = pb_grpc.RecommenderStub(self._channel)
        self.replies: list[tuple[Request, object]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        from recsys.v1 import recommender_pb2 as pb

        i = 0
        while not self.stop.is_set():
            r = self._requests[i % len(self._requests)]
            i += 1
            message = pb.RecommendRequest(
                user_id=r.user_id,
                k=r.k,
                exclude_item_ids=list(r.exclude),
                include_seen=r.include_seen,
                request_time_ms=r.request_time_ms,
                include_genres=list(r.include_genres),
                exclude_genres=list(r.exclude_genres),
            )
            try:
                self.replies.append((r, self._stub.Recommend(message, timeout=10)))
            except grpc.RpcError as exc:
                self.replies.append((r, exc))
        self._channel.close()


def test_concurrent_calls_across_a_hot_swap_get_their_pairs_answers(scratch, ml) -> None:
    requests = mix(scratch, ml, 300, seed=5)
    requests[3] = requests[3]._replace(k=0)  # fails alone, whatever it is batched with
    with running_server(scratch) as server:
        first = artifacts.current(scratch.indexes_dir).name
        callers = [Caller(server.target, requests[i::6]) for i in range(6)]
        with ThreadPoolExecutor(len(callers)) as pool:
            for caller in callers:
                pool.submit(caller.run)
            try:
                wait_until(lambda: sum(len(c.replies) for c in callers) > 400, 60, "no traffic")
                second = build_index(scratch, ml, log=lambda _: None).version
                wait_until(lambda: server.live.status().index_version == second, 60, "no swap")
                served = sum(len(c.replies) for c in callers)
                wait_until(lambda: sum(len(c.replies) for c in callers) > served + 400, 60, "stall")
            finally:
                for caller in callers:
                    caller.stop.set()
        batches = server.metrics.registry.get_sample_value("recsys_recommend_batch_size_count")
        singles = server.metrics.registry.get_sample_value(
            "recsys_recommend_batch_size_bucket", {"le": "1.0"}
        )
        assert batches and singles is not None and singles < batches  # some batches held more
    expected = {}
    for version in (first, second):
        bundle = Bundle.load(scratch.models_dir, scratch.indexes_dir / version)
        rec = Recommender(bundle, FeatureReader(scratch), scratch.serving)
        expected[version] = {r: rec.recommend_batch([r]).outcomes[0] for r in set(requests)}
    seen_versions = set()
    replies = [reply for c in callers for reply in c.replies]
    for request, reply in replies:
        if request.k == 0:
            assert isinstance(reply, grpc.RpcError)
            assert reply.code() == grpc.StatusCode.INVALID_ARGUMENT
            continue
        assert not isinstance(reply, grpc.RpcError), (request, reply)
        seen_versions.add(reply.index_version)
        alone = expected[reply.index_version][request]
        assert [i.item_id for i in reply.items] == [i.item_id for i in alone.items], request
        np.testing.assert_allclose([i.score for i in reply.items], alone.scores, atol=1e-5, rtol=0)
    assert seen_versions == {first, second}
