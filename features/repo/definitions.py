"""Feast definitions: the user entity, the profile view (one feature per user feature the
data schema declares; no view when it declares none) and the streamed activity view.

This folder is a Feast repo (``feature_store.yaml`` beside this file): with
``RECSYS_FEAST_DIR`` naming the store's folder (``paths.state``/feast, ``.state/feast`` by
default), ``feast -c features/repo plan``, ``apply``, ``materialize`` and ``ui`` work on the
store ``recsys init-features`` made, and find these module-level objects. The project's own
code builds the same objects with :func:`feature_views` for the configured store and data
schema (the CLI reads the same configuration: ``RECSYS_CONFIG`` and ``RECSYS_*`` variables),
so both register the same definitions.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from feast import Entity, FeatureView, Field, FileSource, Project, PushSource, ValueType
from feast.types import (
    Array,
    Bytes,
    ComplexFeastType,
    Float64,
    Int64,
    PrimitiveFeastType,
    String,
)

from recsys.config import load_config
from recsys.data.schema import DataSchema, configured_schema

if TYPE_CHECKING:
    from feast.feast_object import FeastObject

FeastType = ComplexFeastType | PrimitiveFeastType

PROFILE_VIEW = "user_profile"
ACTIVITY_VIEW = "user_activity"
ACTIVITY_PUSH = "user_activity_push"

FEAST_TYPES: dict[str, FeastType] = {
    "categorical": String,
    "text": String,
    "tags": Array(String),
    "numeric": Float64,
    "year": Float64,
    "date": Float64,
}
"""Each feature kind's Feast type: its canonical value (``recsys.data.dataset``)."""


def profile_fields(schema: DataSchema) -> dict[str, FeastType]:
    """The profile view's features and their Feast types, in the schema's order: the one
    list of them (the offline files, the store's reads and the serving read all take their
    names from here)."""
    return {name: FEAST_TYPES[f.kind] for name, f in schema.user_features.items()}


ACTIVITY: dict[str, FeastType] = {
    "recent_items": Array(String),
    "last_event_ms": Int64,
    "last_event_id": String,
    # Every item seen, newest first, as 8-byte hashes (features.activity.Activity).
    "seen_items": Bytes,
    # How many events the state has applied: orders its versions (features.store).
    "event_count": Int64,
}
"""The activity view's features (the state ``features.activity.Activity`` holds)."""

project = Project(
    name="recsys", description="User features of the real-time two-tower recommender."
)
user = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.STRING,
    description="A user, by the id the Recommend API receives.",
)


def feature_views(offline_dir: Path, schema: DataSchema) -> list[FeastObject]:
    """All Feast objects, with their offline sources under ``offline_dir``: the project,
    the entity, the activity push source and view, and the profile view if the schema
    declares user features."""
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
    fields = profile_fields(schema)
    activity = FeatureView(
        name=ACTIVITY_VIEW,
        entities=[user],
        ttl=timedelta(0),
        schema=[Field(name=name, dtype=dtype) for name, dtype in ACTIVITY.items()],
        source=activity_push,
        online=True,
    )
    objects: list[FeastObject] = [project, user, activity_push, activity]
    if fields:
        profile = FeatureView(
            name=PROFILE_VIEW,
            entities=[user],
            ttl=timedelta(0),
            schema=[Field(name=name, dtype=dtype) for name, dtype in fields.items()],
            source=profile_source,
            online=True,
        )
        objects.append(profile)
    return objects


def _feast_cli_dir() -> Path:
    """The store folder the Feast CLI is pointed at (``feature_store.yaml`` reads the same
    variable); ``.state/feast`` under the checkout when unset."""
    return Path(os.environ.get("RECSYS_FEAST_DIR", Path(__file__).parents[2] / ".state/feast"))


user_activity_push, user_activity, *_profile = feature_views(
    _feast_cli_dir() / "offline",
    # The CLI's own variable names the store, not a config key.
    configured_schema(
        load_config(environ={k: v for k, v in os.environ.items() if k != "RECSYS_FEAST_DIR"})
    ),
)[2:]
"""What ``feast apply`` registers: the same objects as ``features.backfill`` applies (Feast
finds the profile view in the module's globals too)."""
if _profile:
    user_profile = _profile[0]
