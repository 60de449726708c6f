"""A real single-node Apache Kafka 4.x (KRaft) broker, fetched and run by the project itself.

No Docker and no Kafka tarball: ``ensure_jars`` resolves the broker's classpath from Maven
Central with ``mvn dependency:copy-dependencies`` (``features/kafka/pom.xml``), and
``LocalBroker`` runs ``java -cp <jars>/* kafka.Kafka`` as a combined broker+controller node
with its state in a work directory. Only ``mvn`` and a Java 17+ runtime are needed.

Typical use::

    jars = ensure_jars(Path("features/kafka/pom.xml"), Path(".cache/kafka/libs"))
    with LocalBroker(jars, Path(".state/kafka"), port=9092) as broker:
        ...  # produce/consume against broker.bootstrap_servers
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from kafka import KafkaAdminClient

from recsys.errors import BrokerError

DEFAULT_LOG_CONFIG = Path(__file__).resolve().parents[1] / "features" / "kafka" / "log4j2.yaml"
"""log4j2 config shipped beside the pom: INFO to ``<work_dir>/broker.log``, config dumps off."""

DEFAULT_JVM_OPTS: tuple[str, ...] = (
    # Kafka's own default is a fixed 1 GiB heap; a dev broker beside TensorFlow needs far less.
    "-Xms128m",
    "-Xmx512m",
    # The GC settings of Kafka's kafka-run-class.sh.
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    # A broker stuck thrashing on a full heap is worse than one that exits and shows a log tail.
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)

_TOOL_JVM_OPTS: tuple[str, ...] = ("-Xmx256m", "-XX:TieredStopAtLevel=1")
"""StorageTool runs for a second or two: a small heap and C1 only make it start faster."""

_JARS_STAMP = ".pom.sha256"
_NODE_ID = 1
_LOG_NAME = "broker.log"
_PID_NAME = "broker.pid"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _tail(text: str, lines: int = 40) -> str:
    cleaned = _ANSI.sub("", text).rstrip()
    return "\n".join(cleaned.splitlines()[-lines:])


def _file_tail(path: Path, lines: int = 40) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            # The last 16 KiB is plenty for 40 lines and avoids reading a long-lived log.
            f.seek(max(0, f.tell() - 16384))
            data = f.read()
    except OSError:
        return "(no log)"
    return _tail(data.decode("utf-8", errors="replace"), lines) or "(empty log)"


def _kafka_jar(jars_dir: Path) -> Path | None:
    return next(iter(sorted(jars_dir.glob("kafka_*.jar"))), None) if jars_dir.is_dir() else None


def _require_tool(name: str, purpose: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BrokerError(f"`{name}` is not on PATH; it is needed to {purpose}. Install it first.")
    return found


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
        _kafka_jar(jars_dir) is not None
        and stamp.is_file()
        and stamp.read_text().strip() == pom_digest
    ):
        return jars_dir

    # Fetching jars that cannot be run would only defer the failure to start().
    _require_tool("java", "run the Kafka broker")
    mvn = _require_tool("mvn", "download the Kafka broker jars from Maven Central")
    jars_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(prefix=f".{jars_dir.name}.", suffix=".tmp", dir=jars_dir.parent)
    )
    log(f"fetching Kafka broker jars from Maven Central into {jars_dir} ...")
    started = time.monotonic()
    try:
        cmd = [
            mvn,
            "-q",
            "-B",
            "-Dstyle.color=never",
            "-f",
            str(pom.resolve()),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
            "-DincludeScope=runtime",
        ]
        try:
            proc = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                timeout=1800,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            output = e.stdout if isinstance(e.stdout, str) else ""
            raise BrokerError(
                f"mvn did not finish fetching the Kafka jars within {e.timeout:.0f}s:\n"
                f"{_tail(output)}"
            ) from e
        if proc.returncode != 0:
            raise BrokerError(
                f"mvn failed (exit {proc.returncode}) fetching the Kafka jars from {pom}; "
                f"is Maven Central reachable?\n{_tail(proc.stdout)}"
            )
        if _kafka_jar(staging) is None:
            raise BrokerError(
                f"mvn succeeded but no kafka_*.jar came out of {pom}; does it depend on "
                f"org.apache.kafka:kafka_2.13?\n{_tail(proc.stdout)}"
            )
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


def _free_ports(host: str, count: int) -> list[int]:
    # All sockets stay bound until every port is picked, so the ports are distinct. Another
    # process could still grab one before Kafka binds it; start() then fails with the log tail.
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _check_port_free(host: str, port: int, what: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Matches the JVM's server sockets, so only a live listener (not TIME_WAIT) fails here.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise BrokerError(
                f"{what} port {host}:{port} is unavailable ({e.strerror}); is another broker "
                f"running? Stop it or choose another port (0 picks a free one)."
            ) from e


def _new_cluster_id() -> str:
    # Same shape as `kafka-storage random-uuid` (URL-safe base64 of 16 random bytes), without
    # paying for a JVM start. Like Kafka, avoid a leading "-" so CLI tools don't read a flag.
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _read_properties(path: Path) -> dict[str, str]:
    props: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")) and "=" in line:
            key, _, value = line.partition("=")
            props[key.strip()] = value.strip()
    return props


class LocalBroker:
    """A single-node Kafka KRaft broker (combined broker and controller) in a child JVM.

    State (``server.properties``, ``data/`` log dirs, ``broker.log``) lives in ``work_dir``
    and survives restarts: an already formatted ``data/`` keeps its cluster id and topics,
    even when the ports change between runs. Listeners bind to ``host`` only.

    Use as a context manager, or call ``start()`` and ``stop()``; ``stop()`` always leaves
    no process behind.
    """

    def __init__(
        self,
        jars_dir: Path,
        work_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        controller_port: int = 0,
        log: Callable[[str], None] = print,
        log_config: Path = DEFAULT_LOG_CONFIG,
        jvm_opts: Sequence[str] = DEFAULT_JVM_OPTS,
        num_partitions: int = 4,
    ) -> None:
        """Describes a broker; nothing is started until ``start()``.

        Args:
            jars_dir: Directory filled by ``ensure_jars``.
            work_dir: Directory for the broker's config, data and log (created as needed).
            host: Interface both listeners bind to and advertise.
            port: Client (PLAINTEXT) port; 0 picks a free ephemeral port at ``start()``.
            controller_port: KRaft controller port; 0 picks a free ephemeral port.
            log: Receives one-line progress messages.
            log_config: log4j2 configuration for the broker JVM.
            jvm_opts: JVM flags (heap, GC) for the broker.
            num_partitions: Partitions of auto-created topics.
        """
        for name, value in (("port", port), ("controller_port", controller_port)):
            if not 0 <= value <= 65535:
                raise BrokerError(f"{name} must be in 0..65535, got {value}.")
        if port and port == controller_port:
            raise BrokerError(f"port and controller_port must differ, both are {port}.")
        if num_partitions < 1:
            raise BrokerError(f"num_partitions must be >= 1, got {num_partitions}.")
        self.jars_dir = jars_dir.resolve()
        self.work_dir = work_dir.resolve()
        self.host = host
        self._requested_ports = (port, controller_port)
        self._port = port
        self._controller_port = controller_port
        self._log = log
        self._log_config = log_config.resolve()
        self._jvm_opts = tuple(jvm_opts)
        self._num_partitions = num_partitions
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._cluster_id: str | None = None

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` of the client listener.

        Raises:
            BrokerError: The port is 0 (chosen at start) and the broker has not started yet.
        """
        if not self._port:
            raise BrokerError("The broker port is picked at start(); start the broker first.")
        return f"{self.host}:{self._port}"

    @property
    def port(self) -> int:
        """The client port (0 until ``start()`` when a free port was requested)."""
        return self._port

    @property
    def controller_port(self) -> int:
        """The KRaft controller port (0 until ``start()`` when a free port was requested)."""
        return self._controller_port

    @property
    def pid(self) -> int | None:
        """Process id of the broker JVM while it runs, else None."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def cluster_id(self) -> str | None:
        """The KRaft cluster id, known once ``start()`` has formatted or read the storage."""
        return self._cluster_id

    @property
    def log_path(self) -> Path:
        """The broker's combined stdout/stderr/log4j output."""
        return self.work_dir / _LOG_NAME

    @property
    def data_dir(self) -> Path:
        """The broker's log dir (topic partitions and the KRaft metadata log)."""
        return self.work_dir / "data"

    def _classpath(self) -> str:
        # The JVM expands a trailing "/*" to every jar in the directory itself.
        return f"{self.jars_dir}{os.sep}*"

    def _java(self, java: str, jvm_opts: Sequence[str], main: str, *args: str) -> list[str]:
        return [
            java,
            *jvm_opts,
            f"-Dlog4j2.configurationFile={self._log_config}",
            "-cp",
            self._classpath(),
            main,
            *args,
        ]

    def _server_properties(self) -> str:
        h, p, c = self.host, self._port, self._controller_port
        props = {
            "process.roles": "broker,controller",
            "node.id": str(_NODE_ID),
            "listeners": f"PLAINTEXT://{h}:{p},CONTROLLER://{h}:{c}",
            # Kafka 4 dynamic quorums advertise the controller endpoint too.
            "advertised.listeners": f"PLAINTEXT://{h}:{p},CONTROLLER://{h}:{c}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            # A dynamic (KIP-853) quorum formatted with --standalone: no static voters list,
            # so the ports may change between restarts of the same data dir.
            "controller.quorum.bootstrap.servers": f"{h}:{c}",
            "log.dirs": str(self.data_dir),
            "num.partitions": str(self._num_partitions),
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

    def start(self, timeout: float = 60.0) -> None:
        """Writes the config, formats storage on first use, launches the JVM and waits for it.

        Args:
            timeout: Seconds to wait for the broker to serve metadata requests.

        Raises:
            BrokerError: The jars or Java are missing, a port is taken, formatting failed, or
                the broker exited or was not ready in time (the message has the log tail).
        """
        if self._proc is not None:
            raise BrokerError(f"The broker is already running (pid {self._proc.pid}).")
        if _kafka_jar(self.jars_dir) is None:
            raise BrokerError(
                f"No Kafka jars in {self.jars_dir}; fetch them first with "
                f"ensure_jars(<repo>/features/kafka/pom.xml, {self.jars_dir})."
            )
        if not self._log_config.is_file():
            raise BrokerError(f"log4j2 config not found at {self._log_config}.")
        java = _require_tool("java", "run the Kafka broker")

        self._port, self._controller_port = self._requested_ports
        if not self._port or not self._controller_port:
            picked = iter(_free_ports(self.host, 2))
            self._port = self._port or next(picked)
            self._controller_port = self._controller_port or next(picked)
            # Guards the rare case where the free pick equals the explicitly chosen port.
            if self._port == self._controller_port:
                self._controller_port = next(picked)
        self._refuse_stale_broker()
        _check_port_free(self.host, self._port, "Kafka client")
        _check_port_free(self.host, self._controller_port, "Kafka controller")

        self.work_dir.mkdir(parents=True, exist_ok=True)
        config = self.work_dir / "server.properties"
        config.write_text(self._server_properties())
        self._format_storage(java, config)

        # Keep the previous run's log for post-mortems; the tail we report is this run's only.
        if self.log_path.exists():
            self.log_path.replace(self.log_path.with_name(_LOG_NAME + ".1"))
        started = time.monotonic()
        self._log_file = self.log_path.open("wb")
        try:
            self._proc = subprocess.Popen(
                self._java(java, self._jvm_opts, "kafka.Kafka", str(config)),
                cwd=self.work_dir,  # JVM crash files (hs_err_pid*.log) land here too
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                # Own session and process group: a Ctrl-C in our terminal does not reach the
                # JVM half-way, and stop() can signal the whole group.
                start_new_session=True,
            )
        except OSError as e:
            self._close_log()
            raise BrokerError(f"Could not launch {java}: {e}") from e
        (self.work_dir / _PID_NAME).write_text(f"{self._proc.pid}\n")
        self._log(
            f"starting Kafka broker pid {self._proc.pid} on {self.bootstrap_servers} "
            f"(controller {self.host}:{self._controller_port}, log {self.log_path})"
        )
        try:
            self._wait_ready(started + timeout, timeout)
        except BaseException:
            # Also on KeyboardInterrupt: never leave a half-started JVM behind.
            self.stop()
            raise
        self._log(
            f"Kafka broker ready on {self.bootstrap_servers} in {time.monotonic() - started:.1f}s"
        )

    def _refuse_stale_broker(self) -> None:
        # A JVM orphaned by a killed Python process (it runs in its own session) would hold
        # the data dir lock; name it instead of failing later with a lock error in the log.
        pid_file = self.work_dir / _PID_NAME
        try:
            pid = int(pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            pid_file.unlink(missing_ok=True)
            return
        config = str(self.work_dir / "server.properties").encode()
        if b"kafka.Kafka" in cmdline and config in cmdline:
            raise BrokerError(
                f"A Kafka broker from an earlier run (pid {pid}) still uses {self.work_dir}; "
                f"stop it first (kill {pid})."
            )
        pid_file.unlink(missing_ok=True)

    def _format_storage(self, java: str, config: Path) -> None:
        meta = self.data_dir / "meta.properties"
        if meta.is_file():
            # Already formatted: reuse it. Re-running format, even with --ignore-formatted,
            # would demand the same cluster id, which is simply read back here.
            self._cluster_id = _read_properties(meta).get("cluster.id")
            return
        cluster_id = _new_cluster_id()
        cmd = self._java(
            java,
            _TOOL_JVM_OPTS,
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            cluster_id,
            "--config",
            str(config),
            # Kafka 4 refuses to format a controller without a quorum choice; a single node
            # bootstraps itself as the only voter of a dynamic quorum.
            "--standalone",
        )
        try:
            proc = subprocess.run(
                cmd,
                cwd=self.work_dir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                timeout=120,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise BrokerError(f"Formatting Kafka storage in {self.data_dir} timed out.") from e
        if proc.returncode != 0:
            raise BrokerError(
                f"Formatting Kafka storage in {self.data_dir} failed (exit {proc.returncode}):\n"
                f"{_tail(proc.stdout)}"
            )
        self._cluster_id = cluster_id
        self._log(f"formatted Kafka storage in {self.data_dir} (cluster id {cluster_id})")

    def _wait_ready(self, deadline: float, timeout: float) -> None:
        proc = self._proc
        if proc is None:  # pragma: no cover - start() sets it right before
            raise BrokerError("The broker process is not running.")
        last_error = "no connection yet"
        while True:
            code = proc.poll()
            if code is not None:
                raise BrokerError(
                    f"The Kafka broker exited with code {code} during startup. "
                    f"Tail of {self.log_path}:\n{_file_tail(self.log_path)}"
                )
            if time.monotonic() >= deadline:
                raise BrokerError(
                    f"The Kafka broker was not ready within {timeout:g}s ({last_error}). "
                    f"Tail of {self.log_path}:\n{_file_tail(self.log_path)}"
                )
            # A bare TCP connect first: kafka-python would log connection-refused warnings
            # to stderr on every attempt while the JVM is still booting.
            try:
                with socket.create_connection((self.host, self._port), timeout=0.5):
                    pass
            except OSError as e:
                last_error = f"port not open: {e.strerror or e}"
                time.sleep(0.2)
                continue
            try:
                ready, last_error = self._probe()
            except Exception as e:  # any client failure here just means "not ready yet"
                ready, last_error = False, f"metadata request failed: {e!r}"
            if ready:
                return
            time.sleep(0.3)

    def _probe(self) -> tuple[bool, str]:
        admin = KafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers,
            client_id="recsys-broker-probe",
            bootstrap_timeout_ms=2000,
            request_timeout_ms=2000,
        )
        try:
            cluster = admin.describe_cluster()
        finally:
            admin.close()
        # Another broker could own the port (e.g. a stale one the port check raced with);
        # only our own cluster, with our node registered and unfenced, counts as ready.
        if self._cluster_id is not None and cluster.get("cluster_id") != self._cluster_id:
            return (
                False,
                f"port answers for cluster {cluster.get('cluster_id')}, not ours",
            )
        for broker in cluster.get("brokers", []):
            if broker.get("broker_id") == _NODE_ID and not broker.get("is_fenced", False):
                return True, "ready"
        return False, "broker not registered/unfenced yet"

    def stop(self, timeout: float = 20.0) -> None:
        """Stops the broker: SIGTERM (clean shutdown), then SIGKILL after ``timeout``.

        Signals the broker's whole process group, so nothing it spawned survives either.
        Safe to call repeatedly and when the broker never started.

        Args:
            timeout: Seconds to wait for a clean shutdown before killing.
        """
        proc = self._proc
        if proc is None:
            self._close_log()
            return
        try:
            if proc.poll() is None:
                self._log(f"stopping Kafka broker pid {proc.pid}")
                self._signal_group(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self._log(
                        f"Kafka broker pid {proc.pid} ignored SIGTERM for {timeout:.0f}s; killing"
                    )
                    # Only while the leader is unreaped is the group id surely still ours.
                    self._signal_group(proc.pid, signal.SIGKILL)
                    proc.wait()
        finally:
            self._proc = None
            self._close_log()
            (self.work_dir / _PID_NAME).unlink(missing_ok=True)

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        # The group is gone once everything in it has exited; that is the goal, not an error.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
