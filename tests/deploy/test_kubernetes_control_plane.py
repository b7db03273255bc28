"""deploy/k8s/: the control plane (the scheduler's TLS, RBAC and network policy, the chaining secret, what is
exposed) and KEDA's scaling of the executors."""

from __future__ import annotations

import pytest

from cortado import _names
from tests.deploy.k8sworkloads import nats_conf, needs_kustomize, overlay_kustomization, scheduler_tls_mount
from tests.deploy.manifests import (
    OVERLAYS,
    base_documents,
    containers,
    find,
    labels_match,
    of_kind,
    render,
)


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
    assert [t["metadata"]["consumer"] for t in triggers] == [_names.work_consumer(p) for p in _names.PRIORITIES]
    assert {t["type"] for t in triggers} == {"nats-jetstream"}
    assert {t["metadata"]["stream"] for t in triggers} == {_names.work_stream("iris")}
    metadata = triggers[0]["metadata"]
    nats = find(docs, "StatefulSet", "nats")
    namespace = overlay_kustomization(overlay)["namespace"]
    assert (
        metadata["natsServerMonitoringEndpoint"] == f"{nats['spec']['serviceName']}.{namespace}.svc.cluster.local:8222"
    )
    assert 8222 in [p["containerPort"] for p in containers(nats)[0]["ports"]]
    assert "http: 0.0.0.0:8222" in nats_conf(docs)
