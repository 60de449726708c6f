"""What the server's topic feeds share: a thread that reads one Kafka topic outside any
consumer group (it commits nothing: no group's offsets move) and hands each poll on, until
stopped. A broker that is away pauses the feed, never the server: while nothing listens at
the bootstrap address no client is even made, and a client that fails is closed and made
again after a backoff (0.5 s, doubling to 10 s), with one log line per 30 s."""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any, Self

from features.events import broker_answers, whole_topic
from recsys.config import KafkaConfig
from recsys.errors import BrokerError, DataError
from recsys.logs import Throttled

log = logging.getLogger(__name__)
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 10.0
BOOTSTRAP_MS = 2000
"""A short bootstrap: a feed whose broker is away retries on its own backoff, and stops (on
a swap or at shutdown) within this long."""


class TopicFeed:
    """Reads ``kafka.topic`` from where :meth:`_seek` puts each partition; each poll goes to
    :meth:`_handle`.

    Args:
        kafka: The broker and the topic.
        what: The feed's name in its log lines.
    """

    missing_topic_is_empty = False
    """``True``: a topic that does not exist yet holds nothing to catch up with."""

    def __init__(self, kafka: KafkaConfig, what: str):
        self._kafka = kafka
        self._what = what
        self.caught_up = threading.Event()
        """Set once the feed has read up to the end the topic had when it opened."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Any = None  # Any: kafka-python's; the one reading, while it reads
        self._failed = Throttled(log, f"{what}: broker unavailable; retrying", 30.0)

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._run, name=self._what, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _seek(self, consumer: Any, partitions: list[Any]) -> None:  # Any: kafka-python's
        """Positions each partition before the first poll."""
        raise NotImplementedError

    def _handle(self, polled: dict[Any, list[Any]]) -> None:  # Any: partitions → records
        raise NotImplementedError

    def lag(self) -> int | None:
        """Records in the topic past what the feed has polled, by the high-water marks the
        broker's last fetch answers carried (no request of its own); ``None`` before any."""
        consumer = self._consumer
        if consumer is None:
            return None
        try:
            behind = 0
            for tp in consumer.assignment():
                high = consumer.highwater(tp)
                if high is None:
                    return None
                behind += max(high - consumer.position(tp), 0)
            return behind
        except Exception:  # the consumer closed meanwhile (a swap, a broker away)
            return None

    def _run(self) -> None:
        wait = RETRY_FIRST_S
        while not self._stop.is_set():
            consumer = None
            try:
                if not broker_answers(self._kafka.bootstrap_servers):
                    raise BrokerError(f"nothing listens at {self._kafka.bootstrap_servers}")
                consumer, partitions = whole_topic(
                    self._kafka, BOOTSTRAP_MS, self._kafka.feed_fetch_wait_ms
                )
                self._seek(consumer, partitions)
                self._consumer = consumer
                ends = consumer.end_offsets(partitions)
                wait = RETRY_FIRST_S
                while not self._stop.is_set():
                    polled = consumer.poll(timeout_ms=self._kafka.poll_timeout_ms)
                    if polled:
                        self._handle(polled)
                    if not self.caught_up.is_set() and all(
                        consumer.position(tp) >= end for tp, end in ends.items()
                    ):
                        self.caught_up.set()
            except DataError as exc:  # the topic does not exist (yet)
                if self.missing_topic_is_empty:
                    self.caught_up.set()
                else:
                    self._failed.note(str(exc))
                self._stop.wait(wait)
                wait = min(2 * wait, RETRY_MAX_S)
            except Exception as exc:  # a broker away or restarting: retry, never stop serving
                self._failed.note(f"{type(exc).__name__}: {exc}")
                self._stop.wait(wait)
                wait = min(2 * wait, RETRY_MAX_S)
            finally:
                self._consumer = None
                if consumer is not None:
                    with contextlib.suppress(Exception):  # its broker may be gone
                        consumer.close()
