"""The committed stubs and Envoy descriptor set are what `make proto` generates from protos/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_stubs_and_descriptor_are_up_to_date() -> None:
    check = subprocess.run(
        [sys.executable, "tools/protogen.py", "--check"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stderr


def test_every_message_field_and_rpc_of_the_contract_is_commented() -> None:
    from google.protobuf import descriptor_pb2

    files = descriptor_pb2.FileDescriptorSet.FromString((ROOT / "cortado/mesh/envoy/cortado.pb").read_bytes())
    undocumented = []
    for proto in files.file:
        if not proto.package.startswith("cortado."):
            continue
        commented = {tuple(loc.path) for loc in proto.source_code_info.location if loc.leading_comments.strip()}
        for i, message in enumerate(proto.message_type):
            if (4, i) not in commented:
                undocumented.append(message.name)
            undocumented += [
                f"{message.name}.{f.name}" for j, f in enumerate(message.field) if (4, i, 2, j) not in commented
            ]
        for i, service in enumerate(proto.service):
            if (6, i) not in commented:
                undocumented.append(service.name)
            undocumented += [
                f"{service.name}.{m.name}" for j, m in enumerate(service.method) if (6, i, 2, j) not in commented
            ]
        for i, enum in enumerate(proto.enum_type):
            undocumented += [f"{enum.name}.{v.name}" for j, v in enumerate(enum.value) if (5, i, 2, j) not in commented]
    assert undocumented == []
