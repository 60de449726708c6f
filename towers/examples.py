"""Offline data for the towers: training examples and evaluation queries, point-in-time.

A user's history at a moment is the shared activity fold (``features.activity``) over their
events strictly before that moment, so training sees what the online store would have held.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.activity import (
    EMPTY,
    Activity,
    Interaction,
    apply_events,
    point_in_time,
    ratings_to_interactions,
)
from features.user import UserFeatures
from recsys.data.dataset import Dataset
from towers.encoding import FeatureEncoder, FeatureSpace, Inputs, Vocab


def fit_feature_space(data: Dataset, train: pd.DataFrame, history_length: int) -> FeatureSpace:
    """Vocabularies and buckets: users seen in ``train`` (others fall in the unknown
    bucket), the whole catalog, and each declared feature fitted on its whole table."""
    schema = data.schema
    return FeatureSpace(
        users=Vocab.fit(train["user_id"]),
        items=Vocab.fit(data.items["item_id"]),
        user_features=tuple(
            FeatureEncoder.fit(name, spec, data.users[name])
            for name, spec in schema.user_features.items()
        ),
        item_features=tuple(
            FeatureEncoder.fit(name, spec, data.items[name])
            for name, spec in schema.item_features.items()
        ),
        history_length=history_length,
        filter=schema.filter,
    )


def catalog_inputs(data: Dataset, space: FeatureSpace) -> tuple[list[str], Inputs]:
    """Every catalog item's id and tower inputs, in catalog order."""
    return list(data.items["item_id"]), space.encode_items(data.items)


class Profiles:
    """The user table as profile lookups, to build the same ``UserFeatures`` record offline
    that serving reads from the online store; unknown users get empty profiles."""

    def __init__(self, data: Dataset):
        names = list(data.schema.user_features)
        users = data.users
        columns = [users[n].tolist() for n in names]
        self._rows = {
            user_id: UserFeatures(user_id, tuple(c[i] for c in columns), EMPTY, True)
            for i, user_id in enumerate(users["user_id"])
        }

    def at(self, user_id: str, activity: Activity) -> UserFeatures:
        """The user's features with ``activity``: the profile, or defaults if there is none."""
        known = self._rows.get(user_id)
        if known is None:
            return UserFeatures(user_id, activity=activity)
        return known._replace(activity=activity)


@dataclass(frozen=True)
class Examples:
    """Training examples, row-aligned.

    Attributes:
        users: encoded user inputs at each interaction's moment.
        items: encoded inputs of the interacted item.
        item_rows: ``[n] int64`` the item's row in the catalog (for logQ and accidental hits).
        times_s: ``[n] int64`` each interaction's time (for recency weights).
    """

    users: Inputs
    items: Inputs
    item_rows: np.ndarray
    times_s: np.ndarray


def training_examples(data: Dataset, train: pd.DataFrame, space: FeatureSpace) -> Examples:
    """One example per interaction in ``train``, with the user's history taken point-in-time
    (only strictly earlier events of ``train``) and the interaction time as request time."""
    profiles = Profiles(data)
    ordered = train.sort_values(["user_id", "timestamp"], kind="stable")
    users: list[UserFeatures] = []
    times: list[int] = []
    for user_id, group in ordered.groupby("user_id", sort=False):
        events = ratings_to_interactions(user_id, list(group["item_id"]), list(group["timestamp"]))
        for state, event in zip(point_in_time(events, space.history_length), events, strict=True):
            users.append(profiles.at(user_id, state))
            times.append(event.event_time_ms)
    catalog_ids, catalog = catalog_inputs(data, space)
    rows = pd.Index(catalog_ids).get_indexer(ordered["item_id"]).astype(np.int64)
    items = {k: v[rows] for k, v in catalog.items()}
    return Examples(
        space.encode_users(users, times), items, rows, ordered["timestamp"].to_numpy(np.int64)
    )


class HistoryIndex:
    """Any user's activity at any moment, from a frame of their past interactions."""

    def __init__(self, interactions: pd.DataFrame, history_length: int):
        self._history_length = history_length
        self._events: dict[str, list[Interaction]] = {}
        self._times: dict[str, list[int]] = {}
        for user_id, group in interactions.groupby("user_id"):
            events = sorted(
                ratings_to_interactions(user_id, list(group["item_id"]), list(group["timestamp"])),
                key=lambda e: (e.event_time_ms, e.event_id),
            )
            self._events[user_id] = events
            self._times[user_id] = [e.event_time_ms for e in events]

    def before(self, user_id: str, time_ms: int) -> Activity:
        """The user's activity from events strictly before ``time_ms``."""
        events = self._events.get(user_id)
        if not events:
            return EMPTY
        cut = bisect.bisect_left(self._times[user_id], time_ms)
        return apply_events(EMPTY, events[:cut], self._history_length)

    def last_time(self, user_id: str) -> int:
        """Time of the user's newest event, 0 for none."""
        times = self._times.get(user_id)
        return times[-1] if times else 0


def query_inputs(
    data: Dataset,
    space: FeatureSpace,
    history: HistoryIndex,
    queries: Sequence[tuple[str, int, int]],
) -> Inputs:
    """Encoded user inputs for ``(user_id, history_cutoff_ms, request_time_ms)`` queries."""
    profiles = Profiles(data)
    return space.encode_users(
        [profiles.at(u, history.before(u, cutoff)) for u, cutoff, _ in queries],
        [t for _, _, t in queries],
    )
