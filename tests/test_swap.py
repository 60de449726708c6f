"""Hot swap of the model+index pair under traffic: a new version published to ``CURRENT`` is
loaded beside the serving one, verified, warmed and swapped with zero failed requests; a
corrupt one is refused while the old keeps serving; rollback goes through the admin port."""

from __future__ import annotations

import random
import threading

import grpc
import pytest

from index.build import build_index
from index.versions import INDEX_FILE
from recsys import artifacts
from recsys.v1 import admin_pb2, admin_pb2_grpc
from serving.client import RecommendClient
from serving.live import Live
from serving.request import Request
from tests.conftest import running_server, wait_until


class Traffic:
    """Sequential Recommend calls from a thread, every reply and error kept."""

    def __init__(self, target: str, users: list[str]):
        self._client = RecommendClient(target)
        self._users = users
        self._stop = threading.Event()
        self.versions: list[str] = []
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        rng = random.Random(0)
        while not self._stop.is_set():
            try:
                reply = self._client.recommend(rng.choice(self._users), k=10, timeout=5)
                if len(reply.items) != 10:
                    self.errors.append(f"{len(reply.items)} items")
                self.versions.append(reply.index_version)
            except grpc.RpcError as exc:
                self.errors.append(f"{exc.code()}: {exc.details()}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._client.close()


def runs(versions: list[str]) -> list[str]:
    """Consecutive duplicates collapsed: the order in which versions answered."""
    return [v for i, v in enumerate(versions) if i == 0 or versions[i - 1] != v]


def test_swap_refusal_and_rollback_under_traffic_fail_no_request(scratch, ml) -> None:
    quiet = lambda _: None  # noqa: E731
    first = artifacts.current(scratch.indexes_dir).name
    with running_server(scratch) as server:
        traffic = Traffic(server.target, ["196", "1", "42", "new-user-during-swap"])
        try:
            wait_until(lambda: len(traffic.versions) > 50, 60, "traffic did not start")
            second = build_index(scratch, ml, log=quiet).version
            wait_until(lambda: server.live.status().index_version == second, 60, "no swap")
            served = len(traffic.versions)
            wait_until(lambda: len(traffic.versions) > served + 50, 60, "traffic stalled")

            bad = build_index(scratch, ml, log=quiet, publish=False).version
            index_file = scratch.indexes_dir / bad / INDEX_FILE
            index_file.write_bytes(index_file.read_bytes()[:-64])  # truncated on disk
            artifacts.publish(scratch.indexes_dir, bad)
            wait_until(
                lambda: server.metrics.value("recsys_serving_reloads_refused_total") == 1,
                60,
                "the corrupt index was not refused",
            )
            status = server.live.status()
            assert status.index_version == second
            assert "corrupt" in status.last_error
            served = len(traffic.versions)
            wait_until(lambda: len(traffic.versions) > served + 50, 60, "traffic stalled")

            with grpc.insecure_channel(server.admin_target) as channel:
                admin = admin_pb2_grpc.RecommenderAdminStub(channel)
                reply = admin.Rollback(
                    admin_pb2.RollbackRequest(to_index_version=first), timeout=60
                )
                assert (reply.index_version, reply.swaps, reply.last_error) == (first, 2, "")
                with pytest.raises(grpc.RpcError) as info:
                    admin.Rollback(admin_pb2.RollbackRequest(to_index_version="nope"), timeout=60)
                assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            served = len(traffic.versions)
            wait_until(lambda: len(traffic.versions) > served + 50, 60, "traffic stalled")
        finally:
            traffic.stop()
    assert traffic.errors == []
    assert runs(traffic.versions) == [first, second, first]
    assert artifacts.current(scratch.indexes_dir).name == first
    assert server.metrics.value("recsys_serving_swaps_total") == 2


class GatedReader:
    """The real feature reader, held at the door for one user until released."""

    def __init__(self, reader, user: str):
        self._reader = reader
        self._user = user
        self.entered = threading.Event()
        self.release = threading.Event()

    def read_many(self, user_ids):
        if self._user in user_ids:
            self.entered.set()
            self.release.wait(timeout=30)
        return self._reader.read_many(user_ids)


def test_a_request_in_flight_during_a_swap_finishes_on_its_old_pair(scratch, ml) -> None:
    from features.online.read import FeatureReader

    user = "in-flight-user"  # not one that verification or warm-up asks for
    gated = GatedReader(FeatureReader(scratch), user)
    live = Live(scratch, gated)
    old = live.status().index_version
    answers = []
    thread = threading.Thread(
        target=lambda: answers.append(live.recommender.recommend(Request(user, k=5)))
    )
    thread.start()
    assert gated.entered.wait(timeout=30)
    new = build_index(scratch, ml, log=lambda _: None).version
    live.reload()
    assert live.status().index_version == new
    gated.release.set()
    thread.join(timeout=30)
    assert answers[0].index_version == old
    assert live.recommender.recommend(Request(user, k=5)).index_version == new
