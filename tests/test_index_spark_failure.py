"""A Spark index build whose job fails publishes nothing: a ``local[2]`` session (one attempt
per task), a Python worker killed mid-job, and the old ``CURRENT`` still serving. Its own
module: a process holds one SparkContext, and this one must not retry."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from index import spark as spark_engine
from index.build import build_index
from index.catalog import Catalog
from index.versions import load_index, versions
from recsys import artifacts
from recsys.errors import ArtifactError
from tests.conftest import real_part
from tests.test_index_spark import kill_a_busy_worker


@pytest.fixture(scope="module")
@real_part
def no_retries() -> Iterator[object]:
    with spark_engine.session("local[2]") as session:
        yield session


def test_a_failed_job_publishes_nothing_and_the_old_index_keeps_serving(
    trained, ml, tmp_path: Path, no_retries
) -> None:
    root = tmp_path / "artifacts"
    root.mkdir()
    (root / "models").symlink_to(trained.models_dir)
    config = trained.with_overrides({"paths": {"artifacts": str(root)}})
    old = build_index(config, ml, log=lambda _: None).directory
    catalog = Catalog.synthetic(ml, 300_000).write_parquet(tmp_path / "items.parquet")
    config = config.with_overrides(
        {"index": {"engine": "spark", "catalog": str(catalog), "type": "flat"}}
    )
    killer = kill_a_busy_worker(time.monotonic() + 120)
    with pytest.raises(ArtifactError, match="the Spark job failed, nothing published"):
        build_index(config, ml, log=lambda _: None)
    killer.join(timeout=1)
    assert artifacts.current(config.indexes_dir) == old
    assert versions(config.indexes_dir) == [old.name]
    assert not list(config.indexes_dir.glob(".*.tmp"))
    assert len(load_index(old)[1]) == len(ml.items)
