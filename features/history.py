"""Point-in-time activity for many events at once: what :func:`features.activity.point_in_time`
folds event by event, computed on whole arrays (training examples and the stream walk at
10 M events, where the event-by-event fold takes minutes).

The same order, the same rule: a user's events in time order, events of one second in
event-id order (as :func:`features.activity.apply_events` applies them); the state before
an event holds the user's events of strictly earlier seconds; its recent items are the
distinct items among them, most recent first, and its seen set the same list, longer.
``tests/test_history.py`` checks every state against the fold itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.activity import SEEN_LIMIT, Activity, item_hash, rating_event_id


@dataclass(frozen=True, eq=False)
class Timelines:
    """Many users' events in the fold's order.

    Attributes:
        order: ``[n]`` positions of the given events, in the fold's order (users together).
        items: ``[n]`` their items (integers), in that order.
        start: ``[n]`` where each sorted event's user begins.
        cut: ``[n]`` where each sorted event's second begins: its state holds the user's
            events from ``start`` up to here.
        following: ``[n]`` the position of the same user's next event of the same item
            (``n`` for none): an event at ``j < cut`` is the item's newest before the cut
            exactly when ``following[j] >= cut``.
    """

    order: np.ndarray
    items: np.ndarray
    start: np.ndarray
    cut: np.ndarray
    following: np.ndarray

    @classmethod
    def of(
        cls,
        user_ids: np.ndarray,
        item_ids: np.ndarray,
        item_rows: np.ndarray,
        times_s: np.ndarray,
    ) -> Timelines:
        """Sorts events into the fold's order.

        Args:
            user_ids: ``[n]`` the events' users.
            item_ids: ``[n]`` their items' ids (the event ids that order one second use them).
            item_rows: ``[n]`` the same items as non-negative integers (catalog rows).
            times_s: ``[n]`` the events' times in seconds.
        """
        n = len(user_ids)
        users = pd.factorize(user_ids)[0].astype(np.int64)
        times_s = np.asarray(times_s, np.int64)
        rank = np.zeros(n, np.int64)
        tie = pd.DataFrame({"u": users, "t": times_s}).duplicated(keep=False).to_numpy()
        if tie.any():
            at = np.flatnonzero(tie)
            ids = [rating_event_id(user_ids[i], item_ids[i], int(times_s[i])) for i in at]
            rank[at] = pd.Series(ids).rank(method="dense").to_numpy(np.int64)
        order = np.lexsort((rank, times_s, users))
        u, t = users[order], times_s[order]
        items = np.asarray(item_rows, np.int64)[order]
        positions = np.arange(n)
        new_user = np.r_[True, u[1:] != u[:-1]] if n else np.zeros(0, bool)
        new_time = new_user | (np.r_[True, t[1:] != t[:-1]] if n else new_user)
        start = np.maximum.accumulate(np.where(new_user, positions, 0)) if n else positions
        cut = np.maximum.accumulate(np.where(new_time, positions, 0)) if n else positions
        following = np.full(n, n, np.int64)
        if n:
            pair = u * (int(items.max()) + 1) + items
            by_pair = np.argsort(pair, kind="stable")
            same = pair[by_pair[1:]] == pair[by_pair[:-1]]
            following[by_pair[:-1][same]] = by_pair[1:][same]
        return cls(order, items, start, cut, following)

    def recent(self, cuts: np.ndarray, starts: np.ndarray, n: int) -> np.ndarray:
        """``[len(cuts), n] int64``: for each state (the events from ``starts[i]`` up to
        ``cuts[i]``, sorted positions), its distinct items, most recent first, -1-padded."""
        unique, first, back_to = np.unique(cuts, return_index=True, return_inverse=True)
        begin = np.asarray(starts, np.int64)[first]
        found = np.full((len(unique), n), -1, np.int64)
        filled = np.zeros(len(unique), np.int64)
        back = unique - 1
        active = np.flatnonzero(back >= begin)
        while active.size:
            j = back[active]
            keep = self.following[j] >= unique[active]
            kept = active[keep]
            found[kept, filled[kept]] = self.items[j[keep]]
            filled[kept] += 1
            back[active] -= 1
            active = active[(back[active] >= begin[active]) & (filled[active] < n)]
        return found[back_to.reshape(-1)]

    def seen(self, cut: int, start: int, limit: int) -> np.ndarray:
        """The distinct items of one state (sorted positions ``start`` up to ``cut``), most
        recent first, at most ``limit``: its seen set."""
        newest_first = self.items[start:cut][::-1]
        values, first = np.unique(newest_first, return_index=True)
        kept: np.ndarray = values[np.argsort(first, kind="stable")][:limit]
        return kept

    def recent_by_event(self, n: int) -> np.ndarray:
        """``[events, n]``: :meth:`recent` at every event, in the events' given order."""
        out = np.empty((len(self.order), n), np.int64)
        out[self.order] = self.recent(self.cut, self.start, n)
        return out


def final_states(ratings: pd.DataFrame, history_length: int) -> dict[str, Activity]:
    """Each user's state after all of their ratings (``user_id``, ``item_id``, ``timestamp``
    in seconds): :func:`features.activity.fold_ratings` on arrays (the feature backfill of
    a 10 M-event history in seconds rather than minutes)."""
    if not len(ratings):
        return {}
    user_ids = ratings["user_id"].to_numpy(object)
    item_ids = ratings["item_id"].to_numpy(object)
    times_s = ratings["timestamp"].to_numpy(np.int64)
    items, catalog = pd.factorize(item_ids)
    timelines = Timelines.of(user_ids, item_ids, items, times_s)
    n = len(timelines.order)
    starts = np.flatnonzero(np.r_[True, timelines.start[1:] != timelines.start[:-1]])
    ends = np.r_[starts[1:], n]
    recent = timelines.recent(ends, starts, history_length)
    keys = np.frombuffer(b"".join(map(item_hash, catalog)), "<u8")
    # An event id names (user, item, second): a repeat of one is applied once.
    sorted_users = user_ids[timelines.order]
    sorted_times = times_s[timelines.order]
    repeat = np.r_[
        False,
        (timelines.items[1:] == timelines.items[:-1])
        & (sorted_times[1:] == sorted_times[:-1])
        & (timelines.start[1:] == timelines.start[:-1]),
    ]
    counted = np.add.reduceat(~repeat, starts) if n else np.zeros(0, np.int64)
    out: dict[str, Activity] = {}
    for u, (start, end) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        last = end - 1
        seen = timelines.seen(end, start, SEEN_LIMIT)
        out[sorted_users[start]] = Activity(
            tuple(catalog[r] for r in recent[u] if r >= 0),
            int(sorted_times[last]) * 1000,
            rating_event_id(
                sorted_users[last], catalog[timelines.items[last]], int(sorted_times[last])
            ),
            keys[seen].tobytes(),
            int(counted[u]),
        )
    return out
