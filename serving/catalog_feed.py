"""Each server follows the catalog topic and keeps its overlay current.

Every replica needs every item, so the feed is a consumer outside any group (it commits
nothing) reading every partition of ``kafka.catalog_topic`` from the offsets the serving
index version was built up to (its manifest's ``catalog_topic``; from the start when it
records none). Each batch of events is decoded against the data schema (an event no server
can use is skipped and counted: ``recsys catalog put`` refuses them before they are sent),
folded per item, embedded by the serving model's item tower (NumPy, as the rebuild embeds),
applied to a copy of the overlay and swapped in whole. A broker that goes away pauses the
feed, never the server.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from catalog.events import ItemChange, catalog_frame, decode
from catalog.overlay import Overlay
from index.plan import embed_chunk
from recsys.config import KafkaConfig
from recsys.data.schema import DataSchema
from recsys.errors import DataError
from recsys.logs import Throttled
from serving.bundle import Bundle
from serving.topic_feed import TopicFeed
from towers.runtime import NumpyItemTower

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CatalogBatch:
    """One batch the feed applied: the new overlay, each applied change's age (from its
    event time to now, seconds), the events it skipped, and the records left in the topic
    past it (``None``: not known yet)."""

    overlay: Overlay
    ages_s: list[float]
    skipped: int
    lag: int | None = None


class CatalogFeed(TopicFeed):
    """Applies the catalog topic to one bundle's overlay until stopped.

    Args:
        kafka: The broker and the catalog topic.
        schema: The data schema the events are checked against.
        bundle: The version the overlay is on.
        tower: The bundle's model's item tower.
        start: Partition → offset the version includes the topic up to.
        apply: Called with each new overlay (the recommender's ``set_overlay``).
        on_batch: Called after each batch is applied (metrics).
    """

    missing_topic_is_empty = True  # no catalog topic yet: nothing has changed

    def __init__(
        self,
        kafka: KafkaConfig,
        schema: DataSchema,
        bundle: Bundle,
        tower: NumpyItemTower,
        start: Mapping[int, int],
        apply: Callable[[Overlay], None],
        on_batch: Callable[[CatalogBatch], None] | None = None,
    ):
        super().__init__(kafka.model_copy(update={"topic": kafka.catalog_topic}), "catalog feed")
        self._schema = schema
        self._bundle = bundle
        self._tower = tower
        self._apply = apply
        self._on_batch = on_batch
        self.overlay = Overlay.empty(
            bundle.index.ntotal, bundle.index.d, bundle.meta.tags.shape[1], start, bundle.index
        )
        self.skipped = 0
        """Events that could not be used (undecodable or refused by the schema)."""
        self._bad = Throttled(log, "catalog feed: skipped an event no server can use", 30.0)

    def observe(self, records: Sequence[tuple[int, int, bytes]], lag: int | None = None) -> Overlay:
        """Applies ``(partition, offset, value)`` records, in the topic's order for each
        partition, and hands the new overlay on (``lag``: the records still past them, for
        the metrics); returns it."""
        changes: dict[str, ItemChange] = {}  # each item's last change in the batch
        positions: dict[int, int] = {}
        times: list[int] = []
        skipped = 0
        for partition, offset, value in records:
            positions[partition] = offset + 1
            try:
                change = decode(value, self._schema)
            except DataError as exc:
                skipped += 1
                self._bad.note(str(exc))
                continue
            times.append(change.time_ms)
            changes.pop(change.item_id, None)  # keeps the dict in the order of last change
            changes[change.item_id] = change
        self.skipped += skipped
        ordered = list(changes.values())
        upserts = [c for c in ordered if not c.deleted]
        dim, words = self.overlay.vectors.shape[1], self.overlay.tags.shape[1]
        vectors, tags = np.zeros((0, dim), np.float32), np.zeros((0, words), np.uint64)
        if upserts:
            space = self._bundle.space
            _, vectors, tags = embed_chunk(space, self._tower, catalog_frame(upserts), set())
        self.overlay = self.overlay.apply(
            ordered, vectors, tags, self._bundle.seen.lookup, positions
        )
        self._apply(self.overlay)
        if self._on_batch is not None:
            now_ms = time.time() * 1000
            ages = [max(now_ms - t, 0.0) / 1000 for t in times]
            self._on_batch(CatalogBatch(self.overlay, ages, skipped, lag))
        return self.overlay

    def _handle(self, polled: dict[Any, list[Any]]) -> None:  # Any: kafka-python's
        records = [(tp.partition, r.offset, r.value) for tp, rs in polled.items() for r in rs]
        self.observe(records, self.lag())

    def _seek(self, consumer: Any, partitions: list[Any]) -> None:  # Any: kafka-python's
        at = self.overlay.positions
        for tp in partitions:
            if tp.partition in at:
                consumer.seek(tp, at[tp.partition])
            else:
                consumer.seek_to_beginning(tp)
