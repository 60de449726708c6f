"""``recsys loadtest``: headless Locust at a fixed request rate against a server it starts
(or one given by address), with our own µs histogram, plots, a summary and an SLO gate.

Locust runs in a process of its own (it patches its process with gevent), pinned to one
core; a server this command starts is pinned to another, so the load generator and the
server do not take turns on one core. Machine facts are written beside each result.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np

from benchmarks.harness import (
    Table,
    cpu_times,
    machine_facts,
    machine_line,
    pinning,
    split_cores,
    steal_pct,
)
from loadtest.catalog import CatalogStream, catalog_stack
from loadtest.catalog import broken as catalog_broken
from loadtest.report import Summary, plot, render, summarize, violations
from loadtest.stream import Stream, stream_stack
from loadtest.swap import SWAP_DRAIN_S, Swap, swap_pair
from loadtest.target import Target, hot_path, started_server
from localservices.procs import slug
from recsys.config import Config
from recsys.data.dataset import Dataset
from recsys.errors import RecsysError

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


class SloError(RecsysError):
    """A load run broke its latency SLO or had failed requests."""


def traffic_spec(config: Config, ml: Dataset) -> dict[str, object]:
    """The request mix the Locust users draw from (``traffic.Traffic``)."""
    activity = ml.interactions["user_id"].value_counts()
    popular = ml.interactions["item_id"].value_counts().index[:200]
    field = ml.schema.filter
    genres = sorted({g for gs in ml.items[field] for g in gs}) if field else []
    ks = [k for k in (5, 10, 20, 50) if k <= config.serving.max_k] or [config.serving.max_k]
    return {
        "users": [str(u) for u in activity.index],
        "user_weights": [float(w) for w in activity.to_numpy()],
        "popular_items": [str(i) for i in popular],
        "genres": genres,
        "new_user_share": config.loadtest.new_user_share,
        "ks": ks,
    }


def write_traffic(config: Config, ml: Dataset, path: Path) -> Path:
    path.write_text(json.dumps(traffic_spec(config, ml)))
    return path


def placement(server_cpus: set[int] | None, load_cpus: set[int] | None) -> str:
    """Where the run ran: the summaries' last line."""
    return f"server on CPU {server_cpus}, Locust on CPU {load_cpus}; {machine_line()}"


def write_result(path: Path, config: Config, summaries: dict[str, Summary], **more: object) -> None:
    """The runs as JSON, with machine facts and the load settings."""
    result = {
        "machine": machine_facts(),
        "loadtest": config.loadtest.model_dump(),
        "runs": {name: asdict(s) for name, s in summaries.items()},
        **more,
    }
    path.write_text(json.dumps(result, indent=2))


LOCUST_START_S = 2.0
"""About how long Locust takes to start sending (scenario events are timed from launch)."""


def _given(address: str | None) -> Target | None:
    return None if address is None else Target(address)


def or_nan(value: float | None) -> float:
    return float("nan") if value is None else value


def _samples(out: Path, name: str) -> np.ndarray:
    samples: np.ndarray = np.load(out / slug(name) / "samples.npy")
    return samples


def _plan(null: bool, baseline: bool) -> list[tuple[str, bool]]:
    """The servers to load, in order, as (name, is the null handler): the measured one last,
    the null handler first when it is the baseline."""
    measured = ("null handler", True) if null else ("recommend", False)
    return [("null handler", True), measured] if baseline else [measured]


def connections(config: Config) -> int:
    """TCP connections the Locust users share: ``loadtest.connections``, or by default one
    for one server process (the cheapest for both sides) and eight per worker otherwise
    (``SO_REUSEPORT`` spreads connections, not calls), at most one per user."""
    lt = config.loadtest
    if lt.connections:
        return lt.connections
    processes = config.serving.processes
    return 1 if processes == 1 else min(lt.users, 8 * processes)


