"""``recsys catalog put|delete`` against a real broker: what lands on the catalog topic is
what was asked, keyed by item id, in order; a change the schema refuses is told in one line
and never sent."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from catalog.events import decode
from commands.cli import main
from features.events import read_to_end, whole_topic
from localservices.procs import free_port, write_config
from recsys.config import Config
from recsys.data.dataset import Dataset
from recsys.data.schema import configured_schema
from tests.conftest import wait_until


def _records(config: Config, topic: str) -> list[Any]:  # Any: kafka-python's records
    """Every record of ``topic``, in order."""
    consumer, partitions = whole_topic(
        config.kafka.model_copy(update={"topic": topic}), bootstrap_timeout_ms=5000
    )
    try:
        end = consumer.end_offsets(partitions)
        return [record for _, record in read_to_end(consumer, partitions, end)]
    finally:
        consumer.close()


def _read_all(config: Config) -> list[tuple[bytes, bytes]]:
    return [(r.key, r.value) for r in _records(config, config.kafka.catalog_topic)]


def _cli(base_config: Config, kafka: str, tmp_path: Path, topic: str) -> tuple[Config, str]:
    """A config on the test broker with its own catalog topic, and its file for the CLI."""
    config = base_config.with_overrides(
        {"kafka": {"bootstrap_servers": kafka, "catalog_topic": topic}}
    )
    return config, str(write_config(config, tmp_path / "config.yaml"))


def test_put_and_delete_land_on_the_catalog_topic(
    base_config: Config, kafka: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, path = _cli(base_config, kafka, tmp_path, "catalog-cli-test")
    features = '{"genres": ["Comedy", "Drama"], "title": "A New Film", "release_year": 2026}'
    assert main(["catalog", "put", "new-film", "--features", features, "--config", path]) == 0
    assert "offset 0" in capsys.readouterr().out
    assert main(["catalog", "delete", "new-film", "--time-ms", "42", "--config", path]) == 0
    # Refused before sending: an undeclared feature, and a value of the wrong type.
    for bad, reason in (('{"colour": "red"}', "unknown feature"), ('{"title": 3}', "needs a")):
        assert main(["catalog", "put", "x", "--features", bad, "--config", path]) == 2
        err = capsys.readouterr().err
        assert reason in err and "Traceback" not in err, err
    sent = _read_all(config)
    assert [key for key, _ in sent] == [b"new-film", b"new-film"]
    schema = configured_schema(config)
    put, delete = (decode(value, schema) for _, value in sent)
    assert put.features == {
        "genres": ("Comedy", "Drama"),
        "title": "A New Film",
        "release_year": 2026.0,
    }
    assert delete.deleted and delete.time_ms == 42 and put.event_id != delete.event_id


def test_a_rebuild_folds_the_topic_and_records_what_it_read(
    scratch: Config, kafka: str, ml: Dataset
) -> None:
    """``recsys build-index`` indexes the catalog as the topic has changed it (a new item in,
    a deleted one out, a replaced one once) and records the offsets it read up to; with no
    broker it indexes the data set's catalog and records none."""
    from catalog.events import encode_delete, encode_upsert
    from catalog.produce import send
    from index.build import build_index
    from index.versions import load_index

    config = scratch.with_overrides(
        {"kafka": {"bootstrap_servers": kafka, "catalog_topic": "catalog-fold-test"}}
    )
    film = {"genres": ["Comedy"], "title": "A New Film", "release_year": 2026}
    send(
        config,
        [
            encode_upsert("catalog-new-1", film, 1),
            encode_delete("1", 2),
            encode_upsert("2", {**film, "title": "GoldenEye, Remastered"}, 3),
        ],
    )
    built = build_index(config, ml, log=lambda _: None, publish=False)
    _, ids, manifest = load_index(built.directory)
    assert "catalog-new-1" in ids and "1" not in ids and ids.count("2") == 1
    assert len(ids) == len(ml.items)  # one in, one out
    assert manifest["catalog_topic"] == {
        "topic": "catalog-fold-test",
        "positions": {"0": 3},
        "changed_items": 3,
        "skipped": 0,
    }
    closed = config.with_overrides(
        {"kafka": {"bootstrap_servers": f"127.0.0.1:{free_port('127.0.0.1')}"}}
    )
    built = build_index(closed, ml, log=lambda _: None, publish=False)
    _, ids, manifest = load_index(built.directory)
    assert manifest["catalog_topic"] is None and "1" in ids and "catalog-new-1" not in ids


def test_unusable_catalog_events_are_dead_lettered_once_with_their_reason(
    base_config: Config, kafka: str
) -> None:
    """One checker (the one ``recsys ingest`` runs) sends each event no server can use to the
    dead-letter topic with its reason, goes on past it, and after a restart goes on from its
    commits (nothing is sent twice)."""
    from catalog.dead_letters import CatalogChecker
    from catalog.events import encode_delete, encode_upsert
    from catalog.produce import send

    config = base_config.with_overrides(
        {
            "kafka": {
                "bootstrap_servers": kafka,
                "catalog_topic": "catalog-dlq-test",
                "catalog_dead_letter_topic": "catalog-dlq-test.dlq",
            }
        }
    )
    schema = configured_schema(config)

    def run_until(checked: int) -> None:
        checker = CatalogChecker(config, schema)
        stop = threading.Event()
        thread = threading.Thread(target=checker.run, args=(stop,))
        thread.start()
        try:
            wait_until(lambda: checker.stats.checked >= checked, 30, "the checker read nothing")
        finally:
            stop.set()
            thread.join(timeout=15)
        assert not thread.is_alive()

    send(
        config,
        [
            (b"junk", b"\xff\xff\xff"),
            encode_upsert("a", {"genres": ["Comedy"]}, 1),
            encode_upsert("b", {"colour": "red"}, 2),
            encode_delete("c", 3),
        ],
    )
    run_until(4)
    send(config, [encode_upsert("z", {"title": 3}, 4)])
    run_until(1)  # a restarted checker: only what came since
    dead = _records(config, "catalog-dlq-test.dlq")
    reasons = {r.key: dict(r.headers)["reason"].decode() for r in dead}
    assert sorted(r.key for r in dead) == [b"b", b"junk", b"z"]  # each once
    assert "undecodable" in reasons[b"junk"] and "unknown feature 'colour'" in reasons[b"b"]
    assert "needs a string" in reasons[b"z"]


def test_a_synthetic_stream_lands_whole_and_decodes(
    base_config: Config, kafka: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, path = _cli(base_config, kafka, tmp_path, "catalog-synthetic-test")
    args = ["catalog", "synthetic", "--events", "50", "--rate", "0", "--seed", "3"]
    assert main([*args, "--config", path]) == 0
    assert "50 item changes" in capsys.readouterr().out
    schema = configured_schema(config)
    changes = [decode(value, schema) for _, value in _read_all(config)]
    assert len(changes) == 50 and any(c.deleted for c in changes)
    assert all(c.item_id.startswith("syn-3-") for c in changes if not c.deleted)
    assert main(["catalog", "put", "--config", path]) == 2  # put needs an id
