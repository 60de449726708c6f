"""The gRPC servers: Recommend with health and reflection on the public port; reload,
rollback and status on a separate admin port. Built (not started) by factories that
``serving.stack`` puts together.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent import futures
from typing import NoReturn

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from recsys.config import Config
from recsys.errors import InvalidRequestError, NotReadyError, RecsysError
from recsys.logs import Throttled
from recsys.v1 import admin_pb2, admin_pb2_grpc
from serving.answers import Recommendation, Stages
from serving.batching import Batcher
from serving.live import Live, Status
from serving.metrics import STAGES, ServingMetrics
from serving.request import Request
from serving.wire import SERVICE, Encoders, add_recommender, parse_request, request_from

log = logging.getLogger(__name__)
ADMIN_SERVICE = admin_pb2.DESCRIPTOR.services_by_name["RecommenderAdmin"].full_name
PUSHBACK = "grpc-retry-pushback-ms"
"""Trailing metadata a gRPC client's retry policy reads: negative means do not retry."""
NO_DEADLINE = 1e6
"""``time_remaining()`` above this many seconds means the caller set no deadline."""


def _status(exc: Exception) -> grpc.StatusCode:
    """The one place errors become status codes: ours carry theirs, anything else is
    INTERNAL."""
    return exc.grpc_status_code() if isinstance(exc, RecsysError) else grpc.StatusCode.INTERNAL


def _abort(  # type: ignore[misc]  # context.abort raises, but grpc is untyped
    context: grpc.ServicerContext, exc: Exception, what: str
) -> NoReturn:
    """Ends the call with ``exc``'s status; unexpected errors are logged with their details
    and answered INTERNAL without them. An UNAVAILABLE answer a retry cannot help carries
    ``grpc-retry-pushback-ms: -1``: gRPC's retry policy does not retry it."""
    if isinstance(exc, RecsysError):
        code = exc.grpc_status_code()
        if code == grpc.StatusCode.UNAVAILABLE and not exc.retryable:
            context.set_trailing_metadata(((PUSHBACK, "-1"),))
        context.abort(code, str(exc))
    log.exception("%s failed", what)
    context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")


Item = tuple[Request, float | None]
"""A request and its ``time.monotonic()`` deadline (``None``: the caller set none)."""
Answer = tuple[Recommendation, Stages]
"""An answer and the stages of the batch it was served in (for the timing trailer)."""


class RecommenderServicer:
    """Converts messages, passes the deadline on and maps errors; the work is
    ``Recommender``'s, on batches of whatever calls are waiting (``serving.batching``).
    Answers UNAVAILABLE until ``live`` is set (loaded and warm)."""

    def __init__(
        self,
        live: Live | None = None,
        metrics: ServingMetrics | None = None,
        timing_trailer: bool = False,
        max_batch: int = 64,
        refused_log_seconds: float = 10.0,
    ):
        self.live = live
        self._metrics = metrics or ServingMetrics()
        self._garbage = Throttled(
            log, "refused undecodable Recommend requests (INVALID_ARGUMENT)", refused_log_seconds
        )
        self._timing = timing_trailer
        self._batcher: Batcher[Item, Answer] = Batcher(self._run, max_batch)
        self._encoders = Encoders()

    def Recommend(self, data: bytes, context: grpc.ServicerContext) -> bytes:  # noqa: N802
        started = time.perf_counter()
        remaining = context.time_remaining()
        deadline = (
            None if remaining is None or remaining > NO_DEADLINE else time.monotonic() + remaining
        )
        try:
            request = parse_request(data)
        except InvalidRequestError as exc:
            self._metrics.errors.labels(grpc.StatusCode.INVALID_ARGUMENT.name).inc()
            self._garbage.note(context.peer())
            return _abort(context, exc, "Recommend")
        try:
            if self.live is None:
                raise NotReadyError("the server is loading its model, index and features")
            answer, stages = self._batcher.submit((request_from(request), deadline))
        except Exception as exc:
            self._metrics.errors.labels(_status(exc).name).inc()
            return _abort(context, exc, f"Recommend for user_id={request.user_id!r}")
        self._metrics.observe(answer, time.perf_counter() - started)
        if self._timing:
            context.set_trailing_metadata((("recsys-timing-us", timing(stages, started)),))
        return self._encoders.encode(answer)

    def _run(self, items: Sequence[Item]) -> list[Answer | Exception]:
        """One batch, on the pair serving now (read once: a batch never mixes two pairs)."""
        recommender = self.live.recommender  # type: ignore[union-attr]  # set before submit
        cpu = time.thread_time()
        served = recommender.recommend_batch([r for r, _ in items], [d for _, d in items])
        self._metrics.observe_batch(served.stages, time.thread_time() - cpu)
        stages = served.stages
        return [o if isinstance(o, Exception) else (o, stages) for o in served.outcomes]


