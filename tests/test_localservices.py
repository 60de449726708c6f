"""Tests for the pieces of localservices that need no broker: the KRaft config, output tails,
and the managed-process base, driven by tiny shell children."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from localservices.jars import kafka_jar
from localservices.kraft import NODE_ID, new_cluster_id, read_properties, server_properties
from localservices.process import ManagedProcess, log_tail, output_tail, stop_process
from recsys.errors import BrokerError


def _gone(pid: int) -> bool:
    # A zombie (exited, its reaper not yet run) holds no resources: it counts as gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state == "Z"


def test_server_properties_name_both_listeners_and_the_data_dir(tmp_path: Path) -> None:
    text = server_properties("127.0.0.1", 9092, 9093, tmp_path / "data", 3)
    props = read_properties(_write(tmp_path / "server.properties", text))
    assert props["node.id"] == str(NODE_ID)
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:9093"
    assert props["log.dirs"] == str(tmp_path / "data")
    assert props["num.partitions"] == "3"


def test_read_properties_skips_comments_and_strips(tmp_path: Path) -> None:
    path = _write(tmp_path / "meta.properties", "# c\n! c\n cluster.id = abc \nnoequals\n")
    assert read_properties(path) == {"cluster.id": "abc"}


def test_new_cluster_ids_are_kafka_shaped_and_fresh() -> None:
    ids = {new_cluster_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(len(cid) == 22 and not cid.startswith("-") for cid in ids)


def test_kafka_jar_needs_the_broker_jar(tmp_path: Path) -> None:
    assert kafka_jar(tmp_path / "missing") is None
    (tmp_path / "kafka-clients-4.0.0.jar").touch()
    assert kafka_jar(tmp_path) is None
    (tmp_path / "kafka_2.13-4.0.0.jar").touch()
    assert kafka_jar(tmp_path) == tmp_path / "kafka_2.13-4.0.0.jar"


def test_tails_drop_colour_and_keep_the_last_lines(tmp_path: Path) -> None:
    text = "".join(f"\x1b[31mline {i}\x1b[0m\n" for i in range(100))
    assert output_tail(text, 2) == "line 98\nline 99"
    assert log_tail(_write(tmp_path / "a.log", text), 1) == "line 99"
    assert log_tail(_write(tmp_path / "empty.log", "")) == "(empty log)"
    assert log_tail(tmp_path / "none.log") == "(no log)"


@pytest.mark.usefixtures("processes")
def test_stop_process_kills_what_ignores_sigterm() -> None:
    ignore = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print(1, flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", ignore], stdout=subprocess.PIPE, start_new_session=True
    )
    assert proc.stdout is not None and proc.stdout.readline()  # SIGTERM is ignored by now
    said: list[str] = []
    stop_process(proc, "stubborn", 1.0, group=True, log=said.append)
    assert proc.returncode == -signal.SIGKILL
    assert said == [
        f"stopping stubborn pid {proc.pid}",
        f"stubborn pid {proc.pid} ignored SIGTERM for 1s; killing",
    ]
    proc.stdout.close()


class _Shell(ManagedProcess):
    """A ``sh -c script`` child that counts as ready once ``ready_file`` exists."""

    def __init__(self, script: str, work: Path) -> None:
        super().__init__("shell server", work / "shell.log")
        self.script = script
        self.ready_file = work / "ready"

    def start(self, timeout: float = 10.0) -> None:
        started = time.monotonic()
        self._wait_ready(self._launch(["sh", "-c", self.script]), timeout, started)

    def _probe(self) -> tuple[bool, str]:
        return self.ready_file.exists(), "no ready file yet"


@pytest.mark.usefixtures("processes")
def test_a_server_that_exits_at_startup_fails_fast_with_its_log(tmp_path: Path) -> None:
    server = _Shell("echo boom; exit 3", tmp_path)
    with pytest.raises(BrokerError, match=r"(?s)shell server exited with code 3.*boom"):
        server.start()
    assert server.pid is None


@pytest.mark.usefixtures("processes")
def test_a_server_never_ready_is_stopped_with_its_group(tmp_path: Path) -> None:
    # The grandchild would outlive a stop that signalled the shell alone.
    server = _Shell(f"sleep 60 & echo $! > {tmp_path}/child; wait", tmp_path)
    with pytest.raises(BrokerError, match=r"was not ready within 0.5s \(no ready file yet\)"):
        server.start(timeout=0.5)
    assert server.pid is None
    grandchild = int((tmp_path / "child").read_text())
    deadline = time.monotonic() + 5
    while not _gone(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(grandchild)


@pytest.mark.usefixtures("processes")
def test_a_ready_server_runs_until_its_context_ends(tmp_path: Path) -> None:
    with _Shell(f"touch {tmp_path}/ready; exec sleep 60", tmp_path) as server:
        pid = server.pid
        assert pid is not None
    assert server.pid is None and _gone(pid)
    server.stop()  # idempotent


@pytest.mark.usefixtures("processes")
def test_a_missing_executable_is_a_broker_error(tmp_path: Path) -> None:
    class Missing(_Shell):
        def start(self, timeout: float = 10.0) -> None:
            self._launch([str(tmp_path / "no-such-binary")])

    with pytest.raises(BrokerError, match=r"Could not launch .*no-such-binary"):
        Missing("", tmp_path).start()


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
