"""The Recommend hot path on a tiny synthetic bundle (a few hundred items in a flat index, a
NumPy user tower with random weights, features from a dict), held to brute force over every
item: exclusions, seen sets, genre filters, widening, cold start, degraded reads, and a
batch answering as its requests would one at a time. The fast tier's cover of
``serving.recommender``; the same path on a trained model and a real store is
``test_recommender.py``."""

from __future__ import annotations

import time

import numpy as np
import pytest

from features.user import UserFeatures
from recsys.config import ServingConfig
from recsys.errors import DeadlineExceededError, InvalidRequestError
from serving.answers import Recommendation, ServingPath
from serving.recommender import Recommender
from serving.request import Request
from tests import tiny

T = 889_000_000_000
ITEMS = 300


@pytest.fixture(scope="module")
def bundle():
    return tiny.bundle(ITEMS)


@pytest.fixture
def features() -> tiny.DictFeatures:
    return tiny.DictFeatures(
        {
            "u1": tiny.user("u1", ["i3", "i7", "i11"]),
            "u2": tiny.user("u2", ["i5"], seen=[f"i{i}" for i in range(0, ITEMS, 2)]),
            "u3": tiny.user("u3", profile=False),
            "new-with-history": tiny.user("new-with-history", ["i1", "i2"], profile=False),
        }
    )


@pytest.fixture
def rec(bundle, features) -> Recommender:
    return Recommender(bundle, features, ServingConfig())


def brute(bundle, user: UserFeatures, request: Request) -> list[str]:
    """Every item scored against the user's vector, best first, less what the request bans."""
    query = bundle.tower.embed(bundle.space, [user], [request.request_time_ms or T])[0]
    vectors = bundle.index.reconstruct_n(0, bundle.index.ntotal)
    order = np.argsort(-(vectors @ query), kind="stable")
    banned = set(request.exclude)
    if not request.include_seen:
        banned |= {bundle.item_ids[r] for r in bundle.seen.rows(user.activity)}
    genres = tiny.item_genres(ITEMS)
    keep = []
    for r in order.tolist():
        item, g = bundle.item_ids[r], set(genres[r])
        if item in banned or (request.include_genres and not g & set(request.include_genres)):
            continue
        if g & set(request.exclude_genres):
            continue
        keep.append(item)
    return keep[: request.k]


def ids(answer: Recommendation) -> list[str]:
    return [i.item_id for i in answer.items]


@pytest.mark.parametrize(
    "request_",
    [
        Request("u1", k=10, request_time_ms=T),
        Request("u1", k=1, request_time_ms=T),
        Request("u1", k=50, request_time_ms=T, include_seen=True),
        Request("u1", k=20, request_time_ms=T, exclude=("i0", "i1", "nope")),
        Request("u1", k=10, request_time_ms=T, include_genres=("Horror",)),
        Request("u1", k=10, request_time_ms=T, exclude_genres=("Drama", "Comedy")),
        Request("u2", k=100, request_time_ms=T),
    ],
    ids=["top10", "top1", "include-seen", "exclude", "only-horror", "no-drama-comedy", "seen-150"],
)
def test_personalized_answers_are_the_brute_force_ranking(rec, bundle, features, request_) -> None:
    answer = rec.recommend(request_)
    assert answer.path is ServingPath.PERSONALIZED
    assert ids(answer) == brute(bundle, features.users[request_.user_id], request_)
    assert answer.model_version == "m-test" and answer.index_version == "i-test"


def test_the_seen_set_is_excluded_whole_not_only_the_recent_items(rec, bundle, features) -> None:
    answer = ids(rec.recommend(Request("u2", k=100, request_time_ms=T)))
    seen = {f"i{i}" for i in range(0, ITEMS, 2)}
    assert len(answer) == 100 and not set(answer) & seen
    with_seen = ids(rec.recommend(Request("u2", k=100, request_time_ms=T, include_seen=True)))
    assert set(with_seen) & seen


def test_a_rare_genre_widens_until_every_passing_item_is_found(rec, bundle, features) -> None:
    rare = {bundle.item_ids[i] for i, g in enumerate(tiny.item_genres(ITEMS)) if "Rare" in g}
    answer = ids(rec.recommend(Request("u1", k=100, request_time_ms=T, include_genres=("Rare",))))
    assert set(answer) == rare - {"i3", "i7", "i11"} and len(answer) < 100


def test_a_user_who_has_seen_most_of_the_top_is_widened_to_k(rec, bundle, features) -> None:
    user = features.users["u1"]
    top = brute(bundle, user, Request("u1", k=280, include_seen=True))
    features.users["u1"] = user._replace(
        activity=user.activity._replace(seen=tiny.seen_bytes(top[:270]))
    )
    answer = rec.recommend(Request("u1", k=10, request_time_ms=T))
    assert ids(answer) == top[270:280]


