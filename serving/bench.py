"""Sequential Recommend latency over a real channel, against a null handler in the same run.

Both servers are ``recsys serve`` child processes on the same stack; the client is this
process. Calls alternate between the two in blocks so machine noise hits both alike.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Sequence

import numpy as np

from recsys.config import Config
from recsys.procs import child, free_port, write_config
from serving.client import RecommendClient

BLOCK = 100


def percentiles(samples_s: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max in milliseconds."""
    ms = np.asarray(samples_s) * 1000
    return {
        "p50": float(np.percentile(ms, 50)),
        "p90": float(np.percentile(ms, 90)),
        "p99": float(np.percentile(ms, 99)),
        "max": float(ms.max()),
    }


def _timed(client: RecommendClient, users: Sequence[str], k: int) -> list[float]:
    out = []
    for user in users:
        t = time.perf_counter()
        client.recommend(user, k=k)
        out.append(time.perf_counter() - t)
    return out


def run(config: Config, users: Sequence[str], *, calls: int = 1000, k: int = 10) -> None:
    """Prints a latency table for ``calls`` sequential calls to each server."""
    work = config.paths.state / "bench"
    work.mkdir(parents=True, exist_ok=True)
    host = config.serving.host
    configs = {
        name: config.with_overrides({"serving": {"port": free_port(host)}})
        for name in ("recommend", "null")
    }
    files = {name: write_config(cfg, work / f"{name}.yaml") for name, cfg in configs.items()}
    samples: dict[str, list[float]] = {"null": [], "recommend": []}
    with (
        child("recommend", files["recommend"], ["serve"], work, quiet=True) as rec_proc,
        child("null", files["null"], ["serve", "--null"], work, quiet=True) as null_proc,
    ):
        clients = {
            name: RecommendClient(f"{host}:{cfg.serving.port}") for name, cfg in configs.items()
        }
        clients["recommend"].wait_until_serving(process=rec_proc)
        clients["null"].wait_until_serving(process=null_proc)
        cycle = [users[i % len(users)] for i in range(calls)]
        for client in clients.values():
            _timed(client, cycle[:200], k)  # warm-up: connections, first-call costs
        for start in range(0, calls, BLOCK):
            block = cycle[start : start + BLOCK]
            for name, client in clients.items():
                samples[name].extend(_timed(client, block, k))
        for client in clients.values():
            client.close()
    rows = {name: percentiles(s) for name, s in samples.items()}
    print(
        f"\n{calls} sequential Recommend calls (k={k}) per server, "
        f"{platform.node()} {platform.machine()}, Python {platform.python_version()}"
    )
    print(f"{'server':<12}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for name, r in rows.items():
        print(f"{name:<12}{r['p50']:>9.3f}{r['p90']:>9.3f}{r['p99']:>9.3f}{r['max']:>9.3f}")
    ratio = rows["recommend"]["p50"] / rows["null"]["p50"]
    print(f"recommend / null at p50: {ratio:.2f}x")
