"""Feast definitions: the user entity, the profile view and the streamed activity view.

Only definitions live in this folder (``feast apply`` imports every ``.py`` here). Paths to
the offline files are given by ``features.store``, which applies these objects to a store
configured from the project config.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Array, Bytes, Int64, String

PROFILE_VIEW = "user_profile"
ACTIVITY_VIEW = "user_activity"
ACTIVITY_PUSH = "user_activity_push"

user = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.STRING,
    description="A user, by the id the Recommend API receives.",
)


def feature_views(offline_dir: Path) -> list[object]:
    """All Feast objects, with their offline sources under ``offline_dir``."""
    profile_source = FileSource(
        name="user_profile_source",
        path=str(offline_dir / "user_profile.parquet"),
        timestamp_field="event_timestamp",
    )
    activity_source = FileSource(
        name="user_activity_source",
        path=str(offline_dir / "user_activity.parquet"),
        timestamp_field="event_timestamp",
    )
    activity_push = PushSource(name=ACTIVITY_PUSH, batch_source=activity_source)
    profile = FeatureView(
        name=PROFILE_VIEW,
        entities=[user],
        ttl=timedelta(0),
        schema=[
            Field(name="age", dtype=Int64),
            Field(name="gender", dtype=String),
            Field(name="occupation", dtype=String),
            Field(name="zip_code", dtype=String),
        ],
        source=profile_source,
        online=True,
    )
    activity = FeatureView(
        name=ACTIVITY_VIEW,
        entities=[user],
        ttl=timedelta(0),
        schema=[
            Field(name="recent_items", dtype=Array(String)),
            Field(name="last_event_ms", dtype=Int64),
            Field(name="last_event_id", dtype=String),
            # Every item seen, newest first, as 8-byte hashes (features.activity.Activity).
            Field(name="seen_items", dtype=Bytes),
            # How many events the state has applied: orders its versions (features.store).
            Field(name="event_count", dtype=Int64),
        ],
        source=activity_push,
        online=True,
    )
    return [user, activity_push, profile, activity]
