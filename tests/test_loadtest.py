"""``recsys loadtest``: the report's arithmetic and gate on known samples, and a short real
run (Locust in its own process, a real server) that passes a generous SLO and fails a
strict one."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from commands.cli import build_parser
from commands.slo import mode_error
from loadtest.report import render, summarize, violations
from localservices.procs import write_config
from recsys.config import LoadTestConfig


def _samples(latencies_us, ok=None, start=1000.0, rate=100.0) -> np.ndarray:
    n = len(latencies_us)
    ok = np.ones(n) if ok is None else np.asarray(ok, np.float64)
    return np.column_stack([start + np.arange(n) / rate, latencies_us, ok])


def test_summary_percentiles_rate_and_failures() -> None:
    latencies = np.arange(1, 1001, dtype=np.float64) * 10  # 10 µs .. 10 ms
    ok = np.ones(1000)
    ok[:3] = 0
    s = summarize(_samples(latencies, ok))
    assert s.requests == 1000 and s.failures == 3
    # From the first due time (0 s) to the last answer (9.99 s + 10 ms).
    assert s.seconds == pytest.approx(10.0) and s.rate == pytest.approx(100.0)
    assert s.p50 == pytest.approx(np.percentile(latencies, 50) / 1000)
    assert s.p99 == pytest.approx(np.percentile(latencies, 99) / 1000)
    assert s.max == pytest.approx(10.0)


def test_calls_never_sent_count_in_the_percentiles_not_in_the_throughput() -> None:
    answered = _samples(np.full(100, 1000.0), rate=100.0)  # 1 ms each, 1 s of arrivals
    # A backlog at the end: 100 arrivals due over the last second, never sent, waiting 0-1 s.
    waited_us = np.linspace(1e6, 0, 100)
    unsent = np.column_stack([1001.0 + np.arange(100) / 100, waited_us, np.full(100, -1.0)])
    s = summarize(np.vstack([answered, unsent]))
    assert s.requests == 100 and s.unsent == 100 and s.failures == 0
    assert s.rate == pytest.approx(100 / 0.991)  # what was answered, per second it took
    assert s.p99 > 900  # the backlog's wait shows; the answered calls alone say 1 ms
    assert "100 fell due but never went out" in render(s, LoadTestConfig(), "x")
    assert "p99" in violations(s, LoadTestConfig(slo_p99_ms=10))[0]


def test_the_server_columns_hot_path_and_cpu_per_request() -> None:
    rows = _samples(np.full(100, 3000.0))
    server_us = np.r_[np.full(98, 400.0), np.full(2, 5000.0)]
    late_us = np.r_[np.full(50, 100.0), np.full(50, 300.0)]
    with_server = summarize(np.column_stack([rows, server_us, late_us]), cpu_seconds=0.05)
    assert with_server.server_p50 == pytest.approx(0.4)
    assert with_server.server_p99 == pytest.approx(np.percentile(server_us, 99) / 1000)
    assert with_server.cpu_ms == pytest.approx(0.5)  # 50 ms of CPU over 100 requests
    assert with_server.late_p50 == pytest.approx(0.2) and with_server.late_p99 == 0.3
    text = render(with_server, LoadTestConfig(), "x")
    assert "in the server: hot path p50 0.40" in text and "sent after due: p50 0.20" in text
    null = summarize(np.column_stack([rows, np.full(100, np.nan)]))  # no trailer
    assert np.isnan(null.server_p50) and np.isnan(null.late_p50) and null.cpu_ms is None
    assert "in the server" not in render(null, LoadTestConfig(), "x")


def test_the_gate_fails_on_p99_p999_and_any_failure() -> None:
    fast = summarize(_samples(np.full(1000, 2000.0)))  # 2 ms each
    assert violations(fast, LoadTestConfig(slo_p99_ms=10)) == []
    assert "SLO met" in render(fast, LoadTestConfig(slo_p99_ms=10), "x")
    slow = violations(fast, LoadTestConfig(slo_p99_ms=1.5))
    assert slow == ["p99 2.00 ms > SLO 1.5 ms"]
    tail = summarize(_samples(np.r_[np.full(995, 1000.0), np.full(5, 50_000.0)]))
    assert violations(tail, LoadTestConfig(slo_p99_ms=10)) == []  # 0.5 % slow: p99 is fine
    assert violations(tail, LoadTestConfig(slo_p99_ms=10, slo_p999_ms=20)) == [
        f"p99.9 {tail.p999:.2f} ms > SLO 20 ms"
    ]
    failed = summarize(_samples(np.full(10, 100.0), ok=[1] * 9 + [0]))
    assert violations(failed, LoadTestConfig()) == ["1 of 10 requests failed"]
    assert violations(summarize(np.empty((0, 3))), LoadTestConfig()) == ["no requests were made"]


@pytest.mark.parametrize(
    ("flags", "error"),
    [
        (
            "--compare --ramp 100 200",
            "--compare starts its own servers and runs alone, not with --ramp",
        ),
        ("--compare --swap --baseline", "not with --baseline --swap"),
        ("--index-items 1000", "--index-items goes with --compare only"),
        ("--compare --index-kinds hnsw", "--index-kinds goes with --compare --index-items only"),
        ("--swap --target 127.0.0.1:1", "--swap: a scenario needs one run"),
        ("--swap --ingest 10 --ramp 1 2", "--swap --ingest: a scenario needs one run"),
        ("--ingest 10 --null", "not --null"),
        ("--workers 2 --target h:1", "--workers is for the servers this command starts"),
        ("--transports 100 --baseline", "--transports starts its own null servers"),
        ("--catalog 100 --swap", "--catalog runs alone, not with --swap"),
        ("--catalog 0", "--catalog is changes per second, more than 0"),
        ("--catalog 100 --target h:1", "--catalog: a scenario needs one run"),
    ],
)
def test_loadtest_refuses_flags_that_do_not_go_together(flags, error) -> None:
    args = build_parser().parse_args(["loadtest", *flags.split()])
    assert error in (mode_error(args) or "")


@pytest.mark.parametrize(
    "flags",
    [
        "",
        "--baseline --swap --ingest 50",
        "--ramp 100 200 --target h:1",
        "--compare",
        "--baseline --workers 2",
        "--transports 100 200 --rounds 1",
        "--baseline --catalog 100",
    ],
)
def test_loadtest_accepts_flags_that_go_together(flags) -> None:
    args = build_parser().parse_args(["loadtest", *flags.split()])
    assert mode_error(args) is None


def _loadtest(config_file, out, *args) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "commands.cli", "--config", str(config_file), "loadtest"]
    return subprocess.run(
        [*command, "--rate", "40", "--seconds", "4", "--users", "4", "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_a_short_run_passes_a_generous_slo_and_fails_a_strict_one(server, tmp_path) -> None:
    config_file = write_config(server.config, tmp_path / "config.yaml")
    passed = _loadtest(config_file, tmp_path / "pass", "--slo-p99-ms", "2000")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    out = tmp_path / "pass"
    result = json.loads((out / "result.json").read_text())
    run = result["runs"]["recommend"]
    assert run["failures"] == 0 and run["requests"] >= 100  # ~40/s for 4 s
    assert 0 < run["server_p50"] < run["p50"]  # the server's part, from its trailer
    assert run["late_p50"] >= 0
    assert run["cpu_ms"] > 0
    assert result["machine"]["cpus"] >= 1
    for name in (
        "summary.txt",
        "latency.png",
        "recommend/locust_stats.csv",
        "recommend/locust.html",
    ):
        assert (out / name).stat().st_size > 0, name
    # The same traffic against the running session server, with an SLO no server meets.
    strict = _loadtest(
        config_file, tmp_path / "strict", "--target", server.target, "--slo-p99-ms", "0.001"
    )
    assert strict.returncode != 0
    assert "SLO not met: p99" in strict.stderr


def test_a_run_against_two_worker_processes_loads_both(server, tmp_path) -> None:
    config_file = write_config(server.config, tmp_path / "config.yaml")
    done = _loadtest(
        config_file, tmp_path / "workers", "--workers", "2", "--users", "16", "--slo-p99-ms", "2000"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    run = json.loads((tmp_path / "workers" / "result.json").read_text())["runs"]["recommend"]
    hot = run["hot"]
    # The server also counts the calls Locust sent in its last moments but does not report.
    assert run["failures"] == 0 and 0 <= hot["requests"] - run["requests"] <= 16
    assert len(hot["per_worker"]) == 2 and min(hot["per_worker"]) > 0
    assert hot["batch_mean"] >= 1 and hot["cpu_ms"] > 0 and hot["stage_us"]["read"] > 0


def test_a_ramp_reports_the_highest_rate_that_held(server, tmp_path) -> None:
    config_file = write_config(server.config, tmp_path / "config.yaml")
    command = [sys.executable, "-m", "commands.cli", "--config", str(config_file), "loadtest"]
    done = subprocess.run(
        [
            *command, "--target", server.target, "--ramp", "15", "30", "--seconds", "3",
            "--users", "3", "--slo-p99-ms", "2000", "--out", str(tmp_path / "ramp"),
        ],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "ramp" / "ramp.json").read_text())
    assert [s["offered"] for s in result["steps"]] == [15, 30]
    assert all(s["held"] and s["failures"] == 0 for s in result["steps"])
    assert result["best"] == {"recommend": 30}
    assert "highest rate holding p99 <= 2000 ms, recommend: 30" in done.stdout


def test_a_hot_swap_mid_run_loses_no_request(server, tmp_path) -> None:
    config_file = write_config(server.config, tmp_path / "config.yaml")
    serving_before = (server.config.indexes_dir / "CURRENT").read_text()
    out = tmp_path / "swap"
    done = _loadtest(config_file, out, "--swap", "--seconds", "8", "--slo-p99-ms", "2000")
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((out / "result.json").read_text())
    swap = result["swap"]
    assert swap["to"] != serving_before.strip()
    assert swap["during"]["requests"] > 0 and swap["during"]["failures"] == 0
    assert result["runs"]["recommend"]["failures"] == 0
    assert "swap to " in done.stdout
    # The swap moved a scratch CURRENT only: the real one is untouched.
    assert (server.config.indexes_dir / "CURRENT").read_text() == serving_before
    assert (out / "artifacts" / "indexes" / "CURRENT").read_text().strip() == swap["to"]


def test_a_run_with_events_streaming_into_the_store_loses_no_event(server, tmp_path) -> None:
    config_file = write_config(server.config, tmp_path / "config.yaml")
    out = tmp_path / "ingest"
    done = _loadtest(config_file, out, "--ingest", "20", "--seconds", "5", "--slo-p99-ms", "2000")
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((out / "result.json").read_text())
    stream = result["stream"]
    assert stream["sent"] >= 100 and stream["probes"] >= 5  # 20/s for 7 s, a probe a second
    assert stream["probes_lost"] == 0 and stream["readable_p99_ms"] > 0
    assert result["runs"]["recommend"]["failures"] == 0
    assert "stream: " in done.stdout


def test_a_run_with_item_changes_sees_every_one_applied(server, tmp_path) -> None:
    config_file = write_config(server.config, tmp_path / "config.yaml")
    out = tmp_path / "catalog"
    done = _loadtest(config_file, out, "--catalog", "20", "--seconds", "5", "--slo-p99-ms", "2000")
    assert done.returncode == 0, done.stdout + done.stderr
    catalog = json.loads((out / "result.json").read_text())["catalog"]
    # 20/s for 7 s: half new items, half deletes (30 of the catalog's items first: 3 s).
    assert catalog["upserts"] == catalog["deletes"] == 70 and catalog["probes"] >= 50
    assert catalog["unseen"] == catalog["undeleted"] == catalog["relapsed"] == 0
    assert catalog["settled"] and 0 < catalog["upsert_p99_ms"] < 5000
    assert 0 < catalog["delete_p99_ms"] < 5000
    assert "upsert → recommendable" in done.stdout


def test_transports_loads_a_threaded_and_an_aio_null_server_alike(server, tmp_path) -> None:
    config_file = write_config(server.config, tmp_path / "config.yaml")
    out = tmp_path / "transports"
    done = _loadtest(config_file, out, "--transports", "30", "--rounds", "1", "--seconds", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    medians = json.loads((out / "transports.json").read_text())["medians"]
    for kind in ("sync", "aio"):
        m = medians[kind]["30.0"]
        assert m["answered_per_s"] > 10 and m["cpu_ms"] > 0 and m["switches_per_call"] > 0, kind
    assert "aio / sync CPU per call" in done.stdout


def test_compare_loads_each_variant_in_turn(server, tmp_path) -> None:
    config_file = write_config(server.config, tmp_path / "config.yaml")
    out = tmp_path / "compare"
    done = _loadtest(config_file, out, "--compare", "--seconds", "2", "--slo-p99-ms", "2000")
    assert done.returncode == 0, done.stdout + done.stderr
    runs = json.loads((out / "compare.json").read_text())["runs"]
    assert set(runs) == {"null handler", "numpy, sqlite", "savedmodel, sqlite", "numpy, redis"}
    for name, run in runs.items():
        assert run["requests"] > 0 and run["failures"] == 0, name
        assert run["cpu_ms"] > 0, name
    text = (out / "compare.txt").read_text()
    assert "numpy, redis" in text and "ratio to numpy, sqlite's p99" in text
    sqlite_row = next(line for line in text.splitlines() if line.startswith("numpy, sqlite "))
    assert " 1.00 " in sqlite_row  # the base variant against itself
