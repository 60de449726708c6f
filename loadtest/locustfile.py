"""The Locust user for ``recsys loadtest``: Recommend over gRPC with a realistic mix.

Loaded only by the ``locust`` process ``loadtest.run`` starts: importing locust
patches the process with gevent, which must never happen next to the server or TensorFlow.
gRPC is made gevent-cooperative before any channel exists.

Each call is fired as a Locust request event (Locust's CSV and HTML) and also kept at
microsecond resolution (Locust rounds response times below 100 ms to whole milliseconds):
``(due unix seconds, latency µs, status, server µs, late µs)`` rows written to
``--recsys-samples`` at the end. Latency counts from the arrival's due time; late is how long
after it the call was sent; status is 1 (answered), 0 (failed) or -1 (fell due but was never
sent before the run ended: its latency is the wait so far, a lower bound). Server µs is the
hot path as the server timed it (its ``recsys-timing-us`` trailer), NaN when the server sends
none (the null handler).
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import grpc
import grpc.experimental.gevent as grpc_gevent
import numpy as np
from locust import User, events, task

from loadtest.traffic import Traffic
from recsys.v1 import recommender_pb2_grpc as pb_grpc
from serving.client import RETRY_OPTIONS

if TYPE_CHECKING:
    import argparse

grpc_gevent.init_gevent()
SAMPLES: list[tuple[float, float, float, float, float]] = []
UNSENT = -1.0
STOPPING: list[float] = []
"""When the run began to stop: arrivals due after it are not the run's."""
_USER_NUMBERS = itertools.count()
STOP_GRACE_S = 0.1
"""Nor are those due just before it: Locust stops sending some 30 ms before it says so."""


@events.init_command_line_parser.add_listener  # type: ignore[untyped-decorator]  # locust's is unannotated
def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recsys-traffic", help="traffic JSON written by recsys loadtest")
    parser.add_argument("--recsys-samples", help="where to write the µs samples (.npy)")
    parser.add_argument("--recsys-rate", type=float, default=100.0, help="total requests/s")
    parser.add_argument(
        "--recsys-connections", type=int, default=1, help="TCP connections the users share"
    )


@events.test_stopping.add_listener  # type: ignore[untyped-decorator]  # locust's is unannotated
def _stopping(**_: object) -> None:
    STOPPING.append(time.perf_counter())


# Any: locust's Environment.parsed_options is Optional, but always set when a locustfile runs.
@events.quitting.add_listener  # type: ignore[untyped-decorator]  # locust's is unannotated
def _write_samples(environment: Any, **_: object) -> None:
    path = environment.parsed_options.recsys_samples
    if path:
        np.save(path, np.array(SAMPLES, dtype=np.float64).reshape(-1, 5))


class RecommendUser(User):
    """One simulated caller on its own channel, pacing itself to its share of the rate."""

    host = "127.0.0.1:50051"

    def on_start(self) -> None:
        options = self.environment.parsed_options
        with open(options.recsys_traffic) as f:
            spec = json.load(f)
        self.traffic = Traffic(spec, seed=id(self))
        # Channels to one address share one connection unless their arguments differ: users
        # spread over --recsys-connections of them, so a server of several workers on
        # SO_REUSEPORT (which spreads connections, not calls) gets all of its workers loaded.
        connection = next(_USER_NUMBERS) % max(1, options.recsys_connections)
        # The retry policy every caller should use (serving.client): a worker killed or
        # restarted under load is retried on another, not counted as a failure.
        self.channel = grpc.insecure_channel(
            self.host.removeprefix("grpc://"),
            options=[("recsys.connection", connection), *RETRY_OPTIONS],
        )
        self.stub = pb_grpc.RecommenderStub(self.channel)
        users = max(1, self.environment.runner.target_user_count or 1)
        self._rate = options.recsys_rate / users
        self._next = time.perf_counter()  # due time of the next arrival; the first goes at once

    def on_stop(self) -> None:
        """Arrivals that fell due before the run ended but were never sent (the user was
        still busy) are kept too, with their wait until the end: a run that fell behind shows
        its backlog instead of leaving it out (coordinated omission)."""
        now, wall = time.perf_counter(), time.time()
        end = min([now, *STOPPING])
        while self._next <= end - STOP_GRACE_S:
            waited = end - self._next
            SAMPLES.append(
                (wall - (now - self._next), waited * 1e6, UNSENT, float("nan"), waited * 1e6)
            )
            self._advance()
        self.channel.close()

    def _advance(self) -> None:
        self._next += self.traffic.rng.expovariate(self._rate)

    def wait_time(self) -> float:
        """Until this user's next arrival. Arrivals are a Poisson process at the user's share
        of the rate, scheduled independently of how long calls take (open loop up to the point
        where every user is busy); together the users' arrivals are Poisson at the total rate.
        """
        return max(0.0, self._next - time.perf_counter())

    @task
    def recommend(self) -> None:
        request = self.traffic.request()
        # Latency counts from the arrival's due time, not from when this user got round to
        # sending it: a call that waited for the user's previous one (the generator or the
        # server falling behind) shows as latency rather than as a call never made
        # (coordinated omission).
        started = self._next
        self._advance()
        lag = time.perf_counter() - started
        started_wall = time.time() - lag
        exception: Exception | None = None
        size = 0
        server_us = float("nan")
        try:
            reply, call = self.stub.Recommend.with_call(request, timeout=5.0)
            size = reply.ByteSize()
            server_us = _hot_path_us(call.trailing_metadata())
        except grpc.RpcError as exc:
            exception = exc
        seconds = time.perf_counter() - started
        status = 1.0 if exception is None else 0.0
        SAMPLES.append((started_wall, seconds * 1e6, status, server_us, lag * 1e6))
        self.environment.events.request.fire(
            request_type="grpc",
            name="Recommend",
            response_time=seconds * 1000,
            response_length=size,
            exception=exception,
            context={},
        )


def _hot_path_us(trailer: Sequence[tuple[str, str]] | None) -> float:
    """The ``hot_path`` part of a ``recsys-timing-us`` trailer (``plan=..,read=..,hot_path=..``)."""
    for key, value in trailer or ():
        if key == "recsys-timing-us":
            return float(dict(part.split("=") for part in value.split(","))["hot_path"])
    return float("nan")
