"""An API's Python: its dependencies.sh, then its requirements in a cached virtualenv layered over the executor's."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import site
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from services.executor.contract import IMPORT_CHECK
from services.executor.sandbox import HandlerUser, Sandbox, become

OUTPUT_TAIL_LINES = 60
"""How many of a failed step's last output lines its DependencyError carries."""

READY_MARKER = ".cortado-ready"
"""Written last into a virtualenv: without it the env is half-built and gets rebuilt."""

ENV_KEY_CHARS = 32
"""Hex digits of the requirements' sha256 that name an env (short paths keep scripts' shebang lines short)."""

LOCK_POLL_SECONDS = 0.1
"""How often a waiter retries a lock another replica holds (polling keeps the wait cancellable)."""

MAX_LINE_BYTES = 65536
"""Output without a newline for this long is passed on as a line of its own."""


class DependencyError(Exception):
    """An API's dependencies could not be installed.

    str() is the message for the user: the step that failed (the shell script, or `pip install -r <file>`), its exit
    code and the last lines of its output.
    """


def _nothing(line: str) -> None:
    """The default progress callback: ignores the line."""


async def prepare_python(
    project: Path,
    shell_script: str,
    requirements: str,
    cache_dir: Path,
    on_progress: Callable[[str], None] = _nothing,
    user: HandlerUser | None = None,
    environment: Mapping[str, str] | None = None,
) -> str:
    """Install an API's dependencies and return the Python executable its handler process must run with.

    First `bash <shell_script>` runs in the project folder when that file exists, once per project folder: success is
    remembered by a marker file next to the folder (named after the folder and the script's hash), so a restarted
    handler process does not run it again; replicas sharing the folder run it one at a time.

    Then, when `requirements` exists and names anything (not only blank and comment lines), the result is the python
    of the virtualenv `cache_dir/envs/<key>`, key being the sha256 of the requirements file's content, `sys.version`
    and `sys.executable`: the same requirements share one env, built once on the machine (under an exclusive lock on
    `cache_dir/envs/<key>.lock`, which also holds between executor processes). The env sees the executor's own
    packages (Cortado, nats, grpc, torch, ...) after its own, so the API's pins win. A half-built env (no
    `.cortado-ready` marker) is removed and built again. Without requirements the result is `sys.executable`.

    Each line the script or pip prints is passed to `on_progress` as it comes.

    The script, pip and the import check run as `user` (the API's own, when the executor sandboxes user code; its
    envs then live in `cache_dir/envs-<uid>`, shared by that API's versions only) with the handler's environment
    `environment` (never the executor's own).

    Raises DependencyError when the script or pip fails (or the new env cannot import Cortado's handler process);
    no ready marker is left behind then, so the next call tries again.
    """
    step = _Step(user, {**(environment if environment is not None else os.environ), "PYTHONUNBUFFERED": "1"})
    await _run_shell_script(project, shell_script, on_progress, step)
    requirements_file = project / requirements
    if not requirements_file.is_file():
        return sys.executable
    content = requirements_file.read_bytes()
    if not _names_anything(content):
        return sys.executable
    envs = cache_dir / ("envs" if user is None else f"envs-{user.uid}")
    if user is not None and envs.is_dir() and envs.lstat().st_uid != user.uid:
        await asyncio.to_thread(shutil.rmtree, envs, True)  # not the API's own: never build in it
    if not envs.is_dir():
        envs.mkdir(parents=True)
        Sandbox.give(envs, user)
    # Requirements that point into the project (`-e .`, `--find-links wheels`, `-r other.txt`) depend on more
    # than their own text: such an env belongs to this project folder alone.
    key_input = content + (b"\0" + os.fsencode(str(project)) if _references_project_files(content) else b"")
    env = envs / env_key(key_input)
    python = env / "bin" / "python"
    if (env / READY_MARKER).is_file():
        return str(python)
    async with _exclusive_lock(envs / f"{env.name}.lock"):
        if (env / READY_MARKER).is_file():
            return str(python)
        if env.is_symlink():
            env.unlink()
        elif env.exists():
            await asyncio.to_thread(shutil.rmtree, env, True)
        try:
            await _build_env(env, project, requirements, content, on_progress, step)
        except Exception:
            await asyncio.to_thread(shutil.rmtree, env, True)
            raise
    return str(python)


def env_key(requirements_content: bytes) -> str:
    """The name of the env for these requirements under this interpreter: equal inputs, equal names."""
    digest = hashlib.sha256()
    for part in (requirements_content, sys.version.encode(), os.fsencode(sys.executable)):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()[:ENV_KEY_CHARS]


def _names_anything(content: bytes) -> bool:
    """Whether a requirements file has a line that is not blank or a comment."""
    text = content.decode("utf-8", "replace")
    return any(line.strip() and not line.strip().startswith("#") for line in text.splitlines())


_PATH_OPTIONS = frozenset({"-e", "--editable", "-r", "--requirement", "-c", "--constraint", "-f", "--find-links"})


def _is_relative_path(value: str) -> bool:
    return "://" not in value and not value.startswith(("/", "~")) and not value.startswith("file:/")


