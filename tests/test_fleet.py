"""``recsys serve --workers`` under faults, as its callers see them: a worker killed with
SIGKILL under load fails no call of a client with the recommended retry policy, and its
replacement is handed no connection while it loads; a rolling restart under load fails no
call; while no worker listens, a new connection is refused at once, never left waiting on
the supervisor's socket."""

from __future__ import annotations

import os
import signal
import socket
import time

import pytest

from benchmarks.fleet import calling, loading, probing, started_fleet, workers_of
from tests.conftest import wait_until

WORKERS = 2


@pytest.fixture(scope="module")
def served(feature_store, tmp_path_factory):
    with started_fleet(feature_store, tmp_path_factory.mktemp("fleet"), WORKERS) as running:
        yield running


def test_a_killed_worker_fails_no_retried_call_and_its_replacement_loads_unseen(served) -> None:
    proc, target, log = served
    with calling(target, rate=200, retries=True) as calls, probing(target, every=0.1) as probes:
        time.sleep(2)
        killed = workers_of(proc.pid)[-1]
        os.kill(killed, signal.SIGKILL)
        wait_until(lambda: "serving again" in log.read_text(), 300, "the replacement serving")
        loaded = time.monotonic()
        time.sleep(1)
    assert "exited with code -9; restarting it" in log.read_text()
    assert killed not in workers_of(proc.pid) and len(workers_of(proc.pid)) == WORKERS
    assert calls.count() > 400
    assert not calls.failed(), calls.failed()[:5]
    assert probes.count(end=loaded) >= 10  # fresh connections all through the load
    assert not loading(probes), loading(probes)[:5]


def test_a_rolling_restart_under_load_fails_no_call(served) -> None:
    proc, target, log = served
    before = workers_of(proc.pid)
    with calling(target, rate=200, retries=True) as calls:
        time.sleep(1)
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "rolling restart done" in log.read_text(), 300, "the roll")
        time.sleep(1)
    text = log.read_text()
    assert text.count("drained and stopped (code 0)") == WORKERS
    after = workers_of(proc.pid)
    assert len(after) == WORKERS and not set(before) & set(after)
    assert calls.count() > 400
    assert not calls.failed(), calls.failed()[:5]


@pytest.mark.usefixtures("processes")
def test_while_no_worker_listens_a_connection_is_refused_at_once(base_config, tmp_path) -> None:
    with started_fleet(base_config, tmp_path, 1, args=["--null"]) as (proc, target, log):
        host, port = target.split(":")
        os.kill(workers_of(proc.pid)[0], signal.SIGKILL)
        refused = 0
        while "serving again" not in log.read_text():
            try:
                with socket.create_connection((host, int(port)), timeout=3):
                    pass
            except ConnectionRefusedError:
                refused += 1
            time.sleep(0.02)
        assert refused > 0
