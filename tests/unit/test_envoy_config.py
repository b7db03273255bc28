"""Envoy's rendered configuration is valid for the real Envoy binary."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from cortado.mesh import (
    MAX_SHORT_CALLS,
    MAX_STREAMS_PER_CONNECTION,
    MAX_WAITING_CALLS,
    find_binary,
    render_console_config,
    render_envoy_config,
)


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


def _public_routes() -> list[dict[str, Any]]:
    config = yaml.safe_load(render_envoy_config(8888, 9901, ["127.0.0.1:1"], ["127.0.0.1:2"]))
    public = next(x for x in config["static_resources"]["listeners"] if x["name"] == "public")
    manager = public["filter_chains"][0]["filters"][0]["typed_config"]
    routes: list[dict[str, Any]] = manager["route_config"]["virtual_hosts"][0]["routes"]
    return routes


def test_a_post_with_a_wait_is_transcoded_to_waiting_submission_and_may_last_past_the_cap() -> None:
    waiting = [r for r in _public_routes() if "typed_per_filter_config" in r]
    assert len(waiting) == 2
    by_query, by_header = waiting
    assert by_query["match"]["query_parameters"] == [{"name": "wait", "present_match": True}]
    assert any(h["name"] == "prefer" for h in by_header["match"]["headers"])
    for route in waiting:
        transcoder = route["typed_per_filter_config"]["envoy.filters.http.grpc_json_transcoder"]
        assert transcoder["services"] == ["cortado.v1.WaitingSubmission"]
        assert route["route"]["cluster"] == "ingest"
        assert route["route"]["timeout"] == "120s"
        assert "cancelled" not in route["route"]["retry_policy"]["retry_on"]


def test_streams_through_the_grpc_route_have_no_time_limit() -> None:
    routes = {r["match"].get("path") or r["match"].get("prefix"): r["route"] for r in _public_routes()}
    assert routes["/cortado.v1.Submission/SubmitStream"]["timeout"] == "0s"
    assert routes["/cortado.v1.Results/"]["timeout"] == "0s"
    assert routes["/cortado.v1.Submission/"]["timeout"] == "120s"


def test_every_service_cluster_has_a_budget_for_waiting_calls_and_another_for_short_ones() -> None:
    config = yaml.safe_load(render_envoy_config(8888, 9901, ["127.0.0.1:1"], ["127.0.0.1:2"]))
    for cluster in config["static_resources"]["clusters"]:
        thresholds = {t["priority"]: t for t in cluster["circuit_breakers"]["thresholds"]}
        assert thresholds["DEFAULT"]["max_requests"] == MAX_WAITING_CALLS, cluster["name"]
        assert thresholds["HIGH"]["max_requests"] == MAX_SHORT_CALLS, cluster["name"]
    public = next(x for x in config["static_resources"]["listeners"] if x["name"] == "public")
    manager = public["filter_chains"][0]["filters"][0]["typed_config"]
    assert manager["http2_protocol_options"]["max_concurrent_streams"] == MAX_STREAMS_PER_CONNECTION


def test_only_calls_that_never_wait_take_the_short_calls_budget() -> None:
    short = [r for r in _public_routes() if r["route"].get("priority") == "HIGH"]
    described = [
        (
            r["match"].get("prefix") or r["match"]["safe_regex"]["regex"],
            [h["string_match"]["exact"] for h in r["match"].get("headers", [])],
        )
        for r in short
    ]
    # A plain POST, a plain GET, and cancels (gRPC's Requests service, DELETE over HTTP).
    assert described == [
        ("/cortado.v1.Requests/", []),
        ("/[^/]+/?", ["POST"]),
        ("/[^/]+/[^/]+/?", ["GET"]),
        ("/[^/]+/[^/]+/?", ["DELETE"]),
    ]
    for route in short:
        assert "query_parameters" not in route["match"], route
        assert "typed_per_filter_config" not in route, route
    waiting_get = next(
        r for r in _public_routes() if r["match"].get("query_parameters") and r["route"]["cluster"] == "results"
    )
    assert "priority" not in waiting_get["route"]


def test_every_template_and_the_descriptor_are_package_data() -> None:
    """An installed wheel renders the same configuration: every file Envoy's rendering reads is package data."""
    import fnmatch
    import tomllib

    from cortado.mesh import ENVOY_DIR

    root = Path(__file__).resolve().parents[2]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    shipped = patterns["cortado.mesh"]
    files = sorted(p.relative_to(ENVOY_DIR.parent).as_posix() for p in ENVOY_DIR.iterdir())
    assert "envoy/cortado.pb" in files and "envoy/envoy.yaml.tmpl" in files
    assert [f for f in files if not any(fnmatch.fnmatch(f, p) for p in shipped)] == []


def test_the_console_trusts_its_ca_for_the_schedulers_name_or_address() -> None:
    by_name = yaml.safe_load(render_console_config(8889, 9902, "scheduler.example:50053", ca_file="/tmp/ca.pem"))
    by_address = yaml.safe_load(render_console_config(8889, 9902, "127.0.0.1:50053", ca_file="/tmp/ca.pem"))
    plain = yaml.safe_load(render_console_config(8889, 9902, "127.0.0.1:50053"))

    def tls_context(config: dict[str, Any]) -> dict[str, Any] | None:
        (cluster,) = config["static_resources"]["clusters"]
        socket = cluster.get("transport_socket")
        return None if socket is None else dict(socket["typed_config"])

    named = tls_context(by_name)
    assert named is not None and named["sni"] == "scheduler.example"
    validation = named["common_tls_context"]["validation_context"]
    assert validation["trusted_ca"] == {"filename": str(Path("/tmp/ca.pem").resolve())}
    names = validation["match_typed_subject_alt_names"]
    assert names == [{"san_type": "DNS", "matcher": {"exact": "scheduler.example"}}]
    addressed = tls_context(by_address)
    assert addressed is not None and "sni" not in addressed
    assert addressed["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"][0]["san_type"] == (
        "IP_ADDRESS"
    )
    assert tls_context(plain) is None
