"""``recsys loadtest --compare``: the same load against each variant of the server in turn,
side by side in one run."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from benchmarks.harness import Table, split_cores
from loadtest.report import Summary, violations
from loadtest.run import or_nan, placement, run_locust, write_result, write_traffic
from loadtest.target import Target
from localservices.procs import slug
from recsys.config import Config
from recsys.data.dataset import Dataset

BASE_VARIANT = "numpy, sqlite"
"""The shape the other variants' p99 is set against: the default server on ML-100K."""


def compare(
    config: Config,
    ml: Dataset,
    out: Path,
    index_items: int = 0,
    kinds: Sequence[str] = ("auto", "flat"),
) -> dict[str, Summary]:
    """The same load against each variant in turn, side by side in one run: the null handler,
    NumPy vs SavedModel tower, SQLite vs Redis store, and with ``index_items`` a synthetic
    catalog of that size behind each index kind of ``kinds`` (on SQLite) and the served kind
    on Redis (``benchmarks.serving``'s servers, all pinned to the server core). Writes
    ``compare.txt`` and ``compare.json``; never fails on the SLO.
    """
    from benchmarks.serving import variant_servers

    out.mkdir(parents=True, exist_ok=True)
    server_cpus, load_cpus = split_cores(system=1)
    traffic = write_traffic(config, ml, out / "traffic.json")
    lt = config.loadtest
    summaries: dict[str, Summary] = {}
    with variant_servers(config, ml, out, index_items, server_cpus, kinds) as servers:
        for name, (address, process) in servers.items():
            print(f"==> {name}: {lt.rate:g}/s for {lt.seconds:g}s", flush=True)
            run_dir = out / slug(name)
            run_dir.mkdir(exist_ok=True)
            target = Target(address, process.pid)
            summaries[name] = run_locust(config, target, traffic, run_dir, load_cpus)
    table = Table(
        [
            ("server", "<36"),
            ("answered", ">9.0f"),
            ("p50 ms", ">9.2f"),
            ("p99 ms", ">9.2f"),
            ("hot p50", ">9.2f"),
            ("hot p99", ">9.2f"),
            ("CPU ms", ">8.2f"),
            ("p99 ×", ">7.2f"),
            ("failed", ">8"),
            ("unsent", ">8"),
        ]
    )
    lines = [
        f"{lt.rate:g} requests/s for {lt.seconds:g} s to each, one after another; SLO p99 <= "
        f"{lt.slo_p99_ms:g} ms; p99 × is the ratio to {BASE_VARIANT}'s p99",
        table.header() + "  SLO",
    ]
    base = summaries[BASE_VARIANT].p99 if BASE_VARIANT in summaries else math.nan
    for name, s in summaries.items():
        ratio = s.p99 / base if base > 0 else math.nan
        cells = (s.rate, s.p50, s.p99, s.server_p50, s.server_p99, or_nan(s.cpu_ms), ratio)
        verdict = "met" if not violations(s, lt) else "not met"
        lines.append(table.row(name, *cells, s.failures, s.unsent) + f"  {verdict}")
    lines.append(placement(server_cpus, load_cpus))
    text = "\n".join(lines)
    print(text, flush=True)
    (out / "compare.txt").write_text(text + "\n")
    write_result(out / "compare.json", config, summaries)
    return summaries
