"""The Feast store as the server and ingester see it: real SQLite online store, real registry."""

from __future__ import annotations

import contextlib

import pytest

from features.activity import EMPTY, Activity, Interaction, apply_events
from features.backfill import initialise
from features.store import OnlineFeatures, write_time
from localservices.redis import LocalRedis
from recsys.data import temporal_split
from tests.conftest import real_part


@pytest.fixture(scope="module", params=["sqlite", "redis"])
@real_part
def store(request, base_config, ml, tmp_path_factory):
    """The same store API on both online stores: a SQLite file and a real redis-server."""
    state = tmp_path_factory.mktemp(f"feature-store-{request.param}")
    overrides = {"paths": {"state": str(state)}, "feast": {"online_store": request.param}}
    with contextlib.ExitStack() as stack:
        if request.param == "redis":
            redis = stack.enter_context(LocalRedis(state / "redis"))
            overrides["feast"]["redis"] = redis.connection_string
        config = base_config.with_overrides(overrides)
        past, _ = temporal_split(ml.interactions, config.model.test_fraction)
        yield config, past, OnlineFeatures(initialise(config, ml, past))


def test_profiles_are_materialized(store, ml) -> None:
    _, _, features = store
    row = ml.users.set_index("user_id").loc["196"]
    got = features.read(["196"])[0]
    assert got.has_profile
    assert got.profile == tuple(row[n] for n in ml.schema.user_features)


def test_unknown_user_reads_as_defaults(store) -> None:
    _, _, features = store
    got = features.read(["nobody-here"])[0]
    assert not got.has_profile
    assert (got.profile, got.activity) == ((), Activity())


def test_backfill_holds_each_users_newest_past_items(store) -> None:
    config, past, features = store
    user = past[past["user_id"] == "13"]
    got = features.read_activity(["13"])["13"]
    assert len(got.recent_items) == config.model.history_length
    assert got.last_event_ms == int(user["timestamp"].max()) * 1000
    assert len(set(got.recent_items)) == len(got.recent_items)
    newest_time = user["timestamp"].max()
    assert got.recent_items[0] in set(user.loc[user["timestamp"] == newest_time, "item_id"])
    # Every kept item is at least as new as every dropped one.
    time_of = dict(zip(user["item_id"], user["timestamp"], strict=True))
    dropped = set(user["item_id"]) - set(got.recent_items)
    assert min(time_of[i] for i in got.recent_items) >= max(time_of[i] for i in dropped)


def test_write_then_read_activity_round_trips(store) -> None:
    _, _, features = store
    state = Activity(("5", "4", "3"), 1_700_000_000_000)
    features.write_activity({"round-trip-user": state})
    assert features.read_activity(["round-trip-user"])["round-trip-user"] == state


def test_a_state_adding_an_event_of_the_same_millisecond_replaces_the_stored_one(store) -> None:
    # Two batches cut between two ratings of one second: the second state has the same
    # last event time. Feast's Redis store keeps a write only if its time is newer.
    _, _, features = store
    first = apply_events(EMPTY, [Interaction("1", 1_700_000_000_000, "e1")], 5)
    second = apply_events(first, [Interaction("2", 1_700_000_000_000, "e2")], 5)
    assert second.last_event_ms == first.last_event_ms
    features.write_activity({"tied-user": first})
    features.write_activity({"tied-user": second})
    assert features.read_activity(["tied-user"])["tied-user"] == second


def test_write_time_grows_with_every_new_state() -> None:
    state, times = EMPTY, []
    for n, t in enumerate([5, 5, 5, 6, 6, 1_000, 1_000_999]):
        state = apply_events(state, [Interaction(f"i{n}", t, f"e{n}")], 5)
        times.append(write_time(state))
    assert times == sorted(times) and len(set(times)) == len(times)


def test_initialise_starts_from_scratch(store, ml) -> None:
    config, past, features = store
    features.write_activity({"left-over-user": Activity(("1",), 1)})
    fresh = OnlineFeatures(initialise(config, ml, past))
    assert fresh.read_activity(["left-over-user"])["left-over-user"] == Activity()
    assert fresh.read(["196"])[0].has_profile
