"""The Kafka broker's classpath, resolved from Maven Central rather than a Kafka tarball.

``ensure_jars`` runs ``mvn dependency:copy-dependencies`` on ``features/kafka/pom.xml`` once
per pom version; ``LocalBroker`` then runs the JVM on the directory it fills.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from localservices.process import output_tail, require_tool, run_tool
from recsys.errors import BrokerError

_JARS_STAMP = ".pom.sha256"


def kafka_jar(jars_dir: Path) -> Path | None:
    """The Kafka broker jar in ``jars_dir``, or None if it holds no broker classpath."""
    return next(iter(sorted(jars_dir.glob("kafka_*.jar"))), None) if jars_dir.is_dir() else None


def ensure_jars(pom: Path, jars_dir: Path, *, log: Callable[[str], None] = print) -> Path:
    """Makes ``jars_dir`` hold the broker classpath listed in ``pom``, downloading it if needed.

    Idempotent: if ``jars_dir`` already holds the Kafka jar resolved from this exact pom (a
    sha256 stamp is kept beside the jars), nothing runs. Otherwise Maven copies the
    dependencies into a scratch directory next to ``jars_dir``, which is then renamed into
    place, so an interrupted download never leaves a partial classpath behind.

    Args:
        pom: The Maven pom listing the broker's dependencies.
        jars_dir: Where the jars should end up (created, with parents, as needed).
        log: Receives one-line progress messages.

    Returns:
        ``jars_dir``.

    Raises:
        BrokerError: ``mvn`` or ``java`` is missing, the pom does not exist, or Maven failed
            (the message carries the tail of Maven's output).
    """
    if not pom.is_file():
        raise BrokerError(f"Kafka pom not found at {pom}.")
    pom_digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    stamp = jars_dir / _JARS_STAMP
    if (
        kafka_jar(jars_dir) is not None
        and stamp.is_file()
        and stamp.read_text().strip() == pom_digest
    ):
        return jars_dir

    # Fetching jars that cannot be run would only defer the failure to start().
    require_tool("java", "run the Kafka broker")
    mvn = require_tool("mvn", "download the Kafka broker jars from Maven Central")
    jars_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(prefix=f".{jars_dir.name}.", suffix=".tmp", dir=jars_dir.parent)
    )
    log(f"fetching Kafka broker jars from Maven Central into {jars_dir} ...")
    started = time.monotonic()
    try:
        _copy_dependencies(mvn, pom, staging)
        (staging / _JARS_STAMP).write_text(pom_digest + "\n")
        # A directory cannot be os.replace'd onto a non-empty one: move the stale set aside
        # first. A crash in between leaves no jars_dir, which the next call simply refetches.
        stale = None
        if jars_dir.exists():
            stale = jars_dir.with_name(f".{jars_dir.name}.stale-{os.getpid()}")
            shutil.rmtree(stale, ignore_errors=True)
            jars_dir.rename(stale)
        staging.rename(jars_dir)
        if stale is not None:
            shutil.rmtree(stale, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    count = sum(1 for _ in jars_dir.glob("*.jar"))
    log(f"fetched {count} jars in {time.monotonic() - started:.1f}s")
    return jars_dir


def _copy_dependencies(mvn: str, pom: Path, out: Path) -> None:
    cmd = [
        mvn,
        "-q",
        "-B",
        "-Dstyle.color=never",
        "-f",
        str(pom.resolve()),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={out}",
        "-DincludeScope=runtime",
    ]
    try:
        proc = run_tool(cmd, timeout=1800)
    except subprocess.TimeoutExpired as e:
        output = e.stdout if isinstance(e.stdout, str) else ""
        raise BrokerError(
            f"mvn did not finish fetching the Kafka jars within {e.timeout:.0f}s:\n"
            f"{output_tail(output)}"
        ) from e
    if proc.returncode != 0:
        raise BrokerError(
            f"mvn failed (exit {proc.returncode}) fetching the Kafka jars from {pom}; "
            f"is Maven Central reachable?\n{output_tail(proc.stdout)}"
        )
    if kafka_jar(out) is None:
        raise BrokerError(
            f"mvn succeeded but no kafka_*.jar came out of {pom}; does it depend on "
            f"org.apache.kafka:kafka_2.13?\n{output_tail(proc.stdout)}"
        )
