"""Fault tests with the real broker and real ingester processes.

Each test streams events for its own users and checks the online store against a
from-scratch fold of every event: an ingester killed with SIGKILL and restarted, a broker
restarted mid-stream, and two ingesters sharing one group's partitions all lose nothing,
and the duplicates they re-read change nothing.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from kafka import KafkaProducer

from features.activity import EMPTY, Activity, Interaction, apply_events, fold_ratings
from features.events import encode
from features.store import OnlineFeatures, open_store
from features.stream.replay import replay
from localservices.kafka import LocalBroker
from localservices.procs import child, free_port, write_config
from recsys.config import Config
from tests.conftest import wait_until

USERS = 150
EVENTS = 12_000
RATE = 3_000  # events/s: the stream lasts ~4 s, long enough to act inside it


@dataclass
class Stream:
    """Random events for this test's own users, and the states a from-scratch fold gives."""

    config: Config
    users: list[str]
    events: list[tuple[bytes, bytes]]
    expected: dict[str, Activity]
    marker: tuple[str, bytes, bytes]

    @classmethod
    def make(cls, base: Config, bootstrap: str, items: list[str], n: int = EVENTS) -> Stream:
        run = uuid.uuid4().hex[:8]
        config = base.with_overrides(
            {
                "kafka": {
                    "bootstrap_servers": bootstrap,
                    "topic": f"faults-{run}",
                    "dead_letter_topic": f"faults-{run}.dlq",
                    "group_id": f"faults-{run}",
                    "poll_max_records": 500,
                }
            }
        )
        rng = np.random.default_rng(0)
        users = [f"fault-{run}-{u}" for u in range(USERS)]
        by_user: dict[str, list[Interaction]] = {u: [] for u in users}
        events = []
        for i in range(n):
            user = users[int(rng.integers(USERS))]
            item = items[int(rng.integers(len(items)))]
            event = Interaction(item, 893_000_000_000 + i, f"{run}-{i}")
            by_user[user].append(event)
            events.append(encode(event.event_id, user, event.item_id, event.event_time_ms))
        history = config.model.history_length
        expected = {u: apply_events(EMPTY, evs, history) for u, evs in by_user.items()}
        marker = f"fault-{run}-marker"
        return cls(
            config, users, events, expected, (marker, *encode(f"{run}-m", marker, items[0], 10**12))
        )

    def produce(self, events: list[tuple[bytes, bytes]], progress: dict[str, int]) -> None:
        producer = KafkaProducer(
            bootstrap_servers=self.config.kafka.bootstrap_servers, acks="all", linger_ms=5
        )
        started = time.monotonic()
        for i, (key, value) in enumerate(events):
            producer.send(self.config.kafka.topic, key=key, value=value)
            progress["sent"] = progress.get("sent", 0) + 1
            ahead = (i + 1) / RATE - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        producer.flush()
        producer.close()

    def wait_consuming(self, features: OnlineFeatures) -> None:
        """Sends a marker event and waits until it is in the store (ingester start-up is slow)."""
        user, key, value = self.marker
        producer = KafkaProducer(bootstrap_servers=self.config.kafka.bootstrap_servers, acks="all")
        producer.send(self.config.kafka.topic, key=key, value=value)
        producer.flush()
        producer.close()
        wait_until(
            lambda: features.read_activity([user])[user].last_event_ms > 0,
            120,
            "no ingester started consuming",
        )

    def ingested_users(self, features: OnlineFeatures) -> int:
        return sum(1 for a in features.read_activity(self.users).values() if a.last_event_ms)

    def wait_caught_up(self, features: OnlineFeatures, timeout: float = 120) -> None:
        def caught_up() -> bool:
            got = features.read_activity(self.users)
            return all(got[u].last_event_id == self.expected[u].last_event_id for u in self.users)

        wait_until(caught_up, timeout, "the ingesters did not catch up")
        assert features.read_activity(self.users) == self.expected


def _terminate(process, log: Path) -> str:
    """SIGTERM; the ingester finishes its batch, commits, prints its summary and exits 0."""
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "ingester stopped: ingested" in text, text[-3000:]
    return text


def _ingested(log_text: str) -> int:
    found = re.search(r"ingester stopped: ingested ([\d,]+) events", log_text)
    assert found, log_text[-3000:]
    return int(found.group(1).replace(",", ""))


def test_sigkill_mid_stream_then_restart_loses_nothing(feature_store, kafka, ml, tmp_path) -> None:
    stream = Stream.make(feature_store, kafka, list(ml.items["item_id"]))
    config_file = write_config(stream.config, tmp_path / "config.yaml")
    features = OnlineFeatures(open_store(stream.config))
    progress: dict[str, int] = {}
    producer = threading.Thread(target=stream.produce, args=(stream.events, progress))
    with child("ingester-a", config_file, ["ingest"], tmp_path, quiet=True) as first:
        stream.wait_consuming(features)
        producer.start()
        wait_until(lambda: stream.ingested_users(features) >= 10, 90, "nothing was written")
        assert progress["sent"] < EVENTS, "the stream ended before the kill: raise EVENTS"
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        assert first.returncode == -signal.SIGKILL
    with child("ingester-b", config_file, ["ingest"], tmp_path, quiet=True) as second:
        producer.join()
        stream.wait_caught_up(features)
        _terminate(second, tmp_path / "ingester-b.log")


