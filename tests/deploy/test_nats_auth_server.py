"""NATS authentication in deploy/: nats-server reads both configurations as intended: it refuses strangers, holds
each user to its subjects, and forms a cluster over authenticated routes."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from cortado._natsauth import PERMISSIONS, ROUTE_USER
from cortado.mesh import NATS_MAX_PAYLOAD, find_binary, free_port
from tests.deploy.manifests import (
    base_documents,
    nats_password_variable,
    nats_passwords,
)
from tests.deploy.natsusers import COMPOSE_NATS_CONF, k8s_nats_conf, routes_value

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
