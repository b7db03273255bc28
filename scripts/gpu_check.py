"""`make gpu-check`: examples/resnet on an NVIDIA GPU through a local Cortado mesh, without and with batching.

Starts a local mesh (NATS, the services, Envoy), deploys each API of examples/resnet alone with
`compute.gpu: 1` (one GPU each, so one after the other), and prints:

- the GPU the handler sees (what torch inside the handler process reports, and CUDA_VISIBLE_DEVICES);
- requests/s **at the executor**: N requests are queued while the API's JetStream consumer is paused,
  then the consumer resumes and the handler process drains them, with no client polling meanwhile. The
  rate is N over the time from the earliest `started_at` to the latest `finished_at` of the N request
  records. The handler process stamps `started_at` when it takes up a request it pulled from JetStream
  (the drain begins with nothing prefetched, so the first one marks the first pull) and `finished_at`
  when the outcome is ready, just before the result write (a millisecond or so, the one step left out).
  Submission, Envoy and result reads do not limit this figure;
- requests/s **end to end through Envoy**: concurrent HTTP clients each submit a request and fetch its
  result (long-polling with `?wait=`), N round trips over the wall time;
- GPU utilisation (NVML: the share of time a kernel ran on the GPU), sampled during each run;
- whether batching reached 10x the unbatched requests/s at the executor (the target; printed, not
  enforced unless --require-target).

Exit status: 0 when the runs completed, 2 when no NVIDIA GPU is visible (unless --allow-cpu, which runs
the same measurement on the CPU with the example as written), 1 when something failed, 3 with
--require-target when the target was missed.

Runs from a checkout with `.venv/bin/python scripts/gpu_check.py`, or with any Python that has torch,
torchvision and Cortado's runtime dependencies (see examples/resnet/README.md).

One file of about 500 lines on purpose: a standalone script run by hand on a GPU machine, whose measuring, GPU
sampling and report read top to bottom in one place.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / ".gpu-site" / f"python{sys.version_info.major}.{sys.version_info.minor}"
"""Cortado's dependencies for this Python, where a machine without network got them with `pip install --target`
(examples/resnet/README.md): used ahead of the Python's own packages when it exists."""
for _folder in (SITE, ROOT):
    if _folder.is_dir() and str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

import aiohttp  # noqa: E402
import grpc  # noqa: E402
import uvloop  # noqa: E402
import yaml  # noqa: E402

from bench.drain import DrainError, PausedQueue, drained  # noqa: E402
from cortado._gpu import discover_gpus  # noqa: E402
from cortado.client import SchedulerClient  # noqa: E402
from cortado.mesh import LocalMesh, MeshError  # noqa: E402
from cortado.project import pack_project  # noqa: E402
from cortado.v1 import control_pb2  # noqa: E402

T = TypeVar("T")
EXAMPLE = ROOT / "examples" / "resnet"
UNBATCHED = "resnet"
BATCHED = "resnet-batched"
TARGET = 10.0
WAIT_SECONDS = 30
"""`?wait=` of each result fetch."""
EXTRA_REQUIREMENTS = ("aiohttp",)
"""What this script needs beyond Cortado's runtime dependencies (pinned as in pyproject.toml's dev extra)."""
LEFT_OUT = ("scikit-learn",)
"""Runtime dependencies this check does not need (the iris example's model)."""


class CheckError(Exception):
    """The check could not run to the end; the message says why."""


@dataclass
class Run:
    """One measured run: its rate, the batch sizes seen and the GPU's utilisation meanwhile."""

    requests: int
    seconds: float
    batch_sizes: list[int] = field(default_factory=list)
    gpu_samples: list[int] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "requests_per_second": round(self.rate, 1),
            "mean_batch_size": round(statistics.fmean(self.batch_sizes), 1) if self.batch_sizes else None,
            "gpu_utilisation": _utilisation(self.gpu_samples),
        }


def _utilisation(samples: list[int]) -> dict[str, Any] | None:
    if not samples:
        return None
    return {"mean_percent": round(statistics.fmean(samples), 1), "max_percent": max(samples), "samples": len(samples)}