def test_an_unknown_user_with_nothing_known_gets_the_popular_items(rec, bundle) -> None:
    answer = rec.recommend(Request("nobody", k=10))
    assert answer.path is ServingPath.COLD_START
    popular = [bundle.item_ids[r] for r in bundle.meta.popular]
    assert ids(answer) == popular[:10]
    np.testing.assert_array_equal(answer.scores, bundle.meta.popular_share[:10])
    horror = rec.recommend(Request("nobody", k=5, include_genres=("Horror",), exclude=("i8",)))
    genres = tiny.item_genres(ITEMS)
    want = [i for i in popular if "Horror" in genres[int(i[1:])] and i != "i8"][:5]
    assert ids(horror) == want


def test_an_unknown_user_with_recent_items_is_embedded_cold_start(rec, bundle, features) -> None:
    request = Request("new-with-history", k=10, request_time_ms=T)
    answer = rec.recommend(request)
    assert answer.path is ServingPath.COLD_START
    assert ids(answer) == brute(bundle, features.users["new-with-history"], request)


def test_a_known_user_without_profile_or_history_is_still_personalized(rec, bundle) -> None:
    request = Request("u3", k=10, request_time_ms=T)
    answer = rec.recommend(request)
    assert answer.path is ServingPath.PERSONALIZED
    assert ids(answer) == brute(bundle, UserFeatures("u3"), request)


def test_a_failed_read_is_degraded_to_what_the_request_alone_says(rec, bundle, features) -> None:
    features.down = True
    request = Request("u1", k=10, request_time_ms=T, exclude=("i9",))
    answer = rec.recommend(request)
    assert answer.path is ServingPath.DEGRADED
    assert ids(answer) == brute(bundle, UserFeatures("u1"), request)
    assert rec.recommend(Request("nobody")).path is ServingPath.DEGRADED


def mixed() -> list[Request]:
    return [
        Request("u1", k=10, request_time_ms=T),
        Request("u2", k=30, request_time_ms=T),
        Request("u1", k=0),
        Request("nobody", k=7),
        Request("u1", k=10, request_time_ms=T, include_genres=("Rare",)),
        Request("u3", k=5, request_time_ms=T, exclude_genres=("Action",)),
        Request("u1", k=10, include_genres=("Jazz",)),
        Request("new-with-history", k=12, request_time_ms=T, exclude=("i4",)),
        Request("u2", k=10, request_time_ms=T, include_seen=True),
    ]


def same(a: object, b: object) -> bool:
    if isinstance(a, Exception) or isinstance(b, Exception):
        return type(a) is type(b) and str(a) == str(b)
    assert isinstance(a, Recommendation) and isinstance(b, Recommendation)
    return (
        a.path is b.path and np.array_equal(a.rows, b.rows) and np.array_equal(a.scores, b.scores)
    )


def test_a_batch_answers_each_request_as_it_would_alone(rec) -> None:
    requests = mixed()
    alone = [rec.recommend_batch([r]).outcomes[0] for r in requests]
    served = rec.recommend_batch(requests)
    assert served.stages.batch == len(requests)
    assert all(same(b, a) for b, a in zip(served.outcomes, alone, strict=True))
    assert isinstance(served.outcomes[2], InvalidRequestError)
    assert isinstance(served.outcomes[6], InvalidRequestError)
    assert "Jazz" in str(served.outcomes[6])


def test_one_reads_per_batch_and_a_late_request_fails_alone(rec, features) -> None:
    requests = mixed()
    deadlines = [time.monotonic() - 1 if i == 1 else time.monotonic() + 60 for i in range(9)]
    served = rec.recommend_batch(requests, deadlines)
    assert features.reads == 1
    assert isinstance(served.outcomes[1], DeadlineExceededError)
    assert isinstance(served.outcomes[0], Recommendation)
    with pytest.raises(DeadlineExceededError):
        rec.recommend(Request("u1"), deadline=time.monotonic() - 1)


def test_stages_name_what_ran(rec, features) -> None:
    embedded = rec.recommend_batch([Request("u1", k=10, request_time_ms=T)]).stages
    assert embedded.plan > 0 and embedded.read > 0 and embedded.embed > 0
    assert embedded.search > 0 and embedded.select > 0 and embedded.batch == 1
    popular = rec.recommend_batch([Request("nobody")]).stages
    assert popular.read > 0 and popular.embed == 0 and popular.search == 0
    invalid = rec.recommend_batch([Request("")]).stages
    assert invalid.read == invalid.embed == invalid.search == invalid.select == 0
    assert invalid.batch == 1 and features.reads == 2


def test_user_vector_is_the_tower_on_the_users_features(rec, bundle, features) -> None:
    user = features.users["u1"]
    np.testing.assert_array_equal(
        rec.user_vector(user, T), bundle.tower.embed(bundle.space, [user], [T])
    )
