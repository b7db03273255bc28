"""Projects end to end (docs/configuration.md, "Project files" and "Dependencies"): the files a handler sees,
`.env`, dependencies, the size limit, config errors.

Everything goes through the session's real mesh: projects are deployed through the scheduler (or the CLI) and called
over HTTP through Envoy.

One module: its tests share one module-scoped deployment of every project, made at once so that their replicas (and
their dependency installs) start in parallel.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml

from cortado.client import SchedulerClient
from cortado.mesh import LocalMesh
from cortado.project import ProjectError
from tests.e2e.projectsamples import (
    BAD_DOTENV,
    DEPENDENCIES_SH,
    DEPENDENCIES_TIMEOUT,
    DOTENV_VALUES,
    EXAMPLE,
    HANDLER_ENV_VALUES,
    HIDDEN,
    MIB,
    PLAIN,
    REQUIRES_GENERATED,
    SIX_VERSION,
    VISIBLE,
    Deployment,
    call,
    cli_flags,
    deployed,
    files_project,
    run_cli,
    wait_failed,
)
from tests.helpers import unique_name, write_project
from tests.meshcalls import wait_ready


@pytest.fixture(scope="module")
def projects(
    mesh: LocalMesh, scheduler: SchedulerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Deployment]]:
    """The module's APIs, deployed together without waiting (their replicas start in parallel); role -> Deployment."""
    root = tmp_path_factory.mktemp("projects")
    made: dict[str, Deployment] = {}

    def new(role: str, project: Path) -> Deployment:
        made[role] = Deployment(name=project.name, project=project)
        return made[role]

    try:
        # The Cortex example, unmodified, through the CLI (as its README says).
        sentiment = made["sentiment"] = Deployment(name="sentiment", project=EXAMPLE)
        sentiment.cli = run_cli("deploy", str(EXAMPLE), "--no-wait", *cli_flags(mesh))

        new("files", files_project(root))

        new(
            "six_old",
            write_project(
                root,
                unique_name("six-old"),
                SIX_VERSION,
                files={
                    "dependencies.sh": DEPENDENCIES_SH,
                    "requirements.txt": REQUIRES_GENERATED,
                },
            ),
        )
        new(
            "six_new",
            write_project(
                root,
                unique_name("six-new"),
                SIX_VERSION,
                # Keys that only mattered to Cortex's cluster: accepted, with a notice.
                {
                    "handler": {"image": "quay.io/cortexlabs/python-handler-cpu:0.35.0"},
                    "update_strategy": {"max_surge": "25%", "max_unavailable": 0},
                },
                files={"requirements.txt": "six==1.16.0\n"},
            ),
        )

        endpoint_name = unique_name("endpoint")
        new(
            "endpoint",
            write_project(root, endpoint_name, PLAIN, {"networking": {"endpoint": f"{endpoint_name}-custom/"}}),
        )
        new(
            "pip_fails",
            write_project(
                root, unique_name("pip-fails"), PLAIN, files={"requirements.txt": "nonexistent-package-xyz==1.0\n"}
            ),
        )
        new(
            "bad_dotenv",
            write_project(
                root,
                unique_name("bad-dotenv"),
                PLAIN,
                files={".env": BAD_DOTENV},
            ),
        )
        for role, deployment in made.items():
            if role == "sentiment":
                continue
            try:
                deployment.reply = scheduler.deploy(deployment.project)
                deployment.notices = list(deployment.reply.notices)
            except (grpc.RpcError, ProjectError) as exc:
                deployment.error = exc
        yield made
    finally:
        for deployment in made.values():
            with contextlib.suppress(grpc.RpcError):
                scheduler.delete(deployment.name, force=True)


# --- the Cortex example ----------------------------------------------------------------------------------------------