def run_locust(
    config: Config,
    target: Target,
    traffic: Path,
    out: Path,
    cpus: set[int] | None,
    during: Sequence[Callable[[], None]] = (),
) -> Summary:
    """Runs headless Locust against ``target``; keeps its µs samples as ``samples.npy``.
    Each of ``during`` runs in a thread beside it (a scenario: a swap, an event stream)."""
    lt = config.loadtest
    address = target.address
    samples = out / "samples.npy"
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "--users", str(lt.users), "--spawn-rate", str(lt.users),
        "--run-time", f"{lt.seconds:g}s", "--stop-timeout", "10",
        "--host", address, "--csv", str(out / "locust"), "--html", str(out / "locust.html"),
        "--only-summary", "--loglevel", "WARNING",
        "--recsys-traffic", str(traffic), "--recsys-samples", str(samples),
        "--recsys-rate", str(lt.rate), "--recsys-connections", str(connections(config)),
    ]  # fmt: skip
    samples.unlink(missing_ok=True)  # a rerun into the same folder
    cpu_before, metrics_before, ticks_before = target.cpu(), target.scrape(), cpu_times()
    with (out / "locust.log").open("wb") as log, ThreadPoolExecutor(len(during) or 1) as beside:
        # Locust first, the scenarios' threads after: no fork while threads run.
        locust = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=pinning(cpus),
        )
        try:
            events = [beside.submit(scenario) for scenario in during]
            locust.wait(timeout=lt.seconds + 300)
        finally:
            if locust.poll() is None:
                locust.kill()
                locust.wait()
        for event in events:
            event.result()  # its error, if any, is the run's
    if not samples.exists():
        tail = (out / "locust.log").read_text(errors="replace")[-2000:]
        raise RecsysError(f"locust exited with code {locust.returncode} and no samples:\n{tail}")
    cpu_after, metrics_after = target.cpu(), target.scrape()
    used = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return summarize(
        np.load(samples),
        cpu_seconds=used,
        hot=hot_path(metrics_before, metrics_after),
        steal_pct=steal_pct(ticks_before, cpu_times()),
    )


def run(
    config: Config,
    ml: Dataset,
    out: Path,
    *,
    target: str | None = None,
    null: bool = False,
    baseline: bool = False,
    swap: bool = False,
    ingest: float | None = None,
    catalog: float | None = None,
) -> dict[str, Summary]:
    """One load run (and, with ``baseline``, the same run against a null handler first).

    Scenarios, for a Recommend server this command starts: with ``swap``, it swaps to a
    freshly built index version halfway through, and the summary compares p99 during the
    swap with the rest; with ``ingest``, events stream at that rate through Kafka into the
    online store it reads for the whole run (``stream.py``), and a lost probe event fails it;
    with ``catalog``, item changes stream at that rate onto the catalog topic the server
    follows (``catalog.py``), and a change never applied or a deleted item answered again
    fails it.

    Writes Locust's CSV and HTML, ``samples.npy``, ``latency.png``, ``summary.txt`` and
    ``result.json`` (with machine facts) under ``out``.

    Raises:
        SloError: the measured run broke ``loadtest.slo_p99_ms`` (or p99.9), or a request
            failed.
    """
    if (swap or ingest or catalog) and (target or null):
        raise RecsysError(
            "--swap, --ingest and --catalog need a Recommend server this command starts"
        )
    if catalog and (swap or ingest):
        raise RecsysError("--catalog runs alone: not with --swap or --ingest")
    out.mkdir(parents=True, exist_ok=True)
    server_cpus, load_cpus = split_cores(system=1)
    traffic = write_traffic(config, ml, out / "traffic.json")
    plan = _plan(null, baseline)
    swap_config, swap_to = swap_pair(config, out) if swap else (config, "")
    swapped: Swap | None = None
    streamed: Stream | None = None
    cataloged: CatalogStream | None = None
    summaries: dict[str, Summary] = {}
    for name, is_null in plan:
        run_dir = out / slug(name)
        run_dir.mkdir(exist_ok=True)
        print(
            f"==> {name}: {config.loadtest.rate:g}/s for {config.loadtest.seconds:g}s", flush=True
        )
        with contextlib.ExitStack() as stack:
            cfg = config if is_null else swap_config
            if ingest and not is_null:
                cfg, features = stack.enter_context(stream_stack(cfg, ml, out, server_cpus))
                seconds = LOCUST_START_S + cfg.loadtest.seconds
                streamed = Stream(cfg, features, ml, ingest, seconds, load_cpus)
            if catalog and not is_null:
                cfg = stack.enter_context(catalog_stack(cfg, ml, catalog))
            server = _given(target) or stack.enter_context(
                started_server(cfg, run_dir, is_null, server_cpus)
            )
            if catalog and not is_null:
                user = str(ml.interactions["user_id"].value_counts().index[0])
                seconds = LOCUST_START_S + cfg.loadtest.seconds
                cataloged = CatalogStream(
                    cfg, ml, server.address, user, catalog, seconds, load_cpus
                )
            if swap and not is_null:
                at = LOCUST_START_S + cfg.loadtest.seconds / 2
                swapped = Swap(cfg, server.admins, swap_to, at)
            scenarios = [s for s in (swapped, streamed, cataloged) if s is not None and not is_null]
            summaries[name] = run_locust(config, server, traffic, run_dir, load_cpus, scenarios)
    samples = {name: _samples(out, name) for name, _ in plan}
    measured = plan[-1][0]
    text = "\n".join(render(s, config.loadtest, name) for name, s in summaries.items())
    swap_facts = None
    broken = violations(summaries[measured], config.loadtest)
    if swapped is not None:
        swap_text, swap_facts, during = swapped.report(samples[measured])
        text += "\n" + swap_text
        broken += [f"during the swap: {v}" for v in violations(during, config.loadtest)]
    stream_facts = None
    if streamed is not None:
        stream_text, stream_facts = streamed.report()
        text += "\n" + stream_text
        if stream_facts["probes_lost"]:
            broken.append(f"{stream_facts['probes_lost']} probe events never became readable")
    catalog_facts = None
    if cataloged is not None:
        catalog_text, catalog_facts = cataloged.report()
        text += "\n" + catalog_text
        broken += catalog_broken(catalog_facts)
    if baseline:
        ratio = summaries[measured].p99 / summaries["null handler"].p99
        text += f"\n{measured} p99 / null handler p99: {ratio:.2f}x"
    text += "\n" + placement(server_cpus, load_cpus)
    print(text, flush=True)
    (out / "summary.txt").write_text(text + "\n")
    spans = {measured: (swapped.started, swapped.ended + SWAP_DRAIN_S)} if swapped else None
    plot(samples, out / "latency.png", spans)
    write_result(
        out / "result.json",
        config,
        summaries,
        swap=swap_facts,
        stream=stream_facts,
        catalog=catalog_facts,
    )
    if broken:
        raise SloError(f"SLO not met: {'; '.join(broken)} (details in {out})")
    return summaries


