"""``features/repo`` is a Feast repo: the Feast CLI, pointed at a store ``recsys
init-features`` made, sees the same definitions (``plan``: nothing to create or delete),
applies them without changing what the project reads, and materializes with them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from features.backfill import initialise
from features.store import OnlineFeatures, open_store
from recsys.config import Config
from recsys.data import temporal_split

REPO = Path(__file__).resolve().parents[1]
FEAST = Path(sys.executable).parent / "feast"


def _feast(config: Config, *args: str) -> str:
    env = {**os.environ, "RECSYS_FEAST_DIR": str(config.feast_dir)}
    done = subprocess.run(
        [str(FEAST), "-c", str(REPO / "features" / "repo"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_the_feast_cli_works_on_the_store_init_features_made(
    trained: Config, ml, tmp_path: Path
) -> None:
    config = trained.with_overrides({"paths": {"state": str(tmp_path / "state")}})
    past, _ = temporal_split(ml.interactions, config.model.test_fraction)
    before = OnlineFeatures(initialise(config, ml, past)).read(["196", "1"])

    plan = _feast(config, "plan")
    # The same objects: nothing to create or delete in the registry. (Feast's plan reports
    # a file source's timestamps as an update, even right after its own apply.)
    assert "No project found" not in plan, plan
    assert not any(
        line.startswith(("Created entity", "Created feature view", "Deleted"))
        for line in plan.splitlines()
    ), plan
    _feast(config, "apply")
    assert "No changes to infrastructure" in _feast(config, "plan")
    views = _feast(config, "feature-views", "list")
    assert "user_profile" in views and "user_activity" in views, views
    _feast(
        config,
        "materialize",
        "1970-01-01T00:00:00",
        "1970-01-03T00:00:00",
        "--views",
        "user_profile",
    )
    after = OnlineFeatures(open_store(config)).read(["196", "1"])
    assert after == before and after[0].has_profile


def test_the_views_follow_the_data_schema_and_the_serving_read_names_their_features() -> None:
    from feast.types import Array, Float64, String

    from features.online.read import ACTIVITY_READ, SEEN
    from features.repo.definitions import ACTIVITY, feature_views, profile_fields
    from recsys.data.schema import load_schema

    schema = load_schema(None, REPO / ".cache" / "data")
    fields = profile_fields(schema)
    assert fields == {"gender": String, "age": Float64, "occupation": String, "zip_code": String}
    assert {*ACTIVITY_READ, SEEN} <= set(ACTIVITY)
    views = {o.name: o for o in feature_views(Path("/offline"), schema)}
    assert [f.name for f in views["user_profile"].features] == list(fields)
    shop = schema.model_copy(update={"users": None})  # a data set without profiles
    assert "user_profile" not in {o.name for o in feature_views(Path("/offline"), shop)}
    assert profile_fields(shop) == {} and Array(String) != String
