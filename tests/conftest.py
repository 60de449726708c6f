"""Shared fixtures: the real data set, one trained model+index, a real Feast store, a real
Kafka broker, and a real gRPC server on an ephemeral port. Each is built once per session and
stopped by the fixture that started it.

Two tiers. A fixture that trains a model or starts a real part (a broker, Redis, a Feast
store, a server, a Spark session) is declared with ``@real_part``; every test that uses one,
directly or through other fixtures, is marked ``integration`` here, not by hand. The rest is
the fast tier (``make check``: ``pytest -m "not integration"``). A test outside the
integration tier that starts a child process or imports TensorFlow fails, so a test cannot
land in the wrong tier by forgetting a marker.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pandas as pd
import pytest

from recsys.config import Config
from recsys.data import temporal_split
from recsys.data.dataset import Dataset, load_dataset
from recsys.data.movielens import prepare_ml100k
from recsys.data.schema import load_schema

if TYPE_CHECKING:
    from serving.stack import Stack

# TensorFlow reads it at its first import, wherever that happens (towers.tf_env checks it).
os.environ["TF_USE_LEGACY_KERAS"] = "1"
REPO = Path(__file__).resolve().parents[1]
REAL_PARTS: set[str] = set()
"""Names of the fixtures that train a model or start a real part."""
F = TypeVar("F", bound=Callable[..., Any])


def real_part(fixture: F) -> F:
    """Declares a fixture (under its ``@pytest.fixture``) as training a model or starting a
    real part: the tests that use it belong to the integration tier."""
    REAL_PARTS.add(fixture.__name__)
    return fixture


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if REAL_PARTS.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


_started: list[object] = []
"""Child processes started since the current test's setup began (its fixtures' included)."""
_popen_init = subprocess.Popen.__init__


def _recording_init(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
    _started.append(args)
    _popen_init(self, args, *rest, **kwargs)


subprocess.Popen.__init__ = _recording_init  # type: ignore[method-assign]
_HAD_TENSORFLOW = pytest.StashKey[bool]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _started.clear()
    item.stash[_HAD_TENSORFLOW] = "tensorflow" in sys.modules


@pytest.fixture(autouse=True)
def _fast_tier_is_pure(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fails a fast-tier test that (or whose fixtures) started a child process or imported
    TensorFlow: it needs a real part, so it must take it from a ``@real_part`` fixture."""
    yield
    if request.node.get_closest_marker("integration"):
        return
    if _started:
        pytest.fail(
            f"this test started {_started[0]!r} without a @real_part fixture; take the part "
            "from one (tests/conftest.py), so the test runs in the integration tier"
        )
    if not request.node.stash[_HAD_TENSORFLOW] and "tensorflow" in sys.modules:
        pytest.fail(
            "this test imported TensorFlow without a @real_part fixture; take the trained "
            "model from `trained` (or declare its fixture @real_part)"
        )


@pytest.fixture
@real_part
def processes() -> None:
    """For a test that starts child processes of its own (a JVM, a server binary, the CLI):
    ``@pytest.mark.usefixtures("processes")`` puts it in the integration tier."""


def _quiet(_: str) -> None:
    pass


def skewed_interactions() -> tuple[pd.DataFrame, dict[str, int]]:
    """2,000 interactions of 60 users with 300 items, popularity Zipf-skewed (seeded), and
    the item column map: enough overlap for item-to-item similarities to mean something."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "user_id": [f"u{u}" for u in rng.integers(0, 60, 2_000)],
            "item_id": [f"i{i}" for i in rng.zipf(1.4, 2_000) % 300],
        }
    )
    return frame, {f"i{i}": i for i in range(300)}


def wait_until(predicate, timeout: float, what: str, every: float = 0.2) -> None:
    """Polls ``predicate`` until true; fails with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:.0f}s")
        time.sleep(every)


@pytest.fixture(scope="session")
def ml() -> Dataset:
    """MovieLens-100K read through its schema, as every command reads it."""
    data_dir = REPO / ".cache" / "data"
    prepare_ml100k(data_dir, log=_quiet)
    return load_dataset(load_schema(None, data_dir))


@pytest.fixture(scope="session")
def base_config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    """Defaults, with every writable path in a temporary folder and a short training run."""
    root = tmp_path_factory.mktemp("recsys")
    return Config().with_overrides(
        {
            "paths": {
                "data_dir": str(REPO / ".cache" / "data"),
                "artifacts": str(root / "artifacts"),
                "state": str(root / "state"),
                "kafka_jars": str(REPO / ".cache" / "kafka" / "libs"),
                "kafka_pom": str(REPO / "features" / "kafka" / "pom.xml"),
            },
            "model": {"epochs": 2},
            "serving": {"port": 0, "admin_port": 0, "warmup_requests": 20},
        }
    )


