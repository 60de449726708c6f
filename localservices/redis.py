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
import subprocess
import time
from pathlib import Path
from types import TracebackType

from recsys.errors import BrokerError


class LocalRedis:
    """``redis-server`` in a child process on a free port; ``stop()`` leaves nothing behind."""

    def __init__(
        self,
        work_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        cpus: set[int] | None = None,
        appendonly: bool = True,
    ):
        """``cpus`` pins the server to those cores (benchmarks keep it beside its client);
        ``appendonly=False`` keeps nothing on disk."""
        self.work_dir = work_dir
        self.host = host
        self.port = port
        self.cpus = cpus
        self.appendonly = appendonly
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def connection_string(self) -> str:
        """``host:port`` as Feast's Redis online store wants it."""
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise BrokerError(
                "redis-server is not installed; run `make redis` "
                "(apt-get install redis-server) or use feast.online_store: sqlite"
            )
        if not self.port:
            with socket.socket() as s:
                s.bind((self.host, 0))
                self.port = int(s.getsockname()[1])
        self.work_dir.mkdir(parents=True, exist_ok=True)
        log = (self.work_dir / "redis.log").open("wb")
        self._proc = subprocess.Popen(
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
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if (cpus := self.cpus) else None,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not self._ping():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = (self.work_dir / "redis.log").read_text(errors="replace")[-2000:]
                raise BrokerError(
                    f"redis-server did not start on {self.connection_string}:\n{tail}"
                )
            time.sleep(0.05)

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs (fault tests pause it with SIGSTOP)."""
        return None if self._proc is None else self._proc.pid

    def _ping(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def __enter__(self) -> LocalRedis:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
