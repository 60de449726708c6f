"""The served ranker's item state kept current from the interactions topic.

Each loaded ranker gets a feed of its own: a Kafka consumer outside any consumer group (it
commits nothing; the ingester's offsets are untouched) that reads every partition from the
ranker's clock on and hands each batch of events to ``ServedRanker.observe``. Events at or
before the clock the ranker was saved with are already in its state and are skipped, so the
feed adds only what happened since. A broker that goes away pauses the feed, never the
server: the consumer is reopened with a backoff and resumes where it stood.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from features.activity import SeenIndex
from features.events import decode, whole_topic
from ranking.servable import ServedRanker
from recsys.config import KafkaConfig
from recsys.errors import DataError
from recsys.logs import Throttled

log = logging.getLogger(__name__)
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 10.0
BOOTSTRAP_MS = 2000


class ItemFeed:
    """Feeds one ranker's item state from the topic until stopped.

    Args:
        kafka: The broker and topic.
        ranker: The ranker whose state it feeds.
        seen: Item ids → the ranker's index rows.
    """

    def __init__(self, kafka: KafkaConfig, ranker: ServedRanker, seen: SeenIndex):
        self._kafka = kafka
        self._ranker = ranker
        self._seen = seen
        self.watermark = ranker.state.now
        """Events at or before this time (ms) are in the saved state already."""
        self.events = 0
        """Events observed so far."""
        self.caught_up = threading.Event()
        """Set once the feed has read up to the end the topic had when it started."""
        self._stop = threading.Event()
        self._positions: dict[Any, int] = {}  # Any: a TopicPartition → its next offset
        self._thread: threading.Thread | None = None
        self._failed = Throttled(log, "ranker item feed: broker unavailable; retrying", 30.0)

    def start(self) -> ItemFeed:
        self._thread = threading.Thread(target=self._run, name="ranker-item-feed", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def observe(self, values: Sequence[bytes]) -> int:
        """Decodes events and hands those after the watermark, of items the index holds, to
        the ranker; returns how many. Undecodable ones are skipped (the ingester sends them
        to its dead-letter topic)."""
        items, times = [], []
        for raw in values:
            try:
                _, event = decode(raw)
            except DataError:
                continue
            if event.event_time_ms > self.watermark:
                items.append(event.item_id)
                times.append(event.event_time_ms)
        if not items:
            return 0
        rows = self._seen.lookup(items)
        held = rows >= 0  # items this index does not hold are left out
        rows, at = rows[held], np.asarray(times, np.int64)[held]
        self._ranker.observe(rows, at)
        self.events += len(rows)
        return len(rows)

    def _run(self) -> None:
        wait = RETRY_FIRST_S
        while not self._stop.is_set():
            consumer = None
            try:
                consumer, ends = self._open()
                wait = RETRY_FIRST_S
                while not self._stop.is_set():
                    polled = consumer.poll(timeout_ms=self._kafka.poll_timeout_ms)
                    for tp, records in polled.items():
                        self.observe([r.value for r in records])
                        if records:
                            self._positions[tp] = records[-1].offset + 1
                    if not self.caught_up.is_set() and all(
                        consumer.position(tp) >= end for tp, end in ends.items()
                    ):
                        self.caught_up.set()
            except Exception as exc:  # a broker away or restarting: retry, never stop serving
                self._failed.note(f"{type(exc).__name__}: {exc}")
                self._stop.wait(wait)
                wait = min(2 * wait, RETRY_MAX_S)
            finally:
                if consumer is not None:
                    with contextlib.suppress(Exception):  # its broker may be gone
                        consumer.close()

    def _open(self) -> tuple[Any, dict[Any, int]]:  # Any: kafka-python's untyped consumer, tps
        # A short bootstrap: a feed whose broker is away retries on its own backoff, and
        # stops (on a swap or at shutdown) within this long.
        consumer, tps = whole_topic(self._kafka, bootstrap_timeout_ms=BOOTSTRAP_MS)
        try:
            fresh = [tp for tp in tps if tp not in self._positions]
            # Where the watermark falls in the log (record times are send times, which
            # trail event times): an earlier start only re-reads events the watermark skips.
            found = consumer.offsets_for_times({tp: max(self.watermark, 0) for tp in fresh})
            for tp in tps:
                if tp in self._positions:
                    consumer.seek(tp, self._positions[tp])
                elif found.get(tp) is not None:
                    consumer.seek(tp, found[tp].offset)
                else:
                    consumer.seek_to_end(tp)
            ends = consumer.end_offsets(tps)
        except Exception:
            consumer.close()
            raise
        return consumer, ends
