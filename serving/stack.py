"""The serving stack, put together once: the public server (Recommend, health, reflection),
the admin server, the index watcher and ``/metrics``, started in that order and stopped in
reverse. ``recsys serve`` runs it until a signal; the tests run it on ephemeral ports.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from grpc_health.v1 import health

from recsys.config import Config
from serving.live import Live
from serving.metrics import ServingMetrics
from serving.server import (
    NullServicer,
    RecommenderServicer,
    create_admin_server,
    create_server,
    one_blas_thread,
    one_search_thread,
    set_serving,
)

log = logging.getLogger(__name__)
METRICS_RETRY_S = 0.2
"""How often a worker retries a metrics port its predecessor still holds."""


def load_live(config: Config, metrics: ServingMetrics | None = None) -> Live:
    """Opens the online store and loads, verifies and warms the current pair."""
    # Lazily: Feast is slow to import and a null server never needs it.
    from features.online.read import FeatureReader

    return Live(config, FeatureReader(config), metrics)


def _reachable(host: str) -> str:
    """An address a client on this machine dials for a server bound to ``host``."""
    return "127.0.0.1" if host in ("", "0.0.0.0", "::", "[::]") else host


@dataclass(frozen=True)
class Stack:
    """A running stack: its bound ports (port 0 resolved) and what a caller inspects.

    ``live`` and ``admin_port`` are ``None`` for a null server (no model, index or store).
    """

    config: Config
    port: int
    health: health.HealthServicer
    metrics: ServingMetrics
    live: Live | None
    admin_port: int | None

    @property
    def target(self) -> str:
        """``host:port`` of the public server."""
        return f"{_reachable(self.config.serving.host)}:{self.port}"

    @property
    def admin_target(self) -> str | None:
        """``host:port`` of the admin server (``None`` for a null server)."""
        if self.admin_port is None:
            return None
        return f"{_reachable(self.config.serving.admin_host)}:{self.admin_port}"


@contextlib.contextmanager
def start_stack(
    config: Config,
    *,
    null: bool = False,
    grace: float | None = None,
    before_serving: Callable[[], object] | None = None,
) -> Iterator[Stack]:
    """Loads and warms the pair, then starts the stack and yields it SERVING; on exit,
    NOT_SERVING first, then the public server drains and stops.

    Nothing listens on the public port until the pair is loaded and warm: a client that
    connects earlier is refused and retries (``serving.client.SERVICE_CONFIG``), instead of
    being handed to a process that can only answer "loading" (with ``SO_REUSEPORT``, the
    kernel gives a listening worker its share of new connections whatever its state).

    Args:
        config: The project configuration (``serving.*``: ports, watcher, metrics).
        null: Serve ``NullServicer`` instead: a latency baseline with nothing behind it.
        grace: Seconds in-flight calls get to finish at the stop, new calls refused
            meanwhile (``None``: none).
        before_serving: Called once warm, just before the public port opens.
    """
    sc = config.serving
    one_blas_thread()
    stop = threading.Event()
    metrics = ServingMetrics()
    recommend = RecommenderServicer(
        metrics=metrics,
        timing_trailer=sc.timing_trailer,
        max_batch=sc.max_batch,
        refused_log_seconds=sc.refused_log_seconds,
    )
    live = None
    if not null:
        live = load_live(config, metrics)
        recommend.live = live
    if before_serving is not None:
        before_serving()
    server, port, health_servicer = create_server(config, NullServicer() if null else recommend)
    set_serving(health_servicer, True)
    server.start()
    admin = None
    stop_metrics: Callable[[], None] | None = None
    try:
        admin_port = None
        if live is not None:
            admin, admin_port = create_admin_server(config, live)
            admin.start()
            if sc.metrics_port is not None:
                stop_metrics = serve_metrics(metrics, sc.metrics_port, sc.admin_host, stop)
            if sc.reload_poll_seconds:
                live.watch(stop)
        yield Stack(config, port, health_servicer, metrics, live, admin_port)
    finally:
        stop.set()
        set_serving(health_servicer, False)
        if admin is not None:
            admin.stop(grace=None)
        server.stop(grace=grace).wait()
        if stop_metrics is not None:
            stop_metrics()
        if live is not None:
            live.stop_feeds()


def serve_metrics(
    metrics: ServingMetrics, port: int, host: str, stop: threading.Event
) -> Callable[[], None]:
    """Serves ``/metrics`` on ``host:port``; while another process holds the port (the worker
    this one replaces in a rolling restart, still draining), keeps trying in the background.

    Returns:
        What stops it (and frees the port).
    """
    try:
        return metrics.serve(port, host)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
    stopped: list[Callable[[], None]] = []

    def keep_trying() -> None:
        while not stop.wait(METRICS_RETRY_S):
            with contextlib.suppress(OSError):
                stopped.append(metrics.serve(port, host))
                log.info("metrics port bound", extra={"port": port})
                return

    waiter = threading.Thread(target=keep_trying, name="metrics-bind", daemon=True)
    waiter.start()

    def stop_it() -> None:
        stop.set()
        waiter.join()
        for fn in stopped:
            fn()

    return stop_it


def serve(
    config: Config, *, null: bool = False, on_ready: Callable[[], object] | None = None
) -> None:
    """Runs the stack until SIGTERM/SIGINT, then drains: health NOT_SERVING, new calls and
    connections refused (callers retry on another worker), in-flight calls given
    ``serving.drain_seconds`` to finish.

    Args:
        config: The project configuration.
        null: Serve ``NullServicer`` instead (no model, index or store): a baseline.
        on_ready: Called once the server reports SERVING.
    """
    one_search_thread()  # start-up's warm-up searches; each worker sets its own
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with start_stack(
        config, null=null, grace=config.serving.drain_seconds, before_serving=_freeze_startup
    ) as stack:
        sc = config.serving
        what = "null handler"
        if stack.live is not None:
            b = stack.live.recommender.bundle
            what = (
                f"model {b.model_version}, index {b.index_version}, {len(b.item_ids):,} items, "
                f"{sc.tower_runtime} tower; admin on {sc.admin_host}:{stack.admin_port}"
            )
        print(f"serving on {sc.host}:{stack.port} ({what})", flush=True)
        log.info("serving", extra={"port": stack.port, "detail": what})
        if on_ready is not None:
            on_ready()
        stop.wait()
    print("server stopped", flush=True)


def _freeze_startup() -> None:
    """What start-up allocated (TF, Feast, the first bundle) leaves the collector's sight, so
    a full collection no longer walks it (one stalled requests for hundreds of milliseconds
    under load: BENCHMARKS.md). A bundle swapped out
    later is still freed by reference counting; only cycles inside it would stay."""
    gc.collect()
    gc.freeze()
