"""A local ``redis-server`` for the Redis online-store option (tests, benchmarks, humans).

Debian's ``redis-server`` package provides the binary (``make redis`` installs it). The
server binds to 127.0.0.1 only and, by default, logs every write to an append-only file in
its work directory (``appendonly yes``, ``appendfsync everysec``): restarted on the same
directory after a crash or a SIGKILL, it comes back with every write it acknowledged (an
operating-system crash can lose the last second). Without it, a restart comes back empty.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

from localservices.process import ManagedProcess
from localservices.procs import free_port
from recsys.errors import BrokerError


class LocalRedis(ManagedProcess):
    """``redis-server`` in a child process on a free port; ``stop()`` leaves nothing behind."""

    _poll_interval = 0.05  # it serves within milliseconds; a start should not wait longer

    def __init__(
        self,
        work_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        cpus: set[int] | None = None,
        appendonly: bool = True,
    ) -> None:
        """Describes a server; nothing is started until ``start()``.

        Args:
            work_dir: Directory for the append-only file and ``redis.log`` (created as needed).
            host: Interface to bind to.
            port: Port to serve on; 0 picks a free one at the first ``start()`` and keeps it,
                so a restart comes back where clients look.
            cpus: Pins the server to those cores (benchmarks keep it beside its client).
            appendonly: Keep every write on disk; False keeps nothing on disk.
        """
        super().__init__("redis-server", work_dir / "redis.log")
        self.work_dir = work_dir
        self.host = host
        self.port = port
        self.cpus = cpus
        self.appendonly = appendonly

    @property
    def connection_string(self) -> str:
        """``host:port`` as Feast's Redis online store wants it."""
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        """Launches ``redis-server`` and waits until it answers PING.

        Args:
            timeout: Seconds to wait for the server to answer.

        Raises:
            BrokerError: ``redis-server`` is not installed, or it exited or did not answer in
                time (the message has the log tail).
        """
        binary = shutil.which("redis-server")
        if binary is None:
            raise BrokerError(
                "redis-server is not installed; run `make redis` "
                "(apt-get install redis-server) or use feast.online_store: sqlite"
            )
        if not self.port:
            self.port = free_port(self.host)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        proc = self._launch(
            [
                binary,
                "--bind",
                self.host,
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "yes" if self.appendonly else "no",
                "--appendfsync",
                "everysec",
                "--dir",
                str(self.work_dir),
            ],
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if (cpus := self.cpus) else None,
        )
        self._wait_ready(proc, timeout, started)

    def _probe(self) -> tuple[bool, str]:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG"), "no PONG yet"
        except OSError as e:
            return False, f"port not open: {e.strerror or e}"

    def _startup_error(self, code: int | None, timeout: float, why: str) -> BrokerError:
        """Redis's own message: the address it could not serve, and its log's last bytes."""
        tail = self.log_path.read_text(errors="replace")[-2000:]
        return BrokerError(f"redis-server did not start on {self.connection_string}:\n{tail}")

    def stop(self, timeout: float = 10.0) -> None:
        """Stops the server: SIGTERM (it flushes the append-only file), SIGKILL after ``timeout``.

        Safe to call repeatedly and when the server never started.

        Args:
            timeout: Seconds to wait for a clean shutdown before killing.
        """
        super().stop(timeout)