# --- the GPU ------------------------------------------------------------------------------------------------------


class GpuSampler:
    """Samples one GPU's utilisation through NVML in a thread while a block runs, with wall-clock times."""

    def __init__(self, index: int | None, interval: float = 0.1) -> None:
        self._index = index
        self._interval = interval

    @contextlib.contextmanager
    def sampling(self) -> Iterator[list[tuple[float, int]]]:
        """Sample while the block runs; yields the list the (time.time(), percent) samples go into."""
        samples: list[tuple[float, int]] = []
        if self._index is None:
            yield samples
            return
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(self._index)
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(self._interval):
                with contextlib.suppress(pynvml.NVMLError):
                    samples.append((time.time(), int(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)))

        thread = threading.Thread(target=loop, name="gpu-sampler", daemon=True)
        thread.start()
        try:
            yield samples
        finally:
            stop.set()
            thread.join()
            with contextlib.suppress(pynvml.NVMLError):
                pynvml.nvmlShutdown()


def within(samples: list[tuple[float, int]], first: float, last: float) -> list[int]:
    """The utilisation samples taken between two wall-clock times."""
    return [percent for at, percent in samples if first <= at <= last]


# --- deploying ----------------------------------------------------------------------------------------------------


def api_config(name: str, gpu: bool) -> bytes:
    """examples/resnet/cortado.yaml with only the named API, given one GPU when gpu is true."""
    entries = yaml.safe_load((EXAMPLE / "cortado.yaml").read_text())
    entry = next(e for e in entries if e["name"] == name)
    if gpu:
        entry.setdefault("compute", {})["gpu"] = 1
    return yaml.safe_dump([entry], sort_keys=False).encode()


def deploy(scheduler: SchedulerClient, name: str, gpu: bool, timeout: float) -> None:
    """Deploy one API of the example and wait until its replica is ready.

    An API that cannot be placed yet is waited for: the GPU of the API deleted just before may still be
    draining. A handler whose `__init__` raised fails the check at once.
    """
    scheduler.deploy_bundle("cortado.yaml", api_config(name, gpu), pack_project(EXAMPLE, "cortado.yaml"))
    deadline = time.monotonic() + timeout
    status = scheduler.describe(name)
    while time.monotonic() < deadline:
        status = scheduler.describe(name)
        if status.ready_replicas:
            return
        if status.state == control_pb2.API_STATE_FAILED:
            raise CheckError(f"{name} failed to start:\n{status.message}")
        time.sleep(0.2)
    state = control_pb2.ApiState.Name(status.state)
    raise CheckError(f"{name} was not ready after {timeout:.0f}s ({state}: {status.message or 'no message'})")


