"""The interaction event on Kafka: protobuf ``recsys.v1.InteractionEvent``, keyed by user id;
and the consumer that reads a whole topic outside any consumer group (the ingester's
rebuild, the served ranker's item feed)."""

from __future__ import annotations

import socket
from collections.abc import Iterator, Mapping
from typing import Any

from google.protobuf.message import DecodeError

from features.activity import Interaction
from recsys.config import KafkaConfig
from recsys.errors import DataError
from recsys.v1 import events_pb2

EventType = events_pb2.EventType


def encode(
    event_id: str,
    user_id: str,
    item_id: str,
    event_time_ms: int,
    *,
    value: float = 0.0,
    event_type: events_pb2.EventType = events_pb2.EVENT_TYPE_RATING,
) -> tuple[bytes, bytes]:
    """Returns ``(key, value)`` for Kafka; the key keeps one user's events in one partition."""
    message = events_pb2.InteractionEvent(
        event_id=event_id,
        user_id=user_id,
        item_id=item_id,
        type=event_type,
        value=value,
        event_time_ms=event_time_ms,
    )
    return user_id.encode(), message.SerializeToString()


def decode(raw: bytes) -> tuple[str, Interaction]:
    """Parses and checks one event.

    Returns:
        ``(user_id, interaction)``.

    Raises:
        DataError: undecodable bytes or a missing field, with the reason.
    """
    message = events_pb2.InteractionEvent()
    try:
        message.ParseFromString(raw)
    except DecodeError as exc:
        raise DataError(f"undecodable event ({len(raw)} bytes): {exc}") from exc
    for name in ("event_id", "user_id", "item_id"):
        if not getattr(message, name):
            raise DataError(f"event has no {name}")
    if message.event_time_ms <= 0:
        raise DataError(f"event {message.event_id} has no event_time_ms")
    return message.user_id, Interaction(message.item_id, message.event_time_ms, message.event_id)


GATHER_BYTES = 1 << 20
"""A gathering fetch's size: the broker answers once it holds this much, or at the wait."""


def whole_topic(
    kc: KafkaConfig, bootstrap_timeout_ms: int = 30_000, gather_ms: int = 0
) -> tuple[Any, list[Any]]:  # Any: kafka-python's untyped types
    """A consumer outside any group (it commits nothing: a group's offsets are untouched)
    assigned every partition of ``kc.topic``, and those partitions in order.

    Args:
        bootstrap_timeout_ms: How long to wait for a first broker (kafka-python's default).
        gather_ms: The broker holds each fetch this long for more records (up to a fetch's
            size) unless it fills first; 0: a fetch returns at its first record.

    Raises:
        DataError: the topic does not exist (the consumer is closed).
        kafka.errors.KafkaError: the broker cannot be reached.
    """
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=kc.bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        max_poll_records=kc.poll_max_records,
        bootstrap_timeout_ms=bootstrap_timeout_ms,
        **({"fetch_min_bytes": GATHER_BYTES, "fetch_max_wait_ms": gather_ms} if gather_ms else {}),
    )
    try:
        partitions = consumer.partitions_for_topic(kc.topic)
        if not partitions:
            raise DataError(f"topic {kc.topic} does not exist on {kc.bootstrap_servers}")
        tps = [TopicPartition(kc.topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
    except Exception:
        consumer.close()
        raise
    return consumer, tps


def read_to_end(
    consumer: Any, partitions: list[Any], end: Mapping[Any, int]
) -> Iterator[tuple[Any, Any]]:
    """Every record of ``partitions`` (``whole_topic``'s) from their start up to ``end``
    (``consumer.end_offsets``, taken once by the caller, who records it), as
    ``(partition, record)``, in order within each partition; what lies past it is left for
    later. Any: kafka-python's untyped partitions and records."""
    consumer.seek_to_beginning(*partitions)
    while any(consumer.position(p) < end[p] for p in partitions):
        for tp, records in consumer.poll(timeout_ms=500).items():
            for record in records:
                if record.offset < end[tp]:
                    yield tp, record


def broker_answers(bootstrap: str, timeout_s: float = 1.0) -> bool:
    """Whether any of ``bootstrap``'s servers accepts a TCP connection within ``timeout_s``:
    a cheap look before a Kafka client is made (one with no broker retries for its whole
    bootstrap timeout, logging errors as it goes)."""
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
                return True
        except (OSError, ValueError):
            continue
    return False
