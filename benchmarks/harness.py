"""How every benchmark and load run measures: where the load and the system run, the
percentiles it reports, what a process used (from ``/proc``), and the fixed-width tables it
prints. One definition each, so two results printed by different commands mean the same.

Linux only: core pinning and the ``/proc`` readers have no portable equivalent, and the
numbers are only comparable on the machine that made them (``machine_facts``).
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np


class Cores(NamedTuple):
    """Cores for the system under test (servers, ingester) and for the load generator (the
    client, Locust, the producer): apart, so neither waits for the other's time slice.
    ``None``: not pinned (one core)."""

    system: set[int] | None
    load: set[int] | None


def split_cores(system: int | None = None, load: int | None = None) -> Cores:
    """Splits this process's cores: the last ``system`` of them (default: half, rounded up)
    for the system, the first ``load`` of the rest (default: all of them) for the load.

    Each benchmark asks for the split its published numbers were measured with: one split
    forced on all would change what they mean on a machine of more than two cores.
    """
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return Cores(None, None)
    first = len(cores) // 2 if system is None else len(cores) - system
    rest = cores[:first]
    return Cores(set(cores[first:]), set(rest if load is None else rest[:load]))


def pin(cpus: set[int] | None) -> None:
    """Pins the calling thread (not its process: Linux pins per thread) to ``cpus``; threads
    it starts afterwards inherit that. ``None`` or empty: left as it is."""
    if cpus:
        os.sched_setaffinity(0, cpus)


@contextlib.contextmanager
def pinned(cpus: set[int] | None) -> Iterator[None]:
    """The calling thread on ``cpus`` for the block, then back on the cores it had, so a
    later phase of the same benchmark is not left on the other side's core."""
    before = os.sched_getaffinity(0)
    pin(cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def pinning(cpus: set[int] | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess.Popen`` that starts the child on ``cpus`` (``None``:
    unpinned), before it runs any code of its own."""
    return (lambda: pin(cpus)) if cpus else None


def percentiles(
    samples: Sequence[float] | np.ndarray, qs: Sequence[float] = (50, 90, 99), key: str = "{}"
) -> dict[str, float]:
    """The ``qs`` percentiles and the max of ``samples``, in their unit (convert first: the
    numbers then match those computed on the converted samples to the last bit).

    Args:
        samples: Any shape, flattened; empty gives NaN for every value, so a run that
            measured nothing still reports every key.
        qs: Percentiles, 0 to 100; named ``p50``, ``p99.9`` as ``p999``.
        key: Each name through ``key.format(name)``: ``"store_{}_ms"`` gives ``store_p50_ms``.

    Returns:
        ``{"p50": …, …, "max": …}`` (after ``key``), as floats.
    """
    a = np.asarray(samples, np.float64)
    names = [f"p{q:g}".replace(".", "") for q in qs] + ["max"]
    if a.size:
        values = [float(np.percentile(a, q)) for q in qs] + [float(a.max())]
    else:
        values = [float("nan")] * len(names)
    return {key.format(name): value for name, value in zip(names, values, strict=True)}


def descendants(pid: int) -> list[int]:
    """The living children of ``pid`` (of any of its threads), theirs, and so on."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:  # the thread ended meanwhile
            continue
        for c in map(int, children):
            out += [c, *descendants(c)]
    return out


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process and its descendants (all threads) have used so far
    (the living ones: a worker that died and was replaced loses its share)."""
    total = 0.0
    for p in [pid, *descendants(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def context_switches(pid: int) -> int:
    """Voluntary and involuntary context switches of every thread of ``pid`` so far."""
    total = 0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            for line in (task / "status").read_text().splitlines():
                if "ctxt_switches" in line:
                    total += int(line.split()[-1])
    return total


def rss_bytes(pid: int | str = "self") -> int:
    """Resident memory of a process now (default: this one).

    Raises:
        OSError: The process has exited.
    """
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cpu_times() -> dict[int, tuple[int, int]]:
    """Per core, (all ticks, ticks stolen by the hypervisor) so far, from ``/proc/stat``."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *ticks = line.split()
        if name.startswith("cpu") and name != "cpu":
            values = [int(t) for t in ticks]
            out[int(name[3:])] = (sum(values[:8]), values[7] if len(values) > 7 else 0)
    return out


def steal_pct(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]) -> float:
    """The largest share of any core's time the hypervisor took between two ``cpu_times``."""
    shares = [
        100 * (after[c][1] - before[c][1]) / max(after[c][0] - before[c][0], 1)
        for c in after
        if c in before
    ]
    return max(shares, default=0.0)


def machine_facts() -> dict[str, object]:
    """The machine a result was measured on, written beside it."""
    return {
        "host": platform.node(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def machine_line() -> str:
    """``host, N cores, Python x.y.z``: how a printed result names its machine."""
    return f"{platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}"


_PAD = re.compile(r"[<>^]?\d*")


class Table:
    """Fixed-width text columns, each a (title, format spec) pair: ``("p99 ms", ">9.2f")``.

    The spec's alignment and width pad the title and any text cell too, so a column's width
    is written once for its header and its rows. A ``None`` cell prints as ``-``.
    """

    def __init__(self, columns: Sequence[tuple[str, str]], sep: str = ""):
        self.columns = list(columns)
        self.sep = sep

    def header(self) -> str:
        return self.sep.join(format(title, _pad(spec)) for title, spec in self.columns)

    def row(self, *cells: object) -> str:
        """One line; ``cells`` in column order, one for each column."""
        return self.sep.join(
            _cell(cell, spec) for cell, (_, spec) in zip(cells, self.columns, strict=True)
        )


def _cell(value: object, spec: str) -> str:
    if value is None:
        value = "-"
    return format(value, _pad(spec) if isinstance(value, str) else spec)


def _pad(spec: str) -> str:
    """The alignment and width of a format spec (``">9.2f"`` → ``">9"``): what text takes."""
    match = _PAD.match(spec)
    return match.group() if match else ""
