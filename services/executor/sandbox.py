"""Who runs user code: an unprivileged user per API when the executor runs as root, and the environment it gets.

User code (a handler, its `dependencies.sh`, the packages pip builds for it) never sees the
executor's environment, credentials or state: it gets an environment built from an
allow-list, and, when the executor runs as root, its own uid and gid (one per API, kept in
`<workdir>/handler-users.json`), owning its project folders and nothing else of Cortado's.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from services.executor.contract import IMPORT_CHECK

log = logging.getLogger(__name__)

PASSED_VARIABLES = (
    "PATH",
    "PYTHONDONTWRITEBYTECODE",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TERM",
    "LD_LIBRARY_PATH",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)
"""Variables of the executor's environment a handler process inherits; all others stay behind."""

PASSED_PREFIXES = ("LC_", "OTEL_", "NVIDIA_", "CUDA_", "PYTHONHASHSEED", "PYTHONUNBUFFERED", "PIP_INDEX", "PIP_EXTRA")
"""Prefixes of inherited variables: locale, tracing configuration, GPU runtime settings, package index."""

USERS_FILE = "handler-users.json"

USER_RANGE = 1_000_000
"""How many uids, from the base, APIs' users are drawn from."""


@dataclass(frozen=True)
class HandlerUser:
    """The uid and gid an API's user code runs as."""

    uid: int
    gid: int


def become(user: HandlerUser | None) -> Callable[[], None] | None:
    """A `preexec_fn` that makes the child process user (no supplementary groups); None for no user.

    (uvloop, the services' event loop, does not take subprocess's `user`/`group` arguments.)
    """
    if user is None:
        return None

    def switch() -> None:
        os.setgroups([])
        os.setgid(user.gid)
        os.setuid(user.uid)

    return switch


def handler_environment(source: Mapping[str, str]) -> dict[str, str]:
    """The part of source a handler process may see: the allow-listed variables, nothing of Cortado's."""
    return {
        name: value
        for name, value in source.items()
        if (name in PASSED_VARIABLES or name.startswith(PASSED_PREFIXES)) and not name.startswith("CORTADO_")
    }


class Sandbox:
    """Gives each API its own unprivileged user (when enabled) and hands it the folders that user must own."""

    def __init__(self, workdir: Path, enabled: bool, uid_base: int) -> None:
        self._workdir = workdir
        self.enabled = enabled
        self._uid_base = uid_base
        self._users: dict[str, int] = {}
        if enabled:
            try:
                self._users = {str(k): int(v) for k, v in json.loads((workdir / USERS_FILE).read_text()).items()}
            except (OSError, ValueError):
                self._users = {}

    def user_for(self, api: str) -> HandlerUser | None:
        """The API's user; None when user code runs as the executor's own user.

        The uid comes from the API's name (the same on every executor, so replicas of one API on several
        machines share files they write to a shared volume); should another API on this executor hold it
        already, the next free one is taken and remembered.
        """
        if not self.enabled:
            return None
        uid = self._users.get(api)
        if uid is None:
            taken = set(self._users.values())
            uid = self._uid_base + int(hashlib.sha256(api.encode()).hexdigest()[:12], 16) % USER_RANGE
            while uid in taken:
                uid = self._uid_base + (uid - self._uid_base + 1) % USER_RANGE
            self._users[api] = uid
            path = self._workdir / USERS_FILE
            partial = path.with_suffix(".tmp")
            # Readable by the executor only: the list names every API this executor runs.
            descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w") as out:
                out.write(json.dumps(self._users, indent=1, sort_keys=True))
            partial.replace(path)
        return HandlerUser(uid, uid)

    @staticmethod
    def give(path: Path, user: HandlerUser | None, mode: int = 0o700) -> None:
        """Make path (recursively) the user's own, closed to every other user but root (nothing when user is None)."""
        if user is None:
            return
        for root, dirs, files in os.walk(path):
            os.chown(root, user.uid, user.gid)
            for name in dirs + files:
                os.lchown(os.path.join(root, name), user.uid, user.gid)
        path.chmod(mode)


def open_to_traverse(path: Path) -> None:
    """Let every user pass through path (search, not list): the way to each API's own folder below it."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o711)


async def can_run_python_as(user: HandlerUser, cwd: Path) -> str:
    """'' when the user can start this interpreter and import Cortado's handler process; else why not."""
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-P",
            "-c",
            IMPORT_CHECK,
            cwd=cwd,
            preexec_fn=become(user),
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await process.communicate()
    except (OSError, subprocess.SubprocessError) as exc:
        # SubprocessError: the switch to the user failed in the child (no CAP_SETUID, say).
        return str(exc)
    if process.returncode == 0:
        return ""
    return err.decode(errors="replace").strip().splitlines()[-1] if err.strip() else f"exit code {process.returncode}"


async def choose(workdir: Path, setting: str, uid_base: int) -> Sandbox:
    """The executor's sandbox for setting `auto` (own users when running as root), `on` or `off`.

    With `auto`, a root executor whose interpreter or Cortado package another user cannot read (a Python
    installed under /root, say) runs handlers as itself, and logs an error saying why; with `on` it stops.
    """
    wanted = setting == "on" or (setting == "auto" and os.geteuid() == 0)
    if not wanted:
        return Sandbox(workdir, False, uid_base)
    probe = HandlerUser(uid_base - 1, uid_base - 1)
    open_to_traverse(workdir)
    problem = await can_run_python_as(probe, workdir)
    if problem:
        message = (
            f"handler processes cannot run as an unprivileged user: {sys.executable} or Cortado's package is not "
            f"readable by other users ({problem}); install Python and Cortado where every user can read them "
            "(`make install` prefers the system's Python for this)"
        )
        if setting == "on":
            raise RuntimeError(message)
        log.error(message + "; handlers run as the executor's own user")
        return Sandbox(workdir, False, uid_base)
    return Sandbox(workdir, True, uid_base)
