"""The ResNet-50 example (examples/resnet): both APIs classify through Envoy, on the CPU, and on a GPU where one is.

torch and torchvision are not Cortado's dependencies: where this Python cannot import them (CI) the whole
module is skipped. The GPU test also needs an NVIDIA GPU that NVML sees, and is skipped without one.
"""

from __future__ import annotations

import importlib.util
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from cortado._gpu import discover_gpus
from cortado.client import SchedulerClient
from cortado.project import pack_project
from tests.helpers import unique_name
from tests.meshcalls import result, submit, wait_ready


def _torch_problem() -> str | None:
    """Why this Python cannot run the example's handler, or None when it can."""
    missing = [name for name in ("torch", "torchvision") if importlib.util.find_spec(name) is None]
    if missing:
        return f"{' and '.join(missing)} not installed (Cortado does not depend on them; CI has neither)"
    # In a subprocess: a torchvision built for another torch fails at import, and this process stays light.
    probe = subprocess.run(
        [sys.executable, "-c", "import torch, torchvision"], capture_output=True, text=True, timeout=120
    )
    if probe.returncode != 0:
        return "torch and torchvision do not import together: " + probe.stderr.strip().splitlines()[-1]
    return None


_PROBLEM = _torch_problem()
if _PROBLEM:
    pytest.skip(f"the ResNet example needs PyTorch: {_PROBLEM}", allow_module_level=True)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "resnet"
APIS = ("resnet", "resnet-batched")
START_TIMEOUT = 240
"""Seconds a replica may take to start: importing torch and building ResNet-50 is slow on two cores."""


def png(width: int = 40, height: int = 30) -> bytes:
    """A small RGB gradient as PNG bytes, written with the standard library alone."""
    rows = b"".join(
        b"\x00" + bytes(value for x in range(width) for value in (x * 255 // width, y * 255 // height, 128))
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def check_prediction(body: dict[str, Any]) -> dict[str, Any]:
    """The result of a completed classification, checked for shape."""
    assert body["status"] == "completed", body
    answer: dict[str, Any] = body["result"]
    assert len(answer["top5"]) == 5
    assert len(set(answer["top5"])) == 5
    assert all(isinstance(c, int) and 0 <= c < 1000 for c in answer["top5"])
    assert answer["batch_size"] >= 1
    return answer


@pytest.fixture(scope="module")
def cpu_apis(scheduler: SchedulerClient) -> Iterator[None]:
    """The example as shipped (both APIs, on the CPU), deployed once for this module's tests."""
    scheduler.deploy(EXAMPLE)
    try:
        for name in APIS:
            wait_ready(scheduler, name, timeout=START_TIMEOUT)
        yield
    finally:
        for name in APIS:
            scheduler.delete(name)


@pytest.mark.timeout(START_TIMEOUT + 120)
@pytest.mark.parametrize("api", APIS)
def test_the_example_classifies_a_synthesized_image_on_the_cpu(cpu_apis: None, http: httpx.Client, api: str) -> None:
    first = check_prediction(result(http, api, submit(http, api, json={"seed": 7}), wait=60))
    assert first["device"] == "cpu"
    assert first["gpu"] is None
    # The weights come from a fixed seed and the image from the request's: the same request, the same answer.
    again = check_prediction(result(http, api, submit(http, api, json={"seed": 7}), wait=60))
    assert again["top5"] == first["top5"]


@pytest.mark.timeout(START_TIMEOUT + 120)
@pytest.mark.parametrize("api", APIS)
def test_the_example_classifies_png_bytes(cpu_apis: None, http: httpx.Client, api: str) -> None:
    request_id = submit(http, api, content=png(), headers={"Content-Type": "image/png"})
    check_prediction(result(http, api, request_id, wait=60))


@pytest.mark.timeout(START_TIMEOUT + 120)
def test_the_batched_api_stacks_concurrent_requests_into_one_forward_pass(cpu_apis: None, http: httpx.Client) -> None:
    ids = [submit(http, "resnet-batched", json={"seed": n}) for n in range(12)]
    answers = [check_prediction(result(http, "resnet-batched", i, wait=60)) for i in ids]
    # Submitted back to back while the handler is busy with the first: later ones wait and share a pass.
    assert max(a["batch_size"] for a in answers) > 1


@pytest.mark.timeout(START_TIMEOUT + 120)
def test_a_payload_the_handler_cannot_read_fails_with_its_reason(cpu_apis: None, http: httpx.Client) -> None:
    body = result(http, "resnet", submit(http, "resnet", json={"seed": "seven"}), wait=60)
    assert body["status"] == "failed", body
    assert body["error"]["type"] == "ValueError"
    assert "seed" in body["error"]["message"]
    body = result(http, "resnet", submit(http, "resnet", content=b"not an image"), wait=60)
    assert body["status"] == "failed", body
    assert "PNG or JPEG" in body["error"]["message"]


@pytest.mark.skipif(not discover_gpus(), reason="no NVIDIA GPU visible to NVML on this machine")
@pytest.mark.timeout(2 * START_TIMEOUT + 120)
@pytest.mark.parametrize("api", APIS)
def test_with_a_gpu_the_example_runs_on_it(scheduler: SchedulerClient, http: httpx.Client, api: str) -> None:
    # The example's API under a new name, given one GPU: what scripts/gpu_check.py deploys.
    entry = next(e for e in yaml.safe_load((EXAMPLE / "cortado.yaml").read_text()) if e["name"] == api)
    name = entry["name"] = unique_name("resnet-gpu")
    entry.setdefault("compute", {})["gpu"] = 1
    config = yaml.safe_dump([entry], sort_keys=False).encode()
    scheduler.deploy_bundle("cortado.yaml", config, pack_project(EXAMPLE, "cortado.yaml"))
    try:
        # Another test's GPU API may still be draining: wait for the GPU to be free, then for the replica.
        wait_ready(scheduler, name, timeout=2 * START_TIMEOUT)
        answer = check_prediction(result(http, name, submit(http, name, json={"seed": 7}), wait=60))
        assert answer["device"] != "cpu"
        assert answer["gpu"]["name"] == answer["device"]
        assert answer["gpu"]["cuda_visible_devices"] != ""
        check_prediction(result(http, name, submit(http, name, content=png()), wait=60))
    finally:
        scheduler.delete(name)
