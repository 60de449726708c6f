"""Fault tests with the real broker: an ingester killed with SIGKILL mid-stream and restarted
loses nothing, and the duplicates it re-reads are harmless."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid

import numpy as np
import pytest
from kafka import KafkaProducer

from features.activity import EMPTY, Interaction, apply_events
from features.events import encode
from features.store import OnlineFeatures, open_store
from recsys.procs import child, write_config

pytestmark = pytest.mark.integration

USERS = 150
EVENTS = 12_000
RATE = 3_000  # events/s: the stream lasts ~4 s, long enough to kill the ingester inside it


def _wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:.0f}s")
        time.sleep(0.2)


def test_sigkill_mid_stream_then_restart_loses_nothing(feature_store, kafka, ml, tmp_path) -> None:
    run = uuid.uuid4().hex[:8]
    config = feature_store.with_overrides(
        {
            "kafka": {
                "bootstrap_servers": kafka,
                "topic": f"faults-{run}",
                "dead_letter_topic": f"faults-{run}.dlq",
                "group_id": f"faults-{run}",
                "poll_max_records": 500,
            }
        }
    )
    config_file = write_config(config, tmp_path / "config.yaml")
    rng = np.random.default_rng(0)
    items = list(ml.items["item_id"])
    users = [f"fault-{run}-{u}" for u in range(USERS)]
    events: dict[str, list[Interaction]] = {u: [] for u in users}
    stream = []
    for n in range(EVENTS):
        user = users[int(rng.integers(USERS))]
        event = Interaction(items[int(rng.integers(len(items)))], 893_000_000_000 + n, f"{run}-{n}")
        events[user].append(event)
        stream.append(encode(event.event_id, user, event.item_id, event.event_time_ms))
    features = OnlineFeatures(open_store(config))
    progress = {"sent": 0}

    def produce() -> None:
        producer = KafkaProducer(bootstrap_servers=kafka, acks="all", linger_ms=5)
        started = time.monotonic()
        for i, (key, value) in enumerate(stream):
            producer.send(config.kafka.topic, key=key, value=value)
            progress["sent"] = i + 1
            ahead = (i + 1) / RATE - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        producer.flush()
        producer.close()

    def ingested() -> int:
        return sum(1 for a in features.read_activity(users).values() if a.last_event_ms)

    marker = f"fault-{run}-marker"
    with child("ingester-a", config_file, ["ingest"], tmp_path, quiet=True) as first:
        # The stream starts once the first ingester is consuming (its start-up is slow).
        warm = KafkaProducer(bootstrap_servers=kafka, acks="all")
        key, value = encode(f"{run}-m", marker, items[0], 1_000_000_000_000)
        warm.send(config.kafka.topic, key=key, value=value)
        warm.flush()
        warm.close()
        _wait_until(
            lambda: features.read_activity([marker])[marker].last_event_ms > 0,
            120,
            "the first ingester did not start consuming",
        )
        producer = threading.Thread(target=produce)
        producer.start()
        _wait_until(lambda: ingested() >= 10, 90, "the first ingester wrote nothing")
        assert progress["sent"] < EVENTS, "the stream ended before the kill: raise EVENTS"
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        assert first.returncode == -signal.SIGKILL
    with child("ingester-b", config_file, ["ingest"], tmp_path, quiet=True):
        producer.join()
        expected = {
            u: apply_events(EMPTY, evs, config.model.history_length) for u, evs in events.items()
        }

        def caught_up() -> bool:
            got = features.read_activity(users)
            return all(got[u].last_event_id == expected[u].last_event_id for u in users)

        _wait_until(caught_up, 120, "the restarted ingester did not catch up")
    assert features.read_activity(users) == expected
