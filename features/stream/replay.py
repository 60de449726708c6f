"""Produce interactions to Kafka as events, in event-time order."""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

import pandas as pd
from tqdm import tqdm

from features.activity import rating_event_id
from features.events import encode
from recsys.config import Config
from recsys.errors import BrokerError

if TYPE_CHECKING:
    from kafka import KafkaProducer


def ensure_topic(
    config: Config, timeout: float = 30.0, topic: str | None = None, partitions: int | None = None
) -> None:
    """Creates the events topic (or ``topic`` with ``partitions``) if it does not exist yet,
    and returns once every partition has a leader: a consumer that joins earlier can be
    assigned nothing until its next metadata refresh."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    kc = config.kafka
    name = topic or kc.topic
    admin = KafkaAdminClient(
        bootstrap_servers=kc.bootstrap_servers, bootstrap_timeout_ms=kc.bootstrap_timeout_ms
    )
    try:
        with contextlib.suppress(TopicAlreadyExistsError):
            admin.create_topics([NewTopic(name, partitions or kc.partitions, 1)])
        deadline = time.monotonic() + timeout
        while True:
            (described,) = admin.describe_topics([name])
            found = described.get("partitions") or []
            if (
                not described.get("error_code")
                and found
                and all(p.get("leader_id", -1) >= 0 for p in found)
            ):
                return
            if time.monotonic() > deadline:
                raise BrokerError(f"topic {name} has no leader for every partition yet")
            time.sleep(0.1)
    finally:
        admin.close()


def replay(
    config: Config,
    interactions: pd.DataFrame,
    *,
    rate: float | None = None,
    progress: bool = True,
    producer: KafkaProducer | None = None,
) -> int:
    """Sends ``interactions`` (user_id, item_id, value, timestamp) as events.

    Args:
        config: Kafka settings.
        interactions: Rows to send; sent in (timestamp, event id) order.
        rate: Events per second, or ``None`` for as fast as possible.
        progress: Show a progress bar.
        producer: A ``KafkaProducer`` to reuse; one is created (and closed) otherwise.

    Returns:
        The number of events sent, every one acknowledged by the broker.

    Raises:
        BrokerError: some events were not acknowledged within the producer's delivery
            timeout (a broker down for longer than that).
    """
    from kafka import KafkaProducer

    ensure_topic(config)
    own = producer is None
    if producer is None:
        producer = KafkaProducer(
            bootstrap_servers=config.kafka.bootstrap_servers,
            acks="all",
            linger_ms=5,
            bootstrap_timeout_ms=config.kafka.bootstrap_timeout_ms,
        )
    # In the watermark's order, (event time, event id): an event tied in time with one
    # already folded but with a smaller id is skipped as late, so any other order would make
    # the states depend on where the ingester's batches happened to cut the ties.
    ids = [
        rating_event_id(u, i, int(t))
        for u, i, t in zip(
            interactions["user_id"],
            interactions["item_id"],
            interactions["timestamp"],
            strict=True,
        )
    ]
    rows = interactions.assign(event_id=ids).sort_values(["timestamp", "event_id"])
    started = time.monotonic()
    futures = []
    try:
        for n, row in enumerate(
            tqdm(rows.itertuples(index=False), total=len(rows), disable=not progress, unit="ev")
        ):
            event_id = row.event_id
            key, value = encode(
                event_id,
                row.user_id,
                row.item_id,
                int(row.timestamp) * 1000,
                value=float(row.value),
            )
            futures.append(producer.send(config.kafka.topic, key=key, value=value))
            if rate:
                ahead = (n + 1) / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        producer.flush()
    finally:
        if own:
            producer.close()
    # The producer retries through a broker restart (idempotently, for up to
    # delivery.timeout.ms); what it still could not deliver is reported, not counted as sent.
    failed = [f for f in futures if f.failed()]
    if failed:
        raise BrokerError(
            f"{len(failed):,} of {len(rows):,} events were not acknowledged by "
            f"{config.kafka.bootstrap_servers} ({failed[0].exception!r}); the acknowledged "
            "ones are in the topic: replay again (duplicates change nothing)"
        )
    return len(rows)