def delete(scheduler: SchedulerClient, name: str, timeout: float = 60.0) -> None:
    """Delete the API and wait until the scheduler no longer knows it (its replica then drains).

    Acknowledgements trail the results a client reads, and the scheduler refuses to delete an API with
    requests in flight: it is asked again until they are in.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            scheduler.delete(name)
            break
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.FAILED_PRECONDITION or time.monotonic() > deadline:
                raise CheckError(f"{name} could not be deleted: {exc.details()}") from None
            time.sleep(0.5)
    while time.monotonic() < deadline:
        if name not in {s.name for s in scheduler.list()}:
            return
        time.sleep(0.2)


# --- load ---------------------------------------------------------------------------------------------------------


def _session(base_url: str, clients: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=clients)
    return aiohttp.ClientSession(base_url=base_url, connector=connector, timeout=aiohttp.ClientTimeout(total=300))


async def _submit(client: aiohttp.ClientSession, api: str, seed: int) -> str:
    async with client.post(f"/{api}", json={"seed": seed}) as reply:
        if reply.status != 200:
            raise CheckError(f"POST /{api} answered {reply.status}: {await reply.text()}")
        return str((await reply.json())["id"])


async def _result(client: aiohttp.ClientSession, api: str, request_id: str) -> dict[str, Any]:
    while True:
        async with client.get(f"/{api}/{request_id}", params={"wait": str(WAIT_SECONDS)}) as reply:
            if reply.status != 200:
                raise CheckError(f"GET /{api}/{request_id} answered {reply.status}: {await reply.text()}")
            body: dict[str, Any] = await reply.json()
        if body["status"] == "completed":
            return body
        if body["status"] == "failed":
            raise CheckError(f"request {request_id} of {api} failed: {body.get('error')}")


async def _fan_out(clients: int, count: int, work: Any) -> list[Any]:
    """await work(i) for i in range(count), from `clients` concurrent loops; the results in order."""
    results: list[Any] = [None] * count
    items = iter(range(count))

    async def loop() -> None:
        for i in items:
            results[i] = await work(i)

    await asyncio.gather(*(loop() for _ in range(clients)))
    return results


async def round_trips(base_url: str, api: str, count: int, clients: int, seed: int = 0) -> tuple[float, list[Any]]:
    """count submit-and-fetch round trips from `clients` concurrent clients: (seconds, result bodies)."""
    async with _session(base_url, clients) as client:

        async def one(i: int) -> dict[str, Any]:
            return await _result(client, api, await _submit(client, api, seed + i))

        started = time.perf_counter()
        bodies = await _fan_out(clients, count, one)
        return time.perf_counter() - started, bodies


async def executor_run(
    nats_url: str, base_url: str, api: str, count: int, clients: int, sampler: GpuSampler, timeout: float = 600.0
) -> Run:
    """Queue count requests with the API's consumer paused, resume it, and time the executor's draining them
    (bench/drain.py says how)."""
    try:
        async with PausedQueue(nats_url, api, name="gpu-check") as paused:
            async with _session(base_url, clients) as client:
                ids = await _fan_out(clients, count, lambda i: _submit(client, api, 1_000_000 + i))
            await paused.expect(count)
            with sampler.sampling() as samples:
                await paused.drain(timeout)
            stored = await paused.records(ids)
        span = drained(stored)
    except DrainError as exc:
        raise CheckError(f"{api}: {exc}") from None
    batch_sizes = [int(json.loads(r.result_json)["batch_size"]) for r in stored]
    return Run(count, span.seconds, batch_sizes, within(samples, span.first_started, span.last_finished))


# --- the check ----------------------------------------------------------------------------------------------------


@dataclass
class Options:
    requests: int
    batched_requests: int
    clients: int
    allow_cpu: bool
    deploy_timeout: float
    json_path: Path | None
    require_target: bool


def measure(mesh: LocalMesh, scheduler: SchedulerClient, name: str, gpu: bool, count: int, options: Options) -> dict:
    """Deploy one API, probe it, warm it up, measure it at the executor and end to end, and delete it.

    After a failure the API stays: the mesh stops, with everything in it, right after.
    """
    started = time.monotonic()
    deploy(scheduler, name, gpu, options.deploy_timeout)
    print(f"  {name}: ready after {time.monotonic() - started:.1f}s", flush=True)
    _, probe = _run(round_trips(mesh.http_url, name, 1, 1))
    seen = probe[0]["result"]
    gpu_info = seen.get("gpu")
    if gpu and not gpu_info:
        raise CheckError(
            f"{name} was given a GPU but its handler ran on {seen.get('device')!r}: "
            "is the torch of this Python a CUDA build?"
        )
    # The executor sets CUDA_VISIBLE_DEVICES to NVML's indices of the GPUs it placed the replica on.
    sampler = GpuSampler(int(gpu_info["cuda_visible_devices"].split(",")[0]) if gpu_info else None)
    # Warm-up, not counted: connections, the handler's first batches of each size.
    _run(round_trips(mesh.http_url, name, min(count, 2 * options.clients), options.clients))
    print(f"  {name}: {count} requests queued, then drained by the executor ...", flush=True)
    at_executor = _run(executor_run(mesh.admin_nats_url, mesh.http_url, name, count, options.clients, sampler))
    print(f"  {name}: {count} round trips from {options.clients} clients through Envoy ...", flush=True)
    with sampler.sampling() as samples:
        seconds, bodies = _run(round_trips(mesh.http_url, name, count, options.clients, seed=2_000_000))
    end_to_end = Run(count, seconds, [int(b["result"]["batch_size"]) for b in bodies], [p for _, p in samples])
    delete(scheduler, name)
    return {"seen": seen, "executor": at_executor, "end_to_end": end_to_end}


def _run(coro: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def _fmt_util(run: Run) -> str:
    figures = _utilisation(run.gpu_samples)
    if figures is None:
        return "n/a"
    return f"mean {figures['mean_percent']:.0f}%, max {figures['max_percent']}%"


def report(results: dict[str, dict], gpu: bool) -> tuple[dict[str, Any], bool]:
    """Print the figures; the JSON summary and whether the target was met."""
    plain, batched = results[UNBATCHED], results[BATCHED]
    seen = batched["seen"]
    info = seen.get("gpu")
    print()
    if info:
        print(
            f"GPU seen by the handler: {info['name']} (CUDA_VISIBLE_DEVICES={info['cuda_visible_devices']}, "
            f"{info['memory_mib']} MiB, compute capability {info['capability']}, torch {info['torch']})"
        )
    else:
        print(f"GPU seen by the handler: none; the model ran on {seen.get('device')!r}")
    ratio_executor = batched["executor"].rate / plain["executor"].rate if plain["executor"].rate else 0.0
    ratio_e2e = batched["end_to_end"].rate / plain["end_to_end"].rate if plain["end_to_end"].rate else 0.0
    rows = [
        ("requests/s at the executor", plain["executor"].rate, batched["executor"].rate, ratio_executor),
        ("requests/s end to end via Envoy", plain["end_to_end"].rate, batched["end_to_end"].rate, ratio_e2e),
    ]
    print(f"\n{'':34}{'unbatched':>12}{'batched':>12}{'ratio':>9}")
    for label, a, b, ratio in rows:
        print(f"{label:34}{a:>12,.1f}{b:>12,.1f}{ratio:>8.1f}x")
    for label, key in (("mean batch size at the executor", "executor"), ("mean batch size end to end", "end_to_end")):
        sizes = [statistics.fmean(r[key].batch_sizes) for r in (plain, batched)]
        print(f"{label:34}{sizes[0]:>12.1f}{sizes[1]:>12.1f}")
    print("\nGPU utilisation under load (NVML, share of time a kernel ran):")
    for label, key in (("at the executor", "executor"), ("end to end via Envoy", "end_to_end")):
        print(f"  {label:22} unbatched: {_fmt_util(plain[key]):24} batched: {_fmt_util(batched[key])}")
    met = ratio_executor >= TARGET
    where = "GPU" if gpu else "CPU (--allow-cpu: not the target's setting)"
    print(
        f"\ntarget: batching gives >= {TARGET:.0f}x the unbatched requests/s at the executor, on the {where}: "
        f"{'met' if met else 'NOT met'} ({ratio_executor:.1f}x)"
    )
    summary = {
        "device": seen.get("device"),
        "gpu": info,
        "target_ratio": TARGET,
        "ratio_at_executor": round(ratio_executor, 2),
        "ratio_end_to_end": round(ratio_e2e, 2),
        "target_met": met,
        "unbatched": {k: plain[k].as_dict() for k in ("executor", "end_to_end")},
        "batched": {k: batched[k].as_dict() for k in ("executor", "end_to_end")},
    }
    return summary, met


def runtime_requirements() -> list[str]:
    """Cortado's runtime dependencies this check needs, and aiohttp, as pinned in pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [r for r in project["dependencies"] if not r.startswith(LEFT_OUT)]
    extras = project["optional-dependencies"]["dev"]
    wanted += [r for r in extras if r.split("=")[0].split("<")[0].split(">")[0] in EXTRA_REQUIREMENTS]
    return wanted


