"""``benchmarks.harness``: the core splits each benchmark was measured with, the percentiles'
names and values against NumPy, the tables' columns, and that pinning a block gives the
cores back."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from benchmarks.harness import Cores, Table, percentiles, pinned, split_cores, steal_pct


@pytest.mark.parametrize(
    ("cores", "system", "load", "want"),
    [
        # bench-freshness: halves, the system on the upper one (rounded up)
        (4, None, None, Cores({2, 3}, {0, 1})),
        (3, None, None, Cores({1, 2}, {0})),
        # loadtest: the server on the last core, Locust on all the others
        (4, 1, None, Cores({3}, {0, 1, 2})),
        # bench: the servers on the last core, the client on the first
        (4, 1, 1, Cores({3}, {0})),
        (2, 1, 1, Cores({1}, {0})),
        # one core: nothing pinned, whatever was asked
        (1, 1, 1, Cores(None, None)),
        (1, None, None, Cores(None, None)),
    ],
)
def test_split_cores_gives_each_benchmark_its_split(monkeypatch, cores, system, load, want) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(cores)))
    assert split_cores(system, load) == want


def test_pinned_gives_the_cores_back_and_none_pins_nothing() -> None:
    before = os.sched_getaffinity(0)
    with pinned({min(before)}):
        assert os.sched_getaffinity(0) == {min(before)}
    assert os.sched_getaffinity(0) == before
    with pinned(None):
        assert os.sched_getaffinity(0) == before


def test_percentiles_are_numpys_with_the_max_under_their_names() -> None:
    samples = np.random.default_rng(0).exponential(size=1001)
    got = percentiles(samples, (50, 99, 99.9), key="store_{}_ms")
    assert list(got) == ["store_p50_ms", "store_p99_ms", "store_p999_ms", "store_max_ms"]
    assert got["store_p99_ms"] == float(np.percentile(samples, 99))
    assert got["store_p999_ms"] == float(np.percentile(samples, 99.9))
    assert got["store_max_ms"] == float(samples.max())
    assert list(percentiles([1.0, 2.0])) == ["p50", "p90", "p99", "max"]


def test_percentiles_of_nothing_are_nan_under_every_name() -> None:
    got = percentiles([], (50, 99))
    assert list(got) == ["p50", "p99", "max"] and all(math.isnan(v) for v in got.values())


def test_a_table_pads_titles_and_text_as_its_numbers() -> None:
    table = Table([("server", "<8"), ("p99 ms", ">8.2f"), ("n", ">4")], sep=" ")
    assert table.header() == "server     p99 ms    n"
    assert table.row("null", 1.2345, 7) == "null         1.23    7"
    assert table.row("aio", None, "x") == "aio             -    x"
    assert table.row("nan", float("nan"), 0) == "nan           nan    0"
    with pytest.raises(ValueError):
        table.row("too few", 1.0)


def test_steal_is_the_largest_share_of_any_core() -> None:
    before = {0: (1000, 0), 1: (1000, 10)}
    after = {0: (1100, 5), 1: (1200, 30), 2: (50, 50)}  # core 2 came online: not compared
    assert steal_pct(before, after) == pytest.approx(10.0)
    assert steal_pct({}, after) == 0.0
