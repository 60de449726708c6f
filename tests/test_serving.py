"""Recommend over a real gRPC channel against a real Feast store: answers and bad requests."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from features.store import OnlineFeatures, open_store
from recsys.v1 import recommender_pb2 as pb
from serving.client import RecommendClient


@pytest.fixture
def client(server) -> RecommendClient:
    with RecommendClient(server.target) as c:
        yield c


def test_known_user_gets_k_ranked_items_with_versions(client, server) -> None:
    reply = client.recommend("196", k=10)
    assert len(reply.items) == 10
    assert len({i.item_id for i in reply.items}) == 10
    scores = [i.score for i in reply.items]
    assert scores == sorted(scores, reverse=True)
    bundle = server.live.recommender.bundle
    assert (reply.model_version, reply.index_version) == (
        bundle.model_version,
        bundle.index_version,
    )


def test_recently_seen_and_excluded_items_are_dropped(client, server) -> None:
    seen = OnlineFeatures(open_store(server.config)).read_activity(["196"])["196"].recent_items
    assert seen
    first = [i.item_id for i in client.recommend("196", k=10).items]
    assert not set(first) & set(seen)
    excluded = first[:4]
    second = [i.item_id for i in client.recommend("196", k=10, exclude=excluded).items]
    assert len(second) == 10
    assert not set(second) & set(excluded)
    assert second[:6] == first[4:]


def test_unknown_user_gets_a_cold_start_answer(client) -> None:
    reply = client.recommend("never-seen-user-42", k=5)
    assert len(reply.items) == 5


def test_k_larger_than_the_unfiltered_catalog_returns_what_exists(client, server) -> None:
    max_k = server.config.serving.max_k
    assert len(client.recommend("196", k=max_k).items) == max_k


@pytest.mark.parametrize(
    ("user_id", "k", "exclude", "message"),
    [
        ("", 10, [], "user_id is empty"),
        ("196", 0, [], "k must be between 1 and"),
        ("196", -3, [], "k must be between 1 and"),
        ("196", 101, [], "k must be between 1 and 100"),
        ("x" * 129, 10, [], "longer than 128"),
        ("196", 10, [str(i) for i in range(1001)], "at most 1000 exclude_item_ids"),
    ],
)
def test_bad_requests_are_invalid_argument_and_the_server_keeps_serving(
    client, user_id, k, exclude, message
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        client.recommend(user_id, k=k, exclude=exclude)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in info.value.details()
    assert len(client.recommend("196", k=3).items) == 3


def test_health_is_serving_and_reflection_lists_the_service(server) -> None:
    with grpc.insecure_channel(server.target) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="recsys.v1.Recommender"), timeout=5
        )
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names = {s.name for r in replies for s in r.list_services_response.service}
    assert {"recsys.v1.Recommender", "grpc.health.v1.Health"} <= names


def test_health_reports_not_serving_when_told(server) -> None:
    from serving.server import set_serving

    with RecommendClient(server.target) as c:
        set_serving(server.health, False)
        try:
            assert not c.serving()
        finally:
            set_serving(server.health, True)
        assert c.serving()


def test_the_answer_says_which_path_served_it(client) -> None:
    assert client.recommend("196", k=3).path == pb.SERVING_PATH_PERSONALIZED
    assert client.recommend("no-such-user-anywhere", k=3).path == pb.SERVING_PATH_COLD_START


def test_filters_and_request_time_travel_over_the_wire(client, ml) -> None:
    genres = {i: set(g) for i, g in zip(ml.items["item_id"], ml.items["genres"], strict=True)}
    reply = client.recommend(
        "196", k=10, include_genres=["Sci-Fi"], exclude_genres=["Action"], request_time_ms=1
    )
    assert len(reply.items) == 10
    assert all(
        "Sci-Fi" in genres[i.item_id] and "Action" not in genres[i.item_id] for i in reply.items
    )
    seen = client.recommend("196", k=100, include_seen=True)
    unseen = client.recommend("196", k=100)
    assert {i.item_id for i in seen.items} != {i.item_id for i in unseen.items}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"exclude": [""]}, "exclude_item_ids must be non-empty"),
        ({"request_time_ms": -1}, "request_time_ms must be"),
        ({"include_genres": ["Polka"]}, "unknown genres value 'Polka'"),
    ],
)
def test_bad_filters_are_invalid_argument(client, fields, message) -> None:
    with pytest.raises(grpc.RpcError) as info:
        client.recommend("196", k=5, **fields)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in info.value.details()


def test_metrics_count_requests_by_path_and_time_each_stage(client, server) -> None:
    m = server.metrics
    before = m.value("recsys_recommend_requests_total", path="cold_start")
    errors = m.value("recsys_recommend_errors_total", code="INVALID_ARGUMENT")
    stage = m.value("recsys_recommend_stage_seconds_count", stage="embed")
    client.recommend("metrics-probe-user", k=3)
    client.recommend("196", k=3)
    with pytest.raises(grpc.RpcError):
        client.recommend("196", k=0)
    assert m.value("recsys_recommend_requests_total", path="cold_start") == before + 1
    assert m.value("recsys_recommend_errors_total", code="INVALID_ARGUMENT") == errors + 1
    assert m.value("recsys_recommend_stage_seconds_count", stage="embed") == stage + 1
    b = server.live.recommender.bundle
    pair = {"model_version": b.model_version, "index_version": b.index_version}
    assert m.value("recsys_serving_pair_info", **pair) == 1


def test_recommend_is_unavailable_and_health_not_serving_until_loaded(feature_store) -> None:
    from serving.server import RecommenderServicer, create_server

    server, port, _ = create_server(feature_store, RecommenderServicer(live=None))
    server.start()
    try:
        with RecommendClient(f"127.0.0.1:{port}") as c:
            assert not c.serving()
            with pytest.raises(grpc.RpcError) as info:
                c.recommend("196", k=3)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(grace=None).wait()


def test_admin_lives_on_its_own_port_only(server) -> None:
    from recsys.v1 import admin_pb2, admin_pb2_grpc

    with grpc.insecure_channel(server.admin_target) as channel:
        status = admin_pb2_grpc.RecommenderAdminStub(channel).Status(
            admin_pb2.StatusRequest(), timeout=5
        )
    assert status.index_version == server.live.recommender.bundle.index_version
    with grpc.insecure_channel(server.target) as channel, pytest.raises(grpc.RpcError) as info:
        admin_pb2_grpc.RecommenderAdminStub(channel).Reload(admin_pb2.ReloadRequest(), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