def _private_broker(config: Config, tmp_path: Path) -> LocalBroker:
    """A started broker of the test's own, on fixed ports so it can restart on them."""
    broker = LocalBroker(
        config.paths.kafka_jars,
        tmp_path / "kafka",
        port=free_port("127.0.0.1"),
        controller_port=free_port("127.0.0.1"),
        log=lambda _: None,
    )
    broker.start()
    return broker


def test_broker_restart_mid_stream_ingester_reconnects(feature_store, ml, tmp_path) -> None:
    broker = _private_broker(feature_store, tmp_path)
    try:
        stream = Stream.make(feature_store, broker.bootstrap_servers, list(ml.items["item_id"]))
        config_file = write_config(stream.config, tmp_path / "config.yaml")
        features = OnlineFeatures(open_store(stream.config))
        half = len(stream.events) // 2
        with child("ingester", config_file, ["ingest"], tmp_path, quiet=True) as ingester:
            stream.wait_consuming(features)
            stream.produce(stream.events[:half], {})
            wait_until(lambda: stream.ingested_users(features) >= 10, 90, "nothing was written")
            broker.stop()
            time.sleep(3.0)  # the ingester polls, commits and measures lag against no broker
            assert ingester.poll() is None, "the ingester died with the broker"
            broker.start()
            stream.produce(stream.events[half:], {})
            stream.wait_caught_up(features)
            _terminate(ingester, tmp_path / "ingester.log")
    finally:
        broker.stop()


def test_broker_sigkill_mid_replay_loses_nothing_acknowledged(feature_store, ml, tmp_path) -> None:
    """The broker's JVM killed with SIGKILL (no clean shutdown) while ``replay`` sends, then
    restarted on its log directory: the producer retries through it, the ingester
    reconnects, and every acknowledged event is in the store."""
    broker = _private_broker(feature_store, tmp_path)
    try:
        items = list(ml.items["item_id"])
        stream = Stream.make(feature_store, broker.bootstrap_servers, items)
        rng = np.random.default_rng(1)
        frame = pd.DataFrame(
            {
                "user_id": [stream.users[k] for k in rng.integers(USERS, size=EVENTS)],
                "item_id": [items[k] for k in rng.integers(len(items), size=EVENTS)],
                "value": 4.0,
                "timestamp": 893_000_000 + np.arange(EVENTS),
            }
        )
        history = stream.config.model.history_length
        expected = dict.fromkeys(stream.users, EMPTY) | fold_ratings(frame, history)
        config_file = write_config(stream.config, tmp_path / "config.yaml")
        features = OnlineFeatures(open_store(stream.config))
        outcome: dict[str, object] = {}

        def produce() -> None:
            try:
                outcome["sent"] = replay(stream.config, frame, rate=RATE, progress=False)
            except BaseException as exc:  # surfaced below
                outcome["error"] = exc

        with child("ingester", config_file, ["ingest"], tmp_path, quiet=True) as ingester:
            stream.wait_consuming(features)
            producer = threading.Thread(target=produce)
            producer.start()
            wait_until(lambda: stream.ingested_users(features) >= 10, 90, "nothing was written")
            assert producer.is_alive(), "the replay ended before the kill: raise EVENTS"
            assert broker.pid is not None
            os.kill(broker.pid, signal.SIGKILL)
            broker.stop()  # reaps it
            time.sleep(3.0)  # the producer retries, the ingester polls against no broker
            assert ingester.poll() is None, "the ingester died with the broker"
            broker.start()
            producer.join(timeout=180)
            assert outcome.get("sent") == EVENTS, outcome
            wait_until(
                lambda: features.read_activity(stream.users) == expected,
                120,
                "the store does not hold every acknowledged event",
            )
            _terminate(ingester, tmp_path / "ingester.log")
    finally:
        broker.stop()


def test_two_ingesters_in_one_group_share_partitions(feature_store, kafka, ml, tmp_path) -> None:
    stream = Stream.make(feature_store, kafka, list(ml.items["item_id"]))
    config_file = write_config(stream.config, tmp_path / "config.yaml")
    features = OnlineFeatures(open_store(stream.config))
    with (
        child("ingester-a", config_file, ["ingest"], tmp_path, quiet=True) as first,
        child("ingester-b", config_file, ["ingest"], tmp_path, quiet=True) as second,
    ):
        stream.wait_consuming(features)
        logs = [tmp_path / "ingester-a.log", tmp_path / "ingester-b.log"]

        def both_assigned() -> bool:
            return all("assigned partitions [" in log.read_text() for log in logs)

        wait_until(both_assigned, 60, "both ingesters did not get partitions")
        stream.produce(stream.events, {})
        stream.wait_caught_up(features)
        counts = [
            _ingested(_terminate(p, log)) for p, log in zip((first, second), logs, strict=True)
        ]
    assert all(c > 0 for c in counts), f"one ingester got no events: {counts}"
    assert sum(counts) >= EVENTS
