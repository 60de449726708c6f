"""``recsys serve --workers N``: N whole server processes on one port.

Python runs one request's Python at a time per process (the GIL), so a server uses more than
one core only as several processes. Each worker is the server ``serve`` runs alone: its own
serving pair with its own hot swap (each watches ``indexes/CURRENT``), health, admin port
(``serving.admin_port + i``) and metrics (``serving.metrics_port + i``). They share the public
port through ``SO_REUSEPORT``: the supervisor reserves it with that option set, and every
worker binds it again (gRPC sets the option by default).

Each worker is a fresh interpreter (``recsys serve --worker INDEX:PORT:FD``), started by a
supervisor that never creates a gRPC object (a fork of a process with gRPC threads is unsafe,
grpc/grpc#16001). A worker loads and warms its pair before it listens, then reports on the
supervisor's pipe (``FD``): nothing is handed a connection before it can answer.

The supervisor replaces a worker that dies, and on SIGHUP rolls them all: for each in turn a
replacement starts (reading the configuration file and the code afresh), and once it is
serving, the old one is told to drain (SIGTERM: new connections and calls go to the others,
in-flight calls finish) before the next is replaced. A replacement that fails before it
serves stops the roll, and the old worker keeps serving.

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
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

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


WorkerCommand = Callable[[int, int, int], Sequence[str]]
"""``(index, port, ready_fd)`` → the argv that runs worker ``index`` on the shared ``port``,
reporting readiness on ``ready_fd`` (``worker_argv``)."""


def worker_argv(config_args: Sequence[str], null: bool = False) -> WorkerCommand:
    """The command of a worker: ``recsys [--config F] serve --worker INDEX:PORT:FD``."""

    def argv(index: int, port: int, ready_fd: int) -> list[str]:
        run = [sys.executable, "-m", "commands.cli", *config_args, "serve"]
        return [*run, *(["--null"] if null else []), "--worker", f"{index}:{port}:{ready_fd}"]

    return argv


def report_ready(ready_fd: int) -> None:
    """A worker's word to its supervisor that it serves: its pid, in one atomic write."""
    os.write(ready_fd, struct.pack(_READY, os.getpid()))


_READY = "<i"


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[bytes]
    started: float


