"""``recsys serve`` as operators run it: one process with the public port, the admin port and
``/metrics``; JSON log lines; SIGTERM drains and exits 0."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request

import pytest

from recsys import artifacts
from recsys.procs import child, free_port, write_config
from serving.client import RecommendClient

pytestmark = pytest.mark.integration


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
        cli = [sys.executable, "-m", "recsys.cli", "--config", str(config_file)]
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
