"""The server a load run loads: one ``recsys serve`` this command starts (pinned, with its
stage-time trailer and its metrics served, ``serving.processes`` worker processes), or one
given by address. For a server it started it reads the CPU time of its whole process tree
from ``/proc`` and what its metrics say the hot path did (batch sizes, per-stage and hot-path
CPU time per request), summed over its workers.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from benchmarks.harness import cpu_seconds
from localservices.procs import child, free_port, free_ports, write_config
from recsys.config import Config
from recsys.errors import RecsysError
from serving.client import RecommendClient
from serving.metrics import STAGES


@dataclass(frozen=True)
class HotPath:
    """What the server's metrics say about a run: per request answered unless noted.

    Attributes:
        batch_mean: Requests per batch.
        batch_p50, batch_max: Of the batch sizes (bucket upper bounds).
        cpu_ms: The hot path's thread CPU time (the gRPC stack is not in it).
        stage_us: Wall time per stage, the batch's time shared over its requests.
        per_worker: Requests each worker answered.
    """

    requests: int
    batches: int
    batch_mean: float
    batch_p50: float
    batch_max: float
    cpu_ms: float
    stage_us: dict[str, float]
    per_worker: list[int]


@dataclass
class Target:
    """A server to load; ``pid``, ``admins`` and ``metrics`` when it is ours (its CPU time
    is then measured, its metrics read, and it can be told to reload)."""

    address: str
    pid: int | None = None
    admins: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)

    def cpu(self) -> float | None:
        return None if self.pid is None else cpu_seconds(self.pid)

    def scrape(self) -> list[dict[str, float]]:
        """Each worker's hot-path counters (none when the server serves no metrics)."""
        out = []
        for address in self.metrics:
            with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as reply:
                text = reply.read().decode()
            values = {}
            for family in text_string_to_metric_families(text):
                for s in family.samples:
                    if s.name.startswith("recsys_recommend_"):
                        key = s.name + "".join(f"|{k}={v}" for k, v in sorted(s.labels.items()))
                        values[key] = s.value
            out.append(values)
        return out


def _requests(values: dict[str, float]) -> float:
    return sum(v for k, v in values.items() if k.startswith("recsys_recommend_requests_total"))


def hot_path(before: list[dict[str, float]], after: list[dict[str, float]]) -> HotPath | None:
    """The run's hot path from two scrapes of every worker, summed (``None`` when the server
    serves no metrics or answered nothing). A worker replaced meanwhile counts from zero."""
    deltas = [
        {k: a[k] - (b.get(k, 0.0) if _requests(a) >= _requests(b) else 0.0) for k in a}
        for b, a in zip(before, after, strict=True)
    ]
    delta: dict[str, float] = {}
    for d in deltas:
        for k, v in d.items():
            delta[k] = delta.get(k, 0.0) + v
    requests = int(_requests(delta))
    batches = int(delta.get("recsys_recommend_batch_size_count", 0))
    if not requests or not batches:
        return None
    buckets = sorted(
        (float(k.split("le=")[1]), v)
        for k, v in delta.items()
        if k.startswith("recsys_recommend_batch_size_bucket") and "le=+Inf" not in k
    )
    p50 = next((le for le, n in buckets if n >= batches / 2), float("inf"))
    largest = next((le for le, n in buckets if n >= batches), float("inf"))
    stages = {
        s: delta.get(f"recsys_recommend_stage_seconds_sum|stage={s}", 0.0) * 1e6 / requests
        for s in STAGES
    }
    return HotPath(
        requests=requests,
        batches=batches,
        batch_mean=delta.get("recsys_recommend_batch_size_sum", 0.0) / batches,
        batch_p50=p50,
        batch_max=largest,
        cpu_ms=delta.get("recsys_recommend_cpu_seconds_total", 0.0) * 1000 / requests,
        stage_us=stages,
        per_worker=[int(_requests(d)) for d in deltas],
    )


@contextlib.contextmanager
def started_server(
    config: Config, out: Path, null: bool, cpus: set[int] | None
) -> Iterator[Target]:
    """Starts ``recsys serve`` (``--null``: the null handler) with ``serving.processes``
    workers; yields it once every worker is SERVING. It sends its stage times as a trailer
    (``serving.timing_trailer``), so the samples carry its hot path, and serves its metrics."""
    sc = config.serving
    n = sc.processes
    admin = free_ports(sc.admin_host, n)
    metrics = free_ports(sc.admin_host, n)
    cfg = config.with_overrides(
        {
            "serving": {
                "port": free_port(sc.host),
                "admin_port": admin,
                "metrics_port": metrics,
                "timing_trailer": True,
            }
        }
    )
    name = "null-server" if null else "server"
    path = write_config(cfg, out / f"{name}.yaml")
    args = ["serve", "--null"] if null else ["serve"]
    with child(name, path, args, out, quiet=True, cpus=cpus) as proc:
        address = f"{sc.host}:{cfg.serving.port}"
        with RecommendClient(address) as client:
            client.wait_until_serving(timeout=600, process=proc)
        if n > 1:  # a health check reaches one worker: wait until the supervisor says all
            _wait_for_line(out / f"{name}.log", f"all {n} workers serving", proc)
        if null:  # no pair to reload, no hot path to measure
            yield Target(address, proc.pid)
        else:
            yield Target(
                address,
                proc.pid,
                [f"{sc.admin_host}:{admin + i}" for i in range(n)],
                [f"{sc.admin_host}:{metrics + i}" for i in range(n)],
            )


def _wait_for_line(
    log: Path, line: str, proc: subprocess.Popen[bytes], timeout: float = 600
) -> None:
    deadline = time.monotonic() + timeout
    while line not in log.read_text(errors="replace"):
        if proc.poll() is not None:
            raise RecsysError(f"server exited with code {proc.returncode} before {line!r}")
        if time.monotonic() > deadline:
            raise RecsysError(f"no {line!r} in {log} after {timeout:.0f}s")
        time.sleep(0.2)
