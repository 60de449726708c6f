"""The hot path as a plain object (no gRPC) on the real Feast store: filters, exclusions,
exclude-seen, request time, the three answer paths, deadlines, the bounded profile cache,
and the TF runtime against the NumPy one."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from features.activity import Activity
from features.online.read import FeatureReader
from features.repo.definitions import PROFILE_VIEW
from features.store import OnlineFeatures, open_store
from recsys.data import temporal_split
from recsys.errors import DeadlineExceededError, InvalidRequestError
from serving.answers import ServingPath
from serving.bundle import Bundle
from serving.recommender import Recommender
from serving.request import Request

USER = "196"


@pytest.fixture(scope="module")
def reader(feature_store) -> FeatureReader:
    return FeatureReader(feature_store)


@pytest.fixture(scope="module")
def bundle(feature_store) -> Bundle:
    return Bundle.load_current(feature_store.models_dir, feature_store.indexes_dir)


@pytest.fixture(scope="module")
def rec(bundle, reader, feature_store) -> Recommender:
    return Recommender(bundle, reader, feature_store.serving)


def ids(answer) -> list[str]:
    return [i.item_id for i in answer.items]


def genres_of(ml) -> dict[str, set[str]]:
    return {i: set(g) for i, g in zip(ml.items["item_id"], ml.items["genres"], strict=True)}


def test_exclude_seen_is_on_by_default_and_include_seen_turns_it_off(
    rec, feature_store, ml
) -> None:
    t = 889_000_000_000
    activity = OnlineFeatures(open_store(feature_store)).read_activity([USER])[USER]
    # Everything the user rated in the backfilled past, not only the last history_length.
    past, _ = temporal_split(ml.interactions, feature_store.model.test_fraction)
    seen = set(past.loc[past["user_id"] == USER, "item_id"])
    assert len(seen) > len(activity.recent_items) and set(activity.recent_items) <= seen
    features = OnlineFeatures(open_store(feature_store)).read([USER])[0]
    _, rows = rec.bundle.index.search(rec.user_vector(features, t), rec.bundle.index.ntotal)
    full = [rec.bundle.item_ids[r] for r in rows[0]]
    assert (
        ids(rec.recommend(Request(USER, k=20, request_time_ms=t, include_seen=True))) == full[:20]
    )
    unseen = [i for i in full if i not in seen]
    assert ids(rec.recommend(Request(USER, k=20, request_time_ms=t))) == unseen[:20]
    excluded = unseen[:3]
    answer = rec.recommend(Request(USER, k=20, request_time_ms=t, exclude=excluded))
    assert ids(answer) == unseen[3:23]


def test_genre_filters_keep_only_matching_items_in_rank_order(rec, ml, feature_store) -> None:
    genres = genres_of(ml)
    t = 889_000_000_000
    # The whole catalog in the user's order, seen items left out (as the default request does).
    store = OnlineFeatures(open_store(feature_store))
    seen = set(store.read_activity([USER])[USER].recent_items)
    _, rows = rec.bundle.index.search(
        rec.user_vector(store.read([USER])[0], t), rec.bundle.index.ntotal
    )
    everything = [i for i in (rec.bundle.item_ids[r] for r in rows[0]) if i not in seen]
    only = ids(rec.recommend(Request(USER, k=10, request_time_ms=t, include_genres=["Horror"])))
    assert len(only) == 10 and all("Horror" in genres[i] for i in only)
    without = ids(
        rec.recommend(Request(USER, k=10, request_time_ms=t, exclude_genres=["Drama", "Comedy"]))
    )
    assert len(without) == 10 and not any(genres[i] & {"Drama", "Comedy"} for i in without)
    # Filtering keeps the personalized order: the answer is the ranking's matching items.
    assert without == [i for i in everything if not genres[i] & {"Drama", "Comedy"}][:10]


def test_a_rare_genre_widens_the_search_until_k_items_pass(rec, ml, feature_store) -> None:
    genres = genres_of(ml)
    rare = min(
        {g for gs in genres.values() for g in gs},
        key=lambda g: sum(g in gs for gs in genres.values()),
    )
    seen = set(OnlineFeatures(open_store(feature_store)).read_activity([USER])[USER].recent_items)
    passing = {i for i, gs in genres.items() if rare in gs} - seen
    assert len(passing) < 100  # rarer than the first over-fetch lets through
    answer = ids(rec.recommend(Request(USER, k=100, include_genres=[rare])))
    assert set(answer) == passing


def test_request_time_feeds_the_time_features(rec) -> None:
    noon = int(datetime(1998, 3, 2, 12, tzinfo=UTC).timestamp() * 1000)
    night = int(datetime(1998, 3, 7, 3, tzinfo=UTC).timestamp() * 1000)
    a = rec.recommend(Request(USER, k=10, request_time_ms=noon))
    b = rec.recommend(Request(USER, k=10, request_time_ms=night))
    assert [i.score for i in a.items] != [i.score for i in b.items]
    again = rec.recommend(Request(USER, k=10, request_time_ms=noon))
    assert a.items == again.items


def test_known_user_is_personalized_and_unknown_user_gets_popular_items(rec, bundle) -> None:
    assert rec.recommend(Request(USER)).path is ServingPath.PERSONALIZED
    cold = rec.recommend(Request("nobody-anywhere-1", k=10))
    assert cold.path is ServingPath.COLD_START
    popular = [bundle.item_ids[r] for r in bundle.meta.popular[:10]]
    assert ids(cold) == popular
    shares = [i.score for i in cold.items]
    assert shares == sorted(shares, reverse=True) and 0 < shares[-1] <= shares[0] < 1


def test_unknown_user_with_streamed_history_gets_the_tower_on_it(rec, bundle, feature_store):
    user = "brand-new-streamed-user"
    history = ("50", "181", "100")  # Star Wars, Return of the Jedi, Fargo
    now_ms = int(time.time() * 1000)
    OnlineFeatures(open_store(feature_store)).write_activity(
        {user: Activity(history, now_ms, "e-1")}
    )
    answer = rec.recommend(Request(user, k=10))
    assert answer.path is ServingPath.COLD_START
    assert not set(ids(answer)) & set(history)
    popular = [bundle.item_ids[r] for r in bundle.meta.popular[:10]]
    assert ids(answer) != popular
    # The same as the tower on that history with an unknown id.
    from features.user import UserFeatures

    query = rec.user_vector(UserFeatures(user, activity=Activity(history, now_ms, "")), now_ms)
    _, rows = bundle.index.search(query, 13)
    expected = [bundle.item_ids[r] for r in rows[0] if bundle.item_ids[r] not in history][:10]
    assert ids(rec.recommend(Request(user, k=10, request_time_ms=now_ms))) == expected


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (Request(USER, exclude=[""]), "exclude_item_ids must be non-empty"),
        (Request(USER, exclude=["x" * 200]), "at most 128 characters"),
        (Request(USER, request_time_ms=-5), "request_time_ms must be"),
        (Request(USER, include_genres=["Noir-ish"]), "unknown genres value 'Noir-ish'"),
        (Request(USER, exclude_genres=["Drama"] * 33), "at most 32 genre filters"),
    ],
)
def test_bad_requests_say_what_is_allowed(rec, request_, message) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        rec.recommend(request_)


def test_a_passed_deadline_is_not_worked_on(rec) -> None:
    with pytest.raises(DeadlineExceededError):
        rec.recommend(Request(USER), deadline=time.monotonic() - 0.001)


def test_a_locked_store_answers_degraded_within_the_timeout_then_recovers(
    feature_store, bundle
) -> None:
    config = feature_store.with_overrides(
        {"serving": {"store_timeout_ms": 50, "store_retry_seconds": 0.3}}
    )
    reader = FeatureReader(config)
    rec = Recommender(bundle, reader, config.serving)
    personal = rec.recommend(Request(USER, k=10))
    assert personal.path is ServingPath.PERSONALIZED
    lock = sqlite3.connect(config.feast_dir / "online.db", timeout=0)
    lock.execute("BEGIN EXCLUSIVE")  # a writer that never lets go
    try:
        started = time.monotonic()
        slow = rec.recommend(Request(USER, k=10), deadline=started + 1.0)
        waited = time.monotonic() - started
        assert slow.path is ServingPath.DEGRADED and len(slow.items) == 10
        assert waited < 1.0  # bounded by the store timeout, not SQLite's default 5 s
        assert "locked" in reader.last_error
        # The store is left alone for a while: the next answer does not wait at all.
        assert not reader.available
        assert rec.recommend(Request(USER, k=10)).path is ServingPath.DEGRADED
        unknown = rec.recommend(Request("nobody-while-degraded", k=5))
        assert unknown.path is ServingPath.DEGRADED
        assert ids(unknown) == [bundle.item_ids[r] for r in bundle.meta.popular[:5]]
    finally:
        lock.rollback()
        lock.close()
    time.sleep(0.35)
    assert rec.recommend(Request(USER, k=10)).path is ServingPath.PERSONALIZED


def test_the_profile_cache_bounds_staleness_to_its_ttl(feature_store, bundle) -> None:
    user = "profile-cache-probe"

    def write_age(age: int) -> None:
        store = open_store(feature_store)
        frame = pd.DataFrame(
            {
                "user_id": [user],
                "age": [float(age)],
                "gender": ["F"],
                "occupation": ["writer"],
                "zip_code": ["10001"],
                "event_timestamp": [datetime.now(UTC)],
            }
        )
        store.write_to_online_store(PROFILE_VIEW, frame)

    write_age(30)
    cached = FeatureReader(
        feature_store.with_overrides({"serving": {"profile_cache_seconds": 0.5}})
    )
    uncached = FeatureReader(
        feature_store.with_overrides({"serving": {"profile_cache_seconds": 0}})
    )
    age = cached.profile.index("age")
    assert cached.read(user).profile[age] == uncached.read(user).profile[age] == 30
    write_age(41)
    assert uncached.read(user).profile[age] == 41
    assert cached.read(user).profile[age] == 30  # within the TTL: the cached profile
    time.sleep(0.55)
    assert cached.read(user).profile[age] == 41  # past it: read again


def test_savedmodel_runtime_matches_numpy_runtime(feature_store, reader, rec) -> None:
    tf_bundle = Bundle.load_current(
        feature_store.models_dir, feature_store.indexes_dir, runtime="savedmodel"
    )
    tf_rec = Recommender(tf_bundle, reader, feature_store.serving)
    t = 889_000_000_000
    for user in [USER, "1", "942", "nobody-tf"]:
        features = reader.read(user)
        np.testing.assert_allclose(
            tf_rec.user_vector(features, t), rec.user_vector(features, t), atol=1e-5
        )
    a = rec.recommend(Request(USER, k=10, request_time_ms=t))
    b = tf_rec.recommend(Request(USER, k=10, request_time_ms=t))
    assert ids(a) == ids(b)
