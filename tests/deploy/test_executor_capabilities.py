"""The executor container's capabilities are enough for its sandbox, and each one of them is needed.

The images and manifests run the executor as root with every capability dropped but EXECUTOR_CAPABILITIES, and
with no_new_privs (Kubernetes' `allowPrivilegeEscalation: false`, Compose's `no-new-privileges`). Here the
executor's own code does its root work for one API (tests/deploy/sandbox_probe.py) under `setpriv` with exactly
that set and no_new_privs; then again with each capability left out, and with DAC_READ_SEARCH in place of
DAC_OVERRIDE. No container runs here: this needs root (and CAP_SETPCAP, to narrow the bounding set), and skips
without it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.manifests import EXECUTOR_CAPABILITIES, ROOT
from tests.deploy.sandbox_probe import UID_BASE

BITS = {"CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "KILL": 5, "SETGID": 6, "SETUID": 7}
"""Linux capability numbers (linux/capability.h)."""
SETPCAP = 8

NEEDED_FOR = {
    "SETUID": "dependencies.sh",  # setuid(2) to the API's uid before exec
    "SETGID": "dependencies.sh",  # setgroups([]), setgid(2)
    "CHOWN": "project folder",  # the API's folder handed to its user
    "FOWNER": "project folder",  # chmod 0700 of that folder once it is the user's
    "DAC_OVERRIDE": "project folder",  # the ready marker written into the user's 0700 folder
    "KILL": "stop the handler process",  # SIGTERM to a process of another uid
}
"""The first step of the probe that fails without each capability."""


def effective_capabilities() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def mask(names: frozenset[str] | set[str]) -> int:
    return sum(1 << BITS[name] for name in names)


def why_not() -> str:
    """Why the probe cannot run here ('' when it can)."""
    if os.geteuid() != 0:
        return "needs root, to switch users as the executor does"
    if shutil.which("setpriv") is None:
        return "needs setpriv (util-linux)"
    needed = mask(set(BITS)) | 1 << SETPCAP
    if effective_capabilities() & needed != needed:
        return "this root lacks capabilities the probe needs to start with"
    return ""


pytestmark = pytest.mark.skipif(bool(why_not()), reason=why_not() or "runs")


def probe(capabilities: frozenset[str] | set[str]) -> dict[str, Any]:
    """Run tests/deploy/sandbox_probe.py as root with only these capabilities and no_new_privs; its report."""
    workdir = Path(tempfile.mkdtemp(prefix="cortado-executor-"))
    secrets = Path(tempfile.mkdtemp(prefix="cortado-secrets-"))
    try:
        # As the Secret volume and the Compose secret have it: root's, mode 0400, in a folder anyone may list.
        secrets.chmod(0o755)
        password = secrets / "password"
        password.write_text("0123456789abcdef0123456789abcdef")
        password.chmod(0o400)
        keep = ",".join(f"+{name.lower()}" for name in sorted(capabilities))
        done = subprocess.run(
            [
                "setpriv",
                "--inh-caps=-all",
                f"--bounding-set=-all{',' + keep if keep else ''}",
                "--no-new-privs",
                "--",
                sys.executable,
                "-m",
                "tests.deploy.sandbox_probe",
                str(workdir),
                str(password),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0 and done.stdout.strip(), done.stdout + done.stderr
        report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        assert report["uid"] == 0
        assert int(report["capabilities"], 16) == mask(capabilities), "setpriv did not leave exactly these"
        return report
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(secrets, ignore_errors=True)


def test_every_capability_the_executor_keeps_has_a_reason_here() -> None:
    assert set(NEEDED_FOR) == EXECUTOR_CAPABILITIES


def test_with_the_containers_capabilities_the_executor_does_its_root_work_and_user_code_reaches_none_of_it() -> None:
    report = probe(EXECUTOR_CAPABILITIES)
    assert report["step"] is None, report
    handler = report["handler"]
    # The API's own user, with no capability at all, and no way to gain one.
    assert report["api_uid"] >= UID_BASE
    assert handler["uid"] == str(report["api_uid"])
    assert handler["CapEff"] == "0000000000000000"
    assert handler["NoNewPrivs"] == "1"
    # Neither the executor's password file nor its environment, no signal to it, no look into its workdir.
    for reach in ("read_password", "read_executor_environ", "signal_executor", "list_workdir", "write_workdir"):
        assert handler[reach] == "no", (reach, report)
    assert report["handler_exit"] == -15


@pytest.mark.parametrize("capability", sorted(EXECUTOR_CAPABILITIES))
def test_without_any_one_of_them_a_step_fails(capability: str) -> None:
    report = probe(EXECUTOR_CAPABILITIES - {capability})
    assert report["step"] == NEEDED_FOR[capability], report
    assert report["error"], report


def test_dac_read_search_would_not_do_instead_of_dac_override() -> None:
    """The executor writes into, and removes from, folders its API's user owns: reading them is not enough."""
    report = probe((EXECUTOR_CAPABILITIES - {"DAC_OVERRIDE"}) | {"DAC_READ_SEARCH"})
    assert report["step"] == NEEDED_FOR["DAC_OVERRIDE"], report
    assert "PermissionError" in report["error"], report
