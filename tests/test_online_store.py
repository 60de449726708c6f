"""The leaner SQLite and Redis reads return exactly what Feast's own ``online_read`` returns
from the same store: values, timestamps and order, for present, absent and repeated keys, on
both views, and for the key forms handed back to Feast's serializer. On Redis, what Feast
pushes the server reads, and what the server reads Feast serves (a real redis-server)."""

from __future__ import annotations

import pytest
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.redis import RedisOnlineStore
from feast.infra.online_stores.sqlite import SqliteOnlineStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value

from features.activity import Interaction, apply_events
from features.backfill import initialise
from features.online.keys import entity_key_bytes
from features.online.read import FeatureReader
from features.online.redis import ServingRedisOnlineStore
from features.online.sqlite import ServingSqliteOnlineStore
from features.repo.definitions import ACTIVITY_VIEW, PROFILE_VIEW
from features.store import OnlineFeatures, open_store
from localservices.redis import LocalRedis
from recsys.data import temporal_split
from tests.conftest import real_part


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
    for k in (
        key("abc"),
        EntityKey(join_keys=["user_id"], entity_values=[Value(int64_val=7)]),
        EntityKey(join_keys=["a", "b"], entity_values=[Value(string_val="x"), Value(int64_val=2)]),
    ):
        assert entity_key_bytes(k, 3) == serialize_entity_key(k, 3)


@pytest.fixture(scope="module")
@real_part
def redis_store(base_config, ml, tmp_path_factory):
    """Profiles materialized and activity pushed by Feast into a real redis-server."""
    state = tmp_path_factory.mktemp("online-redis")
    with LocalRedis(state / "redis") as redis:
        config = base_config.with_overrides(
            {
                "paths": {"state": str(state)},
                "feast": {"online_store": "redis", "redis": redis.connection_string},
            }
        )
        past, _ = temporal_split(ml.interactions, config.model.test_fraction)
        initialise(config, ml, past)
        yield config


REDIS_USERS = [
    ["196"],
    ["nobody"],
    ["1", "nobody", "942", "1", "ü-nïcode"],
    [str(u) for u in range(1, 60)],
]


@pytest.mark.parametrize("view", [PROFILE_VIEW, ACTIVITY_VIEW])
@pytest.mark.parametrize("users", REDIS_USERS)
@pytest.mark.parametrize("features", [None, 2])
def test_the_lean_redis_read_is_feasts_read(redis_store, view, users, features) -> None:
    store = open_store(redis_store)
    config, table = store.config, store.get_feature_view(view)
    names = None if features is None else [f.name for f in table.features][:features]
    keys = [key(u) for u in users]
    # Fresh lists each: Feast's online_read appends to the list it is given.
    expected = RedisOnlineStore().online_read(config, table, keys, names and [*names])
    got = ServingRedisOnlineStore().online_read(config, table, keys, names and [*names])
    assert got == expected
    if "196" in users:
        assert any(v.WhichOneof("val") for v in got[users.index("196")][1].values())


@pytest.mark.parametrize("users", REDIS_USERS)
def test_one_round_trip_reads_both_views_as_feast_does(redis_store, users) -> None:
    """``read_views`` gives Feast's values for each view, and ``None`` exactly where Feast
    finds no write time (the entity has nothing of that view)."""
    store = open_store(redis_store)
    config = store.config
    keys = [key(u) for u in users]
    views = [store.get_feature_view(v) for v in (ACTIVITY_VIEW, PROFILE_VIEW)]
    asked = [(v, [f.name for f in v.features]) for v in views]
    got = ServingRedisOnlineStore().read_views(config, asked, keys)
    for (view, names), rows in zip(asked, got, strict=True):
        feast = RedisOnlineStore().online_read(config, view, keys, [*names])
        expected = [row if ts and ts.timestamp() > 0 else None for ts, row in feast]
        assert rows == expected
    if "196" in users:
        assert got[0][users.index("196")] is not None
        assert got[1][users.index("196")] is not None
    if "nobody" in users:
        assert got[0][users.index("nobody")] is None


def test_what_the_server_reads_from_redis_is_what_feast_serves_after_a_push(redis_store) -> None:
    """Both directions: a state pushed through Feast is read the same by the server's reader
    and by Feast's ``get_online_features``, profiles and activity."""
    features = OnlineFeatures(open_store(redis_store))
    before = features.read_activity(["196"])["196"]
    state = apply_events(before, [Interaction("1", before.last_event_ms + 1, "e-redis")], 20)
    features.write_activity({"196": state, "fresh-user": state})
    reader = FeatureReader(redis_store)
    users = ["196", "fresh-user", "nobody", "1"]
    served = reader.read_many(users)

    assert served == features.read(users)  # the event count too: the ranker reads it
    assert served[0].activity == served[1].activity == state
    assert state.events > 0
    assert served[0].has_profile and not served[1].has_profile
