"""The framework examples (ONNX Runtime, XGBoost): deployed with their requirements and called through Envoy, and
their build scripts rebuilding models that answer as the committed ones do."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from cortado.client import SchedulerClient
from services.executor.environment import prepare_python
from tests.meshcalls import result, submit, wait_ready

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

INSTALL_TIMEOUT = 300
"""Seconds an example may take to install its requirements (onnxruntime, xgboost-cpu from PyPI) and start."""

VERSICOLOR = {"sepal_length": 5.9, "sepal_width": 2.8, "petal_length": 4.3, "petal_width": 1.3}
VIRGINICA = {"sepal_length": 7.7, "sepal_width": 3.0, "petal_length": 6.1, "petal_width": 2.3}
SETOSA = {"sepal_length": 5.2, "sepal_width": 3.6, "petal_length": 1.5, "petal_width": 0.3}

# A held-out patient (progression measured 64), next to the sample (measured 275).
LOW_PROGRESSION = {
    "age": 45,
    "sex": 1,
    "bmi": 24.2,
    "bp": 83,
    "tc": 177,
    "ldl": 118.4,
    "hdl": 45,
    "tch": 4,
    "ltg": 4.2195,
    "glu": 82,
}
DIABETES_FEATURES = ["age", "sex", "bmi", "bp", "tc", "ldl", "hdl", "tch", "ltg", "glu"]


def sample(example: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EXAMPLES / example / "sample.json").read_text())
    return loaded


def answer(http: httpx.Client, api: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Submit through Envoy and return the finished request's body."""
    return result(http, api, submit(http, api, json=payload))


@pytest.mark.timeout(INSTALL_TIMEOUT + 120)
def test_onnx_example_classifies_with_onnx_runtime(scheduler: SchedulerClient, http: httpx.Client) -> None:
    scheduler.deploy(EXAMPLES / "onnx-iris")
    try:
        wait_ready(scheduler, "onnx-iris", timeout=INSTALL_TIMEOUT)
        body = answer(http, "onnx-iris", sample("onnx-iris"))
        assert body["status"] == "completed", body
        assert body["result"]["prediction"] == "versicolor"
        probabilities = body["result"]["probabilities"]
        assert set(probabilities) == {"setosa", "versicolor", "virginica"}
        assert sum(probabilities.values()) == pytest.approx(1, abs=1e-3)
        assert probabilities["versicolor"] > 0.9
        assert answer(http, "onnx-iris", SETOSA)["result"]["prediction"] == "setosa"
        assert answer(http, "onnx-iris", VIRGINICA)["result"]["prediction"] == "virginica"
    finally:
        scheduler.delete("onnx-iris")


@pytest.mark.timeout(INSTALL_TIMEOUT + 120)
def test_xgboost_example_predicts_progression(scheduler: SchedulerClient, http: httpx.Client) -> None:
    scheduler.deploy(EXAMPLES / "xgboost-diabetes")
    try:
        wait_ready(scheduler, "xgboost-diabetes", timeout=INSTALL_TIMEOUT)
        body = answer(http, "xgboost-diabetes", sample("xgboost-diabetes"))
        assert body["status"] == "completed", body
        # The committed model's predictions, as the README shows them.
        assert body["result"] == {"progression": 252.2}
        assert answer(http, "xgboost-diabetes", LOW_PROGRESSION)["result"] == {"progression": 114.4}
        partial = answer(http, "xgboost-diabetes", {"age": 43, "bmi": 35.4})
        assert partial["status"] == "failed", partial
        assert partial["error"]["type"] == "ValueError"
        assert "missing measurements: sex, bp, tc" in partial["error"]["message"]
    finally:
        scheduler.delete("xgboost-diabetes")


Rows = list[dict[str, float]]


def iris_rows() -> Rows:
    from sklearn.datasets import load_iris

    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    return [dict(zip(names, map(float, row), strict=True)) for row in load_iris().data]


def diabetes_rows() -> Rows:
    from sklearn.datasets import load_diabetes

    data = load_diabetes(scaled=False).data
    return [dict(zip(DIABETES_FEATURES, map(float, row), strict=True)) for row in data]


# Runs in the example's folder with its build environment's python: the example's own handler answers every row of
# the data set with the committed model and with the rebuilt one.
COMPARE = """
import json, sys
from handler import Handler
rows = json.load(sys.stdin)
committed, rebuilt = Handler({"model": sys.argv[1]}), Handler({"model": sys.argv[2]})
json.dump([[committed.handle_async(row), rebuilt.handle_async(row)] for row in rows], sys.stdout)
"""


@pytest.mark.timeout(INSTALL_TIMEOUT)
@pytest.mark.parametrize(
    ("example", "model", "rows"),
    [("onnx-iris", "model.onnx", iris_rows), ("xgboost-diabetes", "model.json", diabetes_rows)],
)
def test_build_script_rebuilds_a_model_with_the_same_predictions(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, example: str, model: str, rows: Callable[[], Rows]
) -> None:
    folder = EXAMPLES / example
    # The example's build requirements, in a virtualenv layered over this one as an API's would be.
    cache = tmp_path_factory.getbasetemp() / "example-build-envs"
    python = asyncio.run(prepare_python(folder, "dependencies.sh", "build-requirements.txt", cache))
    rebuilt = tmp_path / model
    build = subprocess.run(
        [python, "-B", "build_model.py", "--output", str(rebuilt)],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    assert "wrote" in build.stdout
    compare = subprocess.run(
        [python, "-B", "-c", COMPARE, model, str(rebuilt)],
        cwd=folder,
        input=json.dumps(rows()),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert compare.returncode == 0, compare.stderr
    pairs = json.loads(compare.stdout)
    assert len(pairs) > 100
    for committed, again in pairs:
        assert committed.keys() == again.keys()
        for key, value in committed.items():
            if isinstance(value, dict):
                assert value == pytest.approx(again[key], abs=2e-4), (committed, again)
            elif isinstance(value, float):
                assert value == pytest.approx(again[key], abs=0.2), (committed, again)
            else:
                assert value == again[key], (committed, again)
