"""The configuration of a single-node KRaft cluster: one combined broker and controller.

Pure text in and out, so that what the broker is told to be can be tested without a JVM.
"""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

NODE_ID = 1
"""The node id of the one broker+controller; readiness waits for this id to register."""


def server_properties(
    host: str, port: int, controller_port: int, data_dir: Path, num_partitions: int
) -> str:
    """``server.properties`` for one node serving clients on ``port``, its quorum on the other.

    Args:
        host: Interface both listeners bind to and advertise.
        port: Client (PLAINTEXT) port.
        controller_port: KRaft controller port.
        data_dir: The log dir (topic partitions and the KRaft metadata log).
        num_partitions: Partitions of auto-created topics.
    """
    h, p, c = host, port, controller_port
    props = {
        "process.roles": "broker,controller",
        "node.id": str(NODE_ID),
        "listeners": f"PLAINTEXT://{h}:{p},CONTROLLER://{h}:{c}",
        # Kafka 4 dynamic quorums advertise the controller endpoint too.
        "advertised.listeners": f"PLAINTEXT://{h}:{p},CONTROLLER://{h}:{c}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        # A dynamic (KIP-853) quorum formatted with --standalone: no static voters list,
        # so the ports may change between restarts of the same data dir.
        "controller.quorum.bootstrap.servers": f"{h}:{c}",
        "log.dirs": str(data_dir),
        "num.partitions": str(num_partitions),
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "auto.create.topics.enable": "true",
        "offsets.topic.replication.factor": "1",
        # 50 by default; a handful is enough for one node and makes the first group join
        # (which creates __consumer_offsets) noticeably faster.
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # Consumers in tests and dev loops should get partitions immediately, not after 3 s.
        "group.initial.rebalance.delay.ms": "0",
    }
    header = "# Written by localservices/kafka.py on every start; edits are overwritten.\n"
    return header + "".join(f"{k}={v}\n" for k, v in props.items())


def new_cluster_id() -> str:
    """A fresh KRaft cluster id for formatting a new data dir."""
    # Same shape as `kafka-storage random-uuid` (URL-safe base64 of 16 random bytes), without
    # paying for a JVM start. Like Kafka, avoid a leading "-" so CLI tools don't read a flag.
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def read_properties(path: Path) -> dict[str, str]:
    """The ``key=value`` pairs of a Java properties file such as ``meta.properties``."""
    props: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")) and "=" in line:
            key, _, value = line.partition("=")
            props[key.strip()] = value.strip()
    return props
