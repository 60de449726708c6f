"""The online store goes away mid-stream and comes back: the ingester stays up, holds its
batch in the log, shows the outage in its metrics, and drains the backlog to the states a
from-scratch fold gives. A real redis-server killed with SIGKILL and restarted on its
append-only file, and a real SQLite file locked by another writer."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from features.backfill import initialise
from features.store import OnlineFeatures, open_store
from localservices.procs import child, free_port, write_config
from localservices.redis import LocalRedis
from recsys.config import Config
from recsys.data import temporal_split
from tests.conftest import wait_until
from tests.test_faults import Stream, _terminate


def _metric(port: int, name: str) -> float:
    """A sample of the ingester's ``/metrics`` (0 when absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


@pytest.fixture
def redis_store(trained: Config, ml, tmp_path: Path) -> Iterator[tuple[Config, LocalRedis]]:
    with LocalRedis(tmp_path / "redis") as redis:
        config = trained.with_overrides(
            {
                "paths": {"state": str(tmp_path / "state")},
                "feast": {"online_store": "redis", "redis": redis.connection_string},
            }
        )
        past, _ = temporal_split(ml.interactions, config.model.test_fraction)
        initialise(config, ml, past)
        yield config, redis


def _outage(
    config: Config,
    kafka: str,
    ml,
    tmp_path: Path,
    *,
    down: Callable[[], None],
    up: Callable[[], None],
) -> str:
    """Streams events through a ``recsys ingest`` child, runs ``down()`` once writes flow,
    checks the ingester rides it out, runs ``up()``, and waits for the from-scratch fold.

    Returns:
        The ingester's log.
    """
    stream = Stream.make(config, kafka, list(ml.items["item_id"]))
    config_file = write_config(stream.config, tmp_path / "config.yaml")
    features = OnlineFeatures(open_store(stream.config))
    port = free_port("127.0.0.1")
    progress: dict[str, int] = {}
    producer = threading.Thread(target=stream.produce, args=(stream.events, progress))
    args = ["ingest", "--metrics-port", str(port)]
    with child("ingester", config_file, args, tmp_path, quiet=True) as ingester:
        stream.wait_consuming(features)
        producer.start()
        wait_until(lambda: stream.ingested_users(features) >= 10, 90, "nothing was written")
        down()
        wait_until(
            lambda: _metric(port, "recsys_ingest_store_errors_total") >= 2,
            30,
            "the ingester counted no store errors",
        )
        assert _metric(port, "recsys_ingest_store_up") == 0
        time.sleep(2.0)  # retries against a store that stays away
        assert ingester.poll() is None, "the ingester died with its store"
        assert progress["sent"] > 0
        up()
        producer.join()
        stream.wait_caught_up(features)
        assert _metric(port, "recsys_ingest_store_up") == 1
        text = _terminate(ingester, tmp_path / "ingester.log")
    assert "store unavailable" in text and "store back after" in text, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    return text


def test_redis_killed_and_restarted_mid_stream_loses_nothing(
    redis_store: tuple[Config, LocalRedis], kafka: str, ml, tmp_path: Path
) -> None:
    config, redis = redis_store

    def kill() -> None:
        os.kill(redis.pid, signal.SIGKILL)
        redis.stop()  # reaps it

    _outage(config, kafka, ml, tmp_path, down=kill, up=redis.start)
    # The restart read the append-only file: the profiles materialised before the kill
    # are still there, beside the activity the ingester drained into it.
    assert OnlineFeatures(open_store(config)).read(["196"])[0].has_profile


def test_sqlite_locked_by_another_writer_mid_stream_loses_nothing(
    feature_store: Config, kafka: str, ml, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    shutil.copytree(feature_store.paths.state / "feast", state / "feast")
    config = feature_store.with_overrides({"paths": {"state": str(state)}})
    locker = sqlite3.connect(config.feast_dir / "online.db", isolation_level=None)

    def lock() -> None:
        locker.execute("BEGIN EXCLUSIVE")  # no other connection reads or writes until COMMIT

    def unlock() -> None:
        locker.execute("COMMIT")

    try:
        _outage(config, kafka, ml, tmp_path, down=lock, up=unlock)
    finally:
        locker.close()


def test_a_wiped_redis_is_rebuilt_from_the_log(
    redis_store: tuple[Config, LocalRedis], kafka: str, ml, tmp_path: Path
) -> None:
    import redis as redis_py

    config, redis = redis_store
    stream = Stream.make(config, kafka, list(ml.items["item_id"]), n=4000)
    config_file = write_config(stream.config, tmp_path / "config.yaml")
    features = OnlineFeatures(open_store(stream.config))
    with child("ingester", config_file, ["ingest"], tmp_path, quiet=True) as ingester:
        stream.wait_consuming(features)
        stream.produce(stream.events, {})
        stream.wait_caught_up(features)
        _terminate(ingester, tmp_path / "ingester.log")
    # Streamed users, and users known only from the backfill (with profiles).
    everyone = [*stream.users, stream.marker[0], "1", "196", "943"]
    before = features.read(everyone)
    assert all(u.has_profile for u in before[-3:]) and before[-1].activity.last_event_ms

    redis_py.Redis(host=redis.host, port=redis.port).flushall()
    assert not any(u.has_profile or u.activity.last_event_ms for u in features.read(everyone))

    with child("rebuild", config_file, ["ingest", "--rebuild"], tmp_path, quiet=True) as proc:
        assert proc.wait(timeout=180) == 0, (tmp_path / "rebuild.log").read_text()[-3000:]
    text = (tmp_path / "rebuild.log").read_text()
    assert "rebuilt in" in text and "Traceback" not in text, text[-3000:]
    assert features.read(everyone) == before
