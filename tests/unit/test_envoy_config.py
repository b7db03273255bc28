"""Envoy's rendered configuration is valid for the real Envoy binary."""

from __future__ import annotations

import subprocess

import yaml

from cortado.mesh import find_binary, render_envoy_config


def test_rendered_config_is_yaml_with_both_clusters() -> None:
    text = render_envoy_config(8888, 9901, ["127.0.0.1:1"], ["127.0.0.1:2", "127.0.0.1:3"])
    config = yaml.safe_load(text)
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    assert set(clusters) == {"ingest", "results"}
    endpoints = clusters["results"]["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert [e["endpoint"]["address"]["socket_address"]["port_value"] for e in endpoints] == [2, 3]


def test_envoy_accepts_the_rendered_config(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "envoy.yaml"
    path.write_text(render_envoy_config(8888, 9901, ["127.0.0.1:1"], ["127.0.0.1:2"]))
    check = subprocess.run(
        [find_binary("envoy"), "--mode", "validate", "-c", str(path), "--use-dynamic-base-id"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr
