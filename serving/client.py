"""A small typed client for the Recommend API and the health check (demo, tests, benchmarks),
and the channel configuration every caller of the service should use.

Recommend is idempotent, so a caller retries it when the server was not there to answer:
a worker killed mid-call, a connection refused while a replacement starts, a draining
worker's GOAWAY. ``SERVICE_CONFIG`` is that policy as a gRPC service config (any gRPC
client takes it as the ``grpc.service_config`` channel argument):

- UNAVAILABLE and CANCELLED are retried, at most 4 times more, after a jittered exponential
  backoff (gRPC draws each wait uniformly below 20 ms, 40 ms, ... capped at 400 ms), and
  never past the call's deadline. CANCELLED is what a draining server's gRPC answers a call
  that reached it just as it began to shut down, before its GOAWAY reached the caller (gRPC
  core cancels calls the server never picked up; Envoy retries ``cancelled`` for the same
  reason). No other code is retried: INVALID_ARGUMENT, DEADLINE_EXCEEDED and INTERNAL would
  fail the same way again.
- ``waitForReady``: a call waits for a connection (within its deadline) instead of failing
  while the channel reconnects, so a retry lands on a live worker rather than on the
  reconnect backoff; the channel reconnects after 100 ms at first, not gRPC's 1 s.
- Retry throttling: once more than half of the last calls' budget has failed, the channel
  stops retrying until successes restore it, so a server that is truly down is not hit
  with five times the load.
- The server marks the UNAVAILABLE answers a retry cannot help (its shared feature store
  is down) with ``grpc-retry-pushback-ms: -1``, and gRPC does not retry those.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from recsys.errors import RecsysError
from recsys.v1 import recommender_pb2 as pb
from recsys.v1 import recommender_pb2_grpc as pb_grpc

SERVICE_CONFIG = {
    "methodConfig": [
        {
            "name": [{"service": "recsys.v1.Recommender", "method": "Recommend"}],
            "waitForReady": True,
            "retryPolicy": {
                "maxAttempts": 5,
                "initialBackoff": "0.02s",
                "maxBackoff": "0.4s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE", "CANCELLED"],
            },
        }
    ],
    "retryThrottling": {"maxTokens": 100, "tokenRatio": 0.1},
}
"""The retry policy a caller of Recommend should use (see the module's docstring)."""
RETRY_OPTIONS: tuple[tuple[str, str | int], ...] = (
    ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
    ("grpc.enable_retries", 1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)
"""Channel arguments that apply ``SERVICE_CONFIG`` and reconnect quickly."""


class RecommendClient:
    """One channel to a Recommend server, with the retry policy unless ``retries`` is off.

    Args:
        options: More channel arguments (``grpc.use_local_subchannel_pool`` for a connection
            of its own).
    """

    def __init__(
        self, target: str, *, retries: bool = True, options: Sequence[tuple[str, str | int]] = ()
    ):
        self.target = target
        self._channel = grpc.insecure_channel(
            target, options=[*(RETRY_OPTIONS if retries else ()), *options]
        )
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
