"""Tests of services.executor.environment: dependencies.sh and per-API virtualenvs, offline with home-made wheels."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib.metadata
import os
import sys
import zipfile
from pathlib import Path

import pytest

from services.executor.environment import READY_MARKER, DependencyError, env_key, prepare_python

OFFLINE = "--no-index\n--find-links wheels\n"


def shared_offline(root: Path) -> str:
    """Requirements options naming one machine-wide wheel folder (an absolute path), as a shared env may."""
    wheelhouse = root / "wheelhouse"
    make_wheel(wheelhouse, "tinypkg", "1.0")
    make_wheel(wheelhouse, "tinypkg", "2.0")
    return f"--no-index\n--find-links {wheelhouse}\n"


def make_wheel(folder: Path, name: str, version: str, module_files: dict[str, str] | None = None) -> Path:
    """Write a pure-Python wheel `<name>-<version>` into folder; by default its one module has VERSION = version."""
    files = module_files or {f"{name}.py": f'VERSION = "{version}"\n'}
    dist_info = f"{name}-{version}.dist-info"
    files = {
        **files,
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        data = text.encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
        archive.writestr(f"{dist_info}/RECORD", "\n".join(record) + "\n")
    return wheel


def make_project(root: Path, name: str, requirements: str | None = None, script: str | None = None) -> Path:
    """A project folder laid out as the executor unpacks it, with tinypkg 1.0 and 2.0 wheels in its wheels/ folder."""
    project = root / "projects" / name / "v1"
    make_wheel(project / "wheels", "tinypkg", "1.0")
    make_wheel(project / "wheels", "tinypkg", "2.0")
    if requirements is not None:
        (project / "requirements.txt").write_text(requirements)
    if script is not None:
        (project / "dependencies.sh").write_text(script)
    return project


async def run_python(python: str, code: str, cwd: Path) -> str:
    """Run code with python -P in cwd, as the handler process would be; its stdout, or a failed assertion."""
    process = await asyncio.create_subprocess_exec(
        python, "-P", "-c", code, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()
    return output.decode().strip()


async def prepare(project: Path, cache: Path) -> tuple[str, list[str]]:
    """prepare_python with the default file names; the python and the progress lines it reported."""
    lines: list[str] = []
    python = await prepare_python(project, "dependencies.sh", "requirements.txt", cache, lines.append)
    return python, lines


@pytest.mark.parametrize("requirements", [None, "", "# nothing here\n\n   # indented comment\n"])
async def test_without_requirements_the_executor_python_is_used_and_no_env_is_made(
    tmp_path: Path, requirements: str | None
) -> None:
    project = make_project(tmp_path, "api", requirements)
    python, lines = await prepare(project, tmp_path / "cache")
    assert python == sys.executable
    assert lines == []
    assert not (tmp_path / "cache" / "envs").exists() or not any((tmp_path / "cache" / "envs").iterdir())


async def test_requirements_are_installed_in_an_env_that_still_sees_the_executor_packages(tmp_path: Path) -> None:
    project = make_project(tmp_path, "api", OFFLINE + "tinypkg==1.0\n")
    python, lines = await prepare(project, tmp_path / "cache")
    assert python != sys.executable
    assert Path(python).parent.parent.parent == tmp_path / "cache" / "envs"
    assert any("Successfully installed tinypkg-1.0" in line for line in lines)
    code = "import tinypkg, cortado, nats, services.executor.handlerprocess; print(tinypkg.VERSION)"
    assert await run_python(python, code, project) == "1.0"


async def test_two_projects_pinning_conflicting_versions_each_get_their_own(tmp_path: Path) -> None:
    old = make_project(tmp_path, "old", OFFLINE + "tinypkg==1.0\n")
    new = make_project(tmp_path, "new", OFFLINE + "tinypkg==2.0\n")
    cache = tmp_path / "cache"
    (old_python, _), (new_python, _) = await asyncio.gather(prepare(old, cache), prepare(new, cache))
    assert old_python != new_python
    assert await run_python(old_python, "import tinypkg; print(tinypkg.VERSION)", old) == "1.0"
    assert await run_python(new_python, "import tinypkg; print(tinypkg.VERSION)", new) == "2.0"


async def test_a_pin_wins_over_the_executors_own_version_which_stays_untouched(tmp_path: Path) -> None:
    executor_version = importlib.metadata.version("joblib")
    project = make_project(tmp_path, "api", OFFLINE + "joblib==0.0.1\n")
    make_wheel(project / "wheels", "joblib", "0.0.1", {"joblib/__init__.py": '__version__ = "0.0.1"\n'})
    python, _ = await prepare(project, tmp_path / "cache")
    assert await run_python(
        python, "import joblib, services.executor.handlerprocess; print(joblib.__version__)", project
    ) == ("0.0.1")
    assert await run_python(sys.executable, "import joblib; print(joblib.__version__)", project) == executor_version
    assert importlib.metadata.version("joblib") == executor_version


async def test_the_same_requirements_share_one_env_and_pip_runs_only_once(tmp_path: Path) -> None:
    first = make_project(tmp_path, "first", shared_offline(tmp_path) + "tinypkg==2.0\n")
    second = make_project(tmp_path, "second", shared_offline(tmp_path) + "tinypkg==2.0\n")
    python, lines = await prepare(first, tmp_path / "cache")
    marker = Path(python).parent.parent / READY_MARKER
    built_at = marker.stat().st_mtime_ns
    assert lines
    again, lines = await prepare(second, tmp_path / "cache")
    assert again == python
    assert lines == []
    assert marker.stat().st_mtime_ns == built_at


async def test_concurrent_calls_for_the_same_requirements_build_the_env_once(tmp_path: Path) -> None:
    requirements = shared_offline(tmp_path) + "tinypkg==1.0\n"
    projects = [make_project(tmp_path, name, requirements) for name in ("a", "b", "c")]
    results = await asyncio.gather(*(prepare(project, tmp_path / "cache") for project in projects))
    assert len({python for python, _ in results}) == 1
    installs = [lines for _, lines in results if any("Successfully installed" in line for line in lines)]
    assert len(installs) == 1
    assert sum(1 for _, lines in results if lines) == 1


async def test_an_unsatisfiable_requirement_fails_with_pips_message_and_is_retried_later(tmp_path: Path) -> None:
    project = make_project(tmp_path, "api", OFFLINE + "tinypkg==9.9\n")
    with pytest.raises(DependencyError) as failure:
        await prepare(project, tmp_path / "cache")
    message = str(failure.value)
    assert "pip install -r requirements.txt" in message
    assert "exit code 1" in message
    assert "No matching distribution" in message
    env = tmp_path / "cache" / "envs" / env_key((project / "requirements.txt").read_bytes())
    assert not (env / READY_MARKER).exists()
    make_wheel(project / "wheels", "tinypkg", "9.9")
    python, _ = await prepare(project, tmp_path / "cache")
    assert await run_python(python, "import tinypkg; print(tinypkg.VERSION)", project) == "9.9"


async def test_dependencies_sh_runs_before_pip_and_only_once_per_project_folder(tmp_path: Path) -> None:
    script = "set -e\necho ran >> ../runs.log\nmkdir -p vendored\ncp wheels/tinypkg-2.0-py3-none-any.whl vendored/\n"
    project = make_project(tmp_path, "api", "--no-index\n--find-links vendored\ntinypkg==2.0\n", script)
    python, lines = await prepare(project, tmp_path / "cache")
    assert await run_python(python, "import tinypkg; print(tinypkg.VERSION)", project) == "2.0"
    assert (project / "vendored" / "tinypkg-2.0-py3-none-any.whl").is_file()
    again, lines = await prepare(project, tmp_path / "cache")
    assert again == python
    assert lines == []
    assert (project.parent / "runs.log").read_text() == "ran\n"


async def test_dependencies_sh_alone_runs_and_leaves_the_executor_python(tmp_path: Path) -> None:
    project = make_project(tmp_path, "api", script="echo hello from bash\ntouch made-by-script\n")
    python, lines = await prepare(project, tmp_path / "cache")
    assert python == sys.executable
    assert lines == ["hello from bash"]
    assert (project / "made-by-script").is_file()


async def test_a_failing_dependencies_sh_fails_with_its_exit_code_and_output_and_runs_again_next_time(
    tmp_path: Path,
) -> None:
    project = make_project(tmp_path, "api", OFFLINE + "tinypkg==1.0\n", "echo boom\necho oops >&2\nexit 3\n")
    for _ in range(2):
        with pytest.raises(DependencyError) as failure:
            await prepare(project, tmp_path / "cache")
        message = str(failure.value)
        assert "dependencies.sh" in message
        assert "exit code 3" in message
        assert "boom" in message
        assert "oops" in message
    assert not (tmp_path / "cache" / "envs").exists() or not any((tmp_path / "cache" / "envs").iterdir())


async def test_a_half_built_env_is_removed_and_rebuilt(tmp_path: Path) -> None:
    project = make_project(tmp_path, "api", shared_offline(tmp_path) + "tinypkg==1.0\n")
    env = tmp_path / "cache" / "envs" / env_key((project / "requirements.txt").read_bytes())
    (env / "bin").mkdir(parents=True)
    (env / "leftover").write_text("from a build that died")
    python, lines = await prepare(project, tmp_path / "cache")
    assert Path(python).parent.parent == env
    assert not (env / "leftover").exists()
    assert (env / READY_MARKER).is_file()
    assert any("Successfully installed tinypkg-1.0" in line for line in lines)
    assert await run_python(python, "import tinypkg; print(tinypkg.VERSION)", project) == "1.0"


async def test_cancelling_stops_a_running_dependencies_sh_and_it_runs_again_next_time(tmp_path: Path) -> None:
    project = make_project(tmp_path, "api", script="echo $$\nsleep 30\n")
    pids: list[int] = []
    started = asyncio.Event()

    def on_progress(line: str) -> None:
        pids.append(int(line))
        started.set()

    task = asyncio.create_task(
        prepare_python(project, "dependencies.sh", "requirements.txt", tmp_path / "cache", on_progress)
    )
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(ProcessLookupError):
        os.kill(pids[0], 0)
    assert not list(project.parent.glob("*.done"))


def test_the_env_key_depends_on_the_requirements_content_only_for_one_interpreter() -> None:
    assert env_key(b"tinypkg==1.0\n") == env_key(b"tinypkg==1.0\n")
    assert env_key(b"tinypkg==1.0\n") != env_key(b"tinypkg==2.0\n")


async def test_projects_whose_requirements_name_their_own_files_do_not_share_an_env(tmp_path: Path) -> None:
    first = make_project(tmp_path, "first", OFFLINE + "tinypkg==2.0\n")
    second = make_project(tmp_path, "second", OFFLINE + "tinypkg==2.0\n")
    (first_python, _), (second_python, _) = await asyncio.gather(
        prepare(first, tmp_path / "cache"), prepare(second, tmp_path / "cache")
    )
    assert first_python != second_python
