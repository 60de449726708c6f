"""FAISS runs one OpenMP thread in each serving worker, not only in the thread that set it."""

from __future__ import annotations

import os
import threading
from concurrent import futures

import faiss
import pytest

from serving.server import one_search_thread


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: OpenMP's default is one thread")
def test_each_worker_searches_on_one_thread() -> None:
    one_search_thread()  # the main thread's setting, as start-up makes it
    seen: list[int] = []
    plain = threading.Thread(target=lambda: seen.append(faiss.omp_get_max_threads()))
    plain.start()
    plain.join()
    # OpenMP's setting is per thread: a thread that did not set it gets the default.
    assert seen[0] > 1
    with futures.ThreadPoolExecutor(2, initializer=one_search_thread) as pool:
        assert set(pool.map(lambda _: faiss.omp_get_max_threads(), range(8))) == {1}
