"""``recsys serve`` as operators run it: one process with the public port, the admin port and
``/metrics``; JSON log lines; SIGTERM drains and exits 0. With ``--workers``, several
processes share the port: each answers and swaps, one killed is replaced, SIGTERM stops all."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from localservices.procs import child, free_port, write_config
from recsys import artifacts
from serving.client import RecommendClient


def test_serve_process_metrics_logs_and_graceful_sigterm(feature_store, tmp_path) -> None:
    ports = {name: free_port("127.0.0.1") for name in ("port", "admin_port", "metrics_port")}
    config = feature_store.with_overrides({"serving": ports})
    config_file = write_config(config, tmp_path / "serve.yaml")
    with (
        child("serve", config_file, ["serve"], tmp_path, quiet=True) as proc,
        RecommendClient(f"127.0.0.1:{ports['port']}") as client,
    ):
        client.wait_until_serving(process=proc)
        assert len(client.recommend("196", k=5).items) == 5
        url = f"http://127.0.0.1:{ports['metrics_port']}/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            text = reply.read().decode()
        assert 'recsys_recommend_requests_total{path="personalized"}' in text
        assert 'recsys_recommend_stage_seconds_bucket{le="0.0001",stage="search"}' in text
        assert "recsys_serving_pair_info{" in text
        cli = [sys.executable, "-m", "commands.cli", "--config", str(config_file)]
        answer = subprocess.run(
            [*cli, "recommend", "--user", "196", "--k", "3", "--genres", "Drama"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        assert "user 196 (personalized; model" in answer and " 3. item" in answer
        status = subprocess.run(
            [*cli, "admin", "status"], capture_output=True, text=True, timeout=60, check=True
        ).stdout
        assert f"serving model {config_model(config)}" in status and "0 swaps" in status
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    log = (tmp_path / "serve.log").read_text().splitlines()
    assert "server stopped" in log
    records = [json.loads(line) for line in log if line.startswith("{")]
    serving = [r for r in records if r["msg"] == "serving"]
    assert serving and serving[0]["port"] == ports["port"] and serving[0]["level"] == "INFO"


def config_model(config) -> str:
    return artifacts.current(config.models_dir).name


def _metric(address: str, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    )


def test_workers_share_the_port_each_answers_and_swaps_and_one_that_dies_is_replaced(
    scratch, ml, tmp_path
) -> None:
    import os

    import grpc

    from index.build import build_index
    from loadtest.target import cpu_seconds
    from localservices.procs import free_ports
    from recsys.v1 import admin_pb2, admin_pb2_grpc
    from recsys.v1 import recommender_pb2 as pb
    from recsys.v1 import recommender_pb2_grpc as pb_grpc
    from tests.conftest import wait_until

    workers = 2
    ports = {
        "port": free_port("127.0.0.1"),
        "admin_port": free_ports("127.0.0.1", workers),
        "metrics_port": free_ports("127.0.0.1", workers),
        "reload_poll_seconds": 0.2,
    }
    config = scratch.with_overrides({"serving": ports})
    config_file = write_config(config, tmp_path / "serve.yaml")
    admins = [f"127.0.0.1:{ports['admin_port'] + i}" for i in range(workers)]
    metrics = [f"127.0.0.1:{ports['metrics_port'] + i}" for i in range(workers)]
    log = tmp_path / "serve.log"

    def status(admin: str) -> admin_pb2.StatusResponse:
        with grpc.insecure_channel(admin) as channel:
            return admin_pb2_grpc.RecommenderAdminStub(channel).Status(
                admin_pb2.StatusRequest(), timeout=10
            )

    def requests_per_worker(calls: int) -> list[float]:
        before = [_metric(m, "recsys_recommend_requests_total") for m in metrics]
        # Channels to one address share a connection unless their arguments differ.
        channels = [
            grpc.insecure_channel(f"127.0.0.1:{ports['port']}", options=[("recsys.connection", i)])
            for i in range(16)
        ]
        try:
            for i in range(calls):
                stub = pb_grpc.RecommenderStub(channels[i % len(channels)])
                reply = stub.Recommend(pb.RecommendRequest(user_id="196", k=5), timeout=10)
                assert len(reply.items) == 5
        finally:
            for channel in channels:
                channel.close()
        return [
            _metric(m, "recsys_recommend_requests_total") - b
            for m, b in zip(metrics, before, strict=True)
        ]

    with child(
        "serve", config_file, ["serve", "--workers", str(workers)], tmp_path, quiet=True
    ) as proc:
        wait_until(lambda: f"all {workers} workers serving" in log.read_text(), 300, "workers up")
        first = artifacts.current(config.indexes_dir).name
        assert [status(a).index_version for a in admins] == [first, first]
        assert all(n > 0 for n in requests_per_worker(64)), "a worker got no connection"

        second = build_index(config, ml, log=lambda _: None).version  # publishes CURRENT
        wait_until(lambda: all(status(a).index_version == second for a in admins), 60, "every swap")
        assert all(status(a).swaps == 1 for a in admins)

        children = [
            int(c) for c in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        ]
        assert len(children) == workers and cpu_seconds(proc.pid) > 0
        os.kill(children[1], 9)
        wait_until(lambda: "worker 1 serving again" in log.read_text(), 300, "worker 1 replaced")
        assert all(n > 0 for n in requests_per_worker(64))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    text = log.read_text()
    assert "worker 1 exited with code -9; restarting it" in text
    assert f"all {workers} workers stopped" in text
