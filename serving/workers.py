"""``recsys serve --workers N``: N whole server processes on one port.

Python runs one request's Python at a time per process (the GIL), so a server uses more than
one core only as several processes. Each worker is the server ``serve`` runs alone: its own
serving pair with its own hot swap (each watches ``indexes/CURRENT``), health, admin port
(``serving.admin_port + i``) and metrics (``serving.metrics_port + i``). They share the public
port through ``SO_REUSEPORT``: the supervisor reserves it with that option set, and every
worker binds it again (gRPC sets the option by default).

The workers are forked before any gRPC server starts (grpc/grpc#16001), and the supervisor
never creates a gRPC object, so it can also fork a replacement for a worker that dies.

``SO_REUSEPORT`` spreads connections, not calls: the kernel hashes each new TCP connection to
one worker, and every call on that connection goes to it. A client should therefore open
several connections, at least N and better a few per worker. gRPC shares one connection
among channels to the same address unless told otherwise, so open each channel with the
``grpc.use_local_subchannel_pool`` option (``CHANNEL_OPTIONS``), as the load generator does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable

from recsys.config import Config
from recsys.errors import RecsysError

log = logging.getLogger(__name__)
CHANNEL_OPTIONS = (("grpc.use_local_subchannel_pool", 1),)
"""A channel of its own connection (by default, channels to one address share one)."""
RESTART_DELAY_S = 1.0
QUICK_EXIT_S = 10.0
"""A worker that exits this soon after starting, three times running, is not restarted."""


def worker_config(config: Config, index: int, port: int) -> Config:
    """Worker ``index``'s configuration: the shared public port; the admin and metrics ports
    offset by ``index`` (an ephemeral admin port stays ephemeral)."""
    sc = config.serving
    return config.with_overrides(
        {
            "serving": {
                "port": port,
                "processes": 1,
                "admin_port": sc.admin_port + index if sc.admin_port else 0,
                "metrics_port": None if sc.metrics_port is None else sc.metrics_port + index,
            }
        }
    )


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (0: a free port) with ``SO_REUSEPORT``, so the workers
    can bind the same port; it never listens, so it takes no connections."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise RecsysError(f"cannot bind {host}:{port}: {exc.strerror}; is it in use?") from exc
    return sock


class Supervisor:
    """Forks the workers, restarts one that dies, and stops them all on SIGTERM or SIGINT."""

    def __init__(self, config: Config, workers: int, serve: Callable[..., None]):
        if workers < 1:
            raise RecsysError(f"--workers must be at least 1, got {workers}")
        self._config = config
        self._workers = workers
        self._serve = serve
        self._pids: dict[int, int] = {}
        self._started: dict[int, float] = {}
        self._quick_exits = [0] * workers
        self._stopping = False
        self._restarted: set[int] = set()

    def run(self) -> int:
        """Runs until stopped; returns the exit code (0: every worker stopped cleanly).

        One thread only (a fork beside a running thread could copy a lock it holds): the
        loop waits on the workers' readiness pipe and polls for workers that exited.
        """
        sc = self._config.serving
        reserved = reserve_port(sc.host, sc.port)
        port = reserved.getsockname()[1]
        ready_r, ready_w = os.pipe()
        configs = [worker_config(self._config, i, port) for i in range(self._workers)]
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        for i, cfg in enumerate(configs):
            self._spawn(i, cfg, ready_w)
        ready: set[int] = set()
        failed = False
        while self._pids:
            if select.select([ready_r], [], [], 0.2)[0]:
                for index in os.read(ready_r, 64):
                    print(
                        f"worker {index} serving again"
                        if index in ready
                        else f"worker {index} serving",
                        flush=True,
                    )
                    ready.add(index)
                    if len(ready) == self._workers and index not in self._restarted:
                        print(
                            f"all {self._workers} workers serving on {sc.host}:{port}", flush=True
                        )
            while self._pids:
                pid, status = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break
                index = self._pids.pop(pid)
                code = os.waitstatus_to_exitcode(status)
                if self._stopping:
                    failed |= code != 0
                    continue
                quick = time.monotonic() - self._started[index] < QUICK_EXIT_S
                self._quick_exits[index] = self._quick_exits[index] + 1 if quick else 0
                if self._quick_exits[index] >= 3:
                    print(f"worker {index} keeps exiting (code {code}); stopping", flush=True)
                    failed = True
                    self._stop()
                    continue
                print(f"worker {index} exited with code {code}; restarting it", flush=True)
                log.error("worker exited; restarting", extra={"worker": index, "code": code})
                time.sleep(RESTART_DELAY_S)
                if not self._stopping:
                    self._restarted.add(index)
                    self._spawn(index, configs[index], ready_w)
        reserved.close()
        os.close(ready_r)
        os.close(ready_w)
        print(f"all {self._workers} workers stopped", flush=True)
        return 1 if failed else 0

    def _spawn(self, index: int, config: Config, ready_w: int) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 0
            try:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, signal.SIG_DFL)  # serve installs its own
                self._serve(config, on_ready=lambda: os.write(ready_w, bytes([index])))
            except BaseException:  # a worker reports anything, then exits
                traceback.print_exc()
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self._pids[pid] = index
        self._started[index] = time.monotonic()

    def _stop(self, *_: object) -> None:
        self._stopping = True
        for pid in list(self._pids):
            with contextlib.suppress(ProcessLookupError):  # it exited already
                os.kill(pid, signal.SIGTERM)
