"""NATS authentication in deploy/: both NATS configurations carry exactly cortado.natsauth's users and
permissions, every Cortado service connects as its own user with its password in a file (a Compose secret, a
Kubernetes Secret volume) and never in its environment, and nats-server reads the configurations as intended."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cortado.mesh import NATS_MAX_PAYLOAD, find_binary, free_port
from cortado.natsauth import PERMISSIONS, ROUTE_USER, NatsCredentials, authorization_config
from tests.deploy.manifests import (
    DEPLOY,
    DOCKER,
    OVERLAYS,
    ROOT_WORKLOAD,
    Doc,
    base_documents,
    containers,
    find,
    kubectl,
    nats_password_variable,
    nats_passwords,
    of_kind,
    render,
)
from tests.deploy.natsconf import Variable, parse
from tests.deploy.test_compose import interpolate

COMPOSE = DEPLOY / "docker-compose.yaml"
COMPOSE_NATS_CONF = DEPLOY / "nats" / "nats.conf"
SERVICES = ("ingest", "results", "scheduler", "executor", "webhooks")
"""The Cortado services that connect to NATS, each as the NATS user of its name."""
SECRET = "cortado-nats"
"""The Kubernetes Secret holding one password per NATS user (and the route user), created with kubectl."""
needs_kustomize = pytest.mark.skipif(kubectl() is None, reason="kubectl (with its built-in kustomize) is not installed")


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def k8s_nats_conf(docs: list[Doc]) -> str:
    return str(find(docs, "ConfigMap", "nats-config")["data"]["nats.conf"])


def expected_permissions() -> dict[str, dict[str, list[str]]]:
    return {
        user: {"publish": sorted(allowed["publish"]), "subscribe": sorted(allowed["subscribe"])}
        for user, allowed in PERMISSIONS.items()
    }


def users(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The `authorization { users: [...] }` block, by user; each entry has a user, a password and permissions."""
    block = config["authorization"]
    assert set(block) == {"users"}, "users only: no single `user`/`token`, no default permissions"
    found: dict[str, dict[str, Any]] = {}
    for entry in block["users"]:
        assert set(entry) == {"user", "password", "permissions"}, entry
        assert entry["user"] not in found, f"{entry['user']} is listed twice"
        found[entry["user"]] = entry
    return found


def permissions(config: dict[str, Any]) -> dict[str, dict[str, list[str]]]:
    """Each user's allowed publish and subscribe subjects (sorted: their order means nothing to NATS)."""
    result = {}
    for user, entry in users(config).items():
        allowed = entry["permissions"]
        assert set(allowed) == {"publish", "subscribe"}, user
        for direction in allowed.values():
            assert set(direction) == {"allow"}, f"{user}: allow lists only, as cortado.natsauth writes them"
        result[user] = {direction: sorted(allowed[direction]["allow"]) for direction in ("publish", "subscribe")}
    return result


def configurations() -> dict[str, dict[str, Any]]:
    return {
        "compose": parse(COMPOSE_NATS_CONF.read_text()),
        "kubernetes": parse(k8s_nats_conf(base_documents())),
    }


# --- the users and their permissions are cortado.natsauth's -----------------------------------------------


def test_the_reader_reads_the_authorization_block_the_local_mesh_writes() -> None:
    """The same reader on natsauth's own rendering gives back PERMISSIONS: what it finds in deploy/ can be trusted."""
    credentials = {user: NatsCredentials(user, f"pw-{user}") for user in [*PERMISSIONS, ROUTE_USER]}
    config = parse(authorization_config(credentials))
    assert permissions(config) == expected_permissions()
    assert {user: entry["password"] for user, entry in users(config).items()} == {
        user: f"pw-{user}" for user in PERMISSIONS
    }


@pytest.mark.parametrize("where", ["compose", "kubernetes"])
def test_the_nats_users_and_their_permissions_are_cortados(where: str) -> None:
    config = configurations()[where]
    assert permissions(config) == expected_permissions(), (
        f"the {where} NATS configuration and cortado.natsauth.PERMISSIONS differ: change the config "
        "(deploy/nats/nats.conf, deploy/k8s/base/nats.yaml) to match natsauth"
    )


@pytest.mark.parametrize("where", ["compose", "kubernetes"])
def test_every_password_comes_from_the_environment_and_none_is_written_down(where: str) -> None:
    for user, entry in users(configurations()[where]).items():
        assert entry["password"] == Variable(nats_password_variable(user)), user


