"""The ingester against a real broker and store: duplicates change nothing, bad events go to
the dead-letter topic with a reason, and good events keep flowing past them."""

from __future__ import annotations

import random
import time
import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer

from features.activity import Activity, item_hash
from features.events import encode
from features.store import OnlineFeatures, open_store
from features.stream.fold import IngestStats, StateCache, check, process_batch
from features.stream.ingest import Backoff
from recsys.errors import DataError, StoreUnavailableError

T0 = 890_000_000_000  # 1998-03-15, in milliseconds


def _send(config, messages: list[tuple[bytes, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=config.kafka.bootstrap_servers, acks="all")
    for key, value in messages:
        producer.send(config.kafka.topic, key=key, value=value)
    producer.flush()
    producer.close()


def _wait(features: OnlineFeatures, user: str, done, timeout: float = 60.0) -> Activity:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = features.read_activity([user])[user]
        if done(state):
            return state
        time.sleep(0.1)
    raise AssertionError(f"{user}: expected state not reached in {timeout:.0f}s")


def test_replayed_and_duplicate_events_change_nothing(ingester, ingest_metrics) -> None:
    user = f"dup-{uuid.uuid4().hex[:6]}"
    events = [encode(f"{user}-e{i}", user, item, T0 + i) for i, item in enumerate(["1", "2", "3"])]
    skipped_before = ingest_metrics.value("recsys_ingest_skipped_total")
    _send(ingester, events)
    features = OnlineFeatures(open_store(ingester))
    state = _wait(features, user, lambda s: len(s.recent_items) == 3)
    seen = b"".join(map(item_hash, "321"))
    assert state == Activity(("3", "2", "1"), T0 + 2, f"{user}-e2", seen, 3)
    # The whole batch again (a crash before commit), then one newer event.
    _send(ingester, [*events, encode(f"{user}-e3", user, "4", T0 + 3)])
    state = _wait(features, user, lambda s: s.last_event_id == f"{user}-e3")
    assert state.recent_items == ("4", "3", "2", "1")
    assert ingest_metrics.value("recsys_ingest_skipped_total") - skipped_before >= 3


def test_bad_events_go_to_the_dead_letter_topic_and_good_ones_flow(
    ingester, ingest_metrics
) -> None:
    user = f"dlq-{uuid.uuid4().hex[:6]}"
    bad = [
        (b"k", b"\xff\xfe not a protobuf"),
        encode(f"{user}-unknown-item", user, "no-such-item", T0),
        encode(f"{user}-absurd-time", user, "1", 42),
        encode("", user, "1", T0),
    ]
    good = [encode(f"{user}-g{i}", user, item, T0 + i) for i, item in enumerate(["7", "8"])]
    dead_before = ingest_metrics.value("recsys_ingest_dead_letters_total")
    _send(ingester, [*bad, *good])
    features = OnlineFeatures(open_store(ingester))
    assert _wait(features, user, lambda s: len(s.recent_items) == 2).recent_items == ("8", "7")

    consumer = KafkaConsumer(
        ingester.kafka.dead_letter_topic,
        bootstrap_servers=ingester.kafka.bootstrap_servers,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
    )
    reasons = {}
    for record in consumer:
        reasons[record.value] = dict(record.headers)["reason"].decode()
    consumer.close()
    assert set(reasons) >= {value for _, value in bad}
    assert "undecodable" in reasons[bad[0][1]]
    assert "unknown item" in reasons[bad[1][1]]
    assert "absurd event_time_ms" in reasons[bad[2][1]]
    assert "no event_id" in reasons[bad[3][1]]
    assert ingest_metrics.value("recsys_ingest_dead_letters_total") - dead_before == len(bad)
    assert ingest_metrics.value("recsys_ingest_batch_seconds_count") >= 1


def test_metrics_are_served_over_http() -> None:
    import socket
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    from features.stream.metrics import IngestMetrics

    # Importing Feast switches prometheus_client to multiprocess mode (it sets
    # PROMETHEUS_MULTIPROC_DIR), where counters of one name share a value within a process:
    # compare against the registry's own value, not a constant.
    metrics = IngestMetrics()
    before = metrics.value("recsys_ingest_events_total")
    metrics.events.inc(5)
    assert metrics.value("recsys_ingest_events_total") == before + 5
    metrics.lag.labels(partition="0").set(7)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    metrics.serve(port)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }
    assert samples[("recsys_ingest_events_total", ())] == before + 5, body
    assert samples[("recsys_ingest_consumer_lag", (("partition", "0"),))] == 7.0, body


def test_check_rejects_what_it_should_and_accepts_the_rest() -> None:
    now = T0 + 1000
    _, ok = encode("e", "u", "1", T0)
    assert check(ok, {"1"}, now)[1].item_id == "1"
    assert check(ok, None, now)[0] == "u"  # no catalog given: items are not checked
    with pytest.raises(DataError, match="absurd"):
        check(encode("e", "u", "1", now + 2 * 86_400_000)[1], None, now)


class _Store:
    """An in-memory stand-in for OnlineFeatures (pure batch logic only)."""

    def __init__(self) -> None:
        self.states: dict[str, Activity] = {}
        self.writes = 0

    def read_activity(self, users):
        return {u: self.states.get(u, Activity()) for u in users}

    def write_activity(self, states):
        self.writes += 1
        self.states.update(states)


def test_process_batch_counts_and_skips_unchanged_users() -> None:
    store, stats = _Store(), IngestStats()
    batch = [encode(f"e{i}", "u", str(i), T0 + i)[1] for i in range(3)]
    assert process_batch(batch, store, 5, stats, now_ms=T0) == []
    assert store.states["u"].recent_items == ("2", "1", "0")
    assert process_batch(batch, store, 5, stats, now_ms=T0) == []
    assert (stats.events, stats.skipped, stats.users_written) == (6, 3, 1)
    dead = process_batch([b"\x00junk"], store, 5, stats, now_ms=T0)
    assert len(dead) == 1 and stats.dead_letters == 1


class _CountingStore(_Store):
    def __init__(self) -> None:
        super().__init__()
        self.read_users: list[str] = []

    def read_activity(self, users):
        self.read_users += list(users)
        return super().read_activity(users)


def test_state_cache_skips_store_reads_and_gives_the_same_states() -> None:
    batches = [
        [encode(f"e{b}-{i}", f"u{i % 3}", str(b * 10 + i), T0 + b * 10 + i)[1] for i in range(6)]
        for b in range(4)
    ]
    plain, cached = _Store(), _CountingStore()
    cache = StateCache(max_users=2)
    for batch in batches:
        process_batch(batch, plain, 5, IngestStats(), now_ms=T0)
        process_batch(batch, cached, 5, IngestStats(), now_ms=T0, cache=cache)
    assert cached.states == plain.states
    # Three users, room for two: each batch reads the one the previous batch pushed out.
    assert len(cache) == 2 and len(cached.read_users) == 3 + 3
    cache.clear()  # a rebalance: everything is read again
    process_batch(batches[0], cached, 5, IngestStats(), now_ms=T0, cache=cache)
    assert len(cached.read_users) == 9 and cached.states == plain.states


class _DownStore(_Store):
    """A store whose writes fail while ``down``, as a killed Redis's do."""

    def __init__(self) -> None:
        super().__init__()
        self.down = True

    def write_activity(self, states):
        if self.down:
            raise StoreUnavailableError("online store unavailable during an activity write")
        super().write_activity(states)


def test_a_failed_write_leaves_stats_and_cache_as_they_were() -> None:
    store, stats, cache = _DownStore(), IngestStats(), StateCache(max_users=10)
    batch = [encode(f"e{i}", "u", str(i), T0 + i)[1] for i in range(3)]
    for _ in range(2):
        with pytest.raises(StoreUnavailableError):
            process_batch(batch, store, 5, stats, now_ms=T0, cache=cache)
    assert (stats.events, stats.skipped, stats.batches, len(cache)) == (0, 0, 0, 0)
    store.down = False
    assert process_batch(batch, store, 5, stats, now_ms=T0, cache=cache) == []
    assert (stats.events, stats.skipped, stats.users_written) == (3, 0, 1)
    assert store.states["u"].recent_items == ("2", "1", "0")


def test_backoff_doubles_to_its_cap_with_jitter_and_resets() -> None:
    backoff = Backoff(0.1, 1.0, random.Random(0))
    delays = [backoff.failed() for _ in range(7)]
    for delay, full in zip(delays, (0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0), strict=True):
        assert 0.8 * full <= delay <= full
    assert backoff.failures == 7 and backoff.failing_since is not None
    backoff.succeeded()
    assert backoff.failures == 0 and backoff.failing_since is None
    assert backoff.failed() <= 0.1


def test_state_cache_is_lru() -> None:
    cache = StateCache(max_users=2)
    cache.put({"a": Activity(("1",)), "b": Activity(("2",))})
    assert cache.get(["a"]) == {"a": Activity(("1",))}  # a is now the most recent
    cache.put({"c": Activity(("3",))})
    assert set(cache.get(["a", "b", "c"])) == {"a", "c"}


class _IdleConsumer:
    """What the starvation check reads of a consumer: its assignment and topic metadata."""

    def __init__(self, assigned: set, partitions: set | None):
        self.assigned = assigned
        self.partitions = partitions
        self.calls: list[str] = []

    def assignment(self) -> set:
        return self.assigned

    def partitions_for_topic(self, topic: str) -> set | None:
        return self.partitions

    def unsubscribe(self) -> None:
        self.calls.append("unsubscribe")

    def subscribe(self, topics, listener=None) -> None:
        self.calls.append(f"subscribe {topics[0]}")


@pytest.mark.parametrize(
    ("assigned", "partitions", "rejoins"),
    [(set(), {0, 1, 2, 3}, True), ({"tp0"}, {0, 1, 2, 3}, False), (set(), None, False)],
)
def test_a_consumer_starved_of_partitions_rejoins_after_a_while(
    base_config, assigned, partitions, rejoins
) -> None:
    from features.stream import ingest

    clock = [1000.0]
    consumer = _IdleConsumer(assigned, partitions)
    starvation = ingest._Starvation(base_config, lambda: None, clock=lambda: clock[0])
    starvation.check(consumer)
    clock[0] += ingest.REJOIN_AFTER_S - 1
    starvation.check(consumer)
    assert consumer.calls == []  # not before its time
    clock[0] += 2
    starvation.check(consumer)
    topic = base_config.kafka.topic
    assert consumer.calls == (["unsubscribe", f"subscribe {topic}"] if rejoins else [])
