"""Faults of a server fleet as its callers see them: Recommend driven at a fixed rate from
several channels while a worker is killed, a replacement loads, the fleet rolls, or garbage
floods the port; every call's outcome kept, so failures are counted, not sampled.

Used by ``recsys bench-fleet`` (the figures in BENCHMARKS.md) and by the fleet tests.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from benchmarks.harness import machine_line, pinned, split_cores
from recsys.config import Config
from recsys.errors import RecsysError
from recsys.v1 import recommender_pb2 as pb
from recsys.v1 import recommender_pb2_grpc as pb_grpc
from serving.client import RETRY_OPTIONS
from serving.workers import CHANNEL_OPTIONS

METHOD = f"/{pb.DESCRIPTOR.services_by_name['Recommender'].full_name}/Recommend"
LOADING = "loading"
"""What a worker answers (UNAVAILABLE) while it loads: ``NotReadyError``'s message."""


@dataclass(frozen=True)
class Outcome:
    """One call: when it was due (``time.monotonic()``), how long it took from then, and
    its status code's name (``OK`` for an answer)."""

    due: float
    seconds: float
    code: str
    details: str = ""


@dataclass
class Calls:
    """Every call of a run, in completion order."""

    outcomes: list[Outcome] = field(default_factory=list)

    def failed(self, start: float = 0.0, end: float = float("inf")) -> list[Outcome]:
        return [o for o in self.outcomes if o.code != "OK" and start <= o.due < end]

    def p99_ms(self, start: float = 0.0, end: float = float("inf")) -> float:
        seconds = [o.seconds for o in self.outcomes if start <= o.due < end]
        return float(np.percentile(seconds, 99) * 1000) if seconds else float("nan")

    def count(self, start: float = 0.0, end: float = float("inf")) -> int:
        return sum(start <= o.due < end for o in self.outcomes)


def users(n: int = 200) -> list[str]:
    """Known ML-100K users and a few unknown ones."""
    return [str(1 + i % 943) if i % 10 else f"new-{i}" for i in range(n)]


@contextlib.contextmanager
def calling(
    target: str,
    rate: float,
    *,
    channels: int = 8,
    retries: bool = True,
    timeout: float = 2.0,
    user_ids: Sequence[str] = (),
) -> Iterator[Calls]:
    """Recommend at ``rate`` calls/s in total from ``channels`` channels, each on its own
    connection and thread, until the block ends. Arrivals are paced on a fixed schedule per
    channel (a late call goes at once, none is skipped), and a call's time counts from when
    it was due.

    Args:
        retries: Give each channel ``serving.client.RETRY_OPTIONS`` (the recommended policy).
        timeout: Each call's deadline, seconds.
    """
    calls = Calls()
    lock = threading.Lock()
    stop = threading.Event()
    ids = list(user_ids) or users()
    options = [*CHANNEL_OPTIONS, *(RETRY_OPTIONS if retries else ())]

    def run(n: int) -> None:
        interval = channels / rate
        rng = random.Random(n)
        with grpc.insecure_channel(target, options=options) as ch:
            call = pb_grpc.RecommenderStub(ch).Recommend
            due = time.monotonic() + rng.random() * interval
            while not stop.is_set():
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                request = pb.RecommendRequest(user_id=rng.choice(ids), k=10)
                try:
                    call(request, timeout=timeout)
                    code, details = "OK", ""
                except grpc.RpcError as exc:
                    code, details = exc.code().name, exc.details() or ""
                outcome = Outcome(due, time.monotonic() - due, code, details)
                with lock:
                    calls.outcomes.append(outcome)
                due += interval

    threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in range(channels)]
    for t in threads:
        t.start()
    try:
        yield calls
    finally:
        stop.set()
        for t in threads:
            t.join(timeout + 5)