def test_the_kubernetes_servers_authenticate_their_routes_as_the_route_user() -> None:
    cluster = configurations()["kubernetes"]["cluster"]
    assert cluster["authorization"] == {"user": ROUTE_USER, "password": Variable(nats_password_variable(ROUTE_USER))}
    assert cluster["routes"] == Variable("CORTADO_NATS_ROUTES")
    assert ROUTE_USER not in users(configurations()["kubernetes"]), "the route user is not a client"


def test_compose_runs_one_server_without_routes() -> None:
    assert "cluster" not in configurations()["compose"]


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


def nats_container(docs: list[Doc]) -> Doc:
    return next(c for c in containers(find(docs, "StatefulSet", "nats")) if c["name"] == "nats")


def test_the_nats_servers_get_every_password_from_the_secret() -> None:
    env = nats_container(base_documents())["env"]
    from_secret = {
        e["name"]: e["valueFrom"]["secretKeyRef"]["key"]
        for e in env
        if e.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == SECRET
    }
    assert from_secret == {nats_password_variable(user): user for user in [*PERMISSIONS, ROUTE_USER]}


def routes_value(docs: list[Doc]) -> str:
    env = nats_container(docs)["env"]
    names = [e["name"] for e in env]
    # Kubernetes fills in $(NAME) only from variables listed before.
    assert names.index(nats_password_variable(ROUTE_USER)) < names.index("CORTADO_NATS_ROUTES")
    return str(next(e["value"] for e in env if e["name"] == "CORTADO_NATS_ROUTES"))


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


# --- nats-server reads the configurations as intended ----------------------------------------------------


def check_config(path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [find_binary("nats-server"), "-t", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"PATH": os.environ["PATH"], **env},
    )


