"""One server child process: launched with its output in a log, polled until it serves, stopped.

``LocalBroker`` (a Kafka JVM) and ``LocalRedis`` (``redis-server``) are both a
``ManagedProcess``: the base owns the ``Popen``, fails a start fast with the tail of the log
when the server exits or is not ready in time, and stops it with SIGTERM to its process group,
then SIGKILL, so that no start or stop path leaves a process behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

from recsys.errors import BrokerError

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _silent(_: str) -> None:
    pass


def output_tail(text: str, lines: int = 40) -> str:
    """The last ``lines`` lines of a tool's output, without colour codes, for an error message."""
    cleaned = _ANSI.sub("", text).rstrip()
    return "\n".join(cleaned.splitlines()[-lines:])


def log_tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file, or a note saying it is missing or empty."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            # The last 16 KiB is plenty for 40 lines and avoids reading a long-lived log.
            f.seek(max(0, f.tell() - 16384))
            data = f.read()
    except OSError:
        return "(no log)"
    return output_tail(data.decode("utf-8", errors="replace"), lines) or "(empty log)"


def require_tool(name: str, purpose: str) -> str:
    """The path of executable ``name``, so a missing one fails before anything is started.

    Raises:
        BrokerError: ``name`` is not on PATH (the message says what it was needed for).
    """
    found = shutil.which(name)
    if found is None:
        raise BrokerError(f"`{name}` is not on PATH; it is needed to {purpose}. Install it first.")
    return found


def run_tool(
    cmd: Sequence[str], *, timeout: float, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Runs a short-lived tool to its end, stdout and stderr together, for an error's tail.

    Raises:
        subprocess.TimeoutExpired: The tool ran longer than ``timeout`` seconds (it is killed).
    """
    return subprocess.run(
        cmd,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        timeout=timeout,
        check=False,
    )


def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals, *, group: bool) -> None:
    if not group:
        proc.send_signal(sig)
        return
    # The group is gone once everything in it has exited; that is the goal, not an error.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def stop_process(
    proc: subprocess.Popen[bytes],
    name: str,
    timeout: float,
    *,
    group: bool,
    log: Callable[[str], None] = _silent,
) -> None:
    """Stops and reaps ``proc``: SIGTERM (a clean shutdown), then SIGKILL after ``timeout``.

    Does nothing if it has already exited, beyond reaping it.

    Args:
        proc: The child to stop.
        name: What it is, for ``log``.
        timeout: Seconds to wait for a clean shutdown before killing.
        group: Signal ``proc``'s whole process group (it leads one: it was started in its own
            session), so nothing it spawned survives either; else ``proc`` alone.
        log: Receives one-line progress messages.
    """
    if proc.poll() is not None:
        return
    log(f"stopping {name} pid {proc.pid}")
    _signal(proc, signal.SIGTERM, group=group)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        log(f"{name} pid {proc.pid} ignored SIGTERM for {timeout:.0f}s; killing")
        # Only while the leader is unreaped is the group id surely still ours.
        _signal(proc, signal.SIGKILL, group=group)
        proc.wait()


class ManagedProcess(ABC):
    """A server in a child process of its own session, with its output in one log file.

    A subclass's ``start()`` prepares what the server needs, calls ``_launch`` and then
    ``_wait_ready``, which polls ``_probe``. Use as a context manager, or call ``start()``
    and ``stop()``; ``stop()`` always leaves no process behind.
    """

    _poll_interval: ClassVar[float] = 0.2
    """Seconds between readiness probes."""

    def __init__(self, name: str, log_path: Path, *, log: Callable[[str], None] = _silent) -> None:
        """Describes the process; nothing runs until ``start()``.

        Args:
            name: What the server is, for progress and error messages ("Kafka broker").
            log_path: The file that receives the server's stdout and stderr.
            log: Receives one-line progress messages.
        """
        self._name = name
        self._log_path = log_path
        self._log = log
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        """The server's combined stdout and stderr."""
        return self._log_path

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs, else None (fault tests signal it by id)."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @abstractmethod
    def start(self) -> None:
        """Starts the server and returns once it serves."""

    @abstractmethod
    def _probe(self) -> tuple[bool, str]:
        """Whether the server serves yet, and if not, why (for the not-ready error)."""

    def _launch(
        self,
        cmd: Sequence[str],
        *,
        cwd: Path | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Runs ``cmd`` with its output in ``log_path`` (truncated); ``stop()`` ends it.

        Raises:
            BrokerError: The executable could not be run.
        """
        with self._log_path.open("wb") as log_file:
            try:
                self._proc = subprocess.Popen(
                    cmd,
                    cwd=cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    # Own session and process group: a Ctrl-C in our terminal does not reach
                    # the server half-way, and stop() can signal the whole group.
                    start_new_session=True,
                    preexec_fn=preexec_fn,
                )
            except OSError as e:
                raise BrokerError(f"Could not launch {cmd[0]}: {e}") from e
        return self._proc

    def _wait_ready(self, proc: subprocess.Popen[bytes], timeout: float, started: float) -> None:
        """Polls ``_probe`` until the server serves; stops it if it does not.

        Args:
            proc: The process ``_launch`` returned.
            timeout: Seconds from ``started`` that the server has to become ready.
            started: ``time.monotonic()`` when the start began.

        Raises:
            BrokerError: The server exited, or was not ready by the deadline (from
                ``_startup_error``).
        """
        deadline = started + timeout
        why = "no connection yet"
        try:
            while True:
                code = proc.poll()
                if code is not None or time.monotonic() >= deadline:
                    raise self._startup_error(code, timeout, why)
                ready, why = self._probe()
                if ready:
                    return
                time.sleep(self._poll_interval)
        except BaseException:
            # Also on KeyboardInterrupt: never leave a half-started server behind.
            self.stop()
            raise

    def _startup_error(self, code: int | None, timeout: float, why: str) -> BrokerError:
        """The error for a server that exited with ``code`` (None: not ready in ``timeout``)."""
        if code is not None:
            failure = f"exited with code {code} during startup"
        else:
            failure = f"was not ready within {timeout:g}s ({why})"
        return BrokerError(
            f"The {self._name} {failure}. Tail of {self._log_path}:\n{log_tail(self._log_path)}"
        )

    def stop(self, timeout: float = 20.0) -> None:
        """Stops the server: SIGTERM to its process group, then SIGKILL after ``timeout``.

        Safe to call repeatedly and when the server never started.

        Args:
            timeout: Seconds to wait for a clean shutdown before killing.
        """
        proc = self._proc
        if proc is None:
            return
        try:
            stop_process(proc, self._name, timeout, group=True, log=self._log)
        finally:
            self._proc = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