@contextlib.contextmanager
def probing(target: str, every: float = 0.25, timeout: float = 2.0) -> Iterator[Calls]:
    """A fresh connection every ``every`` seconds, one call on it without retries: what a
    client that connects now is handed (a loading worker answers ``LOADING``)."""
    calls = Calls()
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(every):
            due = time.monotonic()
            with grpc.insecure_channel(target, options=CHANNEL_OPTIONS) as ch:
                try:
                    pb_grpc.RecommenderStub(ch).Recommend(
                        pb.RecommendRequest(user_id="196", k=5), timeout=timeout
                    )
                    code, details = "OK", ""
                except grpc.RpcError as exc:
                    code, details = exc.code().name, exc.details() or ""
            calls.outcomes.append(Outcome(due, time.monotonic() - due, code, details))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield calls
    finally:
        stop.set()
        thread.join(timeout + 5)


def loading(calls: Calls) -> list[Outcome]:
    """Calls a loading worker answered."""
    return [o for o in calls.outcomes if o.code == "UNAVAILABLE" and LOADING in o.details]


def workers_of(supervisor: int) -> list[int]:
    """The supervisor's worker processes (its children), oldest first."""
    path = Path(f"/proc/{supervisor}/task/{supervisor}/children")
    return sorted(int(c) for c in path.read_text().split())


def garbage(n: int) -> bytes:
    """Bytes that are not a RecommendRequest (a field of a wire type it cannot take)."""
    return bytes([0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F]) + n.to_bytes(4, "little")


def flood(target: str, requests: int, *, oversized: bool = False) -> dict[str, int]:
    """Sends ``requests`` malformed (or, with ``oversized``, too large) Recommend requests
    over one channel; returns how many got each status code."""
    codes: dict[str, int] = {}
    big = pb.RecommendRequest(user_id="u" * 300_000).SerializeToString()
    with grpc.insecure_channel(target) as channel:
        raw = channel.unary_unary(
            f"/{pb.DESCRIPTOR.services_by_name['Recommender'].full_name}/Recommend"
        )
        pending = []
        for i in range(requests):
            pending.append(raw.future(big if oversized else garbage(i), timeout=10))
            if len(pending) >= 64:
                _collect(pending, codes)
        _collect(pending, codes)
    return codes


def _collect(pending: list[grpc.Future], codes: dict[str, int]) -> None:
    for future in pending:
        exc = future.exception()
        name = "OK" if exc is None else exc.code().name
        codes[name] = codes.get(name, 0) + 1
    pending.clear()


Fleet = tuple[subprocess.Popen[bytes], str, Path]
"""A running fleet: its supervisor, public address and log."""


@contextlib.contextmanager
def started_fleet(
    config: Config,
    work: Path,
    workers: int,
    cpus: set[int] | None = None,
    args: Sequence[str] = (),
) -> Iterator[Fleet]:
    """``recsys serve --workers N [args]`` on free ports, pinned to ``cpus``, until every
    worker serves; yields the supervisor, the public address and its log."""
    from localservices.procs import child, free_port, free_ports, write_config

    ports = {
        "port": free_port("127.0.0.1"),
        "admin_port": free_ports("127.0.0.1", workers),
        "metrics_port": free_ports("127.0.0.1", workers),
        "reload_poll_seconds": 0,
    }
    config_file = write_config(config.with_overrides({"serving": ports}), work / "serve.yaml")
    log = work / "serve.log"
    argv = ["serve", "--workers", str(workers), *args]
    with child("serve", config_file, argv, work, quiet=True, cpus=cpus) as proc:
        _wait(lambda: f"all {workers} workers serving" in log.read_text(), 600, proc)
        yield proc, f"127.0.0.1:{ports['port']}", log


