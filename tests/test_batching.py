"""The batcher on its own: a lone call runs at once in its own thread, calls that arrive while a
batch runs are served together next, outcomes and failures reach only their own callers, and
no call is lost or woken twice under contention."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from serving.batching import Batcher
from tests.conftest import wait_until


class Recorder:
    """A batch function that records each batch (and the thread that ran it); the first
    batch can be held until released, so others queue behind it."""

    def __init__(self, hold_first: bool = False):
        self.batches: list[list[int]] = []
        self.threads: list[str] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()

    def __call__(self, items):
        self.batches.append(list(items))
        self.threads.append(threading.current_thread().name)
        self.entered.set()
        self.release.wait(timeout=30)
        return [ValueError(f"bad {i}") if i < 0 else i * 10 for i in items]


def test_a_lone_call_runs_at_once_in_its_own_thread() -> None:
    record = Recorder()
    batcher = Batcher(record, max_batch=8)
    assert batcher.submit(3) == 30
    assert batcher.submit(4) == 40
    assert record.batches == [[3], [4]]
    assert record.threads == [threading.current_thread().name] * 2


def test_calls_that_arrive_during_a_batch_are_served_together_next() -> None:
    record = Recorder(hold_first=True)
    batcher = Batcher(record, max_batch=8)
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(batcher.submit, 1)
        assert record.entered.wait(timeout=10)
        rest = [pool.submit(batcher.submit, i) for i in range(2, 7)]
        wait_until(lambda: batcher.waiting == 5, 10, "five calls queued behind the first")
        record.release.set()
        assert first.result(timeout=10) == 10
        assert [f.result(timeout=10) for f in rest] == [20, 30, 40, 50, 60]
    assert record.batches[0] == [1]
    assert sorted(record.batches[1]) == [2, 3, 4, 5, 6]  # one batch: no added wait, no split
    assert len(record.batches) == 2


def test_a_batch_takes_at_most_max_batch_and_the_rest_follow() -> None:
    record = Recorder(hold_first=True)
    batcher = Batcher(record, max_batch=2)
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(batcher.submit, 1)
        assert record.entered.wait(timeout=10)
        rest = [pool.submit(batcher.submit, i) for i in range(2, 7)]
        wait_until(lambda: batcher.waiting == 5, 10, "five calls queued")
        record.release.set()
        assert sorted(f.result(timeout=10) for f in [first, *rest]) == [10, 20, 30, 40, 50, 60]
    assert [len(b) for b in record.batches] == [1, 2, 2, 1]


def test_an_error_outcome_fails_its_own_call_only() -> None:
    record = Recorder(hold_first=True)
    batcher = Batcher(record, max_batch=8)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(batcher.submit, 1)
        assert record.entered.wait(timeout=10)
        good, bad = pool.submit(batcher.submit, 2), pool.submit(batcher.submit, -2)
        wait_until(lambda: batcher.waiting == 2, 10, "two calls queued")
        record.release.set()
        assert first.result(timeout=10) == 10 and good.result(timeout=10) == 20
        with pytest.raises(ValueError, match="bad -2"):
            bad.result(timeout=10)
    assert sorted(record.batches[1]) == [-2, 2]


def test_a_batch_that_raises_fails_its_calls_and_the_batcher_carries_on() -> None:
    calls = []

    def run(items):
        calls.append(list(items))
        if len(calls) == 1:
            raise RuntimeError("the batch broke")
        return [i for i in items]

    batcher = Batcher(run, max_batch=4)
    with pytest.raises(RuntimeError, match="the batch broke"):
        batcher.submit(1)
    assert batcher.submit(2) == 2
    assert batcher.waiting == 0


def test_a_batch_function_that_returns_the_wrong_number_of_outcomes_is_an_error() -> None:
    batcher = Batcher(lambda items: [], max_batch=4)
    with pytest.raises(RuntimeError, match="a batch of 1 got 0 outcomes"):
        batcher.submit(1)


def test_no_call_is_lost_or_crossed_under_contention() -> None:
    sizes = []
    lock = threading.Lock()

    def run(items):
        with lock:
            sizes.append(len(items))
        return [(thread, i * 2) for thread, i in items]

    batcher = Batcher(run, max_batch=16)

    def caller(thread: int) -> list[tuple[int, int]]:
        return [batcher.submit((thread, i)) for i in range(2000)]

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(caller, range(12)))
    for thread, got in enumerate(results):
        assert got == [(thread, i * 2) for i in range(2000)]
    assert sum(sizes) == 12 * 2000 and max(sizes) <= 16
    assert batcher.waiting == 0


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_batch must be at least 1"):
        Batcher(lambda items: items, max_batch=0)
