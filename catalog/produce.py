"""Catalog changes onto the catalog topic: what ``recsys catalog put|delete|synthetic``
sends."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from features.stream.replay import ensure_topic
from recsys.config import Config
from recsys.errors import BrokerError


@dataclass(frozen=True)
class Sent:
    """Where a change landed: its partition and offset in the catalog topic."""

    partition: int
    offset: int


def send(
    config: Config,
    changes: Sequence[tuple[bytes, bytes]],
    timeout_s: float = 30.0,
    rate: float | None = None,
) -> list[Sent]:
    """Sends encoded changes (``catalog.events.encode_*``), in order (``rate``: at most that
    many a second), creating the topic if it is missing, and returns once the broker has
    acknowledged every one (``acks=all``).

    Raises:
        BrokerError: a change was not acknowledged; those before it may be in the topic
            (sending again is harmless: a change is applied as often as it is read).
    """
    from kafka import KafkaProducer

    kc = config.kafka
    ensure_topic(config, topic=kc.catalog_topic, partitions=kc.catalog_partitions)
    producer = KafkaProducer(
        bootstrap_servers=kc.bootstrap_servers,
        acks="all",
        linger_ms=5,
        bootstrap_timeout_ms=kc.bootstrap_timeout_ms,
    )
    try:
        started = time.monotonic()
        futures = []
        for n, (key, value) in enumerate(changes):
            futures.append(producer.send(kc.catalog_topic, key=key, value=value))
            if rate:
                ahead = (n + 1) / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        producer.flush(timeout_s)
        out = []
        for future in futures:
            try:
                meta = future.get(timeout=timeout_s)
            except Exception as exc:  # kafka-python raises its own KafkaError kinds
                raise BrokerError(
                    f"a catalog change was not acknowledged by {kc.bootstrap_servers}: {exc!r}"
                ) from exc
            out.append(Sent(meta.partition, meta.offset))
        return out
    finally:
        producer.close()
