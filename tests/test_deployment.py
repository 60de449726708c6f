"""What of the deployment can run on a machine without a Docker engine: the image's stub
step is the Makefile's and compiles every contract the code imports; the compose file's
Prometheus scrape config passes promtool and, run by a real Prometheus, scrapes a real
server and ingester."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import tomllib
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import wait_until

REPO = Path(__file__).resolve().parents[1]


def test_the_image_and_the_makefile_build_the_stubs_with_one_script() -> None:
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    makefile = (REPO / "Makefile").read_text()
    assert "sh proto/generate.sh" in dockerfile
    assert "sh proto/generate.sh" in makefile
    # Nobody calls protoc beside the script, so the lists of protos cannot drift.
    assert "grpc_tools.protoc" not in dockerfile and "grpc_tools.protoc" not in makefile


def _packages() -> list[str]:
    """The top-level packages pyproject.toml installs."""
    with open(REPO / "pyproject.toml", "rb") as f:
        include = tomllib.load(f)["tool"]["setuptools"]["packages"]["find"]["include"]
    return [name.rstrip("*") for name in include]


def test_the_image_copies_every_package_the_project_installs() -> None:
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    assert len(_packages()) >= 5
    missing = [p for p in _packages() if f"COPY {p}/ {p}/" not in dockerfile]
    assert not missing, f"docker/Dockerfile does not COPY {missing}"


def _imported_stubs() -> set[str]:
    """Every ``recsys.v1`` module the code imports."""
    found = set()
    for package in _packages():
        for path in (REPO / package).rglob("*.py"):
            if "v1" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module == "recsys.v1":
                    found |= {alias.name for alias in node.names}
    return found


@pytest.mark.usefixtures("processes")
def test_the_script_compiles_every_stub_the_code_imports(tmp_path: Path) -> None:
    shutil.copytree(REPO / "proto", tmp_path / "proto")
    subprocess.run(
        ["sh", str(tmp_path / "proto" / "generate.sh")],
        check=True,
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
    )
    generated = {p.stem for p in (tmp_path / "recsys" / "v1").glob("*.py")}
    imported = _imported_stubs()
    assert {"recommender_pb2", "admin_pb2_grpc"} <= imported  # the walk finds them
    assert imported <= generated, imported - generated


DASHBOARD = REPO / "docker" / "grafana" / "dashboards" / "recsys.json"


def _dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel["targets"]]


def _exported() -> set[str]:
    """Every sample name a server's and an ingester's /metrics can hold."""
    from features.stream.metrics import IngestMetrics
    from serving.metrics import ServingMetrics

    names = set()
    for registry in (ServingMetrics().registry, IngestMetrics().registry):
        for family in registry.collect():
            names.add(family.name)
            names |= {family.name + s for s in ("_total", "_bucket", "_sum", "_count")}
    return names


def test_the_dashboard_queries_only_metrics_the_processes_export() -> None:
    queries = _dashboard_queries()
    named = {m for q in queries for m in re.findall(r"\b(recsys_[a-z_]+)", q)}
    assert len(queries) >= 9 and len(named) >= 10
    assert named <= _exported(), named - _exported()


def test_compose_provisions_the_dashboard_and_the_datasource() -> None:
    compose = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    grafana = compose["services"]["grafana"]
    provider = yaml.safe_load(
        (REPO / "docker/grafana/provisioning/dashboards/recsys.yml").read_text()
    )
    dashboards_at = provider["providers"][0]["options"]["path"]
    assert f"./grafana/dashboards:{dashboards_at}:ro" in grafana["volumes"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    source = yaml.safe_load(
        (REPO / "docker/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"][0]
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert {p["datasource"]["uid"] for p in panels} == {source["uid"]}
    assert source["url"] == "http://prometheus:9090" and "prometheus" in compose["services"]


@pytest.mark.usefixtures("processes")
def test_promtool_accepts_the_scrape_config() -> None:
    done = subprocess.run(
        ["promtool", "check", "config", str(REPO / "docker" / "prometheus.yml")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _prometheus_query(port: int, query: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=5) as reply:
        return json.load(reply)["data"]["result"]


def test_a_real_prometheus_scrapes_a_real_server_and_ingester(
    feature_store, kafka: str, tmp_path: Path
) -> None:
    """The compose scrape jobs, pointed at a `recsys serve` and a `recsys ingest` here."""
    from features.stream.replay import ensure_topic
    from localservices.procs import child, free_port, serving_ports, write_config
    from serving.client import RecommendClient

    server_metrics, ingest_metrics, prom = (free_port("127.0.0.1") for _ in range(3))
    ports = serving_ports(feature_store)
    config = feature_store.with_overrides(
        {
            "serving": {**ports, "metrics_port": server_metrics},
            "kafka": {"bootstrap_servers": kafka, "group_id": f"prometheus-{prom}"},
        }
    )
    ensure_topic(config)
    config_file = write_config(config, tmp_path / "config.yaml")
    scrape = yaml.safe_load((REPO / "docker" / "prometheus.yml").read_text())
    scrape["global"]["scrape_interval"] = "1s"
    targets = {"recsys-server": server_metrics, "recsys-ingester": ingest_metrics}
    for job in scrape["scrape_configs"]:
        job["static_configs"] = [{"targets": [f"127.0.0.1:{targets[job['job_name']]}"]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(scrape))
    ingest = ["ingest", "--metrics-port", str(ingest_metrics)]
    with (
        child("server", config_file, ["serve"], tmp_path, quiet=True) as server,
        child("ingester", config_file, ingest, tmp_path, quiet=True),
        RecommendClient(f"127.0.0.1:{ports['port']}") as client,
        subprocess.Popen(
            [
                "prometheus",
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / "prometheus.log").open("wb"),
        ) as prometheus,
    ):
        try:
            client.wait_until_serving(process=server)
            client.recommend("196", k=5)

            def scraped() -> bool:
                try:
                    up = _prometheus_query(prom, "up")
                    answered = _prometheus_query(prom, "recsys_recommend_requests_total")
                    events = _prometheus_query(prom, "recsys_ingest_store_up")
                except OSError:
                    return False
                healthy = {r["metric"]["job"] for r in up if r["value"][1] == "1"}
                return healthy == set(targets) and bool(answered) and bool(events)

            wait_until(scraped, 90, "Prometheus did not scrape both recsys processes")
            # Every dashboard query is valid PromQL over what was scraped (a bad one is a 400).
            for query in _dashboard_queries():
                _prometheus_query(prom, query)
            wait_until(
                lambda: bool(_prometheus_query(prom, _dashboard_queries()[0])),
                30,
                "the dashboard's request rate has no data",
            )
        finally:
            prometheus.terminate()
            prometheus.wait(timeout=20)