def _references_project_files(content: bytes) -> bool:
    """Whether a requirements file names paths relative to the project (`-e .`, `-f wheels`, `-r other.txt`)."""
    for raw in content.decode("utf-8", "replace").splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        option, _, rest = line.partition("=") if line.startswith("--") and "=" in line.split()[0] else ("", "", "")
        tokens = [option, rest.strip()] if option else line.split()
        if tokens[0] in _PATH_OPTIONS and len(tokens) > 1 and _is_relative_path(tokens[1]):
            return True
        if tokens[0].startswith((".", "file:.")):
            return True
    return False


def executor_site_dirs() -> list[str]:
    """The running interpreter's site-packages folders (the user's one too when enabled), in sys.path order."""
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    return dirs


async def _run_shell_script(project: Path, shell_script: str, on_progress: Callable[[str], None], step: _Step) -> None:
    """Run the project's shell script unless absent or already run in this folder; raises DependencyError on failure."""
    script = project / shell_script
    if not script.is_file():
        return
    digest = hashlib.sha256(script.read_bytes()).hexdigest()[:16]
    stem = f"{project.name}.{Path(shell_script).name}-{digest}"
    done = project.parent / f"{stem}.done"
    if done.exists():
        return
    async with _exclusive_lock(project.parent / f"{stem}.lock"):
        if done.exists():
            return
        await step.run(shell_script, ["bash", shell_script], project, on_progress)
        done.touch()


async def _build_env(
    env: Path, project: Path, requirements: str, content: bytes, on_progress: Callable[[str], None], step: _Step
) -> None:
    """Create the virtualenv, link it to the executor's packages, install the requirements, check it, mark it ready."""
    await step.run("python -m venv", [sys.executable, "-m", "venv", "--without-pip", str(env)], project, on_progress)
    site_packages = env / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    if not site_packages.is_dir():
        raise DependencyError(f"python -m venv did not create {site_packages}")
    # addsitedir (not a bare path line) also runs those folders' own .pth files, e.g. editable installs.
    lines = [f"import site; site.addsitedir({folder!r})\n" for folder in executor_site_dirs()]
    (site_packages / "_cortado_executor.pth").write_text("".join(lines), encoding="utf-8")
    python = str(env / "bin" / "python")
    pip = [sys.executable, "-m", "pip", "--python", python, "install", "--disable-pip-version-check", "--no-input"]
    await step.run(f"pip install -r {requirements}", [*pip, "-r", requirements], project, on_progress)
    try:
        await step.run("the import check", [python, "-P", "-c", IMPORT_CHECK], env, _nothing)
    except DependencyError as exc:
        raise DependencyError(
            f"the packages of {requirements} break Cortado's handler process (a pin conflicts with the executor's"
            f" own packages?): {exc}"
        ) from exc
    partial = env / f"{READY_MARKER}.tmp"
    partial.write_bytes(content)
    partial.replace(env / READY_MARKER)


@dataclass(frozen=True)
class _Step:
    """Who runs the commands of a dependency install, and with what environment."""

    user: HandlerUser | None
    env: Mapping[str, str]

    async def run(self, step: str, argv: Sequence[str], cwd: Path, on_progress: Callable[[str], None]) -> None:
        """_run_step as this user, with this environment."""
        await _run_step(step, argv, cwd, on_progress, self.user, self.env)


async def _run_step(
    step: str,
    argv: Sequence[str],
    cwd: Path,
    on_progress: Callable[[str], None],
    user: HandlerUser | None = None,
    env: Mapping[str, str] | None = None,
) -> None:
    """Run a command, passing each output line (stdout and stderr) to on_progress.

    Raises DependencyError naming `step`, its exit code and its output's last lines when it fails or cannot start.
    When cancelled, kills the command's whole process group.
    """
    tail: deque[str] = deque(maxlen=OUTPUT_TAIL_LINES)

    def emit(raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip("\r").rsplit("\r", 1)[-1]
        tail.append(line)
        on_progress(line)

    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=dict(env) if env is not None else {**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
            preexec_fn=become(user),
        )
    except OSError as exc:
        raise DependencyError(f"{step} could not start: {exc}") from exc
    try:
        assert process.stdout is not None
        pending = b""
        while chunk := await process.stdout.read(MAX_LINE_BYTES):
            *lines, pending = (pending + chunk).split(b"\n")
            for raw in lines:
                emit(raw)
            if len(pending) >= MAX_LINE_BYTES:
                emit(pending)
                pending = b""
        if pending:
            emit(pending)
        code = await process.wait()
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await asyncio.shield(process.wait())
    if code != 0:
        how = f"was killed by signal {-code}" if code < 0 else f"failed with exit code {code}"
        output = "\n".join(tail)
        raise DependencyError(f"{step} {how}" + (f":\n{output}" if output else " and printed nothing"))


@contextlib.asynccontextmanager
async def _exclusive_lock(path: Path) -> AsyncIterator[None]:
    """Hold an exclusive flock on `path` (created if missing) for the block; waits for other holders, in any process."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(LOCK_POLL_SECONDS)
        yield
    finally:
        os.close(fd)
