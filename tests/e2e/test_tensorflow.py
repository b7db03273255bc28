"""Handlers of type tensorflow: Cortex projects that serve SavedModels through `tensorflow_client`, deployed
unchanged. The example builds its model with its own script and is deployed from its cortex.yaml with the CLI;
named models (`paths`), a folder of versioned models (`dir`), signatures, a wrong model name, a bad input and a
model that is missing are each tried through Envoy."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from io import StringIO
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from cortado.cli import main
from cortado.client import SchedulerClient
from cortado.mesh import LocalMesh
from cortado.v1 import control_pb2
from tests.e2e.cli_support import flags
from tests.helpers import eventually, unique_name, write_project
from tests.meshcalls import result, submit, wait_ready

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "tensorflow-iris"

ANY_MODEL = """
class Handler:
    def __init__(self, tensorflow_client, config):
        self.client = tensorflow_client

    def handle_async(self, payload):
        return self.client.predict(payload["input"], payload.get("model"), payload.get("version"))
"""


def build(script: Path, out: Path) -> None:
    """Run a model-building script as a user would (a process of its own)."""
    done = subprocess.run(
        [sys.executable, str(script), str(out)], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """iris/1 (the example's), double/1 and /2, and two_signatures, built by their scripts."""
    folder = tmp_path_factory.mktemp("tf-models")
    build(EXAMPLE / "build_model.py", folder / "iris")
    build(ROOT / "tests" / "tf_models.py", folder)
    return folder


@pytest.fixture(scope="module")
def example(
    mesh: LocalMesh, scheduler: SchedulerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """The example copied as a user clones it, its model built by its script, deployed with `cortado deploy`."""
    folder = tmp_path_factory.mktemp("example") / "tensorflow-iris"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("model"))
    build(folder / "build_model.py", folder / "model")
    out, err = StringIO(), StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["deploy", str(folder), *flags(mesh)])
    assert code == 0, err.getvalue()
    yield "tf-iris", out.getvalue() + err.getvalue()
    scheduler.delete("tf-iris", force=True)


def deploy_models(scheduler: SchedulerClient, root: Path, models_config: dict[str, Any], wait: bool = True) -> str:
    name = unique_name("tf")
    project = write_project(root, name, ANY_MODEL, {"handler": {"type": "tensorflow", "models": models_config}})
    scheduler.deploy(project)
    if wait:
        wait_ready(scheduler, name, timeout=120)
    return name


def completed(http: httpx.Client, api: str, payload: dict[str, Any]) -> Any:
    body = result(http, api, submit(http, api, json=payload))
    assert body["status"] == "completed", body
    return body["result"]


def failed(http: httpx.Client, api: str, payload: dict[str, Any]) -> dict[str, str]:
    body = result(http, api, submit(http, api, json=payload))
    assert body["status"] == "failed", body
    error: dict[str, str] = body["error"]
    return error


def test_the_example_is_deployed_from_its_cortex_yaml_and_predicts(
    example: tuple[str, str], http: httpx.Client, scheduler: SchedulerClient
) -> None:
    api, said = example
    assert "handler.tensorflow_serving_image` has no effect" in said
    sample = json.loads((EXAMPLE / "sample.json").read_text())
    answer = completed(http, api, sample)
    assert answer["prediction"] == "setosa"
    assert len(answer["probabilities"]) == 3 and abs(sum(answer["probabilities"]) - 1) < 1e-5
    virginica = {"sepal_length": 7.7, "sepal_width": 3.0, "petal_length": 6.1, "petal_width": 2.3}
    assert completed(http, api, virginica)["prediction"] == "virginica"


def test_a_bad_input_fails_its_request_with_tensorflows_message_and_the_api_serves_on(
    example: tuple[str, str], http: httpx.Client
) -> None:
    api, _ = example
    error = failed(http, api, {"sepal_length": [1.0, 2.0], "sepal_width": 3.6, "petal_length": 1.5, "petal_width": 0.3})
    assert error["type"] == "InvalidArgumentError"
    assert "Shapes of all inputs must match: values[0].shape = [2] != values[1].shape = []" in error["message"]
    error = failed(http, api, {"sepal_length": 5.2})
    assert error == {
        "type": "ValueError",
        "message": "model_input lacks petal_length, petal_width, sepal_width: signature 'serving_default' takes "
        "petal_length, petal_width, sepal_length, sepal_width",
    }
    sample = json.loads((EXAMPLE / "sample.json").read_text())
    assert completed(http, api, sample)["prediction"] == "setosa"


