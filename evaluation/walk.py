"""The stream walk: one part's events in event-time order, each with what was known just before.

Both the model and the baselines of :mod:`evaluation.stream` are scored on a walk, so it is
built once per part and read by every :class:`Scorer`. Each event's state is the one the
ingester's :mod:`features.activity` fold would hold, from strictly earlier events only
(computed on arrays by :mod:`features.history`, and tested against the fold), and its
exclusions are the state's seen set: the walk asks exactly what serving is asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from features.activity import SEEN_LIMIT, rating_event_id
from features.history import Timelines


@dataclass(frozen=True, eq=False)
class Walk:
    """One part's events in event-time order (ties by event id), each with what was known
    just before it.

    Attributes:
        users: ``[events]`` user ids.
        times_ms: ``[events] int64`` event times.
        targets: ``[events] int64`` catalog columns of the events' items.
        recent: ``[events, history_length] int64`` the user's recent items just before the
            event (strictly earlier events only, as :func:`features.activity.point_in_time`
            defines the state), as catalog columns, most recent first, ``-1``-padded.
        seen: ``[events]`` ``int64`` columns of every item the user interacted with before:
            the state's seen set (bounded by ``features.activity.SEEN_LIMIT``).
        frozen_recent: ``[events, history_length]`` the recent items at the start of the part.
        frozen_seen: ``[events]`` the items the user had interacted with by then.
        last_ms: ``[events] int64`` the time of the user's latest earlier event (``-1``:
            none), as the state's watermark holds it.
        earlier: ``[events] int64`` how many earlier events the user has (the state's
            event count).
    """

    users: list[str]
    times_ms: np.ndarray
    targets: np.ndarray
    recent: np.ndarray
    seen: list[np.ndarray]
    frozen_recent: np.ndarray
    frozen_seen: list[np.ndarray]
    last_ms: np.ndarray | None = None
    earlier: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.users)


def walk(
    known: pd.DataFrame,
    part: pd.DataFrame,
    column: dict[str, int],
    history_length: int,
    max_events: int | None = None,
    seed: int = 0,
) -> Walk:
    """Walks ``part`` in event-time order with every user's state folded from ``known`` and
    the earlier events of ``part`` (``features.history.Timelines``: the fold on arrays).

    Args:
        known: Interactions before the part (``user_id``, ``item_id``, ``timestamp`` s).
        part: The interactions to predict, all later than ``known``'s.
        column: Item id → catalog column.
        history_length: Recent items kept by the activity fold.
        max_events: Keep a uniform sample of this many of the part's events (seeded by
            ``seed``), in order; every event still counts in the later ones' states.

    Returns:
        The walk.

    Raises:
        ValueError: An item the catalog lacks, or a known event not earlier than its
            user's first event of the part.
    """
    events = pd.concat([known, part], ignore_index=True)
    user_ids = events["user_id"].to_numpy(object)
    item_ids = events["item_id"].to_numpy(object)
    times_s = events["timestamp"].to_numpy(np.int64)
    at = pd.Index(list(column)).get_indexer(item_ids)
    if (at < 0).any():
        raise ValueError(f"item {item_ids[np.argmax(at < 0)]!r} is not in the catalog")
    columns = np.fromiter(column.values(), np.int64, len(column))[at]
    timelines = Timelines.of(user_ids, item_ids, columns, times_s)
    is_target = timelines.order >= len(known)  # sorted positions of the part's events
    # Each user's known events must come first: the frozen state is that prefix.
    target_sorted = np.flatnonzero(is_target)
    known_count = np.bincount(
        timelines.start[~is_target], minlength=len(timelines.order)
    )  # by user start
    late = (target_sorted - timelines.start[target_sorted]) < known_count[
        timelines.start[target_sorted]
    ]
    if late.any():
        raise ValueError("the part has an event earlier than one of its user's known events")
    # Event-time order across users, ties by event id (as the stream would deliver them).
    original = timelines.order[target_sorted]
    event_ids = [rating_event_id(user_ids[i], item_ids[i], int(times_s[i])) for i in original]
    tiebreak = pd.Series(event_ids).rank(method="dense").to_numpy(np.int64)
    by_time = np.lexsort((tiebreak, times_s[original]))
    chosen = target_sorted[by_time]
    if max_events is not None and len(chosen) > max_events:
        rows = np.sort(np.random.default_rng(seed).choice(len(chosen), max_events, replace=False))
        chosen = chosen[rows]
    starts = timelines.start[chosen]
    cuts = timelines.cut[chosen]
    frozen_cuts = starts + known_count[starts]
    frozen_seen: dict[int, np.ndarray] = {}
    for start, cut in zip(starts.tolist(), frozen_cuts.tolist(), strict=True):
        if start not in frozen_seen:
            frozen_seen[start] = timelines.seen(cut, start, SEEN_LIMIT)
    original = timelines.order[chosen]
    return Walk(
        users=user_ids[original].tolist(),
        times_ms=times_s[original] * 1000,
        targets=columns[original],
        recent=timelines.recent(cuts, starts, history_length),
        seen=[
            timelines.seen(c, s, SEEN_LIMIT)
            for s, c in zip(starts.tolist(), cuts.tolist(), strict=True)
        ],
        frozen_recent=timelines.recent(frozen_cuts, starts, history_length),
        frozen_seen=[frozen_seen[s] for s in starts.tolist()],
        last_ms=np.where(
            cuts > starts, times_s[timelines.order[np.maximum(cuts - 1, 0)]] * 1000, -1
        ),
        earlier=(cuts - starts).astype(np.int64),
    )


class Scorer(Protocol):
    """Scores the whole catalog for a slice of a walk's events. Called for several slices
    at once from different threads (``StreamEvaluator.ranks``): it must not change shared
    state."""

    def __call__(self, walk: Walk, rows: slice) -> np.ndarray:
        """``[rows, items] float``, higher is better."""
        ...
