"""The stream walk: one part's events in event-time order, each with what was known just before.

Both the model and the baselines of :mod:`evaluation.stream` are scored on a walk, so it is
built once per part and read by every :class:`Scorer`. Each event's state is folded by the same
:mod:`features.activity` code the ingester runs, from strictly earlier events only, and its
exclusions are the state's seen set decoded as the server decodes it: the walk asks exactly
what serving is asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from features.activity import (
    EMPTY,
    Activity,
    SeenIndex,
    apply_events,
    point_in_time,
    ratings_to_interactions,
)


@dataclass(frozen=True, eq=False)
class Walk:
    """One part's events in event-time order (ties by event id), each with what was known
    just before it.

    Attributes:
        users: ``[events]`` user ids.
        times_ms: ``[events] int64`` event times.
        targets: ``[events] int64`` catalog columns of the events' items.
        states: ``[events]`` each user's activity just before the event (strictly earlier
            events only, as :func:`features.activity.point_in_time` defines it).
        seen: ``[events]`` ``int64`` columns of every item the user interacted with before:
            the state's seen set (bounded by ``features.activity.SEEN_LIMIT``), decoded as
            the server decodes it.
        frozen_states: ``[events]`` the user's activity at the start of the part.
        frozen_seen: ``[events]`` the items the user had interacted with by then.
        recent: ``[events, history_length] int64`` columns of ``states``' recent items, most
            recent first, ``-1``-padded (for baselines that read the sequence).
    """

    users: list[str]
    times_ms: np.ndarray
    targets: np.ndarray
    states: list[Activity]
    seen: list[np.ndarray]
    frozen_states: list[Activity]
    frozen_seen: list[np.ndarray]
    recent: np.ndarray

    def __len__(self) -> int:
        return len(self.users)

    def sample(self, n: int, seed: int = 0) -> Walk:
        """A uniform sample of ``n`` events (all of them when there are no more), in order:
        every event's state was still folded from all earlier events, sampled or not."""
        if len(self) <= n:
            return self
        rows = np.sort(np.random.default_rng(seed).choice(len(self), n, replace=False))
        return Walk(
            users=[self.users[i] for i in rows],
            times_ms=self.times_ms[rows],
            targets=self.targets[rows],
            states=[self.states[i] for i in rows],
            seen=[self.seen[i] for i in rows],
            frozen_states=[self.frozen_states[i] for i in rows],
            frozen_seen=[self.frozen_seen[i] for i in rows],
            recent=self.recent[rows],
        )


def walk(
    known: pd.DataFrame, part: pd.DataFrame, column: dict[str, int], history_length: int
) -> Walk:
    """Walks ``part`` in event-time order with every user's state folded from ``known`` and
    the earlier events of ``part``.

    Args:
        known: Interactions before the part (``user_id``, ``item_id``, ``timestamp`` s).
        part: The interactions to predict, all at or after ``known``'s.
        column: Item id → catalog column.
        history_length: Recent items kept by the activity fold.

    Returns:
        The walk.
    """
    catalog = SeenIndex(list(column))
    frames = [known.assign(_target=False), part.assign(_target=True)]
    events = pd.concat(frames, ignore_index=True)
    rows: list[tuple[int, str, int, str, Activity, np.ndarray, Activity, np.ndarray]] = []
    for user_id, group in events.groupby("user_id", sort=False):
        interactions = ratings_to_interactions(
            user_id, list(group["item_id"]), list(group["timestamp"])
        )
        paired = sorted(
            zip(interactions, group["_target"], strict=True),
            key=lambda p: (p[0].event_time_ms, p[0].event_id),
        )
        timeline = [event for event, _ in paired]
        frozen = apply_events(EMPTY, [e for e, later in paired if not later], history_length)
        frozen_seen = catalog.rows(frozen)
        states = point_in_time(timeline, history_length)
        for (event, is_target), state in zip(paired, states, strict=True):
            if is_target:
                # Exactly what the server excludes: the state's seen set, decoded.
                rows.append(
                    (event.event_time_ms, event.event_id, column[event.item_id], user_id,
                     state, catalog.rows(state), frozen, frozen_seen)
                )  # fmt: skip
    rows.sort(key=lambda r: (r[0], r[1]))
    recent = np.full((len(rows), history_length), -1, np.int64)
    for i, r in enumerate(rows):
        items = r[4].recent_items[:history_length]
        recent[i, : len(items)] = [column[item] for item in items]
    return Walk(
        users=[r[3] for r in rows],
        times_ms=np.array([r[0] for r in rows], np.int64),
        targets=np.array([r[2] for r in rows], np.int64),
        states=[r[4] for r in rows],
        seen=[r[5] for r in rows],
        frozen_states=[r[6] for r in rows],
        frozen_seen=[r[7] for r in rows],
        recent=recent,
    )


class Scorer(Protocol):
    """Scores the whole catalog for a slice of a walk's events."""

    def __call__(self, walk: Walk, rows: slice) -> np.ndarray:
        """``[rows, items] float``, higher is better."""
        ...
