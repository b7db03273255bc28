"""The `compute` section of an API: CPU, memory and GPUs a replica asks for."""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from cortado.project.fields import UINT32_MAX, UINT64_MAX, FieldReader
from cortado.project.messages import describe
from cortado.project.units import MIB, parse_quantity_bytes
from cortado.v1 import control_pb2

_COMPUTE_KEYS = ("cpu", "mem", "gpu", "inf", "node_groups")


def parse_compute(reader: FieldReader, api: Mapping[str, Any], spec: control_pb2.ApiSpec) -> None:
    """Fill spec.compute from `api["compute"]` (cpu 200m by default); fail naming the key for anything invalid.

    Inferentia chips are refused; `node_groups` is accepted with a notice.
    """
    compute = reader.section(api, "compute", _COMPUTE_KEYS)
    cpu = compute.get("cpu")
    cpu_millis = 200 if cpu is None else _cpu_millis(reader, cpu)
    if cpu_millis < 20:
        reader.fail("compute.cpu", f"must be at least 20m (got {cpu!r})")
    if cpu_millis > UINT32_MAX:
        reader.fail("compute.cpu", f"is too large (got {cpu!r})")
    spec.compute.cpu_millis = cpu_millis

    mem = compute.get("mem")
    if mem is not None:
        mem_bytes = parse_quantity_bytes(mem, f"{reader.filename}: {reader.label}: compute.mem")
        if mem_bytes < 20 * MIB:
            reader.fail("compute.mem", f"must be at least 20Mi (got {mem!r})")
        if mem_bytes > UINT64_MAX:
            reader.fail("compute.mem", f"is too large (got {mem!r})")
        spec.compute.mem_bytes = mem_bytes

    spec.compute.gpu = reader.integer(compute, "compute.gpu", 0, 0)
    inf = reader.integer(compute, "compute.inf", 0, 0)
    if inf > 0:
        reader.fail("compute.inf", f"asks for Inferentia chips, which Cortado does not support (got {inf})")
    node_groups = compute.get("node_groups")
    if node_groups is not None:
        if not isinstance(node_groups, list) or not all(isinstance(group, str) for group in node_groups):
            reader.fail("compute.node_groups", f"must be a list of strings (got {describe(node_groups)})")
        reader.ignored("compute.node_groups")


def _cpu_millis(reader: FieldReader, value: Any) -> int:
    """Read a Kubernetes CPU quantity (1, 0.5, "1", "500m") as thousandths of a core, rounded up."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        reader.fail("compute.cpu", f"must be a number of cores or millicores like 500m (got {describe(value)})")
    text = str(value).strip()
    scale = Decimal(1000)
    if text.endswith("m"):
        text, scale = text[:-1], Decimal(1)
    try:
        amount = Decimal(text)
    except InvalidOperation:
        amount = Decimal("NaN")
    if not amount.is_finite() or amount < 0:
        reader.fail("compute.cpu", f"must be a number of cores or millicores like 500m (got {value!r})")
    return math.ceil(amount * scale)
