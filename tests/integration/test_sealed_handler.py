"""User code is sealed off from the broker: a hostile handler tries every way in it can think of, and fails.

The handler process holds no NATS connection and no credential; NATS refuses connections without one;
and when the executor runs as root (as the suite does on CI), handlers run as their API's own unprivileged
user, so they can read neither the executor's environment nor another API's folder nor the mesh's state.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from cortado.mesh import LocalMesh
from tests.helpers import eventually
from tests.meshcalls import Deploy

HOSTILE = r'''
import glob
import os
import socket


def attempt(action):
    """'refused: ...' when action raised, else 'GOT: <what it returned>'."""
    try:
        return "GOT: " + repr(action())[:300]
    except Exception as exc:
        return f"refused: {type(exc).__name__}: {exc}"[:300]


def read(path):
    with open(path, "rb") as f:
        return f.read(200)


def nats_ports():
    """Every TCP port listening on this machine whose server greets like NATS."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    found = []
    for port in sorted(ports):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.settimeout(0.5)
                if s.recv(4096).startswith(b"INFO"):
                    found.append(port)
        except OSError:
            pass
    return found


def talk_to_nats(port, user=None, password=None):
    """What NATS answers a CONNECT (with the given credentials) and a PING."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.settimeout(2)
        s.recv(4096)
        auth = f',"user":"{user}","pass":"{password}"' if user else ""
        s.sendall(('CONNECT {"verbose":false,"pedantic":false' + auth + '}\r\nPING\r\n').encode())
        answer = s.recv(4096).decode(errors="replace")
    if "PONG" in answer:
        return answer
    raise PermissionError(answer.strip())


def credentials_anywhere(roots):
    """user:password pairs from any readable file that looks like NATS credentials."""
    found = []
    for root in roots:
        for path in glob.glob(os.path.join(root, "**", "*"), recursive=True):
            if path.endswith((".password", ".conf")):
                try:
                    found.append((os.path.basename(path).split(".")[0], open(path).read().strip()))
                except OSError:
                    pass
    return found


class Handler:
    def __init__(self, config):
        self.config = config

    def handle_async(self, payload):
        c = self.config
        report = {
            "uid": os.getuid(),
            "executor_uid": os.stat(f"/proc/{os.getppid()}").st_uid,
            "secrets_in_environment": sorted(
                k for k in os.environ if any(w in k.upper() for w in ("NATS", "TOKEN", "PASSWORD", "SECRET"))
                or k.startswith("CORTADO_")
            ),
            "executor_environ": attempt(lambda: read(f"/proc/{os.getppid()}/environ")),
            "signal_executor": attempt(lambda: os.kill(os.getppid(), 0)),
            "other_api_folder": attempt(lambda: os.listdir(os.path.join("..", "..", c["other_api"]))),
            "other_api_file": attempt(lambda: read(os.path.join("..", "..", c["other_api"], "v1", "handler.py"))),
            "all_projects": attempt(lambda: os.listdir(os.path.join("..", ".."))),
            "state_folder": attempt(lambda: os.listdir(c["state"])),
            "admin_password": attempt(lambda: read(os.path.join(c["state"], "credentials", "admin.password"))),
            "server_config": attempt(lambda: read(os.path.join(c["state"], "nats.conf"))),
            "executor_workdir_write": attempt(lambda: open(os.path.join("..", "..", "..", "planted"), "w")),
        }
        ports = nats_ports()
        report["nats_ports"] = ports
        stolen = credentials_anywhere([c["state"], os.path.join("..", "..", "..")])
        report["credentials_found"] = [user for user, _ in stolen]
        for port in ports:
            report[f"nats_{port}_anonymous"] = attempt(lambda: talk_to_nats(port))
            report[f"nats_{port}_guessed"] = attempt(lambda: talk_to_nats(port, "admin", "admin"))
            for user, password in stolen:
                report[f"nats_{port}_as_{user}"] = attempt(lambda: talk_to_nats(port, user, password))
        return report
'''

VICTIM = """
class Handler:
    def handle_async(self, payload):
        return {"secret": "only mine"}
"""


def test_a_hostile_handler_reaches_neither_the_broker_nor_other_apis_nor_the_state(
    deploy: Deploy, http: httpx.Client, mesh: LocalMesh
) -> None:
    victim = deploy(VICTIM, files={".env": "VICTIM_SECRET=hunter2\n"})
    hostile = deploy(HOSTILE, api={"handler": {"config": {"other_api": victim, "state": str(mesh.workdir)}}})
    request_id = http.post(f"/{hostile}", json={}).json()["id"]
    record = eventually(
        lambda: (r := http.get(f"/{hostile}/{request_id}", params={"wait": 10}).json())["status"] == "completed" and r,
        timeout=60,
        what="the hostile handler's report",
    )
    report = record["result"]

    # It holds nothing that reaches NATS, and NATS answers nobody without credentials.
    assert report["secrets_in_environment"] == []
    ours = mesh.ports["nats"]
    assert ours in report["nats_ports"], report  # it did find the mesh's NATS server ...
    # ... and got nowhere with it (a NATS server of something else on this machine is not ours to judge).
    attempts = {k: v for k, v in report.items() if k.startswith(f"nats_{ours}_")}
    assert attempts and all(v.startswith("refused") for v in attempts.values()), attempts
    for key in (f"nats_{ours}_anonymous", f"nats_{ours}_guessed"):
        assert "Authorization Violation" in report[key], report[key]
    assert report["credentials_found"] == []
    # It can read nothing of the mesh's state: credentials, NATS's configuration.
    for key in ("state_folder", "admin_password", "server_config"):
        assert report[key].startswith("refused: PermissionError"), (key, report[key])

    if os.geteuid() == 0:
        # Its own unprivileged user: the executor, its environment and other APIs are out of reach.
        assert report["uid"] != 0 and report["executor_uid"] == 0
        for key in ("executor_environ", "signal_executor", "other_api_folder", "other_api_file", "all_projects"):
            assert report[key].startswith("refused: PermissionError"), (key, report[key])
        assert report["executor_workdir_write"].startswith("refused: PermissionError")


def test_nats_refuses_a_connection_without_credentials(mesh: LocalMesh) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", mesh.ports["nats"]), timeout=5) as s:
        s.settimeout(5)
        assert s.recv(4096).startswith(b"INFO")
        s.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n')
        assert b"-ERR 'Authorization Violation'" in s.recv(4096)


def test_the_state_folder_and_credentials_are_readable_by_their_owner_only(mesh: LocalMesh) -> None:
    assert Path(mesh.workdir).stat().st_mode & 0o077 == 0
    for path in mesh.credentials_dir.iterdir():
        assert path.stat().st_mode & 0o077 == 0, path
    assert (mesh.workdir / "nats.conf").stat().st_mode & 0o077 == 0