@pytest.fixture(scope="session")
@real_part
def trained(base_config: Config, ml: Dataset) -> Config:
    """A published model and index built from it."""
    from index.build import build_index
    from training.train import train

    train(base_config, ml, log=_quiet)
    build_index(base_config, ml, log=_quiet)
    return base_config


@pytest.fixture(scope="session")
@real_part
def ranked(base_config: Config, ml: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Config:
    """A published model with its ranker (one epoch, walks of 300 events) and its index, in
    artifacts of their own; ``serving.ranker: gbdt``."""
    from index.build import build_index
    from training.train import train

    root = tmp_path_factory.mktemp("ranked")
    config = base_config.with_overrides(
        {
            "paths": {"artifacts": str(root / "artifacts")},
            "model": {"epochs": 1, "stream_eval_events": 300, "ranker": True},
            # The item feed is tested on its own; the rest runs without a broker.
            "serving": {"ranker": "gbdt", "ranker_feed": False},
        }
    )
    train(config, ml, log=_quiet)
    build_index(config, ml, log=_quiet)
    return config


@pytest.fixture(scope="session")
@real_part
def feature_store(trained: Config, ml: Dataset) -> Config:
    """A Feast store with profiles materialized and activity backfilled from the past."""
    from features.backfill import initialise

    past, _ = temporal_split(ml.interactions, trained.model.test_fraction)
    initialise(trained, ml, past)
    return trained


@pytest.fixture(scope="session")
@real_part
def kafka(base_config: Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real single-node Kafka broker; yields its bootstrap servers."""
    from localservices.kafka import LocalBroker, ensure_jars

    jars = ensure_jars(base_config.paths.kafka_pom, base_config.paths.kafka_jars, log=_quiet)
    with LocalBroker(jars, tmp_path_factory.mktemp("kafka"), log=_quiet) as broker:
        yield broker.bootstrap_servers


@contextlib.contextmanager
def running_server(config: Config) -> Iterator[Stack]:
    """The real serving stack (public and admin) on ephemeral ports, warm and SERVING."""
    from serving.stack import start_stack

    with start_stack(config) as stack:
        yield stack


@pytest.fixture
@real_part
def scratch(feature_store: Config, tmp_path: Path) -> Config:
    """Indexes of their own (the session's current one copied), the session's models and store."""
    from recsys import artifacts

    root = tmp_path / "artifacts"
    (root / "indexes").mkdir(parents=True)
    (root / "models").symlink_to(feature_store.models_dir)
    current = artifacts.current(feature_store.indexes_dir)
    shutil.copytree(current, root / "indexes" / current.name)
    artifacts.publish(root / "indexes", current.name)
    return feature_store.with_overrides(
        {"paths": {"artifacts": str(root)}, "serving": {"reload_poll_seconds": 0.1}}
    )


@pytest.fixture(scope="session")
@real_part
def server(feature_store: Config) -> Iterator[Stack]:
    with running_server(feature_store) as running:
        yield running


@pytest.fixture
def ingest_metrics():
    """The metrics of the ``ingester`` fixture's loop, one registry per test."""
    from features.stream.metrics import IngestMetrics

    return IngestMetrics()


@pytest.fixture
@real_part
def ingester(server: Stack, kafka: str, ingest_metrics) -> Iterator[Config]:
    """``recsys ingest``'s loop in a thread against the real broker and store."""
    from features.stream.ingester import Ingester
    from index.versions import published_catalog

    config = server.config.with_overrides({"kafka": {"bootstrap_servers": kafka}})
    ingester = Ingester.open(config, published_catalog(config.indexes_dir))
    stop = threading.Event()
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            ingester.run(stop, metrics=ingest_metrics)
        except BaseException as exc:  # surfaced in the test below, not lost in the thread
            errors.append(exc)

    thread = threading.Thread(target=loop, name="ingester", daemon=True)
    thread.start()
    try:
        yield config
    finally:
        stop.set()
        thread.join(timeout=30)
    if errors:
        raise errors[0]
    # A consumer left running would keep its partitions and starve the next test's.
    assert not thread.is_alive(), "the ingester loop did not stop within 30 s"
