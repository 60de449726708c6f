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
    ratings_to_interactions,
)
from features.history import Timelines
from features.user import UserFeatures
from recsys.data.dataset import Dataset
from towers.encoding import (
    FeatureEncoder,
    FeatureSpace,
    Inputs,
    Vocab,
    days_of_week,
    hours_of_day,
)


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
        catalog: every catalog item's encoded inputs, in catalog order (``catalog_inputs``):
            an example's item inputs are these rows at ``item_rows``, gathered batch by batch
            so 10 M examples do not hold 10 M copies of their items' features.
        item_rows: ``[n] int64`` the item's row in the catalog.
        times_s: ``[n] int64`` each interaction's time (for recency weights).
    """

    users: Inputs
    catalog: Inputs
    item_rows: np.ndarray
    times_s: np.ndarray

    @property
    def items(self) -> Inputs:
        """The interacted items' inputs, one row per example (materialised: for tests)."""
        return {k: v[self.item_rows] for k, v in self.catalog.items()}


def training_examples(data: Dataset, train: pd.DataFrame, space: FeatureSpace) -> Examples:
    """One example per interaction in ``train``, with the user's history taken point-in-time
    (only strictly earlier events of ``train``) and the interaction time as request time.

    The history is :func:`features.activity.point_in_time`'s fold computed on whole arrays
    (``features.history.Timelines``): the same recent items, in the same order.
    """
    ordered = train.sort_values(["user_id", "timestamp"], kind="stable")
    catalog_ids, catalog = catalog_inputs(data, space)
    catalog_index = pd.Index(catalog_ids)
    rows = catalog_index.get_indexer(ordered["item_id"]).astype(np.int64)
    user_ids = ordered["user_id"].to_numpy(object)
    times_s = ordered["timestamp"].to_numpy(np.int64)
    timelines = Timelines.of(user_ids, ordered["item_id"].to_numpy(object), rows, times_s)
    recent = timelines.recent_by_event(space.history_length)
    users = user_inputs(data, space, catalog["item"], user_ids, recent, times_s * 1000)
    return Examples(users, catalog, rows, times_s)


def user_inputs(
    data: Dataset,
    space: FeatureSpace,
    item_codes: np.ndarray,
    user_ids: np.ndarray,
    recent: np.ndarray,
    times_ms: np.ndarray,
) -> Inputs:
    """``FeatureSpace.encode_users`` for many users at once, from arrays: their ids, their
    recent items as catalog rows (``[n, history_length]``, -1-padded) and request times.

    Args:
        item_codes: ``[catalog]`` each catalog row's item vocabulary id (``catalog_inputs``).
    """
    history = np.where(recent >= 0, item_codes[np.maximum(recent, 0)], 0).astype(np.int32)
    users = _codes(space.users.values, user_ids)
    inputs: Inputs = {"user": users}
    multi: Inputs = {}
    if space.user_features:
        profile_rows = pd.Index(data.users["user_id"]).get_indexer(user_ids)
        for f in space.user_features:
            # The profile table encoded once, plus the row a user without a profile gets.
            table = f.column([*data.users[f.name].tolist(), None])
            (multi if f.multi else inputs)[f"user_{f.name}"] = table[profile_rows]
    inputs["hour"] = hours_of_day(times_ms).astype(np.int32)
    inputs["weekday"] = days_of_week(times_ms).astype(np.int32)
    inputs = {name: inputs[name] for name in space.user_inputs}
    return {**inputs, **multi, "history": history}


def _codes(values: Sequence[str], ids: np.ndarray) -> np.ndarray:
    """``Vocab.lookup_many`` for many ids at once: ``[n] int32``, 0 for unknown ids."""
    at = pd.Index(values).get_indexer(ids)
    return np.where(at >= 0, at + 1, 0).astype(np.int32)


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
