"""The offline side of the online store: created from scratch (definitions applied, profiles
materialized, each user's activity backfilled from past ratings with the shared activity
fold), or its offline part written back after a loss (``restore``)."""

from __future__ import annotations

import shutil
import warnings
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pandas as pd

from features.history import final_states
from features.repo.definitions import ACTIVITY_PUSH, PROFILE_VIEW, feature_views
from features.store import activity_frame, open_store, unavailable_as_error
from recsys.config import Config
from recsys.data.dataset import Dataset
from recsys.data.schema import DataSchema, configured_schema
from recsys.errors import DataError

if TYPE_CHECKING:
    from feast import FeatureStore

PROFILE_TIME = datetime(1970, 1, 2, tzinfo=UTC)
"""Profiles are static (a data set's user table has no history): they are stamped as known
from before any event."""


def initialise(config: Config, ml: Dataset, history: pd.DataFrame) -> FeatureStore:
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
            open_store(config).teardown()  # type: ignore[no-untyped-call]  # unannotated in Feast
    shutil.rmtree(config.feast_dir, ignore_errors=True)
    offline = config.feast_dir / "offline"
    offline.mkdir(parents=True)
    profiles = ml.users.assign(event_timestamp=PROFILE_TIME)
    profiles = profiles.assign(**{n: list(map(list, profiles[n])) for n in _tags(ml.schema)})
    profiles.to_parquet(offline / "user_profile.parquet", index=False)
    states = final_states(history, config.model.history_length)
    activity_frame(states).to_parquet(offline / "user_activity.parquet", index=False)
    return restore(config)


def restore(config: Config) -> FeatureStore:
    """Writes the offline part of the store back into the online store: applies the
    definitions (creating the online tables if they are gone), materializes the profiles and
    pushes each user's backfilled activity. What the stream added since is the topic's to
    give back (``recsys ingest --rebuild``).

    Returns:
        The opened ``feast.FeatureStore``.

    Raises:
        DataError: the offline files are missing (the store was never initialised).
    """
    offline = config.feast_dir / "offline"
    backfill = offline / "user_activity.parquet"
    if not backfill.exists():
        raise DataError(
            f"no offline feature files under {offline}; run `recsys init-features` first"
        )
    store = open_store(config)
    schema = configured_schema(config)
    with warnings.catch_warnings():
        # Feast warns about experimental features and the file offline store on every apply.
        warnings.simplefilter("ignore")
        store.apply(feature_views(offline, schema))
        if schema.user_features:
            store.materialize(
                start_date=PROFILE_TIME - timedelta(days=1),
                end_date=PROFILE_TIME + timedelta(days=1),
                feature_views=[PROFILE_VIEW],
            )
    frame = pd.read_parquet(backfill)
    frame["recent_items"] = frame["recent_items"].map(list)  # Parquet gives back arrays
    if len(frame):
        with unavailable_as_error("the activity backfill"):
            store.push(ACTIVITY_PUSH, frame)
    return store


def _tags(schema: DataSchema) -> list[str]:
    """The user features whose values are lists (Parquet wants lists, not tuples)."""
    return [name for name, f in schema.user_features.items() if f.kind == "tags"]