def _wait(predicate: Callable[[], bool], timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise RecsysError(f"the server exited with code {proc.returncode}; see its log")
        if time.monotonic() > deadline:
            raise RecsysError(f"the fleet did not get there within {timeout:.0f} s")
        time.sleep(0.05)


def _lines(log: Path) -> int:
    return len(log.read_text().splitlines())


Row = dict[str, object]


def run(
    config: Config, *, rate: float = 1000.0, workers: int = 2, seconds: float = 15.0
) -> dict[str, Row]:
    """Each fault in turn on one fleet pinned to the system's cores, the callers on the
    load's: steady, a worker SIGKILLed (callers with the recommended retry policy, then
    without) while fresh connections probe its replacement's load, a rolling restart, and
    floods of malformed and oversized requests. Prints a table; returns its rows."""
    cores = split_cores()
    work = config.paths.state / "bench-fleet" / time.strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"bench-fleet: {workers} workers pinned to {sorted(cores.system or [])}, callers to "
        f"{sorted(cores.load or [])}, {rate:.0f} calls/s; {machine_line()}",
        flush=True,
    )
    rows: dict[str, Row] = {}
    with pinned(cores.load), started_fleet(config, work, workers, cores.system) as fleet:
        with calling(fleet[1], rate) as steady:
            time.sleep(seconds)
        rows["steady"] = _row(steady)
        rows["SIGKILL, retry policy"] = kill(fleet, rate, seconds / 3, retries=True)
        rows["SIGKILL, no retries"] = kill(fleet, rate, seconds / 3, retries=False)
        rows["rolling restart"] = roll(fleet, rate, seconds / 3, steady.p99_ms())
        rows["10,000 malformed + 1,000 oversized"] = floods(fleet, rate)
    for name, row in rows.items():
        print(f"  {name:<36} " + "  ".join(f"{k}: {v}" for k, v in row.items()), flush=True)
    return rows


def kill(fleet: Fleet, rate: float, around: float, *, retries: bool) -> Row:
    """A worker SIGKILLed ``around`` seconds into a run, which goes on until ``around``
    seconds after its replacement serves; fresh connections probe all along."""
    proc, target, log = fleet
    replaced = log.read_text().count("serving again")
    with calling(target, rate, retries=retries) as calls, probing(target) as probes:
        time.sleep(around)
        killed_at = time.monotonic()
        os.kill(workers_of(proc.pid)[-1], signal.SIGKILL)
        _wait(lambda: log.read_text().count("serving again") > replaced, 600, proc)
        loaded = time.monotonic()
        time.sleep(around)
    failed = calls.failed()
    spread = "-"
    if failed:
        first, last = (min(f.due for f in failed), max(f.due for f in failed))
        spread = f"{(first - killed_at) * 1000:.0f}..{(last - killed_at) * 1000:.0f}"
    return {
        **_row(calls),
        "failed, due ms after the kill": spread,
        "load s": f"{loaded - killed_at:.1f}",
        "probes in load": probes.count(killed_at, loaded),
        "probes answered loading": len(loading(probes)),
    }


def roll(fleet: Fleet, rate: float, around: float, steady_p99_ms: float) -> Row:
    """SIGHUP to the supervisor under load: the calls while it rolls."""
    proc, target, log = fleet
    done_before = log.read_text().count("rolling restart done")
    with calling(target, rate) as calls:
        time.sleep(around)
        rolled_at = time.monotonic()
        proc.send_signal(signal.SIGHUP)
        _wait(lambda: log.read_text().count("rolling restart done") > done_before, 900, proc)
        done = time.monotonic()
        time.sleep(around)
    during = calls.p99_ms(rolled_at, done)
    return {
        **_row(calls, rolled_at, done),
        "roll s": f"{done - rolled_at:.1f}",
        "p99 / steady": f"{during / steady_p99_ms:.2f}",
    }


def floods(fleet: Fleet, rate: float) -> Row:
    """10,000 malformed and 1,000 oversized requests while real calls go on."""
    _, target, log = fleet
    lines = _lines(log)
    with calling(target, rate) as calls:
        garbage_codes = flood(target, 10_000)
        oversized_codes = flood(target, 1_000, oversized=True)
    return {
        **_row(calls),
        "refused as": f"{garbage_codes} {oversized_codes}",
        "log lines": _lines(log) - lines,
    }


def _row(calls: Calls, start: float = 0.0, end: float = float("inf")) -> Row:
    return {
        "calls": calls.count(start, end),
        "failed": len(calls.failed(start, end)),
        "p99 ms": f"{calls.p99_ms(start, end):.1f}",
    }
