"""The array fold (features.history) against the event-by-event fold it computes
(features.activity): the same recent items and seen sets at every event."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evaluation.walk import walk
from features.activity import (
    EMPTY,
    SeenIndex,
    apply_events,
    fold_ratings,
    point_in_time,
    ratings_to_interactions,
)
from features.history import Timelines, final_states

# Ids chosen so event-id order differs from item-id order ("a" vs "a-0": "rating-u-a-5"
# sorts after "rating-u-a-0-5").
ITEMS = ["a", "a-0", "ab", "b", "c", "10", "9", "z"]


def _events(seed: int, n: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "user_id": rng.choice(["u1", "u2", "u-3", "u10"], n),
            "item_id": rng.choice(ITEMS, n),
            # Few distinct seconds: many ties, repeats of one item within a second.
            "timestamp": rng.integers(0, 60, n),
        }
    )


def _reference(frame: pd.DataFrame, history: int) -> list[tuple[tuple[str, ...], set[str]]]:
    """Each event's state by the fold the ingester runs, in the frame's row order."""
    out: list[tuple[tuple[str, ...], set[str]] | None] = [None] * len(frame)
    for user, group in frame.groupby("user_id"):
        group = group.sort_values("timestamp", kind="stable")
        events = ratings_to_interactions(user, list(group["item_id"]), list(group["timestamp"]))
        for row, state in zip(group.index, point_in_time(events, history), strict=True):
            out[row] = (state.recent_items, set(_seen_items(state)))
    return out  # type: ignore[return-value]


def _seen_items(state) -> list[str]:
    rows = SeenIndex(ITEMS).rows(state)
    return [ITEMS[r] for r in rows]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("history", [1, 3, 20])
def test_every_events_recent_items_and_seen_set_are_the_folds(seed, history) -> None:
    frame = _events(seed)
    rows = pd.Index(ITEMS).get_indexer(frame["item_id"])
    timelines = Timelines.of(
        frame["user_id"].to_numpy(object),
        frame["item_id"].to_numpy(object),
        rows,
        frame["timestamp"].to_numpy(),
    )
    recent = timelines.recent_by_event(history)
    sorted_at = np.empty(len(frame), np.int64)
    sorted_at[timelines.order] = np.arange(len(frame))
    for i, (want_recent, want_seen) in enumerate(_reference(frame, history)):
        got = [ITEMS[r] for r in recent[i] if r >= 0]
        assert tuple(got) == want_recent, i
        p = sorted_at[i]
        seen = timelines.seen(int(timelines.cut[p]), int(timelines.start[p]), 1024)
        assert {ITEMS[r] for r in seen} == want_seen
        assert list(seen[: len(got)]) == list(recent[i][: len(got)])  # newest first


def test_the_seen_set_keeps_the_newest_distinct_items_up_to_its_limit() -> None:
    items = np.array([0, 1, 2, 1, 3, 0])
    timelines = Timelines.of(
        np.array(["u"] * 6, object), np.array(list("abcbda"), object), items, np.arange(6)
    )
    assert timelines.seen(6, 0, 3).tolist() == [0, 3, 1]
    assert timelines.seen(6, 0, 10).tolist() == [0, 3, 1, 2]
    assert timelines.recent(np.array([6, 0]), np.array([0, 0]), 2).tolist() == [[0, 3], [-1, -1]]


def test_the_walk_matches_the_fold_on_a_sample_of_a_tied_stream() -> None:
    frame = _events(3, 600)
    known = frame[frame["timestamp"] < 30].reset_index(drop=True)
    part = frame[frame["timestamp"] >= 30].reset_index(drop=True)
    column = {item: c for c, item in enumerate(ITEMS)}
    full = walk(known, part, column, 3)
    sample = walk(known, part, column, 3, max_events=50, seed=7)
    assert len(full) == len(part) and len(sample) == 50

    # The sample is a subsequence of the full walk, in the same order.
    def keys(w):
        return list(zip(w.users, w.times_ms.tolist(), w.targets.tolist(), strict=True))

    rest = iter(keys(full))
    assert all(any(k == other for other in rest) for k in keys(sample))
    for i, (user, t) in enumerate(zip(full.users, full.times_ms.tolist(), strict=True)):
        before = frame[(frame["user_id"] == user) & (frame["timestamp"] * 1000 < t)]
        state = apply_events(
            EMPTY,
            ratings_to_interactions(user, list(before["item_id"]), list(before["timestamp"])),
            3,
        )
        assert [ITEMS[c] for c in full.recent[i] if c >= 0] == list(state.recent_items)
        assert {ITEMS[c] for c in full.seen[i]} == set(before["item_id"])
        past = known[known["user_id"] == user]
        frozen = apply_events(
            EMPTY, ratings_to_interactions(user, list(past["item_id"]), list(past["timestamp"])), 3
        )
        assert [ITEMS[c] for c in full.frozen_recent[i] if c >= 0] == list(frozen.recent_items)


def test_the_walk_refuses_an_unknown_item_and_a_part_before_its_past() -> None:
    frame = _events(4, 50)
    column = {item: c for c, item in enumerate(ITEMS[:-1])}
    late = frame.assign(item_id="b")
    with pytest.raises(ValueError, match="'z' is not in the catalog"):
        walk(late, frame.assign(item_id="z"), column, 3)
    early = late.assign(timestamp=late["timestamp"] + 100)
    with pytest.raises(ValueError, match="earlier than"):
        walk(early, late, column, 3)


@pytest.mark.parametrize("seed", [0, 5])
def test_final_states_are_the_backfill_fold(seed) -> None:
    frame = _events(seed, 500)
    for history in (1, 3):
        assert final_states(frame, history) == fold_ratings(frame, history)
    assert final_states(frame.iloc[:0], 3) == {}