def timing(stages: Stages, started: float) -> str:
    """``plan=3.1,read=12.3,...,batch=3,hot_path=...``: microseconds per stage of the batch
    the request was served in, its size, and the time from request in to answer ready (the
    hot path, waiting for its batch included, without the gRPC stack)."""
    parts = [f"{name}={getattr(stages, name) * 1e6:.1f}" for name in STAGES]
    elapsed = (time.perf_counter() - started) * 1e6
    return ",".join([*parts, f"batch={stages.batch}", f"hot_path={elapsed:.1f}"])


class NullServicer:
    """Answers Recommend with an empty response: the cost of the gRPC stack alone
    (benchmarks), registered the same way as ``RecommenderServicer``."""

    def Recommend(self, data: bytes, context: grpc.ServicerContext) -> bytes:  # noqa: N802
        return b""


class AdminServicer(admin_pb2_grpc.RecommenderAdminServicer):
    def __init__(self, live: Live):
        self._live = live

    @staticmethod
    def _reply(status: Status) -> admin_pb2.StatusResponse:
        return admin_pb2.StatusResponse(
            model_version=status.model_version,
            index_version=status.index_version,
            items=status.items,
            swaps=status.swaps,
            last_error=status.last_error,
        )

    def Status(  # noqa: N802
        self, request: admin_pb2.StatusRequest, context: grpc.ServicerContext
    ) -> admin_pb2.StatusResponse:
        return self._reply(self._live.status())

    def Reload(  # noqa: N802
        self, request: admin_pb2.ReloadRequest, context: grpc.ServicerContext
    ) -> admin_pb2.StatusResponse:
        try:
            return self._reply(self._live.reload())
        except Exception as exc:
            return _abort(context, exc, "Reload")

    def Rollback(  # noqa: N802
        self, request: admin_pb2.RollbackRequest, context: grpc.ServicerContext
    ) -> admin_pb2.StatusResponse:
        try:
            return self._reply(self._live.rollback(request.to_index_version or None))
        except Exception as exc:
            return _abort(context, exc, "Rollback")


def _bind(server: grpc.Server, host: str, port: int) -> int:
    bound: int = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise RecsysError(f"cannot bind {host}:{port}; is another server using it?")
    return bound


def create_server(
    config: Config, servicer: RecommenderServicer | NullServicer
) -> tuple[grpc.Server, int, health.HealthServicer]:
    """Builds (not starts) the public server: Recommend, health and reflection.

    Health starts NOT_SERVING; the caller flips it once warm.

    Returns:
        The server, the bound port (resolves port 0) and the health servicer.
    """
    sc = config.serving
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=sc.workers, initializer=one_search_thread),
        options=[("grpc.max_receive_message_length", sc.max_request_bytes)],
    )
    add_recommender(server, servicer.Recommend)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    set_serving(health_servicer, False)
    reflection.enable_server_reflection(
        (
            SERVICE,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    return server, _bind(server, sc.host, sc.port), health_servicer


def create_admin_server(config: Config, live: Live) -> tuple[grpc.Server, int]:
    """Builds (not starts) the admin server on ``serving.admin_host:admin_port``."""
    sc = config.serving
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2, initializer=one_search_thread))
    admin_pb2_grpc.add_RecommenderAdminServicer_to_server(AdminServicer(live), server)
    reflection.enable_server_reflection((ADMIN_SERVICE, reflection.SERVICE_NAME), server)
    return server, _bind(server, sc.admin_host, sc.admin_port)


def one_search_thread() -> None:
    """FAISS searches on the calling thread alone. OpenMP's thread count is per thread:
    ``omp_set_num_threads`` sets the caller's own, and a thread OpenMP did not create (a gRPC
    worker) starts from the process default, one per core. So each worker sets its own;
    otherwise a batch's search wakes a team whose idle threads spin on the other core
    (faiss#2646), and the gRPC workers already run requests in parallel."""
    import faiss

    faiss.omp_set_num_threads(1)


def one_blas_thread() -> None:
    """NumPy's BLAS (OpenBLAS, pthreads) on one thread for the whole process: its pool is
    global, sized to the cores, and a matrix product past its threshold (the ranker's
    candidates against the batch's recent items, ~1,000 × 80) hands work to a thread that
    waits for a core the other serving threads hold: 4.3× slower per batch of four measured
    beside a busy core (1.85 against 7.9 ms for the features)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def set_serving(health_servicer: health.HealthServicer, serving: bool) -> None:
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in ("", SERVICE):
        health_servicer.set(name, status)
