"""The Feast feature store, configured from the project config, and typed access to it.

Everything goes through Feast's own API (``apply``, ``materialize``, ``push``,
``get_online_features``); the registry is cached forever (``cache_ttl_seconds: 0``) so no
request ever waits for a registry refresh.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import pandas as pd

from features.activity import EMPTY, Activity, apply_events, ratings_to_interactions
from features.repo.definitions import ACTIVITY_PUSH, ACTIVITY_VIEW, PROFILE_VIEW, feature_views
from recsys.config import Config
from recsys.data import MovieLens

PROFILE_FEATURES = [f"{PROFILE_VIEW}:{f}" for f in ("age", "gender", "occupation", "zip_code")]
ACTIVITY_FEATURES = [
    f"{ACTIVITY_VIEW}:{f}" for f in ("recent_items", "last_event_ms", "last_event_id", "seen_items")
]
PROFILE_TIME = datetime(1997, 9, 1, tzinfo=UTC)
"""Profiles are static in ML-100K; they are stamped as known from before the first rating."""


def open_store(config: Config, timeout_ms: int | None = None) -> Any:
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


class UserFeatures(NamedTuple):
    """What the online store knows about one user; defaults where it knows nothing (a named
    tuple: one is built per user on every Recommend request)."""

    user_id: str
    age: int = 0
    gender: str = ""
    occupation: str = ""
    zip_code: str = ""
    activity: Activity = EMPTY
    has_profile: bool = False


def _activity_frame(states: Mapping[str, Activity]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": list(states),
            "recent_items": [list(a.recent_items) for a in states.values()],
            "last_event_ms": [a.last_event_ms for a in states.values()],
            "last_event_id": [a.last_event_id for a in states.values()],
            "seen_items": [a.seen for a in states.values()],
            "event_timestamp": [
                datetime.fromtimestamp(a.last_event_ms / 1000, UTC) for a in states.values()
            ],
        }
    )


def _activity(rows: dict[str, list[Any]], i: int) -> Activity:
    """Row ``i`` of a ``get_online_features`` answer as an ``Activity`` (empty if absent)."""
    return Activity(
        tuple(rows["recent_items"][i] or ()),
        int(rows["last_event_ms"][i] or 0),
        rows["last_event_id"][i] or "",
        rows["seen_items"][i] or b"",
    )


class OnlineFeatures:
    """Reads user features from, and writes activity to, Feast's online store."""

    def __init__(self, store: Any):
        self._store = store

    def read(self, user_ids: Sequence[str]) -> list[UserFeatures]:
        """Profile and activity for each user, in order; one online-store round trip."""
        rows = self._store.get_online_features(
            features=PROFILE_FEATURES + ACTIVITY_FEATURES,
            entity_rows=[{"user_id": u} for u in user_ids],
        ).to_dict()
        out = []
        for i, user_id in enumerate(user_ids):
            gender = rows["gender"][i]
            out.append(
                UserFeatures(
                    user_id=user_id,
                    age=int(rows["age"][i] or 0),
                    gender=gender or "",
                    occupation=rows["occupation"][i] or "",
                    zip_code=rows["zip_code"][i] or "",
                    activity=_activity(rows, i),
                    has_profile=gender is not None,
                )
            )
        return out

    def read_activity(self, user_ids: Sequence[str]) -> dict[str, Activity]:
        rows = self._store.get_online_features(
            features=ACTIVITY_FEATURES, entity_rows=[{"user_id": u} for u in user_ids]
        ).to_dict()
        return {u: _activity(rows, i) for i, u in enumerate(user_ids)}

    def write_activity(self, states: Mapping[str, Activity]) -> None:
        """Pushes new activity states to the online store, one batch write."""
        if states:
            self._store.push(ACTIVITY_PUSH, _activity_frame(states))


def initialise(config: Config, ml: MovieLens, history: pd.DataFrame) -> Any:
    """Creates the feature store from scratch: apply definitions, materialize profiles, and
    backfill each user's activity from ``history`` with the shared activity function.

    Anything already in ``config.feast_dir`` is deleted first; run it with no server or
    ingester attached to that store.

    Returns:
        The opened ``feast.FeatureStore``.
    """
    # From scratch means from scratch: a previous run's streamed activity must not survive,
    # in the SQLite file or on the Redis server.
    if (config.feast_dir / "registry.db").exists():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            open_store(config).teardown()
    shutil.rmtree(config.feast_dir, ignore_errors=True)
    offline = config.feast_dir / "offline"
    offline.mkdir(parents=True)
    profiles = ml.users.assign(event_timestamp=PROFILE_TIME)[
        ["user_id", "age", "gender", "occupation", "zip_code", "event_timestamp"]
    ]
    profiles.to_parquet(offline / "user_profile.parquet", index=False)
    states = {
        user_id: apply_events(
            EMPTY,
            ratings_to_interactions(user_id, list(group["item_id"]), list(group["timestamp"])),
            config.model.history_length,
        )
        for user_id, group in history.groupby("user_id")
    }
    backfill = _activity_frame(states)
    backfill.to_parquet(offline / "user_activity.parquet", index=False)

    store = open_store(config)
    with warnings.catch_warnings():
        # Feast warns about experimental features and the file offline store on every apply.
        warnings.simplefilter("ignore")
        store.apply(feature_views(offline))
        store.materialize(
            start_date=PROFILE_TIME - timedelta(days=1),
            end_date=PROFILE_TIME + timedelta(days=1),
            feature_views=[PROFILE_VIEW],
        )
    OnlineFeatures(store).write_activity(states)
    return store
