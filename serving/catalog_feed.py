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

import contextlib
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from catalog.events import ItemChange, catalog_frame, decode
from catalog.overlay import Overlay
from features.events import whole_topic
from index.plan import embed_chunk
from recsys.config import KafkaConfig
from recsys.data.schema import DataSchema
from recsys.errors import DataError
from recsys.logs import Throttled
from serving.bundle import Bundle
from towers.runtime import NumpyItemTower

log = logging.getLogger(__name__)
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 10.0
BOOTSTRAP_MS = 2000


class CatalogFeed:
    """Applies the catalog topic to one bundle's overlay until stopped.

    Args:
        kafka: The broker and the catalog topic.
        schema: The data schema the events are checked against.
        bundle: The version the overlay is on.
        tower: The bundle's model's item tower.
        start: Partition → offset the version includes the topic up to.
        apply: Called with each new overlay (the recommender's ``set_overlay``).
    """

    def __init__(
        self,
        kafka: KafkaConfig,
        schema: DataSchema,
        bundle: Bundle,
        tower: NumpyItemTower,
        start: Mapping[int, int],
        apply: Callable[[Overlay], None],
    ):
        self._kafka = kafka.model_copy(update={"topic": kafka.catalog_topic})
        self._schema = schema
        self._bundle = bundle
        self._tower = tower
        self._apply = apply
        self.overlay = Overlay.empty(
            bundle.index.ntotal, bundle.index.d, bundle.meta.tags.shape[1], start
        )
        self.skipped = 0
        """Events that could not be used (undecodable or refused by the schema)."""
        self.caught_up = threading.Event()
        """Set once the feed has applied the topic up to the end it had when it started (or
        found no topic: nothing to apply)."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed = Throttled(log, "catalog feed: broker unavailable; retrying", 30.0)
        self._bad = Throttled(log, "catalog feed: skipped an event no server can use", 30.0)

    def start(self) -> CatalogFeed:
        self._thread = threading.Thread(target=self._run, name="catalog-feed", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def observe(self, records: Sequence[tuple[int, int, bytes]]) -> Overlay:
        """Applies ``(partition, offset, value)`` records, in the topic's order for each
        partition, and hands the new overlay on; returns it."""
        changes: dict[str, ItemChange] = {}  # each item's last change in the batch
        positions: dict[int, int] = {}
        for partition, offset, value in records:
            positions[partition] = offset + 1
            try:
                change = decode(value, self._schema)
            except DataError as exc:
                self.skipped += 1
                self._bad.note(str(exc))
                continue
            changes.pop(change.item_id, None)  # keeps the dict in the order of last change
            changes[change.item_id] = change
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
        return self.overlay

    def _run(self) -> None:
        wait = RETRY_FIRST_S
        while not self._stop.is_set():
            consumer = None
            try:
                consumer, ends = self._open()
                wait = RETRY_FIRST_S
                while not self._stop.is_set():
                    polled = consumer.poll(timeout_ms=self._kafka.poll_timeout_ms)
                    records = [
                        (tp.partition, r.offset, r.value) for tp, rs in polled.items() for r in rs
                    ]
                    if records:
                        self.observe(records)
                    if not self.caught_up.is_set() and all(
                        consumer.position(tp) >= end for tp, end in ends.items()
                    ):
                        self.caught_up.set()
            except DataError:  # no catalog topic yet: nothing changed; look again later
                self.caught_up.set()
                self._stop.wait(wait)
                wait = min(2 * wait, RETRY_MAX_S)
            except Exception as exc:  # a broker away or restarting: retry, never stop serving
                self._failed.note(f"{type(exc).__name__}: {exc}")
                self._stop.wait(wait)
                wait = min(2 * wait, RETRY_MAX_S)
            finally:
                if consumer is not None:
                    with contextlib.suppress(Exception):  # its broker may be gone
                        consumer.close()

    def _open(self) -> tuple[Any, dict[Any, int]]:  # Any: kafka-python's consumer, partitions
        consumer, tps = whole_topic(self._kafka, bootstrap_timeout_ms=BOOTSTRAP_MS)
        try:
            at = self.overlay.positions
            for tp in tps:
                if tp.partition in at:
                    consumer.seek(tp, at[tp.partition])
                else:
                    consumer.seek_to_beginning(tp)
            ends = consumer.end_offsets(tps)
        except Exception:
            consumer.close()
            raise
        return consumer, ends
