"""The online store slow or gone, over real gRPC with a real redis-server: answers keep coming
within the caller's deadline, from default features, flagged degraded; the server recovers
when the store does."""

from __future__ import annotations

import os
import signal
import sqlite3
import time

import grpc
import pytest

from features.backfill import initialise
from localservices.redis import LocalRedis
from recsys.data import temporal_split
from recsys.v1 import recommender_pb2 as pb
from serving.client import RecommendClient
from tests.conftest import running_server


@pytest.fixture
def redis_store(trained, ml, tmp_path):
    with LocalRedis(tmp_path / "redis") as redis:
        config = trained.with_overrides(
            {
                "paths": {"state": str(tmp_path / "state")},
                "feast": {"online_store": "redis", "redis": redis.connection_string},
                "serving": {"store_timeout_ms": 50, "store_retry_seconds": 0.5},
            }
        )
        past, _ = temporal_split(ml.interactions, config.model.test_fraction)
        initialise(config, ml, past)
        yield config, redis


def test_a_hung_then_dead_store_degrades_within_the_deadline_and_recovers(redis_store) -> None:
    config, redis = redis_store
    with running_server(config) as server, RecommendClient(server.target) as client:
        assert client.recommend("196").path == pb.SERVING_PATH_PERSONALIZED
        os.kill(redis.pid, signal.SIGSTOP)  # hung: connections open, no replies
        try:
            # Well inside redis-py's own ~5 s of retries: the store wait is bounded.
            reply = client.recommend("196", k=10, timeout=0.5)
            assert reply.path == pb.SERVING_PATH_DEGRADED and len(reply.items) == 10
            reply = client.recommend("nobody-while-hung", k=10, timeout=0.5)
            assert reply.path == pb.SERVING_PATH_DEGRADED and len(reply.items) == 10
        finally:
            os.kill(redis.pid, signal.SIGCONT)
        time.sleep(0.6)
        assert client.recommend("196").path == pb.SERVING_PATH_PERSONALIZED
        redis.stop()  # gone: connection refused
        reply = client.recommend("196", k=10, timeout=0.5)
        assert reply.path == pb.SERVING_PATH_DEGRADED and len(reply.items) == 10
        assert server.metrics.value("recsys_recommend_requests_total", path="degraded") >= 3
        assert server.metrics.value("recsys_recommend_errors_total", code="INTERNAL") == 0


def test_a_deadline_shorter_than_the_store_wait_is_deadline_exceeded(feature_store) -> None:
    """The store hangs longer than the caller will wait: the caller gets DEADLINE_EXCEEDED
    on time, and the server stops work on that request once the read returns."""
    config = feature_store.with_overrides(
        {"serving": {"store_timeout_ms": 300, "store_retry_seconds": 0.1}}
    )
    with running_server(config) as server, RecommendClient(server.target) as client:
        lock = sqlite3.connect(config.feast_dir / "online.db", timeout=0)
        lock.execute("BEGIN EXCLUSIVE")  # the store now answers only after its timeout
        try:
            with pytest.raises(grpc.RpcError) as info:
                client.recommend("196", k=5, timeout=0.05)
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            time.sleep(0.4)  # the server's read times out; it does not answer a dead request
            code = "DEADLINE_EXCEEDED"
            assert server.metrics.value("recsys_recommend_errors_total", code=code) == 1
        finally:
            lock.rollback()
            lock.close()
        time.sleep(0.2)
        assert client.recommend("196", k=5).path == pb.SERVING_PATH_PERSONALIZED