def test_the_cortex_example_deploys_unmodified_through_the_cli_and_scores_sentiment(
    projects: dict[str, Deployment], scheduler: SchedulerClient, http: httpx.Client
) -> None:
    deployment = projects["sentiment"]
    assert deployment.cli is not None
    code, out, err = deployment.cli
    assert code == 0, err
    assert out.startswith("sentiment: "), out
    assert "notice" not in err, err  # a plain Cortex v0.35 file: nothing to warn about
    wait_ready(scheduler, "sentiment", DEPENDENCIES_TIMEOUT)

    sample = json.loads((EXAMPLE / "sample.json").read_text())
    positive = call(http, "sentiment", sample)
    assert positive["label"] == "positive", positive
    assert positive["score"] > 0.5
    assert set(positive["words"]) == {"awesome", "loved"}

    negative = call(http, "sentiment", {"text": "A dull, boring film. The worst waste of an evening."})
    assert negative["label"] == "negative", negative
    assert negative["score"] < -0.5

    assert call(http, "sentiment", {"text": "It is a film about a train."})["label"] == "neutral"
    assert call(http, "sentiment", {"text": "This was not good"})["label"] == "negative"  # negation flips


def test_the_cortex_example_is_valid_against_the_cortex_v035_spellings() -> None:
    config = yaml.safe_load((EXAMPLE / "cortex.yaml").read_text())
    assert isinstance(config, list) and len(config) == 1
    api = config[0]
    assert api["kind"] == "AsyncAPI"
    assert api["handler"]["type"] == "python" and api["handler"]["path"] == "handler.py"
    assert "config" in api["handler"]
    assert {"target_replica_concurrency", "max_replica_concurrency"} <= set(api["autoscaling"])
    assert api["compute"] == {"cpu": "200m", "mem": "200Mi"}
    handler = (EXAMPLE / "handler.py").read_text()
    assert "from cortex_internal.lib.log import logger as log" in handler
    assert "def __init__(self, config)" in handler and "def handle_async(self, payload)" in handler


# --- project files ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files_answer(projects: dict[str, Deployment], scheduler: SchedulerClient, http: httpx.Client) -> dict[str, Any]:
    """What the files project's handler saw: its file listing and environment."""
    name = deployed(projects["files"])
    wait_ready(scheduler, name)
    answer: dict[str, Any] = call(http, name, {"env": [*DOTENV_VALUES, *HANDLER_ENV_VALUES, "NOT_SET"]})
    return answer


def test_every_project_file_is_available_to_the_handler_in_its_working_directory(
    files_answer: dict[str, Any],
) -> None:
    files = set(files_answer["files"])
    assert set(VISIBLE) <= files, sorted(set(VISIBLE) - files)
    assert files_answer["reads_by_relative_path"] == VISIBLE["data/values.json"]


@pytest.mark.parametrize("path", sorted(HIDDEN))
def test_this_file_is_left_out_of_the_project(files_answer: dict[str, Any], path: str) -> None:
    content = HIDDEN[path]
    reason = content if isinstance(content, str) else "always left out"
    assert path not in files_answer["files"], f"{path} should be left out ({reason})"


def test_the_handler_sees_exactly_the_project_files_and_nothing_else(files_answer: dict[str, Any]) -> None:
    assert files_answer["files"] == sorted(VISIBLE)


def test_dotenv_variables_reach_the_handler_with_quotes_removed(files_answer: dict[str, Any]) -> None:
    env = files_answer["env"]
    assert {name: env[name] for name in DOTENV_VALUES} == DOTENV_VALUES
    assert env["NOT_SET"] is None


def test_handler_env_reaches_the_handler_as_strings(files_answer: dict[str, Any]) -> None:
    env = files_answer["env"]
    assert {name: env[name] for name in HANDLER_ENV_VALUES} == HANDLER_ENV_VALUES


def test_a_malformed_dotenv_line_is_an_error_naming_its_line_number(
    projects: dict[str, Deployment], scheduler: SchedulerClient
) -> None:
    deployment = projects["bad_dotenv"]
    if deployment.error is not None:
        message = deployment.error.details() if isinstance(deployment.error, grpc.RpcError) else str(deployment.error)
    else:
        message = wait_failed(scheduler, deployment.name, timeout=60)
    assert ".env" in message and "line 3" in message, message
    assert "this is not an assignment" in message, message


# --- dependencies ----------------------------------------------------------------------------------------------------


