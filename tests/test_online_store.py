"""The leaner SQLite read returns exactly what Feast's own ``SqliteOnlineStore.online_read``
returns from the same store: values, timestamps and order, for present, absent and repeated
keys, on both views, and for the key forms it hands back to Feast's serializer."""

from __future__ import annotations

import pytest
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.sqlite import SqliteOnlineStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value

from features.online.sqlite import ServingSqliteOnlineStore
from features.repo.definitions import ACTIVITY_VIEW, PROFILE_VIEW
from features.store import open_store


def key(user: str) -> EntityKey:
    return EntityKey(join_keys=["user_id"], entity_values=[Value(string_val=user)])


@pytest.mark.parametrize("view", [PROFILE_VIEW, ACTIVITY_VIEW])
@pytest.mark.parametrize(
    "users",
    [["196"], ["nobody"], ["1", "nobody", "942", "1", "ü-nïcode"], [str(u) for u in range(1, 60)]],
)
def test_the_lean_read_is_feasts_read(feature_store, view, users) -> None:
    store = open_store(feature_store)
    config, table = store.config, store.get_feature_view(view)
    keys = [key(u) for u in users]
    expected = SqliteOnlineStore().online_read(config, table, keys, None)
    got = ServingSqliteOnlineStore().online_read(config, table, keys, None)
    assert got == expected
    if "196" in users:
        assert got[users.index("196")][1]


def test_keys_it_does_not_serialize_itself_go_to_feasts_serializer() -> None:
    store = ServingSqliteOnlineStore()
    for k in (
        key("abc"),
        EntityKey(join_keys=["user_id"], entity_values=[Value(int64_val=7)]),
        EntityKey(join_keys=["a", "b"], entity_values=[Value(string_val="x"), Value(int64_val=2)]),
    ):
        assert store._key(k, 3) == serialize_entity_key(k, 3)
