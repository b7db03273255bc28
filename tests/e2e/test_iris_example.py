"""The shipped iris example, deployed and called as the README shows."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from cortado.client import SchedulerClient
from tests.meshcalls import result, submit, wait_ready

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "iris"


def test_iris_example_predicts_the_species_of_its_sample(scheduler: SchedulerClient, http: httpx.Client) -> None:
    scheduler.deploy(EXAMPLE)
    try:
        wait_ready(scheduler, "iris")
        sample = json.loads((EXAMPLE / "sample.json").read_text())
        request_id = submit(http, "iris", json=sample)
        body = result(http, "iris", request_id)
        assert body["status"] == "completed", body
        assert body["result"]["prediction"] == "setosa"
        assert set(body["result"]["probabilities"]) == {"setosa", "versicolor", "virginica"}
        virginica = submit(
            http,
            "iris",
            json={"sepal_length": 7.7, "sepal_width": 3.0, "petal_length": 6.1, "petal_width": 2.3},
        )
        assert result(http, "iris", virginica)["result"]["prediction"] == "virginica"
    finally:
        scheduler.delete("iris", force=True)
