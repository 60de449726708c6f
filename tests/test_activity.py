"""Tests for features.activity: the one definition of a user's activity features."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

import numpy as np
import pytest

from features.activity import (
    EMPTY,
    HASH_BYTES,
    Activity,
    Interaction,
    SeenIndex,
    _seen_first,
    apply_events,
    item_hash,
    point_in_time,
    rating_event_id,
    ratings_to_interactions,
)
from features.events import decode, encode


def _pit(items: list[str], times: list[int], history_length: int) -> Iterator[Activity]:
    return point_in_time(
        [Interaction(i, t) for i, t in zip(items, times, strict=True)], history_length
    )


def ev(item: str, t: int, event_id: str = "") -> Interaction:
    return Interaction(item, t, event_id)


def _seen(*items: str) -> bytes:
    """A seen set holding ``items``, newest first."""
    return b"".join(map(item_hash, items))


# --------------------------------------------------------------------------------------------
# apply_events


def test_apply_events_puts_most_recent_first() -> None:
    state = apply_events(EMPTY, [ev("a", 1), ev("b", 2), ev("c", 3)], history_length=10)
    assert state == Activity(("c", "b", "a"), 3, "", _seen("c", "b", "a"), 3)


def test_apply_events_orders_by_event_time_not_arrival() -> None:
    arrived = [ev("c", 30, "e3"), ev("a", 10, "e1"), ev("b", 20, "e2")]
    expected = Activity(("c", "b", "a"), 30, "e3", _seen("c", "b", "a"), 3)
    assert apply_events(EMPTY, arrived, history_length=10) == expected
    for seed in range(5):
        shuffled = arrived[:]
        random.Random(seed).shuffle(shuffled)
        assert apply_events(EMPTY, shuffled, history_length=10) == expected


def test_apply_events_breaks_timestamp_ties_by_event_id() -> None:
    # Same time: "e1" is applied before "e2", so e2's item ends up in front.
    forwards = [ev("x", 5, "e1"), ev("y", 5, "e2")]
    backwards = forwards[::-1]
    assert apply_events(EMPTY, forwards, 10).recent_items == ("y", "x")
    assert apply_events(EMPTY, backwards, 10).recent_items == ("y", "x")
    swapped_ids = [ev("x", 5, "e2"), ev("y", 5, "e1")]
    assert apply_events(EMPTY, swapped_ids, 10).recent_items == ("x", "y")


def test_apply_events_moves_a_repeated_item_to_the_front_without_duplicating() -> None:
    state = apply_events(EMPTY, [ev("a", 1), ev("b", 2), ev("c", 3), ev("a", 4)], 10)
    assert state.recent_items == ("a", "c", "b")
    # Also across calls: the stored state already holds the item.
    again = apply_events(state, [ev("b", 5)], 10)
    assert again.recent_items == ("b", "a", "c")


def test_apply_events_truncates_to_history_length_keeping_the_newest() -> None:
    events = [ev(f"i{n}", n) for n in range(1, 8)]
    state = apply_events(EMPTY, events, history_length=3)
    assert state == Activity(
        ("i7", "i6", "i5"), 7, "", _seen(*(f"i{n}" for n in range(7, 0, -1))), 7
    )
    # An item that fell off the end comes back at the front, not as a duplicate.
    state = apply_events(state, [ev("i1", 8)], history_length=3)
    assert state == Activity(
        ("i1", "i7", "i6"), 8, "", _seen("i1", *(f"i{n}" for n in range(7, 1, -1))), 8
    )


def test_apply_events_truncates_an_existing_longer_state() -> None:
    state = Activity(("a", "b", "c", "d"), 4)
    assert apply_events(state, [ev("e", 5)], history_length=2) == Activity(
        ("e", "a"), 5, "", _seen("e"), 1
    )


def test_apply_events_last_event_ms_is_the_max_event_time() -> None:
    state = apply_events(EMPTY, [ev("b", 200, "2"), ev("a", 100, "1")], 10)
    assert state.last_event_ms == 200
    # An older (late) event never moves last_event_ms backwards.
    late = apply_events(state, [ev("c", 50)], 10)
    assert late.last_event_ms == 200


def test_apply_events_with_no_events_is_a_no_op() -> None:
    assert apply_events(EMPTY, [], 5) == EMPTY
    state = Activity(("a", "b"), 123)
    assert apply_events(state, [], 5) == state
    assert apply_events(state, iter(()), 5) == state


def test_apply_events_accepts_a_one_shot_iterator() -> None:
    events = iter([ev("b", 2), ev("a", 1)])
    assert apply_events(EMPTY, events, 10) == Activity(("b", "a"), 2, "", _seen("b", "a"), 2)


# --------------------------------------------------------------------------------------------
# point_in_time


def test_point_in_time_first_event_sees_empty() -> None:
    states = list(_pit(["a"], [100], history_length=5))
    assert states == [EMPTY]


def test_point_in_time_yields_the_state_strictly_before_each_event() -> None:
    states = list(_pit(["a", "b", "c"], [10, 20, 30], history_length=5))
    assert states == [
        EMPTY,
        Activity(("a",), 10, "", _seen("a"), 1),
        Activity(("b", "a"), 20, "", _seen("b", "a"), 2),
    ]


def test_point_in_time_events_sharing_a_timestamp_do_not_see_each_other() -> None:
    items = ["a", "b", "c", "d", "e"]
    times = [10, 20, 20, 20, 30]
    states = list(_pit(items, times, history_length=5))
    assert states[0] == EMPTY
    # b, c, d all happen at 20: each sees only "a".
    assert states[1] == states[2] == states[3] == Activity(("a",), 10, "", _seen("a"), 1)
    # e sees all three, applied in list order (no event ids offline).
    assert states[4] == Activity(("d", "c", "b", "a"), 20, "", _seen("d", "c", "b", "a"), 4)


def test_point_in_time_ties_at_the_very_start_all_see_empty() -> None:
    states = list(_pit(["a", "b", "c"], [7, 7, 8], history_length=5))
    assert states == [EMPTY, EMPTY, Activity(("b", "a"), 7, "", _seen("b", "a"), 2)]


def test_point_in_time_repeats_and_truncation() -> None:
    items = ["a", "b", "c", "a", "d"]
    times = [1, 2, 3, 4, 5]
    states = list(_pit(items, times, history_length=2))
    assert [s.recent_items for s in states] == [(), ("a",), ("b", "a"), ("c", "b"), ("a", "c")]


def test_point_in_time_yields_one_state_per_event() -> None:
    assert list(_pit([], [], history_length=5)) == []
    assert len(list(_pit(list("abcdef"), [1, 1, 2, 3, 3, 3], 5))) == 6


def test_point_in_time_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError):
        list(_pit(["a", "b"], [1], history_length=5))


# --------------------------------------------------------------------------------------------
# One definition, offline and online


HISTORY = 8


def _realistic_history(seed: int = 7) -> list[Interaction]:
    """60 events of one user in time order: bursts sharing a timestamp, repeats of an item.

    Event ids sort the same way as the list within a timestamp, as a producer that sends in
    (time, id) order would deliver them.
    """
    rng = random.Random(seed)
    events: list[Interaction] = []
    t = 1_000_000
    n = 0
    while len(events) < 60:
        t += rng.choice([1_000, 1_000, 60_000, 3_600_000])
        burst = rng.choice([1, 1, 1, 2, 3, 4])
        for _ in range(burst):
            if len(events) == 60:
                break
            # A small catalog so items repeat; "m7" is a favourite seen again and again.
            item = "m7" if rng.random() < 0.15 else f"m{rng.randrange(40)}"
            events.append(Interaction(item, t, f"evt-{n:04d}"))
            n += 1
    return events


def _stream(events: list[Interaction], cuts: list[int], seed: int) -> list[Activity]:
    """Folds ``events`` batch by batch (each batch shuffled, as a Kafka poll may deliver it)
    and returns the state after each batch."""
    rng = random.Random(seed)
    state = EMPTY
    states = []
    bounds = [0, *cuts, len(events)]
    for lo, hi in itertools.pairwise(bounds):
        batch = events[lo:hi]
        rng.shuffle(batch)
        state = apply_events(state, batch, HISTORY)
        states.append(state)
    return states


def _offline_final(events: list[Interaction]) -> Activity:
    """What training sees: point_in_time over the whole list, then the still-pending tail."""
    items = [e.item_id for e in events]
    times = [e.event_time_ms for e in events]
    states = list(_pit(items, times, HISTORY))
    last_t = times[-1]
    first_of_last_group = times.index(last_t)
    pending = events[first_of_last_group:]
    return apply_events(states[first_of_last_group], pending, HISTORY)


def test_realistic_history_has_ties_and_repeats() -> None:
    events = _realistic_history()
    times = [e.event_time_ms for e in events]
    items = [e.item_id for e in events]
    assert len(events) == 60
    assert len(set(times)) < len(times), "needs events sharing a timestamp"
    assert len(set(items)) < len(items), "needs repeated items"
    assert times == sorted(times)
    assert len(set(items)) > HISTORY, "needs truncation to matter"


@pytest.mark.parametrize(
    ("cuts", "seed"),
    [
        ([], 0),  # one batch
        ([1, 2, 3, 5, 8, 13, 21, 34, 55], 1),
        ([17, 18, 40], 2),
        (list(range(1, 60)), 3),  # one event per batch
        ([29], 4),
    ],
)
def test_one_definition_offline_and_online(cuts: list[int], seed: int) -> None:
    events = _realistic_history()
    offline = _offline_final(events)
    online = _stream(events, cuts, seed)[-1]
    assert online == offline
    # And it is the plain fold of everything, with the newest item first.
    assert online == apply_events(EMPTY, events, HISTORY)
    assert online.recent_items[0] == events[-1].item_id
    assert online.last_event_ms == events[-1].event_time_ms


def test_streaming_state_after_every_prefix_matches_point_in_time() -> None:
    events = _realistic_history()
    times = [e.event_time_ms for e in events]
    offline = list(point_in_time(events, HISTORY))

    checked = 0
    for n in range(1, len(events)):
        # The streaming store after the first n events, delivered in a few shuffled batches.
        cuts = sorted({n // 3, (2 * n) // 3} - {0, n})
        online = _stream(events[:n], cuts, seed=n)[-1]
        # The next event with a strictly later timestamp must see exactly this state, once
        # the prefix holds every event up to that timestamp.
        nxt = next((j for j in range(n, len(events)) if times[j] > times[n - 1]), None)
        if nxt is None:
            continue
        if nxt == n:
            assert online == offline[nxt], f"prefix of {n} events"
            checked += 1
        else:
            # A prefix that stops inside a burst: the rest of the burst still sees only what
            # was strictly earlier, and once the rest of the burst arrives the store catches up.
            start = times.index(times[n - 1])
            assert offline[n] == offline[start]
            assert apply_events(online, events[n:nxt], HISTORY) == offline[nxt]
    assert checked >= 30  # most prefixes end on a timestamp boundary


def test_every_point_in_time_state_is_the_fold_of_strictly_earlier_events() -> None:
    events = _realistic_history(seed=11)
    times = [e.event_time_ms for e in events]
    for i, state in enumerate(point_in_time(events, HISTORY)):
        earlier = [e for e in events if e.event_time_ms < times[i]]
        assert state == apply_events(EMPTY, earlier, HISTORY), f"event {i}"


def test_ratings_to_interactions_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError):
        ratings_to_interactions("u", ["a", "b"], [1])


def test_ties_resolve_the_same_offline_and_on_the_stream() -> None:
    """Items "9" and "10" rated in the same second: training (point_in_time over the data set's
    ratings) and the ingester (events as `recsys replay` encodes them, split over two polls at
    a timestamp boundary) agree on the order."""
    items, times = ["9", "10", "3", "200"], [50, 50, 50, 60]
    offline = ratings_to_interactions("7", items, times)
    final_offline = apply_events(list(point_in_time(offline, 5))[-1], offline[-1:], 5)
    streamed = []
    for item, t in zip(items, times, strict=True):
        _, value = encode(rating_event_id("7", item, t), "7", item, t * 1000)
        streamed.append(decode(value)[1])
    final_online = apply_events(apply_events(EMPTY, streamed[:3], 5), streamed[3:], 5)
    assert final_offline == final_online
    assert final_offline.recent_items[0] == "200"


def test_replayed_duplicate_and_late_events_change_nothing() -> None:
    events = [ev("a", 10, "e1"), ev("b", 20, "e2"), ev("c", 30, "e3")]
    state = apply_events(EMPTY, events, 5)
    assert state == Activity(("c", "b", "a"), 30, "e3", _seen("c", "b", "a"), 3)
    # A crash before the offset commit replays the whole batch: nothing changes.
    assert apply_events(state, events, 5) == state
    # A duplicate inside one batch counts once.
    assert apply_events(EMPTY, [*events, events[0]], 5) == state
    # A late event (older than the watermark) is dropped, deterministically.
    assert apply_events(state, [ev("z", 15, "late")], 5) == state
    # Newer events still apply on top.
    assert apply_events(state, [ev("d", 40, "e4")], 5).recent_items == ("d", "c", "b", "a")


def test_same_time_events_past_the_watermark_apply_by_event_id() -> None:
    state = apply_events(EMPTY, [ev("a", 10, "e1")], 5)
    # Same millisecond, a later id: newer. Same millisecond, an earlier id: late.
    assert apply_events(state, [ev("b", 10, "e2")], 5).recent_items == ("b", "a")
    assert apply_events(state, [ev("b", 10, "e0")], 5) == state


# --------------------------------------------------------------------------------------------
# The seen set


def test_the_seen_set_keeps_every_item_newest_first_past_the_history_length() -> None:
    items = [f"i{n}" for n in range(30)]
    state = apply_events(EMPTY, [ev(i, t, str(t)) for t, i in enumerate(items)], 5)
    assert state.recent_items == tuple(reversed(items))[:5]
    catalog = SeenIndex(["unrelated", *items])
    assert catalog.rows(state).tolist() == list(range(30, 0, -1))
    # A repeat moves to the front without duplicating; the bound drops the oldest.
    again = apply_events(state, [ev("i3", 100, "100")], 5, seen_limit=4)
    assert len(again.seen) == 4 * HASH_BYTES
    assert catalog.rows(again).tolist() == [4, 30, 29, 28]


def test_replaying_events_leaves_the_seen_set_unchanged() -> None:
    events = [ev("a", 1, "1"), ev("b", 2, "2"), ev("a", 3, "3")]
    once = apply_events(EMPTY, events, 20)
    assert apply_events(once, events, 20) == once
    assert once.seen == item_hash("a") + item_hash("b")


def test_a_key_straddling_two_entries_is_not_taken_for_that_key() -> None:
    key = b"ABCDEFGH"
    seen = b"xxxxABCD" + b"EFGHyyyy"  # key's bytes at offset 4, across two entries
    assert _seen_first(seen, key) == key + seen
    assert _seen_first(seen + key, key) == key + seen


def test_seen_rows_skip_items_the_catalog_lacks_and_fall_back_to_recent_items() -> None:
    catalog = SeenIndex(["a", "b", "c"])
    state = apply_events(EMPTY, [ev("b", 1, "1"), ev("gone", 2, "2")], 20)
    assert catalog.rows(state).tolist() == [1]
    # A state written before seen sets existed.
    assert catalog.rows(Activity(("c", "nope", "a"), 5, "e")).tolist() == [2, 0]
    assert catalog.rows(EMPTY).tolist() == []
    assert catalog.rows_of(["c", "zzz"]).tolist() == [2]


@pytest.mark.parametrize("size", [0, 1, 7, 1682, 20_000])
def test_seen_rows_are_what_a_dictionary_of_first_rows_gives(size) -> None:
    """The hash table against the obvious reference: every held id found at its first row,
    absent ids left out, order kept, whatever the catalog's size and collisions."""
    rng = np.random.default_rng(size)
    ids = [f"item-{n}" for n in rng.integers(0, max(1, size), size)]  # duplicates too
    first: dict[str, int] = {}
    for row, item in enumerate(ids):
        first.setdefault(item, row)
    catalog = SeenIndex(ids)
    asked = [*rng.permutation(ids)[:300].tolist(), *(f"absent-{n}" for n in range(50))]
    asked = [asked[i] for i in rng.permutation(len(asked))]
    assert catalog.rows_of(asked).tolist() == [first[i] for i in asked if i in first]
    assert catalog.rows_of(list(first)).tolist() == list(first.values())


def test_lookup_aligns_rows_with_the_ids_and_marks_unknown_ones() -> None:
    catalog = SeenIndex(["a", "b", "c"])
    np.testing.assert_array_equal(catalog.lookup(["c", "zz", "a", "c"]), [2, -1, 0, 2])
    np.testing.assert_array_equal(catalog.lookup([]), np.zeros(0, np.int64))
    np.testing.assert_array_equal(SeenIndex([]).lookup(["a"]), [-1])
