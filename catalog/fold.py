"""The catalog topic folded for a rebuild: each changed item's newest change, and the offsets
read up to, which the index version records as the changes it includes (a server's overlay
then holds exactly the events past them)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from catalog.events import ItemChange, decode
from features.events import broker_answers, read_to_end, whole_topic
from recsys.config import Config
from recsys.data.schema import DataSchema
from recsys.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CatalogChanges:
    """Each changed item's newest change (an upsert with its features, or a delete), and
    ``positions``: partition → the next offset, the topic read up to there and no further.

    ``skipped``: events no server can use (undecodable, or refused by the schema)."""

    latest: Mapping[str, ItemChange] = field(default_factory=dict)
    positions: Mapping[int, int] = field(default_factory=dict)
    skipped: int = 0

    @property
    def upserts(self) -> list[ItemChange]:
        """The items as they now are, by id (deleted ones left out)."""
        return [self.latest[i] for i in sorted(self.latest) if not self.latest[i].deleted]


def fold(
    changes: Iterable[ItemChange], positions: Mapping[int, int], skipped: int = 0
) -> CatalogChanges:
    """``changes`` in the topic's order for each item: the newest change of each wins."""
    latest: dict[str, ItemChange] = {}
    for change in changes:
        latest[change.item_id] = change
    return CatalogChanges(latest, dict(positions), skipped)


def read_changes(config: Config, schema: DataSchema) -> CatalogChanges | None:
    """The catalog topic from its start to the end it has now, folded.

    Returns:
        The changes (none when the topic does not exist yet), or ``None`` when no broker
        answers at ``kafka.bootstrap_servers``: the version then includes no change, and a
        server applies the whole topic on top of it, which is the same catalog.
    """
    kc = config.kafka
    if not broker_answers(kc.bootstrap_servers):
        log.warning(
            "no Kafka broker answers: the index holds no catalog-topic change (servers apply "
            "them all)",
            extra={"bootstrap_servers": kc.bootstrap_servers},
        )
        return None
    topic = kc.model_copy(update={"topic": kc.catalog_topic})
    try:
        consumer, partitions = whole_topic(topic, bootstrap_timeout_ms=kc.bootstrap_timeout_ms)
    except DataError:  # the topic does not exist: nothing has been changed yet
        return CatalogChanges()
    try:
        end = consumer.end_offsets(partitions)
        changes: list[ItemChange] = []
        skipped = 0
        for _, record in read_to_end(consumer, partitions, end):
            try:
                changes.append(decode(record.value, schema))
            except DataError:
                skipped += 1
        return fold(changes, {tp.partition: end[tp] for tp in partitions}, skipped)
    finally:
        consumer.close()
