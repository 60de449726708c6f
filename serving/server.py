"""The gRPC server: Recommend, standard health, reflection. Built by one factory."""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from features.store import OnlineFeatures, open_store
from recsys.config import Config
from recsys.errors import RecsysError
from recsys.v1 import recommender_pb2 as pb
from recsys.v1 import recommender_pb2_grpc as pb_grpc
from serving.recommender import Bundle, Recommender

log = logging.getLogger(__name__)
SERVICE = pb.DESCRIPTOR.services_by_name["Recommender"].full_name


class RecommenderServicer(pb_grpc.RecommenderServicer):
    """Converts messages and maps errors; the work is ``Recommender``'s."""

    def __init__(self, recommender: Recommender):
        self._recommender = recommender

    def Recommend(self, request: pb.RecommendRequest, context: grpc.ServicerContext) -> Any:  # noqa: N802
        try:
            rec = self._recommender.recommend(
                request.user_id, request.k, list(request.exclude_item_ids)
            )
        except RecsysError as exc:
            context.abort(exc.grpc_status_code(), str(exc))
        except Exception:
            log.exception("Recommend failed for user_id=%r", request.user_id)
            context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")
        return pb.RecommendResponse(
            items=[pb.ScoredItem(item_id=i.item_id, score=i.score) for i in rec.items],
            model_version=rec.model_version,
            index_version=rec.index_version,
        )


class NullServicer(pb_grpc.RecommenderServicer):
    """Answers Recommend with an empty list: the cost of the gRPC stack alone (benchmarks)."""

    def Recommend(self, request: pb.RecommendRequest, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return pb.RecommendResponse()


def create_server(
    config: Config, servicer: pb_grpc.RecommenderServicer
) -> tuple[grpc.Server, int, health.HealthServicer]:
    """Builds (not starts) the server with Recommend, health and reflection.

    Health starts NOT_SERVING; the caller flips it once warm.

    Returns:
        The server, the bound port (resolves port 0) and the health servicer.
    """
    sc = config.serving
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=sc.workers))
    pb_grpc.add_RecommenderServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    reflection.enable_server_reflection(
        (
            SERVICE,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    port = server.add_insecure_port(f"{sc.host}:{sc.port}")
    if port == 0:
        raise RecsysError(f"cannot bind {sc.host}:{sc.port}; is another server using it?")
    return server, port, health_servicer


def build_recommender(config: Config) -> Recommender:
    """Loads the current model+index pair and opens the online store."""
    return Recommender(
        Bundle.load_current(config), OnlineFeatures(open_store(config)), config.serving
    )


def warm_up(recommender: Recommender, rounds: int = 20) -> None:
    """Runs the hot path until first-call costs (registry load, connections) are paid."""
    known = recommender.bundle.space.users.values[:1] or ("warmup",)
    for i in range(rounds):
        recommender.recommend(known[0] if i % 2 else f"__warmup_{i}__", 10)


def set_serving(health_servicer: health.HealthServicer, serving: bool) -> None:
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in ("", SERVICE):
        health_servicer.set(name, status)


def serve(config: Config, *, null: bool = False, ready: threading.Event | None = None) -> None:
    """Runs the server until SIGTERM/SIGINT, then drains in-flight calls.

    Args:
        config: The project configuration.
        null: Serve ``NullServicer`` instead (no model, index or store): a baseline.
        ready: Set once the server reports SERVING.
    """
    if null:
        server, port, health_servicer = create_server(config, NullServicer())
        server.start()
        what = "null handler"
    else:
        recommender = build_recommender(config)
        server, port, health_servicer = create_server(config, RecommenderServicer(recommender))
        server.start()
        warm_up(recommender)
        b = recommender.bundle
        what = f"model {b.model_version}, index {b.index_version}, {len(b.item_ids):,} items"
    set_serving(health_servicer, True)
    print(f"serving on {config.serving.host}:{port} ({what})", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if ready is not None:
        ready.set()
    stop.wait()
    set_serving(health_servicer, False)
    server.stop(grace=5).wait()
    print("server stopped", flush=True)
