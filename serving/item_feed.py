"""The served ranker's item state kept current from the interactions topic.

Each loaded ranker gets a feed of its own: a Kafka consumer outside any consumer group (it
commits nothing; the ingester's offsets are untouched) that reads every partition from the
ranker's clock on and hands each batch of events to ``ServedRanker.observe``. Events at or
before the clock the ranker was saved with are already in its state and are skipped, so the
feed adds only what happened since. A broker that goes away pauses the feed, never the
server: the consumer is reopened with a backoff and resumes where it stood.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from features.activity import SeenIndex
from features.events import decode
from ranking.servable import ServedRanker
from recsys.config import KafkaConfig
from recsys.errors import DataError
from serving.topic_feed import TopicFeed


class ItemFeed(TopicFeed):
    """Feeds one ranker's item state from the topic until stopped.

    Args:
        kafka: The broker and topic.
        ranker: The ranker whose state it feeds.
        seen: Item ids → the ranker's index rows.
    """

    def __init__(self, kafka: KafkaConfig, ranker: ServedRanker, seen: SeenIndex):
        super().__init__(kafka, "ranker item feed")
        self._ranker = ranker
        self._seen = seen
        self.watermark = ranker.state.now
        """Events at or before this time (ms) are in the saved state already."""
        self.events = 0
        """Events observed so far."""
        self._positions: dict[Any, int] = {}  # Any: a TopicPartition → its next offset

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

    def _handle(self, polled: dict[Any, list[Any]]) -> None:  # Any: kafka-python's
        for tp, records in polled.items():
            self.observe([r.value for r in records])
            if records:
                self._positions[tp] = records[-1].offset + 1

    def _seek(self, consumer: Any, partitions: list[Any]) -> None:  # Any: kafka-python's
        fresh = [tp for tp in partitions if tp not in self._positions]
        # Where the watermark falls in the log (record times are send times, which trail
        # event times): an earlier start only re-reads events the watermark skips.
        found = consumer.offsets_for_times({tp: max(self.watermark, 0) for tp in fresh})
        for tp in partitions:
            if tp in self._positions:
                consumer.seek(tp, self._positions[tp])
            elif found.get(tp) is not None:
                consumer.seek(tp, found[tp].offset)
            else:
                consumer.seek_to_end(tp)
