"""``recsys serve``, ``recsys recommend`` and ``recsys admin``: the gRPC server and its
callers."""

from __future__ import annotations

import argparse
import sys

from commands.command import Command
from recsys.config import Config
from recsys.errors import RecsysError


def run_server(config: Config, args: argparse.Namespace) -> None:
    from serving.stack import serve

    if args.worker is not None:  # started by a supervisor: one of its workers
        from serving.workers import report_ready, worker_config

        index, port, ready_fd = args.worker
        cfg = worker_config(config, index, port)
        serve(cfg, null=args.null, on_ready=lambda: report_ready(ready_fd))
        return
    if args.workers is not None:
        config = config.with_overrides({"serving": {"processes": args.workers}})
    elif config.serving.processes == 1:  # one process, unsupervised; --workers 1 supervises it
        serve(config, null=args.null)
        return
    from serving.workers import Supervisor, worker_argv

    # Workers read the same file (and environment) afresh, so a rolling restart picks up
    # a changed configuration.
    config_file = getattr(args, "config", None)
    config_args = ["--config", str(config_file)] if config_file else []
    command = worker_argv(config_args, null=args.null)
    sys.exit(Supervisor(config, config.serving.processes, command).run())


def _worker(value: str) -> tuple[int, int, int]:
    try:
        index, port, fd = (int(part) for part in value.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected INDEX:PORT:FD, got {value!r}") from None
    return index, port, fd


def serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--null", action="store_true", help="answer with an empty list (latency baseline)"
    )
    p.add_argument(
        "--workers",
        type=int,
        help="server processes sharing the port under a supervisor that replaces a dead one "
        "(SO_REUSEPORT; serving.processes; 1 is a supervised single worker); worker i's "
        "admin and metrics ports are serving.admin_port + i and serving.metrics_port + i; "
        "SIGHUP to the supervisor restarts them one at a time, each replacement serving "
        "before the old one drains",
    )
    p.add_argument(
        "--worker",
        type=_worker,
        metavar="INDEX:PORT:FD",
        help="run as worker INDEX of a supervisor on PORT, reporting readiness on FD "
        "(the supervisor starts its workers so)",
    )


def recommend(config: Config, args: argparse.Namespace) -> None:
    import grpc

    from recsys.v1 import recommender_pb2 as pb
    from serving.client import RecommendClient

    target = args.target or f"{config.serving.host}:{config.serving.port}"
    with RecommendClient(target) as client:
        try:
            reply = client.recommend(
                args.user,
                args.k,
                args.exclude,
                args.timeout,
                include_seen=args.include_seen,
                request_time_ms=args.time_ms,
                include_genres=args.genres,
                exclude_genres=args.not_genres,
            )
        except grpc.RpcError as exc:
            raise RecsysError(f"Recommend failed: {exc.code().name}: {exc.details()}") from exc
    path = pb.ServingPath.Name(reply.path).removeprefix("SERVING_PATH_").lower()
    print(f"user {args.user} ({path}; model {reply.model_version}, index {reply.index_version}):")
    for rank, item in enumerate(reply.items, 1):
        print(f"  {rank:2d}. item {item.item_id:>5}  score {item.score:.3f}")


def recommend_arguments(rec: argparse.ArgumentParser) -> None:
    rec.add_argument("--user", required=True, help="the user id to recommend for")
    rec.add_argument("--k", type=int, default=10, help="how many items")
    rec.add_argument("--exclude", nargs="*", default=[], help="item ids not to return")
    rec.add_argument("--genres", nargs="*", default=[], help="only items with one of these")
    rec.add_argument("--not-genres", nargs="*", default=[], help="no items with any of these")
    rec.add_argument("--include-seen", action="store_true", help="keep recently seen items")
    rec.add_argument("--time-ms", type=int, default=0, help="request time (default: now)")
    rec.add_argument("--target", help="host:port (default: serving.host:serving.port)")
    rec.add_argument("--timeout", type=float, default=5.0, help="the call's deadline, seconds")


def admin(config: Config, args: argparse.Namespace) -> None:
    import grpc

    from recsys.v1 import admin_pb2, admin_pb2_grpc

    sc = config.serving
    target = args.target or f"{sc.admin_host}:{sc.admin_port}"
    with grpc.insecure_channel(target) as channel:
        stub = admin_pb2_grpc.RecommenderAdminStub(channel)
        try:
            if args.action == "reload":
                reply = stub.Reload(admin_pb2.ReloadRequest(), timeout=args.timeout)
            elif args.action == "rollback":
                request = admin_pb2.RollbackRequest(to_index_version=args.to or "")
                reply = stub.Rollback(request, timeout=args.timeout)
            else:
                reply = stub.Status(admin_pb2.StatusRequest(), timeout=args.timeout)
        except grpc.RpcError as exc:
            raise RecsysError(f"{args.action} failed: {exc.code().name}: {exc.details()}") from exc
    print(
        f"serving model {reply.model_version}, index {reply.index_version} "
        f"({reply.items:,} items); {reply.swaps} swaps since start"
        + (f"; last reload refused: {reply.last_error}" if reply.last_error else "")
    )


def admin_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "action", choices=["status", "reload", "rollback"], help="what to ask the server"
    )
    p.add_argument("--to", help="rollback: the index version (default: the previous one)")
    p.add_argument("--target", help="host:port (default: serving.admin_host:admin_port)")
    p.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="the call's deadline, seconds (a reload verifies and warms)",
    )


COMMANDS = (
    Command("serve", "run the gRPC Recommend server", run_server, serve_arguments),
    Command("recommend", "call Recommend on a running server", recommend, recommend_arguments),
    Command(
        "admin",
        "status, reload or rollback of a running server (admin port)",
        admin,
        admin_arguments,
    ),
)