def test_two_apis_pinning_conflicting_versions_of_a_package_both_work(
    projects: dict[str, Deployment], scheduler: SchedulerClient, http: httpx.Client
) -> None:
    old, new = deployed(projects["six_old"]), deployed(projects["six_new"])
    wait_ready(scheduler, old, DEPENDENCIES_TIMEOUT)
    wait_ready(scheduler, new, DEPENDENCIES_TIMEOUT)
    old_answer, new_answer = call(http, old, {}), call(http, new, {})
    assert old_answer["six"] == "1.15.0", old_answer
    assert new_answer["six"] == "1.16.0", new_answer
    # Each API runs in its own virtualenv, none of them the executor's ...
    assert old_answer["python"] != new_answer["python"]
    assert sys.prefix not in old_answer["six_file"] and sys.prefix not in new_answer["six_file"]
    # ... which still sees the executor's own packages.
    assert old_answer["executor_package"].startswith(sys.prefix), old_answer
    assert new_answer["executor_package"].startswith(sys.prefix), new_answer


def test_dependencies_sh_runs_with_bash_before_pip(
    projects: dict[str, Deployment], scheduler: SchedulerClient, http: httpx.Client
) -> None:
    # six-old's requirements.txt includes the file its dependencies.sh writes: pip succeeding proves the order.
    old = deployed(projects["six_old"])
    wait_ready(scheduler, old, DEPENDENCIES_TIMEOUT)
    answer = call(http, old, {})
    assert answer["six"] == "1.15.0"
    assert answer["shell"].startswith("dependencies.sh ran in "), answer
    assert "with bash " in answer["shell"]


def test_a_failed_pip_install_fails_the_api_with_pips_message_in_describe(
    projects: dict[str, Deployment], scheduler: SchedulerClient, mesh: LocalMesh
) -> None:
    name = deployed(projects["pip_fails"])
    message = wait_failed(scheduler, name)
    assert "pip install -r requirements.txt failed" in message, message
    assert "nonexistent-package-xyz" in message, message
    code, out, err = run_cli("describe", name, *cli_flags(mesh))
    assert code == 0, err
    assert "status:" in out and "failed" in out, out
    assert "No matching distribution found for nonexistent-package-xyz==1.0" in out, out


def test_keys_only_cortex_used_are_accepted_with_a_notice(projects: dict[str, Deployment]) -> None:
    deployment = projects["six_new"]
    deployed(deployment)
    notices = "\n".join(deployment.notices)
    assert "handler.image" in notices, notices
    assert "update_strategy" in notices, notices
    assert deployment.name in notices, notices


# --- the size limit --------------------------------------------------------------------------------------------------


def test_a_project_over_32_mib_fails_to_deploy_naming_total_limit_and_largest_files(
    tmp_path: Path, mesh: LocalMesh, scheduler: SchedulerClient
) -> None:
    name = unique_name("too-big")
    project = write_project(tmp_path, name, PLAIN, files={"small.txt": "x"})
    # Sparse files: nothing big is written, and the limit is checked from sizes before anything is read.
    for relative, size in (("weights/model.bin", 30 * MIB), ("vocab.bin", 15 * MIB)):
        path = project / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as sparse:
            sparse.truncate(size)

    with pytest.raises(ProjectError) as raised:
        scheduler.deploy(project)
    message = str(raised.value)
    assert "45.0 MiB" in message, message  # the total: no single file is over the limit
    assert "32 MiB" in message, message
    assert "weights/model.bin (30.0 MiB)" in message and "vocab.bin (15.0 MiB)" in message, message
    assert message.index("weights/model.bin") < message.index("vocab.bin"), message  # largest first

    code, _, err = run_cli("deploy", str(project), *cli_flags(mesh))
    assert code == 1
    assert "\nerror: project is 45.0 MiB, over the 32 MiB limit; largest files: weights/model.bin" in err, err
    with pytest.raises(grpc.RpcError) as missing:
        scheduler.describe(name)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


# --- configuration errors --------------------------------------------------------------------------------------------

LONG_NAME = "a" * 43


