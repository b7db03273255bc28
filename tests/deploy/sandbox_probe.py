"""What the executor does as root for one API, with Cortado's own code, run with only some capabilities.

tests/deploy/test_executor_capabilities.py starts this module under `setpriv` as root with the executor
container's capabilities (and with one of them missing), and with no_new_privs, as the container has it:

    python -m tests.deploy.sandbox_probe <workdir> <password file>

It unpacks a project for an API and hands its folder to the API's user (prepare_project), runs its
dependencies.sh as that user (prepare_python), makes its home folder and writes its spec file as the executor
does before each start, starts a process as that user which reports what it can reach, stops that process with
SIGTERM and removes the project folder, with what the user left in it. It prints one JSON object: the
capabilities it ran with, the first step that failed (null when none did) and why, and what the API's process
could reach.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import os
import shutil
import signal
import sys
import tarfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from nats.js.object_store import ObjectStore

from cortado.v1 import control_pb2
from services.executor.environment import prepare_python
from services.executor.replica import prepare_project
from services.executor.sandbox import Sandbox, become, handler_environment

UID_BASE = 70000
"""CORTADO_HANDLER_UID_BASE's default, which the images and manifests keep."""

API = "probe"

DEPENDENCIES = b"echo built > built.txt\n"

HANDLER = r"""
status() { grep -E '^(CapEff|NoNewPrivs):' /proc/self/status | tr -d '\t' | tr ':' ' '; }
try() { name=$1; shift; if "$@" >/dev/null 2>&1; then echo "$name yes"; else echo "$name no"; fi; }
echo "uid $(id -u)"
status
try read_password cat "$PASSWORD"
try read_executor_environ cat "/proc/$PPID/environ"
try signal_executor kill -0 "$PPID"
try list_workdir ls "$WORKDIR"
try write_workdir touch "$WORKDIR/intruder"
mkdir -p locked/deep && echo kept > locked/deep/file && chmod 000 locked/deep locked
echo ready
exec cat
"""
"""The API's process: reports what it reaches, leaves a folder nobody may enter, then waits for SIGTERM."""


class Bundles:
    """The Object Store's `get`, for one bundle."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    async def get(self, name: str) -> Any:
        return SimpleNamespace(data=self._data)


def bundle() -> bytes:
    """A project bundle, as pack_project makes them: a gzip-compressed tar of the project's files."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as packed, tarfile.open(fileobj=packed, mode="w") as tar:
        for name, content in (("handler.py", b"def handle(x):\n    return x\n"), ("dependencies.sh", DEPENDENCIES)):
            member = tarfile.TarInfo(name)
            member.size = len(content)
            member.mode = 0o644
            tar.addfile(member, io.BytesIO(content))
    return buffer.getvalue()


def capabilities() -> str:
    """This process's effective capabilities, as /proc shows them (hex)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return line.split()[1]
    return ""


async def steps(workdir: Path, password: Path, report: dict[str, Any]) -> None:
    """The executor's work for one API, step by step; report["step"] names the one running."""
    report["step"] = "handler users"
    sandbox = Sandbox(workdir, True, UID_BASE)
    user = sandbox.user_for(API)
    assert user is not None
    report["api_uid"] = user.uid

    report["step"] = "project folder"
    spec = control_pb2.ApiSpec(name=API, version=1, bundle_object="probe-bundle")
    project = await prepare_project(workdir, spec, cast(ObjectStore, Bundles(bundle())), sandbox)

    report["step"] = "dependencies.sh"
    environment = handler_environment(os.environ)
    await prepare_python(
        project, "dependencies.sh", "requirements.txt", workdir / "cache", user=user, environment=environment
    )

    report["step"] = "home folder"
    home = project.parent / "home"
    home.mkdir(parents=True)
    Sandbox.give(home, user)

    report["step"] = "spec file"
    spec_file = project.parent / "v1.spec"
    spec_file.write_bytes(spec.SerializeToString())
    os.chown(spec_file, user.uid, user.gid)

    report["step"] = "handler process"
    process = await asyncio.create_subprocess_exec(
        "sh",
        "-c",
        HANDLER,
        cwd=project,
        env={**environment, "HOME": str(home), "PASSWORD": str(password), "WORKDIR": str(workdir)},
        start_new_session=True,
        preexec_fn=become(user),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    reached: dict[str, str] = {}
    while (line := (await asyncio.wait_for(process.stdout.readline(), 30)).decode().strip()) != "ready":
        if not line:
            raise RuntimeError(f"the handler process ended early: {reached}")
        key, _, value = line.partition(" ")
        reached[key] = value
    report["handler"] = reached

    report["step"] = "stop the handler process"
    process.send_signal(signal.SIGTERM)
    report["handler_exit"] = await asyncio.wait_for(process.wait(), 30)

    report["step"] = "remove the project folder"
    shutil.rmtree(project)
    report["step"] = None


def main() -> None:
    workdir, password = Path(sys.argv[1]), Path(sys.argv[2])
    report: dict[str, Any] = {"capabilities": capabilities(), "uid": os.geteuid()}
    try:
        asyncio.run(steps(workdir, password, report))
    except Exception as exc:  # the report names the step and the error
        report["error"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(report))


if __name__ == "__main__":
    main()
