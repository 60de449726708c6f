"""What a load run measured, from the µs samples the Locust user keeps: percentiles, the
throughput, failures, the SLO verdict, and a latency-over-time and CDF plot."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.harness import percentiles
from loadtest.target import HotPath
from recsys.config import LoadTestConfig


@dataclass(frozen=True)
class Summary:
    """One run. Latencies in milliseconds.

    Attributes:
        requests: Calls made; ``failures`` of them ended in an error.
        seconds: From the first call's due time to the last call's answer.
        rate: Calls answered (or failed) per second over ``seconds``: the throughput.
        p50 … max: Over the calls made and those that fell due but were never sent
            (``unsent``, counted with their wait so far).
        server_p50, server_p99: The hot path as the server timed it (NaN when the server does
            not say: the null handler).
        cpu_ms: Server CPU time per request, when the server's process was known.
        late_p50, late_p99: How long after its due time a call was sent (part of its
            latency): the generator waking late, or its user still busy with the last call.
        hot: What the server's metrics say its hot path did (batch sizes, CPU and stage
            times per request), when it serves them.
        steal_pct: The most of any core's time the hypervisor took during the run (a VM's
            noisy neighbours: over a few percent, compare runs with care).
    """

    requests: int
    failures: int
    seconds: float
    rate: float
    p50: float
    p90: float
    p99: float
    p999: float
    max: float
    server_p50: float = float("nan")
    server_p99: float = float("nan")
    cpu_ms: float | None = None
    late_p50: float = float("nan")
    late_p99: float = float("nan")
    unsent: int = 0
    hot: HotPath | None = None
    steal_pct: float | None = None


def summarize(
    samples: np.ndarray,
    cpu_seconds: float | None = None,
    hot: HotPath | None = None,
    steal_pct: float | None = None,
) -> Summary:
    """``samples``: ``[n, 3 to 5]`` rows of (due unix seconds, latency µs, status, server µs,
    late µs), status 1 answered, 0 failed, -1 never sent (``locustfile``); ``cpu_seconds``:
    the server's CPU time over the run, when known."""
    if len(samples) == 0:
        nan = float("nan")
        return Summary(0, 0, 0.0, 0.0, p50=nan, p90=nan, p99=nan, p999=nan, max=nan)
    due, micros, status = samples[:, 0], samples[:, 1], samples[:, 2]
    sent = status >= 0
    requests = int(sent.sum())
    end = (due + micros / 1e6)[sent].max() if requests else due.max()
    seconds = float(end - due.min()) or 1e-9
    ms = percentiles(micros / 1000, (50, 90, 99, 99.9))
    server_p50, server_p99 = _p50_p99(samples, 3)
    late_p50, late_p99 = _p50_p99(samples, 4)
    return Summary(
        requests=requests,
        failures=int((status == 0).sum()),
        seconds=seconds,
        rate=requests / seconds,
        p50=ms["p50"],
        p90=ms["p90"],
        p99=ms["p99"],
        p999=ms["p999"],
        max=ms["max"],
        server_p50=server_p50,
        server_p99=server_p99,
        cpu_ms=None if cpu_seconds is None or not requests else cpu_seconds * 1000 / requests,
        late_p50=late_p50,
        late_p99=late_p99,
        unsent=int((status < 0).sum()),
        hot=hot,
        steal_pct=steal_pct,
    )


def split(samples: np.ndarray, start: float, end: float) -> tuple[Summary, Summary]:
    """(calls due within [start, end] unix seconds, all the others)."""
    inside = (samples[:, 0] >= start) & (samples[:, 0] <= end)
    return summarize(samples[inside]), summarize(samples[~inside])


def _p50_p99(samples: np.ndarray, column: int) -> tuple[float, float]:
    """p50 and p99 in ms of an optional µs column, NaN where absent or empty."""
    values = samples[:, column] / 1000 if samples.shape[1] > column else np.empty(0)
    ms = percentiles(values[~np.isnan(values)], (50, 99))
    return ms["p50"], ms["p99"]


