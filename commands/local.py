"""``recsys fetch-kafka`` and ``recsys broker``: the local single-node Kafka broker."""

from __future__ import annotations

import argparse
import signal
import threading

from commands.command import Command
from recsys.config import Config


def fetch_kafka(config: Config, args: argparse.Namespace) -> None:
    from localservices.kafka import ensure_jars

    jars = ensure_jars(config.paths.kafka_pom, config.paths.kafka_jars)
    print(f"Kafka broker jars ready in {jars}")


def broker(config: Config, args: argparse.Namespace) -> None:
    from localservices.kafka import LocalBroker, ensure_jars

    host, _, port = config.kafka.bootstrap_servers.partition(":")
    jars = ensure_jars(config.paths.kafka_pom, config.paths.kafka_jars)
    # The JVM runs in its own session (so a terminal's Ctrl-C does not reach it half-way):
    # this process must stop it, so a signal only ends the wait and the `with` stops it.
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    with LocalBroker(jars, config.paths.state / "kafka", host=host, port=int(port)) as running:
        print(
            f"Kafka broker on {running.bootstrap_servers} (pid {running.pid}); Ctrl-C or "
            "SIGTERM stops it",
            flush=True,
        )
        stop.wait()
        print("stopping the broker", flush=True)


COMMANDS = (
    Command("fetch-kafka", "download the Kafka broker jars from Maven Central", fetch_kafka),
    Command("broker", "run a local single-node Kafka broker (foreground)", broker),
)
