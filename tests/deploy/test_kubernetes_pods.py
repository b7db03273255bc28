"""deploy/k8s/: what every pod runs as and may reach: Prometheus scraping, third-party images, users and
capabilities, and the webhook sender's egress."""

from __future__ import annotations

import pytest
import yaml

from tests.deploy.k8sworkloads import CORTADO_WORKLOADS, needs_kustomize
from tests.deploy.manifests import (
    BASE,
    DEPLOY,
    EXECUTOR_CAPABILITIES,
    OVERLAYS,
    ROOT_WORKLOAD,
    Doc,
    base_documents,
    containers,
    find,
    labels_match,
    of_kind,
    render,
)

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
