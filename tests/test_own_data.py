"""A data set of a shape nothing else here has, run end to end by writing only a schema file:
a video app's CSV events (millisecond times, event types), users with a profile of every kind
(a country, a plan, a signup date, interests as ';'-separated tags, a free-text bio, a numeric
spend) and videos with a channel, topics (the filter field), a duration, an ISO publish date
and a title. ``recsys train``, ``build-index``, ``init-features`` and ``serve`` run as the
operator runs them; Recommend answers over gRPC, filtered on the topics; and both runtimes
of the user and item towers agree on every kind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from localservices.procs import child, free_port, write_config
from recsys.v1 import recommender_pb2 as pb
from serving.client import RecommendClient
from tests.conftest import real_part

TOPICS = ("news", "music", "sport", "cooking", "travel", "science", "games", "film")
SCHEMA = {
    "name": "video-app",
    "interactions": {
        "files": ["plays-*.csv"],
        "user": "viewer",
        "item": "video",
        "time": "played_ms",
        "time_unit": "ms",
        "event_type": "action",
    },
    "items": {
        "file": "videos.csv",
        "id": "video",
        "features": {
            "channel": {"kind": "categorical"},
            "topics": {"kind": "tags", "separator": ";", "max_values": 2},
            "duration_s": {"kind": "numeric", "buckets": 5},
            "published": {"kind": "date"},
            "title": {"kind": "text", "max_tokens": 4},
        },
    },
    "users": {
        "file": "viewers.csv",
        "id": "viewer",
        "features": {
            "country": {"kind": "categorical"},
            "signup": {"kind": "date", "buckets": 4},
            "interests": {"kind": "tags", "separator": ";"},
            "bio": {"kind": "text"},
            "spend": {"kind": "numeric", "boundaries": [0.5, 10, 100]},
        },
    },
    "filter": "topics",
}


def write_video_app(folder: Path, seed: int = 0) -> Path:
    """300 viewers (every tenth without a profile row), 400 videos, 12,000 plays in two
    files; viewers mostly play videos of their interests. Returns the schema file."""
    rng = np.random.default_rng(seed)
    videos = pd.DataFrame(
        {
            "video": [f"v{i:03d}" for i in range(400)],
            "channel": [f"ch{i % 23}" for i in range(400)],
            "topics": [
                ";".join(rng.choice(TOPICS, size=1 + i % 3, replace=False)) for i in range(400)
            ],
            "duration_s": rng.integers(30, 3600, size=400),
            "published": [f"2023-{1 + i % 12:02d}-{1 + i % 28:02d}T12:00:00Z" for i in range(400)],
            "title": [f"{TOPICS[i % 8]} clip {i} für alle" for i in range(400)],
        }
    )
    interests = [tuple(rng.choice(TOPICS, size=2, replace=False)) for _ in range(300)]
    viewers = pd.DataFrame(
        {
            "viewer": [f"user-{u}" for u in range(300)],
            "country": rng.choice(["DE", "FR", "JP", "BR"], size=300),
            "signup": pd.date_range("2020-01-01", periods=300, freq="5D").strftime("%Y-%m-%d"),
            "interests": [";".join(i) for i in interests],
            "bio": [f"I like {a} and {b}" for a, b in interests],
            "spend": np.round(rng.exponential(20, size=300), 2),
        }
    ).iloc[[u for u in range(300) if u % 10]]
    by_topic = {t: videos.index[videos["topics"].str.contains(t)].to_numpy() for t in TOPICS}
    users = rng.integers(0, 300, size=12_000)
    picks = [rng.choice(by_topic[interests[u][rng.integers(0, 2)]]) for u in users]
    plays = pd.DataFrame(
        {
            "viewer": [f"user-{u}" for u in users],
            "video": videos["video"].to_numpy()[picks],
            "played_ms": 1_700_000_000_000 + np.sort(rng.integers(0, 90 * 86_400_000, 12_000)),
            "action": rng.choice(["play", "like"], size=12_000, p=[0.9, 0.1]),
        }
    )
    videos.to_csv(folder / "videos.csv", index=False)
    viewers.to_csv(folder / "viewers.csv", index=False)
    plays.iloc[:7_000].to_csv(folder / "plays-1.csv", index=False)
    plays.iloc[7_000:].to_csv(folder / "plays-2.csv", index=False)
    (folder / "video-app.yaml").write_text(yaml.safe_dump(SCHEMA, sort_keys=False))
    return folder / "video-app.yaml"


@pytest.fixture(scope="module")
@real_part
def video_app(base_config, tmp_path_factory: pytest.TempPathFactory):
    """The data set trained, indexed and in a feature store, each by its CLI command."""
    root = tmp_path_factory.mktemp("video-app")
    schema = write_video_app(root)
    config = base_config.with_overrides(
        {
            "data": {"schema": str(schema)},
            "paths": {"artifacts": str(root / "artifacts"), "state": str(root / "state")},
            "model": {"epochs": 2, "batch_size": 256, "history_length": 8},
            "serving": {"port": free_port("127.0.0.1"), "admin_port": free_port("127.0.0.1")},
        }
    )
    config_file = write_config(config, root / "config.yaml")
    cli = [sys.executable, "-m", "commands.cli", "--config", str(config_file)]
    for command in ("train", "build-index", "init-features"):
        done = subprocess.run([*cli, command], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{command}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    return config, config_file, root


@pytest.mark.usefixtures("processes")
def test_a_new_shape_serves_filtered_recommendations_from_a_schema_file(video_app) -> None:
    from recsys.data.dataset import load_dataset
    from recsys.data.schema import configured_schema

    config, config_file, root = video_app
    data = load_dataset(configured_schema(config))
    topics = data.items.set_index("item_id")["topics"].to_dict()
    port = config.serving.port
    with (
        child("serve", config_file, ["serve"], root, quiet=True) as proc,
        RecommendClient(f"127.0.0.1:{port}") as client,
    ):
        client.wait_until_serving(process=proc)
        known = client.recommend("user-1", k=10)
        assert known.path == pb.SERVING_PATH_PERSONALIZED and len(known.items) == 10
        assert len({i.item_id for i in known.items}) == 10
        stranger = client.recommend("user-0", k=5)  # played, but has no profile row
        assert len(stranger.items) == 5
        sport = client.recommend("user-2", k=10, include_genres=["sport"])
        assert sport.items and all("sport" in topics[i.item_id] for i in sport.items)
        no_news = client.recommend("user-3", k=10, exclude_genres=["news", "music"])
        assert all(not {"news", "music"} & set(topics[i.item_id]) for i in no_news.items)
        with pytest.raises(Exception, match="unknown topics value 'Drama'"):
            client.recommend("user-1", k=5, include_genres=["Drama"])


def test_both_runtimes_agree_on_every_kind(video_app) -> None:
    """User features of every kind (tags and text included) and a date on both towers: the
    NumPy runtime, the SavedModel's encoded signature, and its raw-feature signature."""
    from features.activity import Activity
    from features.user import UserFeatures
    from index.plan import embed_catalog
    from recsys import artifacts
    from recsys.data.dataset import load_dataset
    from recsys.data.schema import configured_schema
    from towers.encoding import FeatureSpace
    from towers.examples import Profiles, catalog_inputs
    from towers.runtime import NumpyItemTower, NumpyUserTower, SavedModelUserTower
    from towers.tf_env import tf

    config, _, _ = video_app
    data = load_dataset(configured_schema(config))
    model_dir = artifacts.current(config.models_dir)
    space = FeatureSpace.load(model_dir / "features.json")
    assert [f.kind for f in space.user_features] == [
        "categorical",
        "date",
        "tags",
        "text",
        "numeric",
    ]
    profiles = Profiles(data)
    recent = tuple(data.items["item_id"][:12])
    users = [profiles.at(f"user-{u}", Activity(recent[: u % 12])) for u in range(40)]
    users += [
        UserFeatures("nobody"),
        UserFeatures("odd", ("XX", float("nan"), ("games", "nope", "film"), "ünknown words", 1e9)),
    ]
    times = [1_707_000_000_000 + 3_599_000 * i for i in range(len(users))]
    numpy_tower = NumpyUserTower.load(model_dir)
    embedded = numpy_tower.embed(space, users, times)
    np.testing.assert_array_equal(embedded, numpy_tower(space.encode_users(users, times)))
    saved = SavedModelUserTower(model_dir).embed(space, users, times)
    np.testing.assert_allclose(saved, embedded, atol=1e-5, rtol=0)

    raw = {"user_id": [u.user_id for u in users]}
    for i, f in enumerate(space.user_features):
        values = [u.profile[i] if u.profile else None for u in users]
        if f.kind == "tags":
            width = max(len(v or ()) for v in values)
            raw[f.name] = [list(v or ()) + [""] * (width - len(v or ())) for v in values]
        elif f.kind in ("date", "numeric"):
            raw[f.name] = [np.nan if v is None else float(v) for v in values]
        else:
            raw[f.name] = [v or "" for v in values]
    history = [
        list(u.activity.recent_items) + [""] * (12 - len(u.activity.recent_items)) for u in users
    ]
    signature = tf.saved_model.load(str(model_dir / "user_tower")).signatures["serving_default"]
    tensors = {
        k: tf.constant(v, tf.float64 if k in ("signup", "spend") else None) for k, v in raw.items()
    }
    from_raw = signature(
        **tensors,
        recent_items=tf.constant(history),
        request_time_ms=tf.constant(times, tf.int64),
    )["embedding"].numpy()
    np.testing.assert_allclose(from_raw, embedded, atol=1e-5, rtol=0)

    _, reference = embed_catalog(model_dir, data)
    _, inputs = catalog_inputs(data, space)
    np.testing.assert_allclose(NumpyItemTower.load(model_dir)(inputs), reference, atol=1e-5, rtol=0)
