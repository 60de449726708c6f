"""Shared fixtures: the real data set, one trained model+index, a real Feast store, a real
Kafka broker, and a real gRPC server on an ephemeral port. Each is built once per session and
stopped by the fixture that started it."""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import towers.tf_env  # noqa: F401  (TF_USE_LEGACY_KERAS before anything imports TensorFlow)
from recsys.config import Config
from recsys.data import MovieLens, fetch_ml100k, load_movielens, temporal_split

if TYPE_CHECKING:
    from serving.stack import Stack

REPO = Path(__file__).resolve().parents[1]


def _quiet(_: str) -> None:
    pass


def wait_until(predicate, timeout: float, what: str, every: float = 0.2) -> None:
    """Polls ``predicate`` until true; fails with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:.0f}s")
        time.sleep(every)


@pytest.fixture(scope="session")
def ml() -> MovieLens:
    return load_movielens(fetch_ml100k(REPO / ".cache" / "data", log=_quiet))


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
def trained(base_config: Config, ml: MovieLens) -> Config:
    """A published model and index built from it."""
    from index.build import build_index
    from training.train import train

    train(base_config, ml, log=_quiet)
    build_index(base_config, ml, log=_quiet)
    return base_config


@pytest.fixture(scope="session")
def feature_store(trained: Config, ml: MovieLens) -> Config:
    """A Feast store with profiles materialized and activity backfilled from the past."""
    from features.backfill import initialise

    past, _ = temporal_split(ml.interactions, trained.model.test_fraction)
    initialise(trained, ml, past)
    return trained


@pytest.fixture(scope="session")
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
def server(feature_store: Config) -> Iterator[Stack]:
    with running_server(feature_store) as running:
        yield running


@pytest.fixture
def ingest_metrics():
    """The metrics of the ``ingester`` fixture's loop, one registry per test."""
    from features.stream.metrics import IngestMetrics

    return IngestMetrics()


@pytest.fixture
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
