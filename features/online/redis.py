"""Feast's Redis online store with a leaner read, for the Recommend hot path.

``RedisOnlineStore.online_read`` costs more in Python than the round trip it makes: Feast's
general entity-key serializer, a murmur3 hash, ``struct`` pack and hex round trip for every
field name of every call, and a ``Timestamp`` and ``datetime`` for every entity. The server
also read two views (profile and activity) in two round trips. This subclass reads Feast's own
layout (one hash per entity key and project, one field per ``murmur3("view:feature")`` and a
``_ts:view`` timestamp field) with the field names hashed once per view, the key serialized
directly, and, through ``read_views``, every view of a batch's users in one pipeline: Feast
keeps all views of an entity in the same hash, so one ``HMGET`` per user covers them all.
Writes, materialization and teardown are Feast's own, so what Feast writes this reads, and
what this reads Feast reads the same (tests/test_online_store.py holds both to Feast's).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from feast.infra.online_stores.helpers import _mmh3
from feast.infra.online_stores.redis import RedisOnlineStore, _versioned_fv_name
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.repo_config import RepoConfig
from google.protobuf.timestamp_pb2 import Timestamp

from features.online.keys import entity_key_bytes

if TYPE_CHECKING:
    from feast.feature_view import FeatureView

Row = dict[str, Value] | None
"""One entity's values of one view, by feature name, or ``None`` when it has none."""


class ServingRedisOnlineStore(RedisOnlineStore):
    """``RedisOnlineStore`` with ``online_read`` and ``read_views`` tuned for serving."""

    def __init__(self) -> None:
        super().__init__()
        self._fields: dict[tuple[str, tuple[str, ...]], list[bytes | str]] = {}

    def online_read(
        self,
        config: RepoConfig,
        table: FeatureView,
        entity_keys: list[EntityKey],
        requested_features: list[str] | None = None,
    ) -> list[tuple[datetime | None, dict[str, Value] | None]]:
        """What ``RedisOnlineStore.online_read`` returns, in the same order: each requested
        feature (all of the view's by default) for each key, an empty ``Value`` where it has
        none, and the view's write time (the epoch where it has none)."""
        names = list(requested_features or [f.name for f in table.features])
        fields = self._fields_of(config, table, names)
        out: list[tuple[datetime | None, dict[str, Value] | None]] = []
        for values in self._hmget(config, entity_keys, fields):
            ts = Timestamp()
            if values[-1]:
                ts.ParseFromString(values[-1])
            row = {name: _parsed(raw) for name, raw in zip(names, values, strict=False)}
            seconds = ts.seconds + ts.nanos / 1_000_000_000.0
            out.append((datetime.fromtimestamp(seconds, tz=UTC), row) if row else (None, None))
        return out

    def read_views(
        self,
        config: RepoConfig,
        views: Sequence[tuple[FeatureView, Sequence[str]]],
        entity_keys: list[EntityKey],
    ) -> list[list[Row]]:
        """For each ``(view, feature names)``, each key's values (an empty ``Value`` for a
        feature the entity lacks), or ``None`` where the entity has nothing of that view;
        all in one round trip. No write times: the serving read does not use them."""
        spans: list[tuple[int, Sequence[str]]] = []
        fields: list[bytes | str] = []
        for table, names in views:
            these = self._fields_of(config, table, list(names))
            spans.append((len(fields), names))
            fields.extend(these)
        out: list[list[Row]] = [[] for _ in views]
        for values in self._hmget(config, entity_keys, fields):
            for rows, (start, names) in zip(out, spans, strict=True):
                if values[start + len(names)] is None:  # no write time: no row of this view
                    rows.append(None)
                    continue
                rows.append({name: _parsed(values[start + i]) for i, name in enumerate(names)})
        return out

    def _fields_of(
        self, config: RepoConfig, table: FeatureView, names: list[str]
    ) -> list[bytes | str]:
        """The hash fields of ``names`` then the view's timestamp field, hashed once."""
        key = (table.name, tuple(names))
        fields = self._fields.get(key)
        if fields is None:
            view = _versioned_fv_name(table, config)
            fields = [*(_mmh3(f"{view}:{name}") for name in names), f"_ts:{view}"]
            self._fields[key] = fields
        return fields

    def _hmget(
        self, config: RepoConfig, entity_keys: list[EntityKey], fields: list[bytes | str]
    ) -> list[list[bytes | None]]:
        """One ``HMGET`` of ``fields`` per key, in one pipeline."""
        version, project = config.entity_key_serialization_version, config.project.encode()
        client = self._get_client(config.online_store)
        with client.pipeline(transaction=False) as pipe:
            for k in entity_keys:
                pipe.hmget(entity_key_bytes(k, version) + project, fields)
            replies: list[list[bytes | None]] = pipe.execute()
        return replies


def _parsed(raw: bytes | None) -> Value:
    value = Value()
    if raw:
        value.ParseFromString(raw)
    return value
