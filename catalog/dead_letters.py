"""One writer for the catalog topic's dead letters.

Every server skips an event it cannot use (and counts it); none of them writes it anywhere,
or each bad event would be dead-lettered once per replica. This consumer, in one consumer
group (``kafka.catalog_group_id``), reads the catalog topic once, sends each event no server
can use to ``kafka.catalog_dead_letter_topic`` with the reason in a ``reason`` header (the
ingester's convention for its own dead letters), and commits. ``recsys ingest`` runs it
beside the ingester; a broker that goes away pauses it, and it resumes from its commits.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass
from typing import Any

from catalog.events import decode
from features.events import broker_answers
from recsys.config import Config
from recsys.data.schema import DataSchema
from recsys.errors import BrokerError, DataError
from recsys.logs import Throttled

log = logging.getLogger(__name__)
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 10.0


@dataclass
class CheckStats:
    checked: int = 0
    dead_letters: int = 0


class CatalogChecker:
    """Dead-letters the catalog topic's unusable events until stopped."""

    def __init__(self, config: Config, schema: DataSchema):
        self._config = config
        self._schema = schema
        self.stats = CheckStats()
        self._failed = Throttled(log, "catalog check: broker unavailable; retrying", 30.0)

    def run(self, stop: threading.Event) -> CheckStats:
        """Checks events as they arrive until ``stop`` is set; never raises for a broker
        that is away (it waits and reconnects)."""
        wait = RETRY_FIRST_S
        kc = self._config.kafka
        while not stop.is_set():
            consumer = producer = None
            try:
                if not broker_answers(kc.bootstrap_servers):
                    raise ConnectionError(f"nothing listens at {kc.bootstrap_servers}")
                consumer, producer = self._open()
                wait = RETRY_FIRST_S
                while not stop.is_set():
                    polled = consumer.poll(timeout_ms=kc.poll_timeout_ms)
                    if polled:
                        self.check([r for records in polled.values() for r in records], producer)
                        consumer.commit()
            except Exception as exc:  # a broker away or restarting: retry
                self._failed.note(f"{type(exc).__name__}: {exc}")
                stop.wait(wait)
                wait = min(2 * wait, RETRY_MAX_S)
            finally:
                for client in (consumer, producer):
                    if client is not None:
                        with contextlib.suppress(Exception):
                            client.close()
        return self.stats

    def check(self, records: list[Any], producer: Any) -> int:  # Any: kafka-python's
        """Sends the unusable ones of ``records`` to the dead-letter topic and waits for the
        broker's acknowledgement; returns how many."""
        sent = []
        for record in records:
            try:
                decode(record.value, self._schema)
            except DataError as exc:
                reason = str(exc)
                log.warning("catalog dead letter: %s", reason)
                sent.append(
                    producer.send(
                        self._config.kafka.catalog_dead_letter_topic,
                        key=record.key,
                        value=record.value,
                        headers=[("reason", reason.encode())],
                    )
                )
        if sent:
            producer.flush()
            failed = [f for f in sent if f.failed()]
            if failed:  # not committed: the batch is checked again once the broker is back
                raise BrokerError(
                    f"a catalog dead letter was not acknowledged: {failed[0].exception!r}"
                )
        dead = len(sent)
        self.stats.checked += len(records)
        self.stats.dead_letters += dead
        return dead

    def _open(self) -> tuple[Any, Any]:  # Any: kafka-python's consumer and producer
        from kafka import KafkaConsumer, KafkaProducer

        kc = self._config.kafka
        consumer = KafkaConsumer(
            kc.catalog_topic,
            bootstrap_servers=kc.bootstrap_servers,
            group_id=kc.catalog_group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=kc.poll_max_records,
            metadata_max_age_ms=5000,  # a topic created later is seen within seconds
            bootstrap_timeout_ms=kc.bootstrap_timeout_ms,
        )
        try:
            producer = KafkaProducer(
                bootstrap_servers=kc.bootstrap_servers,
                acks="all",
                bootstrap_timeout_ms=kc.bootstrap_timeout_ms,
            )
        except Exception:
            consumer.close()
            raise
        return consumer, producer
