"""Discovering the NVIDIA GPUs of this machine through NVML, or none."""

from __future__ import annotations

import logging

from cortado.v1 import control_pb2

log = logging.getLogger(__name__)


def discover_gpus() -> list[control_pb2.GpuInfo]:
    """Every GPU NVML reports, with its memory; an empty list where there is no driver or no GPU."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:
        # No NVIDIA driver on this machine: run CPU-only.
        return []
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            gpus.append(
                control_pb2.GpuInfo(
                    index=index,
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    memory_total=int(memory.total),
                    memory_free=int(memory.free),
                )
            )
        return gpus
    except Exception:
        log.warning("NVML failed; running CPU-only", exc_info=True)
        return []
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            log.debug("nvmlShutdown failed", exc_info=True)


def cuda_visible_devices(gpu_indices: list[int]) -> str:
    """The CUDA_VISIBLE_DEVICES value that shows a handler exactly these GPUs (none: empty)."""
    return ",".join(str(i) for i in gpu_indices)


def simulated_gpus(count: int) -> list[control_pb2.GpuInfo]:
    """An inventory of count fake GPUs (80 GiB each), for exercising placement on machines without any."""
    return [
        control_pb2.GpuInfo(index=i, name="simulated GPU", memory_total=80 * 2**30, memory_free=80 * 2**30)
        for i in range(count)
    ]