CONFIG_ERRORS: dict[str, tuple[dict[str, Any], list[str]]] = {
    "unknown key": (
        {"autoscaling": {"target_concurrency": 2}},
        ["{api}", "autoscaling.target_concurrency", "is not a known key"],
    ),
    "unknown top-level key": ({"predictor": {"type": "python"}}, ["{api}", "predictor", "is not a known key"]),
    "bad name": ({"name": "Sentiment_API"}, ["api at index 0", "name", "DNS-1035", "'Sentiment_API'"]),
    "name too long": ({"name": LONG_NAME}, ["api at index 0", "name", "42 characters", LONG_NAME]),
    "RealtimeAPI": ({"kind": "RealtimeAPI"}, ["{api}", "kind", "RealtimeAPI", "AsyncAPI"]),
    "tensorflow handler without models": (
        {"handler": {"type": "tensorflow"}},
        ["{api}", "handler.models is required", "handler.type tensorflow"],
    ),
    "tensorflow handler without tensorflow_client": (
        {"handler": {"type": "tensorflow", "models": {"path": "model"}}},
        ["{api}", "handler.py", "Handler.__init__() must take tensorflow_client"],
    ),
    "Inferentia": ({"compute": {"inf": 1}}, ["{api}", "compute.inf", "Inferentia"]),
    "conda": ({"handler": {"dependencies": {"conda": "conda-packages.txt"}}}, ["{api}", "handler.dependencies.conda"]),
}


@pytest.mark.parametrize("case", sorted(CONFIG_ERRORS))
def test_a_config_error_names_the_file_the_api_and_the_key(
    case: str, tmp_path: Path, scheduler: SchedulerClient
) -> None:
    changes, expected = CONFIG_ERRORS[case]
    name = unique_name("bad-config")
    api: dict[str, Any] = {"name": name, "kind": "AsyncAPI", "handler": {"type": "python", "path": "handler.py"}}
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(api.get(key), dict):
            api[key] = {**api[key], **value}
        else:
            api[key] = value
    project = tmp_path / "project"
    project.mkdir()
    (project / "handler.py").write_text(PLAIN)
    # A valid API first: the error must name the invalid one, the second.
    first = {"name": unique_name("fine"), "kind": "AsyncAPI", "handler": {"type": "python", "path": "handler.py"}}
    (project / "cortex.yaml").write_text(yaml.safe_dump([first, api], sort_keys=False))

    with pytest.raises(grpc.RpcError) as raised:
        scheduler.deploy(project)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    message = raised.value.details()
    assert message.startswith("cortex.yaml: "), message
    for part in expected:
        part = part.replace("{api}", f"api '{name}'").replace("index 0", "index 1")
        assert part in message, f"{part!r} not in {message!r}"
    # Nothing of the file was deployed.
    listed = {status.name for status in scheduler.list()}
    assert first["name"] not in listed and name not in listed


def test_the_cli_prints_a_config_error_and_exits_1(tmp_path: Path, mesh: LocalMesh) -> None:
    name = unique_name("bad-config")
    project = write_project(tmp_path, name, PLAIN, {"handler": {"max_concurency": 2}})
    code, out, err = run_cli("deploy", str(project), *cli_flags(mesh))
    assert code == 1, (out, err)
    assert f"error: cortado.yaml: api '{name}': handler.max_concurency is not a known key" in err, err
    assert "did you mean handler.max_concurrency?" in err, err


# --- networking.endpoint ---------------------------------------------------------------------------------------------


def test_networking_endpoint_is_where_the_api_answers(
    projects: dict[str, Deployment], scheduler: SchedulerClient, http: httpx.Client
) -> None:
    # Cortex canonicalised `<name>-custom/` to `/<name>-custom` and served the API there.
    name = deployed(projects["endpoint"])
    wait_ready(scheduler, name)
    endpoint = f"/{name}-custom"
    reply = http.post(endpoint, json={"via": "endpoint"})
    assert reply.status_code == 200, (endpoint, reply.status_code, reply.text)
    request_id = reply.json()["id"]
    body = http.get(f"{endpoint}/{request_id}", params={"wait": 30}).json()
    assert body["status"] == "completed" and body["result"] == {"via": "endpoint"}, body
