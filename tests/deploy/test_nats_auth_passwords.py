"""NATS authentication in deploy/: every Cortado service connects as its own user with its password in a file (a
Compose secret, a Kubernetes Secret volume) and never in its environment."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from cortado._natsauth import PERMISSIONS, ROUTE_USER
from tests.deploy.manifests import (
    DOCKER,
    OVERLAYS,
    ROOT_WORKLOAD,
    Doc,
    base_documents,
    containers,
    find,
    nats_password_variable,
    nats_passwords,
    of_kind,
    render,
)
from tests.deploy.natsusers import SECRET, SERVICES, compose, nats_container, needs_kustomize, routes_value
from tests.deploy.test_compose import interpolate

# --- every service connects as its own user, with its password in a file ---------------------------------


def dockerfile_user(name: str) -> str:
    """The final USER of a Dockerfile (uid:gid)."""
    found = re.findall(r"^USER\s+(\S+)", (DOCKER / name).read_text(), re.M)
    return str(found[-1])


def test_compose_gives_nats_every_password_and_fails_clearly_without_one() -> None:
    nats = compose()["services"]["nats"]
    assert nats["environment"] == {
        nats_password_variable(user): f"${{{nats_password_variable(user)}:?set a NATS password (openssl rand -hex 32)}}"
        for user in PERMISSIONS
    }
    for value in nats["environment"].values():
        with pytest.raises(ValueError, match="set a NATS password"):
            interpolate(value, {})


@pytest.mark.parametrize("name", SERVICES)
def test_each_compose_service_reads_its_own_password_from_a_secret_file(name: str) -> None:
    document = compose()
    service = document["services"][name]
    env = service["environment"]
    assert env["CORTADO_NATS_USER"] == name
    # The scheduler's TLS files are secrets too (test_compose.py); one NATS password only.
    [secret] = [s for s in service["secrets"] if s["source"].startswith("nats-")]
    assert secret["source"] == f"nats-{name}-password"
    assert env["CORTADO_NATS_PASSWORD_FILE"] == f"/run/secrets/{secret['target']}"
    # Owned by the image's user, readable by it alone (Compose copies a secret from the environment as root:root 0444
    # otherwise): the executor's is root's, so that the handler code it runs as other uids cannot read it.
    dockerfile = "Dockerfile.executor" if name == ROOT_WORKLOAD else "Dockerfile.service"
    assert f"{secret['uid']}:{secret['gid']}" == dockerfile_user(dockerfile)
    assert (dockerfile_user(dockerfile) == "0:0") == (name == ROOT_WORKLOAD)
    assert secret["mode"] == "0400"
    assert document["secrets"][secret["source"]] == {"environment": nats_password_variable(name)}


def test_compose_holds_no_password_in_a_services_environment() -> None:
    document = compose()
    connecting = {name for name, s in document["services"].items() if "CORTADO_NATS_URL" in s.get("environment", {})}
    assert connecting == set(SERVICES), "every service that connects to NATS needs a user and a password file"
    for name in SERVICES:
        for key in document["services"][name]["environment"]:
            assert "PASSWORD" not in key or key.endswith("_PASSWORD_FILE"), f"{name}: {key}"
    for name, service in document["services"].items():
        if name != "nats":
            values = " ".join(map(str, service.get("environment", {}).values()))
            assert not re.search(r"CORTADO_NATS_\w*PASSWORD\b", values), f"{name} gets a NATS password"
    # The secrets' sources are exactly nats's password variables, the admin's excepted (no service is admin), and the
    # scheduler's TLS files.
    sources = {s["environment"] for name, s in document["secrets"].items() if not name.startswith("scheduler-tls-")}
    assert sources == {nats_password_variable(user) for user in SERVICES} | {"CORTADO_CHAIN_SECRET"}
    assert {name for name in document["secrets"] if name.startswith("scheduler-tls-")} == {
        "scheduler-tls-cert",
        "scheduler-tls-key",
        "scheduler-tls-ca",
    }


def k8s_workloads(docs: list[Doc]) -> list[Doc]:
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]


def reads_the_cortado_settings(container: Doc) -> bool:
    """Whether a container gets CORTADO_NATS_URL (the shared `cortado-env` ConfigMap, whatever its hash suffix)."""
    return any(
        source.get("configMapRef", {}).get("name", "").startswith("cortado-env")
        for source in container.get("envFrom", [])
    ) or any(e["name"] == "CORTADO_NATS_URL" for e in container.get("env", []))


def check_service_pod(workload: Doc) -> None:
    name = workload["metadata"]["name"]
    pod = workload["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["CORTADO_NATS_USER"] == {"name": "CORTADO_NATS_USER", "value": name}
    path = Path(env["CORTADO_NATS_PASSWORD_FILE"]["value"])
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == str(path.parent)]
    assert mount.get("readOnly") is True
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    secret = volume["secret"]
    assert secret["secretName"] == SECRET
    assert secret["items"] == [{"key": name, "path": path.name}], f"{name} mounts its own password only"
    if name == ROOT_WORKLOAD:
        # Root's alone: the executor runs as root, its handler code as other uids, which must not read it.
        assert secret["defaultMode"] == 0o400
        assert pod["securityContext"]["runAsUser"] == 0 and "fsGroup" not in pod["securityContext"]
    else:
        # Readable by the pod's group, which the container runs in, and by no other user.
        assert secret["defaultMode"] == 0o440
        assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]
    for variable in container["env"]:
        ref = variable.get("valueFrom", {}).get("secretKeyRef", {})
        assert ref.get("name") != SECRET, f"{name}: a NATS password in the environment ({variable['name']})"


@pytest.mark.parametrize("name", SERVICES)
def test_each_kubernetes_service_reads_its_own_password_from_a_secret_volume(name: str) -> None:
    check_service_pod(find(base_documents(), "Deployment", name))


@needs_kustomize
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_overlays_keep_every_service_on_its_own_nats_user(overlay: str) -> None:
    docs = render(overlay)
    for name in SERVICES:
        check_service_pod(find(docs, "Deployment", name))


def test_every_kubernetes_container_that_connects_to_nats_has_a_user_and_only_nats_sees_every_password() -> None:
    docs = base_documents()
    connecting = {
        w["metadata"]["name"] for w in k8s_workloads(docs) for c in containers(w) if reads_the_cortado_settings(c)
    }
    assert connecting == set(SERVICES)
    for workload in k8s_workloads(docs):
        for container in containers(workload):
            for variable in container.get("env", []):
                ref = variable.get("valueFrom", {}).get("secretKeyRef", {})
                if ref.get("name") == SECRET:
                    assert (workload["metadata"]["name"], container["name"]) == ("nats", "nats")
                if "PASSWORD" in variable["name"] and not variable["name"].endswith("_FILE"):
                    assert ref.get("name") == SECRET, f"{variable['name']} must come from the Secret"
    # No Secret is committed: the guide creates it with kubectl and random passwords.
    assert of_kind(docs, "Secret") == []


def test_the_nats_servers_get_every_password_from_the_secret() -> None:
    env = nats_container(base_documents())["env"]
    from_secret = {
        e["name"]: e["valueFrom"]["secretKeyRef"]["key"]
        for e in env
        if e.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == SECRET
    }
    assert from_secret == {nats_password_variable(user): user for user in [*PERMISSIONS, ROUTE_USER]}


def test_the_nats_routes_name_every_server_of_the_statefulset_as_the_route_user() -> None:
    docs = base_documents()
    nats = find(docs, "StatefulSet", "nats")
    headless = find(docs, "Service", nats["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    port = next(p["port"] for p in headless["spec"]["ports"] if p["name"] == "cluster")
    credentials = f"{ROUTE_USER}:$({nats_password_variable(ROUTE_USER)})"
    expected = [
        f"nats://{credentials}@nats-{i}.{headless['metadata']['name']}:{port}" for i in range(nats["spec"]["replicas"])
    ]
    value = routes_value(docs)
    assert value.startswith("[") and value.endswith("]")
    assert [route.strip() for route in value[1:-1].split(",")] == expected


def guard(docs: list[Doc]) -> str:
    """The nats container's start script, which checks the passwords before it execs nats-server."""
    container = nats_container(docs)
    assert container["command"] == ["/bin/sh", "-c"]
    [script] = container["args"]
    return str(script)


def run_guard(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = guard(base_documents())
    start = "exec nats-server --config /etc/nats/nats.conf"
    assert script.rstrip().endswith(start)
    return subprocess.run(
        ["sh", "-c", script.replace(start, "echo would start")],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_nats_refuses_to_start_with_an_empty_or_short_password() -> None:
    """NATS takes an empty password as valid: an empty Secret value (say, openssl was missing) must stop the pod."""
    good = nats_passwords()
    done = run_guard(good)
    assert (done.returncode, done.stdout) == (0, "would start\n"), done.stderr
    for user in [*PERMISSIONS, ROUTE_USER]:
        for bad in ("", "0123456789abcdef"):
            done = run_guard({**good, nats_password_variable(user): bad})
            assert done.returncode == 1 and done.stdout == ""
            assert f"{nats_password_variable(user)} (Secret {SECRET}) has fewer than 32 characters" in done.stderr
        missing = {k: v for k, v in good.items() if k != nats_password_variable(user)}
        assert run_guard(missing).returncode == 1