def test_named_models_are_picked_by_model_name_and_a_wrong_name_is_named(
    scheduler: SchedulerClient, http: httpx.Client, models: Path, tmp_path: Path
) -> None:
    api = deploy_models(
        scheduler,
        tmp_path,
        {
            "paths": [
                {"name": "iris", "path": str(models / "iris")},
                {"name": "double", "path": str(models / "double")},
                {"name": "adder", "path": str(models / "two_signatures"), "signature_key": "add"},
            ]
        },
    )
    try:
        flower = json.loads((EXAMPLE / "sample.json").read_text())
        assert completed(http, api, {"model": "iris", "input": flower})["class_ids"] == [0]
        # The highest version serves unless one is asked for.
        assert completed(http, api, {"model": "double", "input": {"x": [1, 2]}}) == {"y": [3.0, 6.0]}
        assert completed(http, api, {"model": "double", "input": [1, 2], "version": 1}) == {"y": [2.0, 4.0]}
        assert completed(http, api, {"model": "adder", "input": {"x": [1]}}) == {"y": [2.0]}
        error = failed(http, api, {"model": "nope", "input": {"x": [1]}})
        assert error == {
            "type": "ValueError",
            "message": "model 'nope' is not served by this API (it serves 'adder', 'double', 'iris')",
        }
        error = failed(http, api, {"input": {"x": [1]}})
        assert error["message"] == "model_name is required: this API serves the models adder, double, iris"
        error = failed(http, api, {"model": "double", "input": {"x": [1]}, "version": 7})
        assert error["message"] == "model 'double' has no version 7 (versions: 1, 2)"
    finally:
        scheduler.delete(api, force=True)


def test_a_folder_of_versioned_models_serves_each_by_its_folder_name(
    scheduler: SchedulerClient, http: httpx.Client, models: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copytree(models / "double", folder / "double")
    shutil.copytree(models / "iris", folder / "iris")
    # Inside the project, as Cortex projects shipped them: a relative dir.
    api = unique_name("tf")
    project = write_project(tmp_path, api, ANY_MODEL, {"handler": {"type": "tensorflow", "models": {"dir": "models"}}})
    shutil.copytree(folder, project / "models")
    scheduler.deploy(project)
    try:
        wait_ready(scheduler, api, timeout=120)
        assert completed(http, api, {"model": "double", "input": {"x": [5]}}) == {"y": [15.0]}
        assert completed(http, api, {"model": "double", "input": {"x": [5]}, "version": "1"}) == {"y": [10.0]}
        flower = json.loads((EXAMPLE / "sample.json").read_text())
        assert completed(http, api, {"model": "iris", "input": flower})["class_ids"] == [0]
    finally:
        scheduler.delete(api, force=True)


def test_a_missing_or_ambiguous_model_fails_the_start_and_describe_shows_why(
    scheduler: SchedulerClient, models: Path, tmp_path: Path
) -> None:
    def failure(name: str) -> str:
        def message() -> str | None:
            status = scheduler.describe(name)
            return status.message if status.state == control_pb2.API_STATE_FAILED else None

        return eventually(message, timeout=120, what=f"{name} failed to start")

    missing = deploy_models(scheduler, tmp_path, {"path": str(tmp_path / "nowhere")}, wait=False)
    ambiguous = deploy_models(scheduler, tmp_path, {"path": str(models / "two_signatures")}, wait=False)
    try:
        assert f"{tmp_path / 'nowhere'} is not a folder" in failure(missing)
        assert "ModelLoadError" in failure(ambiguous)
        assert "the model has signatures add, mul: set signature_key in handler.models to pick one" in failure(
            ambiguous
        )
    finally:
        for name in (missing, ambiguous):
            scheduler.delete(name, force=True)


def test_a_model_folder_missing_from_the_project_is_refused_at_deploy(
    scheduler: SchedulerClient, tmp_path: Path
) -> None:
    name = unique_name("tf")
    project = write_project(tmp_path, name, ANY_MODEL, {"handler": {"type": "tensorflow", "models": {"path": "model"}}})
    with pytest.raises(grpc.RpcError) as refused:
        scheduler.deploy(project)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details().endswith(f"api '{name}': handler.models.path 'model' is not a folder of the project")
