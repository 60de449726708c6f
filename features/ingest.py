"""Kafka → activity features → Feast online store.

At-least-once: a polled batch is folded into each user's state with the shared activity
function, written in one push, and only then are the offsets committed. Replaying a batch
after a crash re-applies events whose items are already at the front, which leaves the same
recent-items state.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from features.activity import Interaction, apply_events
from features.events import decode
from features.store import OnlineFeatures
from recsys.config import Config
from recsys.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class IngestStats:
    events: int = 0
    bad_events: int = 0
    batches: int = 0
    users_written: int = 0
    started: float = field(default_factory=time.monotonic)

    def summary(self) -> str:
        rate = self.events / max(time.monotonic() - self.started, 1e-9)
        return (
            f"ingested {self.events:,} events ({rate:,.0f}/s) in {self.batches:,} batches, "
            f"{self.users_written:,} user writes, {self.bad_events:,} bad events"
        )


def process_batch(
    raw_values: list[bytes], features: OnlineFeatures, history_length: int, stats: IngestStats
) -> None:
    """Decodes a batch, folds it into each user's stored state and writes it back."""
    by_user: dict[str, list[Interaction]] = defaultdict(list)
    for raw in raw_values:
        try:
            user_id, event = decode(raw)
        except DataError as exc:
            stats.bad_events += 1
            log.warning("skipping bad event: %s", exc)
            continue
        by_user[user_id].append(event)
    if by_user:
        current = features.read_activity(list(by_user))
        updated = {
            user: apply_events(current[user], events, history_length)
            for user, events in by_user.items()
        }
        features.write_activity(updated)
        stats.users_written += len(updated)
    stats.events += len(raw_values)
    stats.batches += 1


def make_consumer(config: Config) -> Any:
    from kafka import KafkaConsumer

    kc = config.kafka
    return KafkaConsumer(
        kc.topic,
        bootstrap_servers=kc.bootstrap_servers,
        group_id=kc.group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=kc.poll_max_records,
    )


def run(
    config: Config,
    features: OnlineFeatures,
    stop: threading.Event,
    *,
    on_batch: Callable[[IngestStats], None] | None = None,
) -> IngestStats:
    """Consumes until ``stop`` is set; commits offsets after each successful write."""
    consumer = make_consumer(config)
    stats = IngestStats()
    try:
        while not stop.is_set():
            polled = consumer.poll(timeout_ms=config.kafka.poll_timeout_ms)
            values = [record.value for records in polled.values() for record in records]
            if not values:
                continue
            process_batch(values, features, config.model.history_length, stats)
            consumer.commit()
            if on_batch is not None:
                on_batch(stats)
    finally:
        consumer.close()
    return stats
