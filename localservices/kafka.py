"""A real single-node Apache Kafka 4.x (KRaft) broker, fetched and run by the project itself.

No Docker and no Kafka tarball: ``ensure_jars`` (``localservices/jars.py``) resolves the
broker's classpath from Maven Central with ``mvn dependency:copy-dependencies``
(``features/kafka/pom.xml``), and ``LocalBroker`` runs ``java -cp <jars>/* kafka.Kafka`` as a
combined broker+controller node with its state in a work directory. Only ``mvn`` and a Java
17+ runtime are needed.

Typical use::

    jars = ensure_jars(Path("features/kafka/pom.xml"), Path(".cache/kafka/libs"))
    with LocalBroker(jars, Path(".state/kafka"), port=9092) as broker:
        ...  # produce/consume against broker.bootstrap_servers
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from kafka import KafkaAdminClient

from localservices.jars import ensure_jars, kafka_jar
from localservices.kraft import NODE_ID, new_cluster_id, read_properties, server_properties
from localservices.process import ManagedProcess, output_tail, require_tool, run_tool
from localservices.procs import free_ports
from recsys.errors import BrokerError

# ensure_jars is re-exported: a broker's callers fetch its classpath from the same import.
__all__ = ["DEFAULT_JVM_OPTS", "DEFAULT_LOG_CONFIG", "LocalBroker", "ensure_jars"]

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

_LOG_NAME = "broker.log"
_PID_NAME = "broker.pid"


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


class LocalBroker(ManagedProcess):
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
        super().__init__("Kafka broker", self.work_dir / _LOG_NAME, log=log)
        self.host = host
        self._requested_ports = (port, controller_port)
        self._port = port
        self._controller_port = controller_port
        self._log_config = log_config.resolve()
        self._jvm_opts = tuple(jvm_opts)
        self._num_partitions = num_partitions
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
    def cluster_id(self) -> str | None:
        """The KRaft cluster id, known once ``start()`` has formatted or read the storage."""
        return self._cluster_id

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
        if kafka_jar(self.jars_dir) is None:
            raise BrokerError(
                f"No Kafka jars in {self.jars_dir}; fetch them first with "
                f"ensure_jars(<repo>/features/kafka/pom.xml, {self.jars_dir})."
            )
        if not self._log_config.is_file():
            raise BrokerError(f"log4j2 config not found at {self._log_config}.")
        java = require_tool("java", "run the Kafka broker")

        self._port, self._controller_port = self._requested_ports
        if not self._port or not self._controller_port:
            first = free_ports(self.host, 2)
            picked = iter((first, first + 1))
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
        config.write_text(
            server_properties(
                self.host, self._port, self._controller_port, self.data_dir, self._num_partitions
            )
        )
        self._format_storage(java, config)

        # Keep the previous run's log for post-mortems; the tail we report is this run's only.
        if self.log_path.exists():
            self.log_path.replace(self.log_path.with_name(_LOG_NAME + ".1"))
        started = time.monotonic()
        proc = self._launch(
            self._java(java, self._jvm_opts, "kafka.Kafka", str(config)),
            cwd=self.work_dir,  # JVM crash files (hs_err_pid*.log) land here too
        )
        (self.work_dir / _PID_NAME).write_text(f"{proc.pid}\n")
        self._log(
            f"starting Kafka broker pid {proc.pid} on {self.bootstrap_servers} "
            f"(controller {self.host}:{self._controller_port}, log {self.log_path})"
        )
        self._wait_ready(proc, timeout, started)
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
            self._cluster_id = read_properties(meta).get("cluster.id")
            return
        cluster_id = new_cluster_id()
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
            proc = run_tool(cmd, timeout=120, cwd=self.work_dir)
        except subprocess.TimeoutExpired as e:
            raise BrokerError(f"Formatting Kafka storage in {self.data_dir} timed out.") from e
        if proc.returncode != 0:
            raise BrokerError(
                f"Formatting Kafka storage in {self.data_dir} failed (exit {proc.returncode}):\n"
                f"{output_tail(proc.stdout)}"
            )
        self._cluster_id = cluster_id
        self._log(f"formatted Kafka storage in {self.data_dir} (cluster id {cluster_id})")

    def _probe(self) -> tuple[bool, str]:
        # A bare TCP connect first: kafka-python would log connection-refused warnings
        # to stderr on every attempt while the JVM is still booting.
        try:
            with socket.create_connection((self.host, self._port), timeout=0.5):
                pass
        except OSError as e:
            return False, f"port not open: {e.strerror or e}"
        try:
            return self._describe_cluster()
        except Exception as e:  # any client failure here just means "not ready yet"
            return False, f"metadata request failed: {e!r}"

    def _describe_cluster(self) -> tuple[bool, str]:
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
            if broker.get("broker_id") == NODE_ID and not broker.get("is_fenced", False):
                return True, "ready"
        return False, "broker not registered/unfenced yet"

    def stop(self, timeout: float = 20.0) -> None:
        """Stops the broker: SIGTERM (clean shutdown), then SIGKILL after ``timeout``.

        Signals the broker's whole process group, so nothing it spawned survives either.
        Safe to call repeatedly and when the broker never started.

        Args:
            timeout: Seconds to wait for a clean shutdown before killing.
        """
        if self._proc is None:
            return
        try:
            super().stop(timeout)
        finally:
            # Only once our JVM is gone: a pid file left by another run names a broker to refuse.
            (self.work_dir / _PID_NAME).unlink(missing_ok=True)
