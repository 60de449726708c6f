"""The one definition of a user's activity features.

The same code builds training examples (point-in-time: only events strictly before each
interaction) and updates the online store from the Kafka stream, so training and serving
cannot drift apart.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd

SEEN_LIMIT = 1024
"""The most items a user's seen set keeps, newest first (8 bytes each: 8 KB at the limit).
Exclude-seen covers a user's whole history up to this many items; MovieLens-100K's heaviest
user has 737."""
HASH_BYTES = 8


@dataclass(frozen=True)
class Interaction:
    """One user-item interaction, as far as the activity features care."""

    item_id: str
    event_time_ms: int
    event_id: str = ""


class Activity(NamedTuple):
    """A user's activity state (a named tuple: one is built per user on every Recommend
    request, and a frozen dataclass costs several times as much to build).

    Attributes:
        recent_items: The user's most recent distinct items, most recent first.
        last_event_ms: Event time of the newest event applied, 0 for none.
        last_event_id: That event's id: with ``last_event_ms``, the watermark below which
            events are duplicates or late and change nothing.
        seen: Every distinct item the user interacted with, newest first, up to
            :data:`SEEN_LIMIT`: each item's :func:`item_hash` as 8 little-endian bytes, so
            one bytes feature holds the set and NumPy decodes it in one call
            (:class:`SeenIndex`). What exclude-seen removes, in serving and in evaluation.
        events: How many events the state has applied. It only grows, so with
            ``last_event_ms`` it orders a user's successive states even when events share
            a timestamp (the online store's write time, :mod:`features.store`); the
            ranker reads it as the user's activity count.
    """

    recent_items: tuple[str, ...] = ()
    last_event_ms: int = 0
    last_event_id: str = ""
    seen: bytes = b""
    events: int = 0

    def is_newer(self, event: Interaction) -> bool:
        """True when ``event`` is past this state's watermark (in time, then event id)."""
        return (event.event_time_ms, event.event_id) > (self.last_event_ms, self.last_event_id)


EMPTY = Activity()


def item_hash(item_id: str) -> bytes:
    """An item id's 8-byte key in a seen set (BLAKE2b: stable across processes and
    machines, unlike ``hash``). Two ids collide with probability ~2^-64 per pair."""
    return hashlib.blake2b(item_id.encode(), digest_size=HASH_BYTES).digest()


def _seen_first(seen: bytes, key: bytes) -> bytes:
    """``seen`` with ``key`` moved (or added) to the front."""
    at = seen.find(key)
    while at >= 0 and at % HASH_BYTES:  # a match straddling two keys is not this key
        at = seen.find(key, at + 1)
    if at >= 0:
        seen = seen[:at] + seen[at + HASH_BYTES :]
    return key + seen


def apply_events(
    state: Activity,
    events: Iterable[Interaction],
    history_length: int,
    seen_limit: int = SEEN_LIMIT,
) -> Activity:
    """Folds events into a user's activity state.

    Events are applied in event-time order (ties broken by event id) so the result does not
    depend on the order a batch arrived in. An item seen again moves to the front. Events at
    or below the state's watermark (a replay after a crash, a duplicate, a late arrival) and
    repeats of an event id within the batch are skipped, so applying the same events twice
    gives the same state as applying them once.

    Args:
        state: The state before these events.
        events: The user's new events, any order.
        history_length: How many recent items to keep.
        seen_limit: How many items the seen set keeps.

    Returns:
        The new state.
    """
    recent = list(state.recent_items)
    seen = state.seen
    last = (state.last_event_ms, state.last_event_id)
    applied: set[str] = set()
    count = state.events
    for event in sorted(events, key=lambda e: (e.event_time_ms, e.event_id)):
        if not state.is_newer(event) or (event.event_id and event.event_id in applied):
            continue
        applied.add(event.event_id)
        count += 1
        if event.item_id in recent:
            recent.remove(event.item_id)
        recent.insert(0, event.item_id)
        seen = _seen_first(seen, item_hash(event.item_id))
        last = max(last, (event.event_time_ms, event.event_id))
    return Activity(tuple(recent[:history_length]), *last, seen[: seen_limit * HASH_BYTES], count)


class SeenIndex:
    """Decodes seen sets into rows of one catalog (an index version's or the data set's).

    Args:
        item_ids: The catalog, row by row.
    """

    def __init__(self, item_ids: Sequence[str]):
        keys = np.frombuffer(b"".join(map(item_hash, item_ids)), "<u8")
        self._order = np.argsort(keys, kind="stable")
        self._keys = keys[self._order]

    def rows(self, activity: Activity) -> np.ndarray:
        """``[n] int64`` catalog rows of the items ``activity`` has seen, newest first (items
        the catalog does not hold are left out); its recent items' when it has no seen set
        (a state written before seen sets existed)."""
        if activity.seen:
            return self._rows(np.frombuffer(activity.seen, "<u8"))
        return self.rows_of(activity.recent_items)

    def rows_of(self, item_ids: Sequence[str]) -> np.ndarray:
        """``[n] int64`` catalog rows of those of ``item_ids`` the catalog holds, in order."""
        if not item_ids:
            return np.zeros(0, np.int64)
        return self._rows(np.frombuffer(b"".join(map(item_hash, item_ids)), "<u8"))

    def lookup(self, item_ids: Sequence[str]) -> np.ndarray:
        """``[len(item_ids)] int64`` each id's catalog row, ``-1`` where the catalog does not
        hold it (aligned with ``item_ids``, unlike :meth:`rows_of`)."""
        if not len(self._keys):
            return np.full(len(item_ids), -1, np.int64)
        if not len(item_ids):
            return np.zeros(0, np.int64)
        keys = np.frombuffer(b"".join(map(item_hash, item_ids)), "<u8")
        at, found = self._find(keys)
        return np.where(found, self._order[at], -1).astype(np.int64)

    def _find(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        at = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
        return at, self._keys[at] == keys

    def _rows(self, keys: np.ndarray) -> np.ndarray:
        if not len(self._keys):
            return np.zeros(0, np.int64)
        at, found = self._find(keys)
        rows: np.ndarray = self._order[at[found]].astype(np.int64)
        return rows


def point_in_time(events: Sequence[Interaction], history_length: int) -> Iterator[Activity]:
    """Yields, for each of one user's time-ordered events, the state just before it.

    Events sharing a timestamp do not see each other: only events strictly earlier count,
    which is what the online store could have known at that moment.

    Args:
        events: The user's events, ordered by event time.
        history_length: How many recent items to keep.
    """
    state = EMPTY
    pending: list[Interaction] = []
    for event in events:
        if pending and pending[0].event_time_ms < event.event_time_ms:
            state = apply_events(state, pending, history_length)
            pending = []
        yield state
        pending.append(event)


def rating_event_id(user_id: str, item_id: str, timestamp_s: int) -> str:
    """The event id a data-set rating carries on the stream.

    Training and the feature backfill name ratings the same way, so events sharing a
    timestamp are ordered identically offline and online.
    """
    return f"rating-{user_id}-{item_id}-{timestamp_s}"


def ratings_to_interactions(
    user_id: str, item_ids: Sequence[str], timestamps_s: Sequence[int]
) -> list[Interaction]:
    """One user's data-set ratings as interactions (seconds → milliseconds)."""
    return [
        Interaction(item, int(t) * 1000, rating_event_id(user_id, item, int(t)))
        for item, t in zip(item_ids, timestamps_s, strict=True)
    ]


def fold_ratings(ratings: pd.DataFrame, history_length: int) -> dict[str, Activity]:
    """Each user's state after all of their ratings (``user_id``, ``item_id``, ``timestamp``
    in seconds), folded from scratch: the feature backfill, and what a store that ingested
    those ratings must hold."""
    return {
        user_id: apply_events(
            EMPTY,
            ratings_to_interactions(user_id, list(group["item_id"]), list(group["timestamp"])),
            history_length,
        )
        for user_id, group in ratings.groupby("user_id")
    }