def _child_environment() -> None:
    """What the mesh's processes inherit: an absolute PYTHONPATH (handler processes run in the project's folder)
    with this checkout first, and .gpu-site's packages and programs (nats-server, envoy) when it exists."""
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    first = [ROOT, SITE] if SITE.is_dir() else [ROOT]
    absolute = [str(f) for f in first] + [str(Path(p).resolve()) for p in parts]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(absolute))
    if (SITE / "bin").is_dir():
        os.environ["PATH"] = os.pathsep.join([str(SITE / "bin"), os.environ.get("PATH", "")])


TORCH_PROBE = (
    "import torch, torchvision; "
    "print(f'torch {torch.__version__}, torchvision {torchvision.__version__}, "
    "CUDA available: {torch.cuda.is_available()}')"
)


def probe_torch(gpu: bool) -> str:
    """What handler processes will import, asked of this Python in a child process; CheckError if unusable."""
    probe = subprocess.run([sys.executable, "-c", TORCH_PROBE], capture_output=True, text=True, timeout=300)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise CheckError(f"{sys.executable} cannot import torch and torchvision, which the handler needs: {last}")
    line = probe.stdout.strip()
    if gpu and line.endswith("False"):
        raise CheckError(f"NVML sees a GPU but this Python's torch cannot use it ({line}): is it a CUDA build?")
    return line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/gpu_check.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1500, help="requests per unbatched run (default 1500)")
    parser.add_argument("--batched-requests", type=int, default=8000, help="requests per batched run (default 8000)")
    parser.add_argument("--clients", type=int, default=128, help="concurrent HTTP clients (default 128)")
    parser.add_argument("--allow-cpu", action="store_true", help="without a GPU, measure the CPU variant instead")
    parser.add_argument("--deploy-timeout", type=float, default=300, help="seconds to wait for a replica")
    parser.add_argument("--json", type=Path, dest="json_path", help="also write the figures to this JSON file")
    parser.add_argument("--require-target", action="store_true", help="exit 3 when the 10x target is missed")
    parser.add_argument(
        "--print-requirements",
        action="store_true",
        help="print the packages this check needs besides torch and torchvision (for preparing wheels), then exit",
    )
    args = parser.parse_args(argv)
    if args.print_requirements:
        print("\n".join(runtime_requirements()))
        return 0
    options = Options(
        args.requests,
        args.batched_requests,
        args.clients,
        args.allow_cpu,
        args.deploy_timeout,
        args.json_path,
        args.require_target,
    )
    if min(options.requests, options.batched_requests, options.clients) < 1:
        parser.error("--requests, --batched-requests and --clients must be at least 1")

    gpus = discover_gpus()
    if not gpus and not options.allow_cpu:
        print(
            "error: no NVIDIA GPU is visible here (NVML found no driver or no device), so there is nothing to check.\n"
            "Run this on a machine with an NVIDIA GPU and its driver, or pass --allow-cpu to exercise the same\n"
            "steps on the CPU (the figures then say nothing about the GPU target).",
            file=sys.stderr,
        )
        return 2
    use_gpu = bool(gpus)
    for gpu in gpus:
        print(f"NVML sees GPU {gpu.index}: {gpu.name}, {gpu.memory_total // 2**20} MiB")
    _child_environment()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="cortado-gpu-check-") as tmp:
        try:
            print(f"{sys.executable}: {probe_torch(use_gpu)}", flush=True)
            print("starting the local mesh (NATS, scheduler, ingest, results, executor, Envoy) ...", flush=True)
            with (
                LocalMesh(Path(tmp), env={"CORTADO_GRACE_SECONDS": "5"}) as mesh,
                SchedulerClient(mesh.scheduler_address) as scheduler,
            ):
                for name, count in ((UNBATCHED, options.requests), (BATCHED, options.batched_requests)):
                    results[name] = measure(mesh, scheduler, name, use_gpu, count, options)
        except (CheckError, MeshError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    summary, met = report(results, use_gpu)
    if options.json_path:
        options.json_path.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"figures written to {options.json_path}")
    if options.require_target and not met:
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