class Supervisor:
    """Starts the workers, restarts one that dies, rolls them all on SIGHUP, and stops them
    on SIGTERM or SIGINT."""

    def __init__(self, config: Config, workers: int, command: WorkerCommand):
        if workers < 1:
            raise RecsysError(f"--workers must be at least 1, got {workers}")
        self._config = config
        self._workers = workers
        self._command = command
        self._by_pid: dict[int, _Worker] = {}
        self._current: dict[int, _Worker] = {}
        """The worker serving (or starting for) each index."""
        self._incoming: _Worker | None = None
        """A rolling restart's replacement, loading."""
        self._retiring: _Worker | None = None
        """The worker a rolling restart told to drain."""
        self._roll: list[int] = []
        """Indexes a rolling restart has still to replace."""
        self._roll_requested = False
        self._served: set[int] = set()
        """Indexes that have served at least once (a later start is a restart)."""
        self._quick_exits = [0] * workers
        self._stopping = False
        self._failed = False

    def run(self) -> int:
        """Runs until stopped; returns the exit code (0: every worker stopped cleanly).

        One thread only: the loop waits on the workers' readiness pipe, reaps workers that
        exited and moves a rolling restart on.
        """
        sc = self._config.serving
        reserved = reserve_port(sc.host, sc.port)
        self._port = reserved.getsockname()[1]
        self._ready_r, self._ready_w = os.pipe()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        signal.signal(signal.SIGHUP, self._request_roll)
        print(
            f"supervisor {os.getpid()}: {self._workers} workers on {sc.host}:{self._port} "
            "(SIGHUP: rolling restart; SIGTERM: drain and stop)",
            flush=True,
        )
        for index in range(self._workers):
            self._current[index] = self._spawn(index)
        while self._by_pid:
            if select.select([self._ready_r], [], [], 0.2)[0]:
                data = os.read(self._ready_r, 4 * 64)
                for (pid,) in struct.iter_unpack(_READY, data):
                    self._ready(pid)
            self._reap()
            if self._roll_requested and not self._stopping:
                self._roll_requested = False
                self._start_roll()
        reserved.close()
        os.close(self._ready_r)
        os.close(self._ready_w)
        print(f"all {self._workers} workers stopped", flush=True)
        return 1 if self._failed else 0

    def _spawn(self, index: int) -> _Worker:
        argv = self._command(index, self._port, self._ready_w)
        proc = subprocess.Popen(argv, pass_fds=(self._ready_w,))
        worker = _Worker(index, proc, time.monotonic())
        self._by_pid[proc.pid] = worker
        return worker

    def _ready(self, pid: int) -> None:
        worker = self._by_pid.get(pid)
        if worker is None:
            return
        index = worker.index
        if worker is self._incoming:
            self._incoming = None
            old, self._current[index] = self._current[index], worker
            print(f"worker {index} replaced (pid {pid}); draining the old one", flush=True)
            self._retiring = old
            self._signal(old, signal.SIGTERM)
            return
        again = index in self._served
        self._served.add(index)
        print(f"worker {index} serving{' again' if again else ''}", flush=True)
        if not again and len(self._served) == self._workers:
            print(
                f"all {self._workers} workers serving on {self._config.serving.host}:{self._port}",
                flush=True,
            )

    def _reap(self) -> None:
        for pid, worker in list(self._by_pid.items()):
            code = worker.proc.poll()
            if code is None:
                continue
            del self._by_pid[pid]
            index = worker.index
            if worker is self._retiring:
                self._retiring = None
                print(f"worker {index}'s old process drained and stopped (code {code})", flush=True)
                self._failed |= code != 0
                self._next_in_roll()
            elif self._stopping:
                self._failed |= code != 0
            elif worker is self._incoming:
                self._incoming = None
                self._roll = []
                print(
                    f"rolling restart stopped: worker {index}'s replacement exited with code "
                    f"{code} before serving; the old worker keeps serving",
                    flush=True,
                )
                self._failed = True
            else:
                self._restart(worker, code)

    def _restart(self, worker: _Worker, code: int) -> None:
        index = worker.index
        quick = time.monotonic() - worker.started < QUICK_EXIT_S
        self._quick_exits[index] = self._quick_exits[index] + 1 if quick else 0
        if self._quick_exits[index] >= 3:
            print(f"worker {index} keeps exiting (code {code}); stopping", flush=True)
            self._failed = True
            self._stop()
            return
        print(f"worker {index} exited with code {code}; restarting it", flush=True)
        log.error("worker exited; restarting", extra={"worker": index, "code": code})
        time.sleep(RESTART_DELAY_S)
        if not self._stopping:
            self._current[index] = self._spawn(index)

    def _start_roll(self) -> None:
        if self._roll or self._incoming or self._retiring:
            print("a rolling restart is already running", flush=True)
            return
        print(f"rolling restart of {self._workers} workers", flush=True)
        self._roll = list(range(self._workers))
        self._next_in_roll()

    def _next_in_roll(self) -> None:
        if self._stopping:
            return
        if not self._roll:
            if self._incoming is None and self._retiring is None:
                print("rolling restart done", flush=True)
            return
        index = self._roll.pop(0)
        print(f"rolling restart: starting worker {index}'s replacement", flush=True)
        self._incoming = self._spawn(index)

    def _request_roll(self, *_: object) -> None:
        self._roll_requested = True

    def _signal(self, worker: _Worker, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):  # it exited already
            worker.proc.send_signal(sig)

    def _stop(self, *_: object) -> None:
        self._stopping = True
        self._roll = []
        for worker in list(self._by_pid.values()):
            self._signal(worker, signal.SIGTERM)
