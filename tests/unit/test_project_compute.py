"""Tests of cortado.project.compute: the compute section."""

from __future__ import annotations

import pytest

from cortado.project.config import parse_config
from tests.unit.projectsamples import config_error, with_api


@pytest.mark.parametrize(
    ("cpu", "millis"), [("1", 1000), ('"1"', 1000), ("0.5", 500), ('"500m"', 500), ("2.25", 2250), ('"20m"', 20)]
)
def test_cpu_is_read_as_cores_or_millicores(cpu: str, millis: int) -> None:
    [api] = parse_config(with_api(f"  compute:\n    cpu: {cpu}\n"), "cortado.yaml").apis
    assert api.compute.cpu_millis == millis


@pytest.mark.parametrize(
    ("mem", "size"),
    [
        ("20Mi", 20 * 2**20),
        ("1Gi", 2**30),
        ("1.5Gi", 3 * 2**29),
        ("100M", 10**8),
        ("1G", 10**9),
        ("50000000", 50000000),
    ],
)
def test_mem_accepts_binary_and_decimal_suffixes_and_plain_bytes(mem: str, size: int) -> None:
    [api] = parse_config(with_api(f"  compute:\n    mem: {mem}\n"), "cortado.yaml").apis
    assert api.compute.mem_bytes == size


def test_inferentia_is_refused() -> None:
    message = config_error(with_api("  compute:\n    inf: 1\n"))
    assert message == (
        "cortado.yaml: api 'echo': compute.inf asks for Inferentia chips, which Cortado does not support (got 1)"
    )


@pytest.mark.parametrize(
    ("compute", "message"),
    [
        ("cpu: 10m", "compute.cpu must be at least 20m (got '10m')"),
        ("cpu: lots", "compute.cpu must be a number of cores or millicores like 500m (got 'lots')"),
        ("mem: 10Mi", "compute.mem must be at least 20Mi (got '10Mi')"),
        ("mem: 2GB", "compute.mem must be a size in bytes"),
        ("gpu: -1", "compute.gpu must be at least 0 (got -1)"),
        ("gpu: 0.5", "compute.gpu must be an integer (got a number, 0.5)"),
    ],
)
def test_bad_compute_values_are_refused(compute: str, message: str) -> None:
    assert config_error(with_api(f"  compute:\n    {compute}\n")).startswith(f"cortado.yaml: api 'echo': {message}")
