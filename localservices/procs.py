"""Child processes of the ``recsys`` CLI (demo, benchmarks), each stopped by its context."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import yaml

from localservices.process import stop_process
from recsys.config import ENV_PREFIX, Config


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_ports(host: str, n: int) -> int:
    """The first of ``n`` consecutive free ports (``n`` server workers take port + i)."""
    if n == 1:
        return free_port(host)
    for _ in range(200):
        base = free_port(host)
        if base + n > 65535:
            continue
        try:
            with contextlib.ExitStack() as taken:
                for port in range(base, base + n):
                    s = taken.enter_context(socket.socket())
                    s.bind((host, port))
            return base
        except OSError:
            continue
    raise OSError(f"found no {n} consecutive free ports on {host}")


def serving_ports(config: Config) -> dict[str, int]:
    """Free public and admin ports, as ``serving`` overrides for a server child: a second
    server on the defaults would fail to bind (the admin port included)."""
    host = config.serving.host
    return {"port": free_port(host), "admin_port": free_port(config.serving.admin_host)}


def slug(name: str) -> str:
    """A display name as a file or folder name: ``numpy, sqlite`` → ``numpy-sqlite``."""
    return name.replace(", ", "-").replace(" ", "-").replace(",", "")


def write_config(config: Config, path: Path) -> Path:
    """Writes ``config`` as YAML for a child process to load with ``--config``."""
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    return path


@contextlib.contextmanager
def child(
    name: str,
    config_file: Path,
    args: Sequence[str],
    log_dir: Path,
    *,
    quiet: bool = False,
    cpus: set[int] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Runs ``recsys --config config_file *args``; SIGTERM (then SIGKILL) on exit.

    The child sees none of our ``RECSYS_*`` overrides: ``config_file`` is its whole config.
    ``cpus`` pins it to those cores (benchmarks keep load and system apart that way).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "commands.cli", "--config", str(config_file), *args],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
        if not quiet:
            print(f"    {name}: pid {process.pid}, log {log_path}", flush=True)
        try:
            yield process
        finally:
            # It shares our process group (a terminal's Ctrl-C reaches it too): signal it alone.
            stop_process(process, name, 20, group=False)
            if not quiet:
                print(f"    {name}: stopped (exit {process.returncode})", flush=True)
