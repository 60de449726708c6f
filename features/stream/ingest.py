"""Kafka → activity features → Feast online store: the consumer loop.

At-least-once: a polled batch is folded into the store (``features.stream.fold``), its dead
letters flushed, and only then are the offsets committed. A batch replayed after a crash
changes nothing (each stored state carries its watermark).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import replace
from typing import TYPE_CHECKING

from features.events import whole_topic
from features.store import OnlineFeatures
from features.stream.fold import IngestStats, StateCache, process_batch
from features.stream.metrics import IngestMetrics
from recsys.config import Config
from recsys.errors import StoreUnavailableError

if TYPE_CHECKING:
    from kafka import KafkaConsumer, TopicPartition
    from kafka.consumer.fetcher import ConsumerRecord

log = logging.getLogger(__name__)


def make_consumer(config: Config, on_rebalance: Callable[[], None] = lambda: None) -> KafkaConsumer:
    """A consumer in the configured group; it logs each partition assignment it receives and
    calls ``on_rebalance`` whenever partitions are revoked or assigned."""
    from kafka import KafkaConsumer

    kc = config.kafka
    consumer = KafkaConsumer(
        bootstrap_servers=kc.bootstrap_servers,
        group_id=kc.group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=kc.poll_max_records,
        # A topic created (or grown) after the consumer joined is seen within seconds, not
        # after the default 5 minutes.
        metadata_max_age_ms=5000,
        bootstrap_timeout_ms=kc.bootstrap_timeout_ms,
    )
    _subscribe(consumer, config, on_rebalance)
    return consumer


def _subscribe(consumer: KafkaConsumer, config: Config, on_rebalance: Callable[[], None]) -> None:
    from kafka import ConsumerRebalanceListener

    topic = config.kafka.topic

    class LogAssignment(ConsumerRebalanceListener):  # type: ignore[misc]  # kafka-python: no types
        def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
            on_rebalance()

        def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
            on_rebalance()
            partitions = sorted(tp.partition for tp in assigned)
            log.info("assigned partitions %s of %s", partitions, topic)

    consumer.subscribe([topic], listener=LogAssignment())


REJOIN_AFTER_S = 15.0
"""How long a consumer may hold no partitions of a topic that has some before it rejoins."""


class _Starvation:
    """Rejoins the group when this consumer has held no partitions for ``REJOIN_AFTER_S``
    although the topic has partitions. kafka-python's group leader can assign with
    incomplete topic metadata and then miss the follow-up rebalance, leaving the whole group
    with nothing (dpkp/kafka-python#2377; seen here as "No partition metadata for topic").
    A member that is idle because the group has more members than partitions rejoins at most
    once per ``REJOIN_AFTER_S``, which the others ride out as an ordinary rebalance."""

    def __init__(
        self,
        config: Config,
        on_rebalance: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ):
        self._config = config
        self._on_rebalance = on_rebalance
        self._clock = clock
        self._since: float | None = None

    def check(self, consumer: KafkaConsumer) -> None:
        now = self._clock()
        if consumer.assignment():
            self._since = None
        elif self._since is None:
            self._since = now
        elif now - self._since >= REJOIN_AFTER_S:
            self._since = now
            topic = self._config.kafka.topic
            if consumer.partitions_for_topic(topic):
                log.warning(
                    "no partitions of %s assigned for %.0f s although it has some; rejoining",
                    topic,
                    REJOIN_AFTER_S,
                )
                consumer.unsubscribe()
                _subscribe(consumer, self._config, self._on_rebalance)


LAG_EVERY_S = 2.0
"""How often consumer lag is measured (it asks the broker for the log-end offsets)."""
BROKER_TIMEOUT_MS = 10_000
"""How long a commit or a lag query may wait for the broker before the loop moves on."""


def _record(
    metrics: IngestMetrics, before: IngestStats, after: IngestStats, seconds: float
) -> None:
    metrics.events.inc(after.events - before.events)
    metrics.dead_letters.inc(after.dead_letters - before.dead_letters)
    metrics.skipped.inc(after.skipped - before.skipped)
    metrics.users_written.inc(after.users_written - before.users_written)
    metrics.batch_seconds.observe(seconds)


def _measure_lag(consumer: KafkaConsumer, metrics: IngestMetrics) -> None:
    from kafka.errors import KafkaError

    assigned = list(consumer.assignment())
    if not assigned:
        return
    try:
        ends = consumer.end_offsets(assigned, timeout_ms=BROKER_TIMEOUT_MS)
    except KafkaError as exc:  # broker away: lag is unknown now, not a reason to stop
        log.warning("consumer lag not measured: %r", exc)
        return
    for tp, end in ends.items():
        metrics.lag.labels(partition=str(tp.partition)).set(max(0, end - consumer.position(tp)))


def _commit(consumer: KafkaConsumer) -> None:
    """Commits the consumed positions; a failed commit is logged, not fatal.

    The batch is already written, so skipping one commit is safe: the next commit covers
    it, and after a rebalance the partition's new owner re-reads it, which changes nothing.
    """
    from kafka.errors import KafkaError

    try:
        consumer.commit(timeout_ms=BROKER_TIMEOUT_MS)
    except KafkaError as exc:
        log.warning("offset commit failed (will be covered by a later one): %r", exc)


def _fold(
    values: list[bytes],
    config: Config,
    features: OnlineFeatures,
    stats: IngestStats,
    catalog: Collection[str] | None,
    cache: StateCache,
) -> list[tuple[bytes, str]]:
    """``process_batch`` as the consuming loops call it (a cache of size 0 is no cache)."""
    return process_batch(
        values,
        features,
        config.model.history_length,
        stats,
        catalog=catalog,
        cache=cache if cache.max_users else None,
    )


class Backoff:
    """Capped exponential delays between retries of a failing store: ``first_s``, doubling
    up to ``cap_s``, each with up to 20 % jitter so many ingesters do not retry in step."""

    def __init__(self, first_s: float, cap_s: float, rng: random.Random | None = None):
        self.first_s = first_s
        self.cap_s = cap_s
        self.failures = 0
        self.failing_since: float | None = None
        self._rng = rng or random.Random()

    def failed(self) -> float:
        """Counts a failure; the delay before the next attempt, in seconds."""
        if self.failing_since is None:
            self.failing_since = time.monotonic()
        delay = min(self.cap_s, self.first_s * 2.0**self.failures)
        self.failures += 1
        return delay * (1.0 - 0.2 * self._rng.random())

    def succeeded(self) -> None:
        self.failures = 0
        self.failing_since = None


FIRST_RETRY_S = 0.1


def _hold(consumer: KafkaConsumer, polled: dict[TopicPartition, list[ConsumerRecord]]) -> None:
    """Leaves a batch that could not be written in the log: each of its partitions goes back
    to the batch's first offset, and every assigned partition is paused. ``poll`` keeps the
    consumer in its group (heartbeats, ``max.poll.interval.ms``) while returning nothing, and
    the batch is fetched again once the partitions are resumed. A rebalance meanwhile loses
    nothing: a partition that stays keeps the rewound position, one that moves is re-read by
    its new owner from the last commit."""
    assigned = consumer.assignment()
    for tp, records in polled.items():
        if tp in assigned:  # one revoked meanwhile is its new owner's to re-read
            consumer.seek(tp, records[0].offset)
    consumer.pause(*consumer.assignment())


def run(
    config: Config,
    features: OnlineFeatures,
    stop: threading.Event,
    *,
    catalog: Collection[str] | None = None,
    metrics: IngestMetrics | None = None,
    on_batch: Callable[[IngestStats], None] | None = None,
) -> IngestStats:
    """Consumes until ``stop`` is set; commits offsets after each batch's writes.

    Setting ``stop`` (``recsys ingest`` does on SIGTERM) lets the batch in hand finish,
    be written and committed before the consumer leaves its group.

    A store that fails (:class:`StoreUnavailableError`) never ends the loop: the batch stays
    uncommitted in the log (see :func:`_hold`), the partitions are paused while the loop
    keeps polling, and the batch is tried again after a capped backoff
    (``kafka.store_retry_max_ms``) until the store answers; then the backlog drains.
    """
    from kafka import KafkaProducer

    cache = StateCache(config.kafka.state_cache_users)
    consumer = make_consumer(config, on_rebalance=cache.clear)
    starvation = _Starvation(config, cache.clear)
    dead_letters = KafkaProducer(
        bootstrap_servers=config.kafka.bootstrap_servers,
        acks="all",
        bootstrap_timeout_ms=config.kafka.bootstrap_timeout_ms,
    )
    metrics = metrics or IngestMetrics()
    stats = IngestStats()
    retry = Backoff(FIRST_RETRY_S, config.kafka.store_retry_max_ms / 1000)
    resume_at: float | None = None
    metrics.store_up.set(1)
    lag_at = 0.0
    try:
        while not stop.is_set():
            if resume_at is not None and time.monotonic() >= resume_at:
                consumer.resume(*consumer.paused())
                resume_at = None
            polled = consumer.poll(timeout_ms=config.kafka.poll_timeout_ms)
            if time.monotonic() - lag_at >= LAG_EVERY_S:
                lag_at = time.monotonic()
                _measure_lag(consumer, metrics)
                starvation.check(consumer)
            values = [record.value for records in polled.values() for record in records]
            if not values:
                continue
            before, started = replace(stats), time.perf_counter()
            try:
                dead = _fold(values, config, features, stats, catalog, cache)
            except StoreUnavailableError as exc:
                _hold(consumer, polled)
                delay = retry.failed()
                resume_at = time.monotonic() + delay
                metrics.store_errors.inc()
                metrics.store_up.set(0)
                # The first failure and then one line every ~10 retries, not one per retry.
                if retry.failures % 10 == 1:
                    log.warning(
                        "store unavailable (%d failures); %d events held in the log, "
                        "retrying in %.1f s: %s",
                        retry.failures,
                        len(values),
                        delay,
                        exc,
                    )
                continue
            if retry.failing_since is not None:
                log.warning(
                    "store back after %.1f s and %d failures; draining the backlog",
                    time.monotonic() - retry.failing_since,
                    retry.failures,
                )
                retry.succeeded()
                metrics.store_up.set(1)
            _record(metrics, before, stats, time.perf_counter() - started)
            for raw, reason in dead:
                log.warning("dead letter: %s", reason)
                dead_letters.send(
                    config.kafka.dead_letter_topic, value=raw, headers=[("reason", reason.encode())]
                )
            dead_letters.flush()
            _commit(consumer)
            if on_batch is not None:
                on_batch(stats)
    finally:
        consumer.close()
        dead_letters.close()
    return stats


def rebuild(
    config: Config,
    features: OnlineFeatures,
    *,
    catalog: Collection[str] | None = None,
    log_every_s: float = 2.0,
    stop: threading.Event | None = None,
) -> IngestStats:
    """Folds the whole retained topic into the online store again, then returns.

    Every partition is read from its earliest retained offset up to the end it had when the
    rebuild started, by a consumer outside any group (it commits nothing, so the live
    group's offsets are untouched), through the same ``process_batch`` and watermark as
    ``run``: run it after :func:`features.backfill.restore` has put the offline backfill back,
    and it ends with the states the lost store held. A store that fails is retried as in
    ``run``. Dead letters are counted, not sent again (the live ingester sent them).

    Complete only if the topic still holds every event since the backfill: its retention
    (``retention.ms``, ``retention.bytes``) bounds what a rebuild can recover.
    """
    kc = config.kafka
    consumer, tps = whole_topic(kc)
    stats = IngestStats()
    retry = Backoff(FIRST_RETRY_S, kc.store_retry_max_ms / 1000)
    cache = StateCache(kc.state_cache_users)
    try:
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps, timeout_ms=BROKER_TIMEOUT_MS)
        total = sum(max(0, end - consumer.position(tp)) for tp, end in ends.items())
        log.info("rebuilding from %d events in %d partitions of %s", total, len(tps), kc.topic)
        reported = time.monotonic()
        while stop is None or not stop.is_set():
            left = [tp for tp in tps if consumer.position(tp) < ends[tp]]
            if not left:
                break
            polled = consumer.poll(timeout_ms=kc.poll_timeout_ms)
            # Only what was in the topic when the rebuild started; the live ingester
            # folds the rest.
            polled = {
                tp: [r for r in records if r.offset < ends[tp]] for tp, records in polled.items()
            }
            values = [record.value for records in polled.values() for record in records]
            if not values:
                continue
            try:
                _fold(values, config, features, stats, catalog, cache)
            except StoreUnavailableError as exc:
                for tp, records in polled.items():
                    if records:
                        consumer.seek(tp, records[0].offset)
                delay = retry.failed()
                log.warning("store unavailable, retrying in %.1f s: %s", delay, exc)
                time.sleep(delay)
                continue
            retry.succeeded()
            if time.monotonic() - reported >= log_every_s:
                reported = time.monotonic()
                log.info("rebuilt %d of %d events", stats.events, total)
    finally:
        consumer.close()
    return stats