def ramp(
    config: Config,
    ml: Dataset,
    out: Path,
    rates: Sequence[float],
    *,
    target: str | None = None,
    null: bool = False,
    baseline: bool = False,
) -> dict[str, float | None]:
    """Steps through ``rates`` (``loadtest.seconds`` each) against one server and returns,
    per server, the highest rate whose step met the SLO. Latency counts from each arrival's
    due time, so a server that falls behind the rate fails the SLO too.

    Stops a server's ramp at the first step that does not hold: past the knee, higher rates
    only queue more. Writes ``ramp.txt`` and ``ramp.json``; never fails on the SLO.
    """
    out.mkdir(parents=True, exist_ok=True)
    server_cpus, load_cpus = split_cores(system=1)
    traffic = write_traffic(config, ml, out / "traffic.json")
    plan = _plan(null, baseline)
    best: dict[str, float | None] = {}
    table = Table(
        [
            ("server", "<14"),
            ("rate/s", ">8g"),
            ("answered", ">10.0f"),
            ("p50 ms", ">9.2f"),
            ("p99 ms", ">9.2f"),
            ("hot p99", ">9.2f"),
            ("CPU ms", ">8.2f"),
        ]
    )
    lines = [table.header() + "  holds"]
    steps = []
    for name, is_null in plan:
        best[name] = None
        with contextlib.ExitStack() as stack:
            server_dir = out / slug(name)
            server_dir.mkdir(exist_ok=True)
            server = _given(target) or stack.enter_context(
                started_server(config, server_dir, is_null, server_cpus)
            )
            for rate in sorted(rates):
                step = config.with_overrides({"loadtest": {"rate": rate}})
                step_dir = server_dir / f"{rate:g}"
                step_dir.mkdir(exist_ok=True)
                print(f"==> {name}: {rate:g}/s for {step.loadtest.seconds:g}s", flush=True)
                s = run_locust(step, server, traffic, step_dir, load_cpus)
                ok = not violations(s, step.loadtest)
                cells = (name, rate, s.rate, s.p50, s.p99, s.server_p99, or_nan(s.cpu_ms))
                lines.append(table.row(*cells) + f"  {'yes' if ok else 'no'}")
                steps.append({"server": name, "offered": rate, "held": ok, **asdict(s)})
                if not ok:
                    break
                best[name] = rate
    slo = config.loadtest.slo_p99_ms
    lines += [
        f"highest rate holding p99 <= {slo:g} ms, {name}: {rate}" for name, rate in best.items()
    ]
    text = "\n".join(lines)
    print(text, flush=True)
    (out / "ramp.txt").write_text(text + "\n")
    (out / "ramp.json").write_text(
        json.dumps({"machine": machine_facts(), "steps": steps, "best": best}, indent=2)
    )
    return best
