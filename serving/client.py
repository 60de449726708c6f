"""A small typed client for the Recommend API and the health check (demo, tests, benchmarks)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from recsys.errors import RecsysError
from recsys.v1 import recommender_pb2 as pb
from recsys.v1 import recommender_pb2_grpc as pb_grpc


class RecommendClient:
    """One channel to a Recommend server."""

    def __init__(self, target: str):
        self.target = target
        self._channel = grpc.insecure_channel(target)
        self._stub = pb_grpc.RecommenderStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def recommend(
        self,
        user_id: str,
        k: int = 10,
        exclude: Sequence[str] = (),
        timeout: float = 5.0,
        *,
        include_seen: bool = False,
        request_time_ms: int = 0,
        include_genres: Sequence[str] = (),
        exclude_genres: Sequence[str] = (),
    ) -> pb.RecommendResponse:
        reply: pb.RecommendResponse = self._stub.Recommend(
            pb.RecommendRequest(
                user_id=user_id,
                k=k,
                exclude_item_ids=list(exclude),
                include_seen=include_seen,
                request_time_ms=request_time_ms,
                include_genres=list(include_genres),
                exclude_genres=list(exclude_genres),
            ),
            timeout=timeout,
        )
        return reply

    def serving(self, timeout: float = 1.0) -> bool:
        """True when the health service reports SERVING."""
        try:
            reply = self._health.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def wait_until_serving(
        self, timeout: float = 120.0, process: subprocess.Popen[bytes] | None = None
    ) -> None:
        """Polls health until SERVING; fails fast if ``process`` (the server) exits."""
        deadline = time.monotonic() + timeout
        while not self.serving():
            if process is not None and process.poll() is not None:
                raise RecsysError(
                    f"server process exited with code {process.returncode} before serving"
                )
            if time.monotonic() > deadline:
                raise RecsysError(f"server at {self.target} not SERVING after {timeout:.0f}s")
            time.sleep(0.2)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> RecommendClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
