"""Garbage is refused cheaply: bytes that are not a RecommendRequest get INVALID_ARGUMENT with
a one-line reason and at most one log line per interval, with no traceback; an oversized
message is refused by the message-size limit before it is read. Both while real calls go on,
on a real gRPC server over a socket (in this process, on the tiny synthetic bundle)."""

from __future__ import annotations

import logging
import threading
from types import SimpleNamespace

import grpc
import pytest

from benchmarks.fleet import METHOD, garbage
from recsys.config import Config
from recsys.errors import InvalidRequestError
from recsys.logs import Throttled
from recsys.v1 import recommender_pb2 as pb
from serving.recommender import Recommender
from serving.server import RecommenderServicer, create_server
from serving.wire import parse_request
from tests import tiny


@pytest.fixture
def target():
    config = Config().with_overrides(
        {"serving": {"port": 0, "max_request_bytes": 4096, "refused_log_seconds": 60}}
    )
    live = SimpleNamespace(
        recommender=Recommender(tiny.bundle(), tiny.DictFeatures(), config.serving)
    )
    servicer = RecommenderServicer(live=live, refused_log_seconds=60)  # type: ignore[arg-type]
    server, port, _ = create_server(config, servicer)
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=None).wait()


def test_garbage_and_oversized_floods_leave_real_calls_alone(target, caplog) -> None:
    caplog.set_level(logging.INFO)
    channel = grpc.insecure_channel(target)
    raw = channel.unary_unary(METHOD)  # bytes in, bytes out
    real = channel.unary_unary(
        METHOD, pb.RecommendRequest.SerializeToString, pb.RecommendResponse.FromString
    )
    failures: list[BaseException] = []
    answered = []
    stop = threading.Event()

    def real_calls() -> None:
        while not stop.is_set():
            try:
                answered.append(len(real(pb.RecommendRequest(user_id="u1", k=5), timeout=10).items))
            except grpc.RpcError as exc:
                failures.append(exc)

    caller = threading.Thread(target=real_calls)
    caller.start()
    codes = {}
    try:
        for i in range(2000):
            try:
                raw(garbage(i), timeout=10)
            except grpc.RpcError as exc:
                codes[exc.code()] = exc.details()
        oversized = pb.RecommendRequest(user_id="u" * 5000).SerializeToString()
        futures = [raw.future(oversized, timeout=10) for _ in range(50)]
        for future in futures:
            exc = future.exception()
            assert isinstance(exc, grpc.RpcError)
            codes[exc.code()] = exc.details()
    finally:
        stop.set()
        caller.join()
        channel.close()
    assert not failures and answered and set(answered) == {5}
    assert set(codes) == {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}
    reason = codes[grpc.StatusCode.INVALID_ARGUMENT]
    assert "not a recsys.v1.RecommendRequest" in reason and "\n" not in reason
    refused = [r for r in caplog.records if "undecodable" in r.getMessage()]
    assert len(refused) == 1 and refused[0].count == 1  # the first at once, the rest counted
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def test_parse_request_says_what_the_bytes_are_not() -> None:
    assert parse_request(pb.RecommendRequest(user_id="7", k=3).SerializeToString()).k == 3
    with pytest.raises(
        InvalidRequestError, match=r"10 bytes are not a recsys\.v1\.RecommendRequest"
    ):
        parse_request(garbage(0))


def test_throttled_writes_once_per_interval_with_the_count(caplog, monkeypatch) -> None:
    now = [100.0]
    monkeypatch.setattr("recsys.logs.time.monotonic", lambda: now[0])
    caplog.set_level(logging.WARNING)
    throttled = Throttled(logging.getLogger("t"), "refused", every=10)
    written = [throttled.note(f"peer {i}") for i in range(5)]
    now[0] += 10
    written.append(throttled.note("peer 5"))
    assert written == [True, False, False, False, False, True]
    assert [(r.count, r.last) for r in caplog.records] == [(1, "peer 0"), (5, "peer 5")]
