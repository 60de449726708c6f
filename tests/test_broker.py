"""Integration tests against a real single-node Kafka 4 broker run by localservices.kafka.

The first run downloads the broker jars from Maven Central into ``<repo>/.cache/kafka/libs``
(needs ``mvn`` and ``java``); later runs reuse them.
"""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic

from localservices.kafka import LocalBroker, ensure_jars
from recsys.errors import BrokerError
from tests.conftest import real_part

REPO = Path(__file__).resolve().parents[1]
POM = REPO / "features" / "kafka" / "pom.xml"
JARS = REPO / ".cache" / "kafka" / "libs"


def _quiet(_: str) -> None:
    pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A reaped pid is gone; a zombie would still answer kill(0), so check its state too.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.fixture(scope="module")
@real_part
def jars_dir() -> Path:
    return ensure_jars(POM, JARS, log=_quiet)


@pytest.fixture(scope="module")
def broker(jars_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    with LocalBroker(jars_dir, tmp_path_factory.mktemp("kafka"), log=_quiet) as b:
        yield b


def test_roundtrip_keyed_messages(broker: LocalBroker) -> None:
    topic = f"test-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])
    finally:
        admin.close()

    sent: dict[bytes, list[bytes]] = {f"user-{i % 10}".encode(): [] for i in range(100)}
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
    try:
        for i in range(100):
            key = f"user-{i % 10}".encode()
            producer.send(topic, key=key, value=str(i).encode())
            sent[key].append(str(i).encode())
        producer.flush(timeout=15)
    finally:
        producer.close()

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=broker.bootstrap_servers,
        group_id=f"group-{topic}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    received: dict[bytes, list[bytes]] = {}
    partitions_by_key: dict[bytes, set[int]] = {}
    try:
        deadline = time.monotonic() + 20
        while sum(map(len, received.values())) < 100 and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=500).items():
                for r in records:
                    received.setdefault(r.key, []).append(r.value)
                    partitions_by_key.setdefault(r.key, set()).add(tp.partition)
        consumer.commit()
        committed = {tp.partition: consumer.committed(tp) for tp in consumer.assignment()}
    finally:
        consumer.close()

    assert received == sent  # per key, in send order: a key stays on one partition
    assert all(len(parts) == 1 for parts in partitions_by_key.values())
    assert len({p for parts in partitions_by_key.values() for p in parts}) > 1
    assert sum(v for v in committed.values() if v is not None) == 100


def test_stop_leaves_no_process(jars_dir: Path, tmp_path: Path) -> None:
    b = LocalBroker(jars_dir, tmp_path / "kafka", log=_quiet)
    b.start()
    pid = b.pid
    assert pid is not None and _alive(pid)
    b.stop()
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid)
    assert b.pid is None
    b.stop()  # idempotent


def test_missing_jars_dir_raises(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-libs"
    b = LocalBroker(missing, tmp_path / "kafka", log=_quiet)
    with pytest.raises(BrokerError, match=r"No Kafka jars in .*no-such-libs.*ensure_jars"):
        b.start()
    assert b.pid is None
    b.stop()


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_recsys_broker_stops_its_jvm_on_a_signal(
    base_config, jars_dir: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    from localservices.procs import child, free_port, write_config

    port = free_port("127.0.0.1")
    config = base_config.with_overrides(
        {
            "paths": {"state": str(tmp_path / "state"), "kafka_jars": str(jars_dir)},
            "kafka": {"bootstrap_servers": f"127.0.0.1:{port}"},
        }
    )
    config_file = write_config(config, tmp_path / "config.yaml")
    log = tmp_path / "broker.log"
    with child("broker", config_file, ["broker"], tmp_path, quiet=True) as proc:
        deadline = time.monotonic() + 120
        while "Kafka broker on" not in log.read_text():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        jvms = _children(proc.pid)
        assert jvms and all(_alive(p) for p in jvms)
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in jvms) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in jvms), "the broker's JVM outlived `recsys broker`"
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # nothing listens there any more
