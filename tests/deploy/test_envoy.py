"""deploy/envoy/envoy.yaml: in sync with the templates in cortado/mesh/envoy/, accepted by Envoy, and its metrics
listener exposes Prometheus stats and readiness but nothing else of the admin interface."""

from __future__ import annotations

import importlib.util
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from cortado.mesh import ENVOY_DIR, ManagedProcess, find_binary, free_port, wait_until
from tests.deploy.manifests import DEPLOY

CONFIG = DEPLOY / "envoy" / "envoy.yaml"


def render_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_envoy_render", DEPLOY / "envoy" / "render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def local_copy(tmp_path: Path, ports: dict[int, int] | None = None) -> Path:
    """The committed config with the descriptor's local path, and (for running it) ports moved to loopback."""
    config = yaml.safe_load(CONFIG.read_text())

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "proto_descriptor" in node:
                node["proto_descriptor"] = str(ENVOY_DIR / "cortado.pb")
            if ports is not None and "port_value" in node and node["port_value"] in ports:
                node["port_value"] = ports[node["port_value"]]
                node["address"] = "127.0.0.1" if node.get("address") == "0.0.0.0" else node["address"]
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def get(url: str, method: str = "GET") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_the_committed_container_config_is_the_template_rendered_for_the_container_network() -> None:
    assert CONFIG.read_text() == render_module().render(), "stale: run `python deploy/envoy/render.py`"


def test_the_render_script_check_mode_agrees() -> None:
    assert render_module().main(["--check"]) == 0


def test_the_container_config_reaches_ingest_and_results_by_dns_name() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    for name, port in (("ingest", 50051), ("results", 50052)):
        assert clusters[name]["type"] == "STRICT_DNS"
        [endpoints] = clusters[name]["load_assignment"]["endpoints"]
        [endpoint] = endpoints["lb_endpoints"]
        assert endpoint["endpoint"]["address"]["socket_address"] == {"address": name, "port_value": port}
    public = next(x for x in config["static_resources"]["listeners"] if x["name"] == "public")
    assert public["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 8888}
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"


def test_envoy_accepts_the_container_config(tmp_path: Path) -> None:
    check = subprocess.run(
        [find_binary("envoy"), "--mode", "validate", "-c", str(local_copy(tmp_path)), "--use-dynamic-base-id"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.fixture
def running_envoy(tmp_path: Path) -> Any:
    ports = {8888: free_port(), 9464: free_port(), 9901: free_port()}
    config = local_copy(tmp_path, ports)
    argv = [find_binary("envoy"), "-c", str(config), "--concurrency", "1", "--use-dynamic-base-id", "-l", "error"]
    proc = ManagedProcess("envoy", argv, {}, tmp_path / "envoy.log")
    proc.start()
    try:
        wait_until(lambda: get(f"http://127.0.0.1:{ports[9464]}/ready")[0] == 200, 30, "Envoy's /ready")
        yield ports
    finally:
        proc.stop()


def test_the_metrics_listener_serves_prometheus_stats_and_readiness_only(running_envoy: dict[int, int]) -> None:
    metrics = f"http://127.0.0.1:{running_envoy[9464]}"
    status, body = get(f"{metrics}/stats/prometheus")
    assert status == 200
    assert 'envoy_cluster_upstream_rq_total{envoy_cluster_name="ingest"}' in body
    assert get(f"{metrics}/ready") == (200, "LIVE\n")
    for admin_only in ("/config_dump", "/clusters", "/quitquitquit", "/logging", "/"):
        assert get(f"{metrics}{admin_only}", method="POST")[0] == 404, admin_only
    # The public listener answers (503: no ingest in this test) while the metrics listener is up.
    status, body = get(f"http://127.0.0.1:{running_envoy[8888]}/iris", method="POST")
    assert status == 503 and '"code":503' in body