def test_nats_server_accepts_the_compose_config_with_the_passwords_set_and_names_a_missing_one() -> None:
    env = nats_passwords()
    done = check_config(COMPOSE_NATS_CONF, env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"max_payload: {NATS_MAX_PAYLOAD}\n" in COMPOSE_NATS_CONF.read_text()
    del env[nats_password_variable("executor")]
    done = check_config(COMPOSE_NATS_CONF, env)
    assert done.returncode != 0
    assert f"variable reference for '{nats_password_variable('executor')}'" in done.stderr


def k8s_environment(env: dict[str, str], routes: str | None = None) -> dict[str, str]:
    """The nats container's environment as Kubernetes fills it in: the Secret's values, then $(...) references."""
    value = routes if routes is not None else routes_value(base_documents())
    password = env[nats_password_variable(ROUTE_USER)]
    return {
        **env,
        "POD_NAME": "nats-0",
        "CORTADO_NATS_ROUTES": value.replace(f"$({nats_password_variable(ROUTE_USER)})", password),
    }


def test_nats_server_accepts_the_kubernetes_config_with_the_passwords_and_routes_set(tmp_path: Path) -> None:
    conf = tmp_path / "nats.conf"
    conf.write_text(k8s_nats_conf(base_documents()))
    done = check_config(conf, k8s_environment(nats_passwords()))
    assert done.returncode == 0, done.stdout + done.stderr


def on_loopback(text: str, replacements: dict[str, str]) -> str:
    """The configuration with each `key: value` of replacements given a new value (each must be there once)."""
    for setting, value in replacements.items():
        assert text.count(f"{setting}\n") == 1, f"{setting!r} is not in the configuration exactly once"
        key = setting.split(":")[0]
        text = text.replace(f"{setting}\n", f"{key}: {value}\n")
    return text


@contextlib.contextmanager
def nats_server(conf: Path, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            [find_binary("nats-server"), "-c", str(conf)],
            env={"PATH": os.environ["PATH"], **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_healthy(monitor_port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    """Until the server's /healthz answers 200 (in a cluster: JetStream has a meta leader, so routes are up).

    A cluster elects its leader only once every server runs; on a loaded two-core machine that took over 30 s."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{monitor_port}/healthz", timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    pytest.fail(f"nats-server did not become healthy:\n{log.read_text()}")


class Wire:
    """A NATS client speaking the text protocol on a plain socket: each step's answer, nothing hidden."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buffer = b""
        assert self.line().startswith("INFO ")

    def line(self) -> str:
        """The next line from the server (TimeoutError past the socket's timeout; a later call goes on)."""
        while b"\r\n" not in self.buffer:
            data = self.sock.recv(65536)
            if not data:
                return ""
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line.decode()

    def send(self, text: str) -> str:
        """Sends text and a PING; the first line back (PONG, or the server's -ERR)."""
        self.sock.sendall(f"{text}\r\nPING\r\n".encode())
        return self.line()

    def login(self, **auth: str) -> str:
        return self.send("CONNECT " + json.dumps({"verbose": False, "pedantic": False, **auth}))

    def close(self) -> None:
        self.sock.close()


def login(port: int, **auth: str) -> str:
    """What the server answers a client that connects with auth (user, pass): PONG when it is let in."""
    wire = Wire(port)
    try:
        return wire.login(**auth)
    finally:
        wire.close()


def test_the_compose_nats_server_refuses_strangers_and_holds_each_user_to_its_subjects(tmp_path: Path) -> None:
    port, monitor = free_port(), free_port()
    conf = tmp_path / "nats.conf"
    conf.write_text(
        on_loopback(
            COMPOSE_NATS_CONF.read_text(),
            {
                "listen: 0.0.0.0:4222": f"127.0.0.1:{port}",
                "http: 0.0.0.0:8222": f"127.0.0.1:{monitor}",
                "store_dir: /data": json.dumps(str(tmp_path / "js")),
            },
        )
    )
    env = nats_passwords()
    log = tmp_path / "nats.log"
    with nats_server(conf, env, log) as process:
        wait_healthy(monitor, process, log)
        refused = "-ERR 'Authorization Violation'"
        assert login(port) == refused
        assert login(port, user="executor", **{"pass": ""}) == refused
        assert login(port, user="executor", **{"pass": "guess"}) == refused
        assert login(port, user="route", **{"pass": env[nats_password_variable(ROUTE_USER)]}) == refused
        for user in PERMISSIONS:
            assert login(port, user=user, **{"pass": env[nats_password_variable(user)]}) == "PONG", user
        # The executor writes heartbeats (a quoted `$KV...` subject is a subject, not a variable), never work.
        executor = Wire(port)
        try:
            assert executor.login(user="executor", **{"pass": env[nats_password_variable("executor")]}) == "PONG"
            assert executor.send("PUB $KV.cortado_executors.probe 0\r\n") == "PONG"
            assert executor.send("PUB cortado.work.probe 0\r\n") == (
                "-ERR 'Permissions Violation for Publish to \"cortado.work.probe\"'"
            )
        finally:
            executor.close()


def test_the_kubernetes_nats_servers_form_a_cluster_over_authenticated_routes(tmp_path: Path) -> None:
    """Three servers from the ConfigMap's configuration, on loopback: their routes carry the route user, so a
    message published on one server reaches a subscriber on another."""
    template = k8s_nats_conf(base_documents())
    env = nats_passwords()
    servers = [{"client": free_port(), "monitor": free_port(), "cluster": free_port()} for _ in range(3)]
    route_password = env[nats_password_variable(ROUTE_USER)]
    routes = "[" + ", ".join(f"nats://{ROUTE_USER}:{route_password}@127.0.0.1:{s['cluster']}" for s in servers) + "]"
    with contextlib.ExitStack() as stack:
        processes = []
        for index, ports in enumerate(servers):
            conf = tmp_path / f"nats-{index}.conf"
            conf.write_text(
                on_loopback(
                    template,
                    {
                        "listen: 0.0.0.0:4222": f"127.0.0.1:{ports['client']}",
                        "http: 0.0.0.0:8222": f"127.0.0.1:{ports['monitor']}",
                        "listen: 0.0.0.0:6222": f"127.0.0.1:{ports['cluster']}",
                        "store_dir: /data": json.dumps(str(tmp_path / f"js-{index}")),
                        "pid_file: /var/run/nats/nats.pid": json.dumps(str(tmp_path / f"nats-{index}.pid")),
                    },
                )
            )
            server_env = {**k8s_environment(env, routes), "POD_NAME": f"nats-{index}"}
            log = tmp_path / f"nats-{index}.log"
            processes.append((stack.enter_context(nats_server(conf, server_env, log)), log))
        for (process, log), ports in zip(processes, servers, strict=True):
            wait_healthy(ports["monitor"], process, log)
        admin = {"user": "admin", "pass": env[nats_password_variable("admin")]}
        subscriber, publisher = Wire(servers[0]["client"]), Wire(servers[2]["client"])
        stack.callback(subscriber.close)
        stack.callback(publisher.close)
        assert subscriber.login(**admin) == "PONG" and publisher.login(**admin) == "PONG"
        assert subscriber.send("SUB probe.cluster 1") == "PONG"
        # Interest travels to the other servers over the routes; publish until it has arrived.
        subscriber.sock.settimeout(0.5)
        received = ""
        deadline = time.monotonic() + 20
        while not received.startswith("MSG") and time.monotonic() < deadline:
            assert publisher.send("PUB probe.cluster 6\r\nacross") == "PONG"
            with contextlib.suppress(TimeoutError):
                received = subscriber.line()
        logs = "\n".join(log.read_text()[-3000:] for _, log in processes)
        assert received == "MSG probe.cluster 1 6", logs
        assert "authentication error" not in logs.lower(), logs
