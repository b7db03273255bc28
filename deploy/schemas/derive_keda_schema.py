"""Derive keda-scaledobject.json, the JSON Schema the test suite validates KEDA ScaledObjects against.

KEDA's ScaledObject CRD is not a built-in kind, so kubernetes-validate cannot check it. The schema here
comes from KEDA's own CRD through a registry package: `cloudcoil-models-keda` (PyPI, Apache-2.0) is
generated from KEDA's CRDs, one release per KEDA release, and its pydantic models give a JSON Schema.
This script tightens that schema the way the API server validates a custom resource (kubectl's
default `--validate=strict`): unknown fields are rejected, `apiVersion`, `kind`, `metadata` and
`spec` are required, and pydantic's `null` alternatives and titles are dropped.

It runs outside the project's virtualenv (cloudcoil needs pydantic, which Cortado does not):

    python3 -m venv /tmp/keda-schema
    /tmp/keda-schema/bin/pip install cloudcoil-models-keda==2.16.1.0
    /tmp/keda-schema/bin/python deploy/schemas/derive_keda_schema.py
"""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).resolve().parent / "keda-scaledobject.json"
NULL = {"type": "null"}


def tighten(node: Any) -> Any:
    """Drop titles, `null` alternatives and null defaults; forbid unknown fields of every object."""
    if isinstance(node, list):
        return [tighten(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: tighten(value) for key, value in node.items() if key != "title"}
    if node.get("default", "") is None:
        del node["default"]
    alternatives = node.get("anyOf")
    if isinstance(alternatives, list) and NULL in alternatives:
        rest = [a for a in alternatives if a != NULL]
        del node["anyOf"]
        if len(rest) == 1:
            node.update(rest[0])
        else:
            node["anyOf"] = rest
    if "properties" in node and "additionalProperties" not in node:
        node["additionalProperties"] = False
    return node


def main() -> None:
    from cloudcoil.models.keda.v1alpha1 import ScaledObject

    schema = tighten(ScaledObject.model_json_schema(by_alias=True, mode="validation"))
    schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
    schema["properties"]["apiVersion"] = {"const": "keda.sh/v1alpha1"}
    schema["properties"]["kind"] = {"const": "ScaledObject"}
    package = f"cloudcoil-models-keda {version('cloudcoil-models-keda')}"
    document = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "keda-scaledobject.json",
        "$comment": f"KEDA keda.sh/v1alpha1 ScaledObject, derived from KEDA's CRD via {package} "
        "by deploy/schemas/derive_keda_schema.py; do not edit by hand.",
        **schema,
    }
    OUTPUT.write_text(json.dumps(document, indent=1, sort_keys=False) + "\n")
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