def violations(summary: Summary, slo: LoadTestConfig) -> list[str]:
    """Why the run fails its SLO (empty: it passes)."""
    out = []
    if summary.requests == 0:
        out.append("no requests were made")
    if summary.failures:
        out.append(f"{summary.failures} of {summary.requests} requests failed")
    if summary.p99 > slo.slo_p99_ms:
        out.append(f"p99 {summary.p99:.2f} ms > SLO {slo.slo_p99_ms:g} ms")
    if slo.slo_p999_ms is not None and summary.p999 > slo.slo_p999_ms:
        out.append(f"p99.9 {summary.p999:.2f} ms > SLO {slo.slo_p999_ms:g} ms")
    return out


def render(summary: Summary, slo: LoadTestConfig, label: str) -> str:
    """A one-screen summary."""
    s = summary
    verdict = violations(s, slo)
    lines = [
        f"{label}: {s.requests:,} requests in {s.seconds:.1f} s ({s.rate:,.0f}/s, "
        f"target {slo.rate:,.0f}/s), {s.failures} failed"
        + (f", {s.unsent:,} fell due but never went out" if s.unsent else ""),
        f"  latency ms  p50 {s.p50:.2f}  p90 {s.p90:.2f}  p99 {s.p99:.2f}  "
        f"p99.9 {s.p999:.2f}  max {s.max:.2f}",
        "  SLO " + ("met" if not verdict else "NOT met: " + "; ".join(verdict)),
    ]
    server = []
    if not np.isnan(s.server_p50):
        server.append(f"hot path p50 {s.server_p50:.2f}  p99 {s.server_p99:.2f} ms")
    if s.cpu_ms is not None:
        server.append(f"CPU {s.cpu_ms:.2f} ms/request")
    if s.steal_pct is not None and s.steal_pct >= 1:
        server.append(f"CPU steal up to {s.steal_pct:.0f} % of a core")
    if server:
        lines.insert(2, "  in the server: " + ", ".join(server))
    if s.hot is not None:
        h = s.hot
        stages = "  ".join(f"{k} {v:.0f}" for k, v in h.stage_us.items())
        lines.insert(
            3,
            f"  hot path: {h.batches:,} batches, mean {h.batch_mean:.2f} requests (p50 <= "
            f"{h.batch_p50:g}, max <= {h.batch_max:g}); CPU {h.cpu_ms:.3f} ms/request; "
            f"µs/request: {stages}"
            + (f"; requests per worker {h.per_worker}" if len(h.per_worker) > 1 else ""),
        )
    if not np.isnan(s.late_p50):
        lines.insert(2, f"  sent after due: p50 {s.late_p50:.2f}  p99 {s.late_p99:.2f} ms")
    return "\n".join(lines)


def plot(
    runs: dict[str, np.ndarray], path: Path, spans: dict[str, tuple[float, float]] | None = None
) -> None:
    """Latency over time (1 s p50/p99 windows) and the latency CDF, one line per run;
    ``spans`` shades a run's event (unix seconds from, to: a swap) on the time axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (over_time, cdf) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, samples in runs.items():
        if len(samples) == 0:
            continue
        t = samples[:, 0] - samples[:, 0].min()
        if spans and name in spans:
            start, end = (x - samples[:, 0].min() for x in spans[name])
            over_time.axvspan(start, end, alpha=0.2, color="grey", label=f"{name}: swap")
        ms = samples[:, 1] / 1000
        second = t.astype(int)
        windows = np.unique(second)
        for q, style in ((50, "-"), (99, "--")):
            values = [np.percentile(ms[second == w], q) for w in windows]
            over_time.plot(windows, values, style, label=f"{name} p{q}")
        ordered = np.sort(ms)
        cdf.plot(ordered, np.arange(1, len(ordered) + 1) / len(ordered), label=name)
    over_time.set(xlabel="seconds into the run", ylabel="latency ms (1 s windows)", yscale="log")
    cdf.set(xlabel="latency ms", ylabel="share of requests", xscale="log")
    for ax in (over_time, cdf):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
