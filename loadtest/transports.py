"""``recsys loadtest --transports``: Python gRPC's own cost per call, the threaded server
against ``grpc.aio`` on one event loop, both as null handlers answering the Recommend method
with an empty response, under the same Locust load.

Each server runs alone in a process of its own (``python -m loadtest.transports
sync|aio PORT``), pinned to the server core; Locust on the other core offers each rate to
each kind in turn, alternating kinds round by round so the machine's drift hits both alike.
The server's CPU time per call comes from ``/proc`` over the Locust run, with its context
switches (all threads) per call. The median over rounds is reported, and the ratio aio/sync.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent import futures
from pathlib import Path

from benchmarks.harness import Table, context_switches, machine_facts, pinning, split_cores
from loadtest.target import Target
from localservices.procs import free_port
from recsys.config import Config
from recsys.data.dataset import Dataset

KINDS = ("sync", "aio")


def _empty(request: object, context: object) -> bytes:
    return b""


async def _empty_async(request: object, context: object) -> bytes:
    return b""


def _handlers(behaviour: object) -> object:
    import grpc

    from recsys.v1 import recommender_pb2 as pb
    from serving.wire import SERVICE

    handler = grpc.unary_unary_rpc_method_handler(
        behaviour, request_deserializer=pb.RecommendRequest.FromString
    )
    return grpc.method_handlers_generic_handler(SERVICE, {"Recommend": handler})


def serve(kind: str, port: int, workers: int = 8) -> None:
    """Runs a bare null server of ``kind`` (``sync``: the threaded server, ``workers``
    threads, as ``recsys serve`` builds it; ``aio``: ``grpc.aio`` on one asyncio loop)."""
    import grpc

    address = f"127.0.0.1:{port}"
    if kind == "sync":
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
        server.add_generic_rpc_handlers((_handlers(_empty),))
        server.add_insecure_port(address)
        server.start()
        print("serving", flush=True)
        server.wait_for_termination()
        return

    async def main() -> None:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((_handlers(_empty_async),))
        server.add_insecure_port(address)
        await server.start()
        print("serving", flush=True)
        await server.wait_for_termination()

    asyncio.run(main())


@contextlib.contextmanager
def _bare_server(kind: str, cpus: set[int] | None, out: Path) -> Iterator[Target]:
    port = free_port("127.0.0.1")
    log = (out / f"{kind}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadtest.transports", kind, str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=pinning(cpus),
    )
    try:
        from serving.client import RecommendClient

        deadline = time.monotonic() + 60
        while b"serving" not in (out / f"{kind}.log").read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the {kind} null server did not start; see {out}/{kind}.log")
            time.sleep(0.1)
        with RecommendClient(f"127.0.0.1:{port}") as client:
            client.recommend("warm-up", k=1)
        yield Target(f"127.0.0.1:{port}", proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def compare(
    config: Config, ml: Dataset, out: Path, rates: Sequence[float], rounds: int = 2
) -> dict[str, dict[float, dict[str, float]]]:
    """Loads each kind at each rate, ``rounds`` times alternating; writes ``transports.txt``
    and ``transports.json``; returns ``{kind: {rate: medians}}``."""
    from loadtest.run import run_locust, write_traffic

    out.mkdir(parents=True, exist_ok=True)
    server_cpus, load_cpus = split_cores(system=1)
    traffic = write_traffic(config, ml, out / "traffic.json")
    runs: dict[str, dict[float, list[dict[str, float]]]] = {
        k: {r: [] for r in rates} for k in KINDS
    }
    for rate in rates:
        step = config.with_overrides({"loadtest": {"rate": rate}})
        for i in range(rounds):
            for kind in KINDS if i % 2 == 0 else KINDS[::-1]:
                run_dir = out / f"{kind}-{rate:g}-{i}"
                run_dir.mkdir(exist_ok=True)
                print(f"==> {kind}: {rate:g}/s for {step.loadtest.seconds:g}s (round {i + 1})")
                with _bare_server(kind, server_cpus, run_dir) as target:
                    pid = target.pid or 0
                    switches = context_switches(pid)
                    s = run_locust(step, target, traffic, run_dir, load_cpus)
                    switches = context_switches(pid) - switches
                runs[kind][rate].append(
                    {
                        "answered_per_s": s.rate,
                        "cpu_ms": s.cpu_ms or float("nan"),
                        "switches_per_call": switches / max(s.requests, 1),
                        "p50_ms": s.p50,
                        "p99_ms": s.p99,
                        "steal_pct": s.steal_pct or 0.0,
                    }
                )
    medians = {
        kind: {
            rate: {m: statistics.median(r[m] for r in rs) for m in rs[0]}
            for rate, rs in by_rate.items()
        }
        for kind, by_rate in runs.items()
    }
    table = Table(
        [
            ("rate/s", ">8g"),
            ("kind", ">6"),
            ("answered/s", ">12.0f"),
            ("CPU ms/call", ">13.3f"),
            ("switches/call", ">15.2f"),
            ("p50 ms", ">9.2f"),
            ("p99 ms", ">9.2f"),
            ("steal %", ">9.1f"),
        ]
    )
    lines = [
        f"null handlers, Locust at each rate for {config.loadtest.seconds:g} s, median of "
        f"{rounds} rounds (kinds alternating); server CPU {server_cpus}, Locust CPU {load_cpus}",
        table.header(),
    ]
    for rate in rates:
        for kind in KINDS:
            # The medians keep the order each run's measures were taken in: the table's.
            lines.append(table.row(rate, kind, *medians[kind][rate].values()))
        ratio = medians["aio"][rate]["cpu_ms"] / medians["sync"][rate]["cpu_ms"]
        lines.append(f"{rate:>8g}  aio / sync CPU per call: {ratio:.2f}x")
    text = "\n".join(lines)
    print(text, flush=True)
    (out / "transports.txt").write_text(text + "\n")
    (out / "transports.json").write_text(
        json.dumps(
            {"machine": machine_facts(), "runs": runs, "medians": medians}, indent=2, default=str
        )
    )
    return medians


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
