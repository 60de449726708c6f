"""The hot path over a version and its catalog overlay (tiny bundle, fast tier), held to
brute force over the changed catalog: deleted and replaced items never answered (personal,
filtered and popular answers alike), new items searched, filtered, banned once seen and
named on the wire; a batch sees one overlay whole."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from catalog.events import ItemChange
from catalog.overlay import Overlay
from index.items import tag_bits
from recsys.config import KafkaConfig, ServingConfig
from recsys.v1 import recommender_pb2 as pb
from serving.recommender import Recommender
from serving.request import Request
from serving.topic_feed import TopicFeed
from serving.wire import Encoders
from tests import tiny

T = 889_000_000_000
ITEMS = 300


@pytest.fixture(scope="module")
def bundle():
    return tiny.bundle(ITEMS)


def _query(bundle, user) -> np.ndarray:
    return bundle.tower.embed(bundle.space, [user], [T])[0]


def _overlay(bundle, deleted, added: dict[str, tuple[np.ndarray, tuple[str, ...]]]) -> Overlay:
    changes = [ItemChange(f"d{i}", item, 1, None) for i, item in enumerate(deleted)]
    changes += [ItemChange(f"u{i}", item, 2, {}) for i, item in enumerate(added)]
    vectors = np.array([v for v, _ in added.values()], np.float32).reshape(-1, tiny.DIM)
    tags = tag_bits([g for _, g in added.values()], bundle.meta.filter_values)
    empty = Overlay.empty(ITEMS, tiny.DIM, bundle.meta.tags.shape[1])
    return empty.apply(changes, vectors, tags, bundle.seen.lookup, {0: len(changes)})


def test_the_overlay_is_served_as_the_changed_catalog(bundle) -> None:
    u1 = tiny.user("u1", ["i3"])
    features = tiny.DictFeatures({"u1": u1})
    rec = Recommender(bundle, features, ServingConfig())
    query = _query(bundle, u1)
    before = [i.item_id for i in rec.recommend(Request("u1", k=10, request_time_ms=T)).items]
    popular = [i.item_id for i in rec.recommend(Request("cold", k=5)).items]
    unit = (query / np.linalg.norm(query)).astype(np.float32)
    # The best item deleted, the second replaced by a far worse vector, a new item that is
    # the best of all (the query's own direction), and a new one no query reaches.
    overlay = _overlay(
        bundle,
        [before[0], popular[0]],
        {before[1]: (-unit, ("Comedy",)), "fresh": (unit, ("Rare",)), "far": (-unit, ())},
    )
    rec.set_overlay(overlay)
    after = rec.recommend(Request("u1", k=10, request_time_ms=T))
    got = [i.item_id for i in after.items]
    assert got[0] == "fresh" and after.scores[0] == pytest.approx(float(unit @ query), rel=1e-5)
    assert before[0] not in got and before[1] not in got and "far" not in got
    assert got[1:9] == before[2:] and got[9] not in before  # the next best moves up
    # Filters reach the overlay: only "fresh" is Rare among the new items.
    rare = rec.recommend(Request("u1", k=3, request_time_ms=T, include_genres=("Rare",)))
    assert rare.items[0].item_id == "fresh"
    comedy = rec.recommend(Request("u1", k=50, request_time_ms=T, include_genres=("Comedy",)))
    assert before[1] not in [i.item_id for i in comedy.items]  # hidden, and "far"-scored
    # A deleted popular item is never the cold-start answer.
    cold = [i.item_id for i in rec.recommend(Request("cold", k=5)).items]
    assert popular[0] not in cold and cold == [i for i in popular if i != popular[0]][:4] + cold[4:]
    # Once seen, a new item is banned like any other; with include_seen it comes back.
    features.users["u1"] = tiny.user("u1", ["fresh", "i3"])
    again = [i.item_id for i in rec.recommend(Request("u1", k=10, request_time_ms=T)).items]
    assert "fresh" not in again
    # The wire names overlay rows by their ids.
    wire = pb.RecommendResponse.FromString(Encoders().encode(after))
    assert [i.item_id for i in wire.items] == got


def test_an_empty_overlay_is_the_version_itself(bundle) -> None:
    rec = Recommender(bundle, tiny.DictFeatures(), ServingConfig())
    rec.set_overlay(Overlay.empty(ITEMS, tiny.DIM, bundle.meta.tags.shape[1], {0: 5}))
    assert rec.view.overlay is None and rec.view.filters.params(0, 0) is None


def test_a_feed_starts_at_the_versions_offsets_only_for_the_topic_it_recorded(bundle) -> None:
    built = dataclasses.replace(bundle, catalog_positions={0: 7}, catalog_topic="cat.v1")
    assert built.catalog_start("cat.v1") == {0: 7}
    assert built.catalog_start("cat.other") == {}  # another topic: from its beginning
    unread = dataclasses.replace(bundle, catalog_positions=None, catalog_topic=None)
    assert unread.catalog_start("cat.v1") == {}


class _Consumer:
    """kafka-python's consumer as far as ``TopicFeed.lag`` reads it."""

    def __init__(self, high: dict[int, int | None], at: dict[int, int]):
        self._high, self._at = high, at

    def assignment(self) -> set[int]:
        return set(self._at)

    def highwater(self, tp: int) -> int | None:
        return self._high[tp]

    def position(self, tp: int) -> int:
        return self._at[tp]


def test_a_feeds_lag_is_what_its_partitions_hold_past_its_position() -> None:
    feed = TopicFeed(KafkaConfig(), "test feed")
    assert feed.lag() is None  # not reading
    feed._consumer = _Consumer({0: 10, 1: 4}, {0: 7, 1: 4})
    assert feed.lag() == 3
    feed._consumer = _Consumer({0: 10, 1: None}, {0: 7, 1: 0})
    assert feed.lag() is None  # a partition not fetched yet: not known
