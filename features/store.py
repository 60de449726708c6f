"""The Feast feature store, configured from the project config, and typed access to it: what
the backfill (``features.backfill``), the stream (``features.stream``) and the serving read
(``features.online``) share.

Everything goes through Feast's own API (``apply``, ``materialize``, ``push``,
``get_online_features``); the registry is cached forever (``cache_ttl_seconds: 0``) so no
request ever waits for a registry refresh.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd

from features.activity import Activity
from features.repo.definitions import ACTIVITY, ACTIVITY_PUSH, ACTIVITY_VIEW, PROFILE_VIEW
from features.user import UserFeatures
from recsys.config import Config
from recsys.errors import StoreUnavailableError

if TYPE_CHECKING:
    from feast import FeatureStore

ACTIVITY_FEATURES = [f"{ACTIVITY_VIEW}:{f}" for f in ACTIVITY]


def open_store(config: Config, timeout_ms: int | None = None) -> FeatureStore:
    """A ``feast.FeatureStore`` on the configured online store (SQLite or Redis), registry
    cached forever.

    Args:
        timeout_ms: Bound each Redis call (socket and connect timeouts) unless the
            connection string sets its own; serving passes ``serving.store_timeout_ms``.
    """
    from feast import FeatureStore, RepoConfig

    root = config.feast_dir
    root.mkdir(parents=True, exist_ok=True)
    repo_config = RepoConfig(
        project=config.feast.project,
        provider="local",
        registry={"path": str(root / "registry.db"), "cache_ttl_seconds": 0},
        online_store=(
            {"type": "sqlite", "path": str(root / "online.db")}
            if config.feast.online_store == "sqlite"
            else {"type": "redis", "connection_string": _redis(config.feast.redis, timeout_ms)}
        ),
        offline_store={"type": "file"},
        entity_key_serialization_version=3,
    )
    return FeatureStore(repo_path=str(root), config=repo_config)


def _redis(connection: str, timeout_ms: int | None) -> str:
    if timeout_ms is None or "socket_timeout=" in connection:
        return connection
    seconds = timeout_ms / 1000
    return f"{connection},socket_timeout={seconds},socket_connect_timeout={seconds}"


def profile_names(store: FeatureStore) -> list[str]:
    """The registered profile view's features, in the data schema's order (none when the
    schema declares no user features: the view does not exist)."""
    from feast.errors import FeatureViewNotFoundException

    try:
        view = store.get_feature_view(PROFILE_VIEW)
    except FeatureViewNotFoundException:
        return []
    return [f.name for f in view.features]


def write_time(state: Activity) -> datetime:
    """The time a state is written to the online store with: its last event's time plus
    ``events % 1000`` microseconds.

    Feast's Redis store drops a write whose time is not after the stored one's, so the
    time must grow with every new state of a user, including one that only adds an event
    sharing the last one's millisecond (common: Dataset times are in seconds, and a batch
    can end between two ratings of one second). The microseconds are the state's event
    count, which grows by one per applied event.
    """
    return datetime.fromtimestamp(state.last_event_ms // 1000, UTC) + timedelta(
        milliseconds=state.last_event_ms % 1000, microseconds=state.events % 1000
    )


def activity_frame(states: Mapping[str, Activity]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": list(states),
            "recent_items": [list(a.recent_items) for a in states.values()],
            "last_event_ms": [a.last_event_ms for a in states.values()],
            "last_event_id": [a.last_event_id for a in states.values()],
            "seen_items": [a.seen for a in states.values()],
            "event_count": [a.events for a in states.values()],
            "event_timestamp": [write_time(a) for a in states.values()],
        }
    )


# Any: feature columns of mixed types.
def _activity(rows: dict[str, list[Any]], i: int) -> Activity:
    """Row ``i`` of a ``get_online_features`` answer as an ``Activity`` (empty if absent)."""
    return Activity(
        tuple(rows["recent_items"][i] or ()),
        int(rows["last_event_ms"][i] or 0),
        rows["last_event_id"][i] or "",
        rows["seen_items"][i] or b"",
        int(rows["event_count"][i] or 0),
    )


_TRANSIENT_SQLITE = ("locked", "busy", "unable to open", "disk i/o")
"""SQLite errors that pass: another writer holds the file, or its disk hiccups (a missing
table, by contrast, means the store was never initialised, and retrying cannot help)."""


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.OperationalError):
        return any(s in str(exc).lower() for s in _TRANSIENT_SQLITE)
    if isinstance(exc, OSError):
        return True
    try:
        from redis.exceptions import ConnectionError, TimeoutError
    except ImportError:  # the SQLite-only install
        return False
    # ConnectionError includes BusyLoadingError: a restarted Redis still reading its AOF.
    return isinstance(exc, ConnectionError | TimeoutError)


@contextmanager
def unavailable_as_error(what: str) -> Iterator[None]:
    """Re-raises a store error that may pass as :class:`StoreUnavailableError`."""
    try:
        yield
    except Exception as exc:
        if _transient(exc):
            raise StoreUnavailableError(f"online store unavailable during {what}: {exc!r}") from exc
        raise


class OnlineFeatures:
    """Reads user features from, and writes activity to, Feast's online store.

    The ingester's calls (``read_activity``, ``write_activity``) raise
    :class:`StoreUnavailableError` for errors that may pass (Redis down or timing out, a
    SQLite file locked by another writer), so a caller can tell them from bugs and retry.
    """

    def __init__(self, store: FeatureStore):
        self._store = store
        self._profile = profile_names(store)

    def read(self, user_ids: Sequence[str]) -> list[UserFeatures]:
        """Profile and activity for each user, in order; one online-store round trip."""
        rows = self._store.get_online_features(
            features=[f"{PROFILE_VIEW}:{f}" for f in self._profile] + ACTIVITY_FEATURES,
            entity_rows=[{"user_id": u} for u in user_ids],
        ).to_dict()
        out = []
        for i, user_id in enumerate(user_ids):
            profile = tuple(rows[f][i] for f in self._profile)
            known = any(v is not None for v in profile)
            out.append(UserFeatures(user_id, profile if known else (), _activity(rows, i), known))
        return out

    def read_activity(self, user_ids: Sequence[str]) -> dict[str, Activity]:
        """Each user's activity state (empty if absent).

        Raises:
            StoreUnavailableError: the store did not answer; retrying may succeed.
        """
        with unavailable_as_error("an activity read"):
            rows = self._store.get_online_features(
                features=ACTIVITY_FEATURES, entity_rows=[{"user_id": u} for u in user_ids]
            ).to_dict()
        return {u: _activity(rows, i) for i, u in enumerate(user_ids)}

    def write_activity(self, states: Mapping[str, Activity]) -> None:
        """Pushes new activity states to the online store, one batch write. Each state is
        a whole user's, so a write cut off halfway is repaired by writing it again.

        Raises:
            StoreUnavailableError: the store did not answer; retrying may succeed.
        """
        if states:
            frame = activity_frame(states)
            with unavailable_as_error("an activity write"):
                self._store.push(ACTIVITY_PUSH, frame)
