"""The feature update of the ingester, apart from Kafka: a batch of raw events checked,
folded into each user's stored state with the shared activity function, and written back
in one push.

Replaying a batch changes nothing: every stored state carries the watermark (time, event
id) of the newest event it holds, and events at or below it are skipped. The states of
users seen recently are kept in a bounded cache between batches, so a busy user's state is
read from the store once, not once per batch (see ``StateCache``).
"""

from __future__ import annotations

import time
from collections import OrderedDict, defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field

from features.activity import Activity, Interaction, apply_events
from features.events import decode
from features.store import OnlineFeatures
from recsys.errors import DataError

EARLIEST_EVENT_MS = 631_152_000_000
"""1990-01-01: anything earlier is a corrupt timestamp (MovieLens-100K starts in 1997)."""
MAX_CLOCK_SKEW_MS = 86_400_000
"""Events from more than a day in the future are corrupt, not early."""


@dataclass
class IngestStats:
    events: int = 0
    dead_letters: int = 0
    skipped: int = 0
    """Duplicates and late events: at or below the user's stored watermark."""
    batches: int = 0
    users_written: int = 0
    started: float = field(default_factory=time.monotonic)

    def summary(self) -> str:
        rate = self.events / max(time.monotonic() - self.started, 1e-9)
        return (
            f"ingested {self.events:,} events ({rate:,.0f}/s) in {self.batches:,} batches, "
            f"{self.users_written:,} user writes, {self.skipped:,} duplicate/late, "
            f"{self.dead_letters:,} dead letters"
        )


def check(raw: bytes, catalog: Collection[str] | None, now_ms: int) -> tuple[str, Interaction]:
    """Decodes one event and checks it can be used.

    Raises:
        DataError: undecodable, a field missing, an item not in ``catalog``, or an absurd
            event time; the message is the dead letter's reason.
    """
    user_id, event = decode(raw)
    if catalog is not None and event.item_id not in catalog:
        raise DataError(f"event {event.event_id}: unknown item {event.item_id!r}")
    if not EARLIEST_EVENT_MS <= event.event_time_ms <= now_ms + MAX_CLOCK_SKEW_MS:
        raise DataError(f"event {event.event_id}: absurd event_time_ms {event.event_time_ms}")
    return user_id, event


class StateCache:
    """The activity states this ingester last wrote or read, for the users of its partitions.

    All of a user's events go to one partition (they are keyed by user id) and a partition
    has one owner in the consumer group, so between rebalances this ingester is the only
    writer of these users' states and the cache equals the store. It must be cleared on
    every rebalance: a partition that comes back may have been written by another owner
    meanwhile. Least recently used users are dropped beyond ``max_users``.
    """

    def __init__(self, max_users: int):
        self.max_users = max_users
        self._states: OrderedDict[str, Activity] = OrderedDict()

    def __len__(self) -> int:
        return len(self._states)

    def get(self, users: Collection[str]) -> dict[str, Activity]:
        """The cached states among ``users``."""
        found = {}
        for user in users:
            state = self._states.get(user)
            if state is not None:
                self._states.move_to_end(user)
                found[user] = state
        return found

    def put(self, states: dict[str, Activity]) -> None:
        for user, state in states.items():
            self._states[user] = state
            self._states.move_to_end(user)
        while len(self._states) > self.max_users:
            self._states.popitem(last=False)

    def clear(self) -> None:
        self._states.clear()


def process_batch(
    raw_values: list[bytes],
    features: OnlineFeatures,
    history_length: int,
    stats: IngestStats,
    *,
    catalog: Collection[str] | None = None,
    now_ms: int | None = None,
    cache: StateCache | None = None,
) -> list[tuple[bytes, str]]:
    """Checks a batch, folds it into each user's stored state and writes it back.

    With a ``cache``, states found there are not read from the store, and every state of
    the batch is put there once the write has succeeded.

    Returns:
        The dead letters: ``(raw bytes, reason)`` for every event that could not be used.

    Raises:
        StoreUnavailableError: the store read or write failed; ``stats`` and ``cache`` are
            unchanged, so the same batch can be processed again.
    """
    now = int(time.time() * 1000) if now_ms is None else now_ms
    by_user: dict[str, list[Interaction]] = defaultdict(list)
    dead: list[tuple[bytes, str]] = []
    for raw in raw_values:
        try:
            user_id, event = check(raw, catalog, now)
        except DataError as exc:
            dead.append((raw, str(exc)))
            continue
        by_user[user_id].append(event)
    if by_user:
        current = cache.get(by_user) if cache is not None else {}
        missing = [user for user in by_user if user not in current]
        if missing:
            current.update(features.read_activity(missing))
        updated = {}
        skipped = 0
        for user, events in by_user.items():
            skipped += sum(not current[user].is_newer(e) for e in events)
            state = apply_events(current[user], events, history_length)
            if state != current[user]:
                updated[user] = state
        features.write_activity(updated)
        stats.skipped += skipped
        stats.users_written += len(updated)
        if cache is not None:
            cache.put({**current, **updated})
    stats.events += len(raw_values)
    stats.dead_letters += len(dead)
    stats.batches += 1
    return dead
