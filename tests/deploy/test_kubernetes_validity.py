"""deploy/k8s/: every manifest valid for Kubernetes (kubernetes-validate, strict), the KEDA object against KEDA's
schema, and the overlays' patches applied to the base."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy.k8sworkloads import needs_kustomize, overlay_kustomization
from tests.deploy.manifests import (
    K8S,
    NEWEST_KUBERNETES,
    OLDEST_KUBERNETES,
    OVERLAYS,
    Doc,
    base_documents,
    base_files,
    find,
    keda_validator,
    load_all,
    of_kind,
    render,
)


def validate_kubernetes(doc: Doc, kubernetes: str) -> None:
    """Strict schema validation of a built-in kind; KEDA's ScaledObject against the committed CRD schema."""
    if doc["kind"] == "ScaledObject":
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in keda_validator().iter_errors(doc)]
        assert errors == [], f"ScaledObject/{doc['metadata']['name']}: {errors}"
        return
    try:
        kubernetes_validate.validate(doc, kubernetes, strict=True)
    except kubernetes_validate.ValidationError as error:
        where = ".".join(map(str, error.path))
        pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} at {where}: {error.message}")


# --- every manifest is valid ----------------------------------------------------------------------------


@pytest.mark.parametrize("kubernetes", [OLDEST_KUBERNETES, NEWEST_KUBERNETES])
@pytest.mark.parametrize("path", base_files(), ids=lambda p: p.name)
def test_every_base_manifest_is_valid_for_kubernetes(path: Path, kubernetes: str) -> None:
    docs = load_all(path)
    assert docs
    for doc in docs:
        validate_kubernetes(doc, kubernetes)


def test_strict_validation_would_catch_a_misspelt_field() -> None:
    deployment = copy.deepcopy(find(base_documents(), "Deployment", "ingest"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"grpc": {"port": 50051}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, NEWEST_KUBERNETES, strict=True)


def test_the_keda_scaled_object_is_valid_against_kedas_crd_schema() -> None:
    [scaled] = of_kind(base_documents(), "ScaledObject")
    assert list(keda_validator().iter_errors(scaled)) == []


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda s: s["spec"]["triggers"][0]["metadata"].update(lagThreshold=10), "trigger metadata are strings"),
        (lambda s: s["spec"].update(maxReplicas=3), "unknown field"),
        (lambda s: s["spec"].pop("scaleTargetRef"), "scaleTargetRef is required"),
        (lambda s: s["spec"]["triggers"][0].pop("type"), "a trigger has a type"),
        (lambda s: s.update(apiVersion="keda.sh/v1"), "the CRD's version is v1alpha1"),
    ],
)
def test_the_keda_schema_rejects_what_kedas_crd_rejects(change: Any, why: str) -> None:
    [scaled] = of_kind(base_documents(), "ScaledObject")
    broken = copy.deepcopy(scaled)
    change(broken)
    assert list(keda_validator().iter_errors(broken)), why


@needs_kustomize
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_resource_the_overlay_renders_is_valid_for_kubernetes(overlay: str) -> None:
    docs = render(overlay)
    assert len(docs) > 25
    for doc in docs:
        validate_kubernetes(doc, NEWEST_KUBERNETES)
        assert doc["metadata"].get("namespace", "cortado") == "cortado" or doc["kind"] == "Namespace"


def apply_json6902(doc: Doc, operations: list[dict[str, Any]]) -> None:
    """The add/remove/replace operations of RFC 6902 that the overlays use."""
    for operation in operations:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in operation["path"].split("/")[1:]]
        node: Any = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        key: Any = int(last) if isinstance(node, list) else last
        if operation["op"] == "remove":
            del node[key]
        else:
            assert operation["op"] in ("add", "replace"), operation
            assert operation["op"] == "add" or key in node or isinstance(node, list), f"no {operation['path']}"
            node[key] = operation["value"]


def merge(into: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_overlay_patches_apply_to_the_base_without_kustomize(overlay: str) -> None:
    """A check that does not need kustomize: each patch finds what it changes, and the result stays valid."""
    kustomization = overlay_kustomization(overlay)
    assert kustomization["resources"] == ["namespace.yaml", "../../base"]
    docs = base_documents()
    for entry in kustomization["patches"]:
        text = (K8S / "overlays" / overlay / entry["path"]).read_text() if "path" in entry else entry["patch"]
        patch = yaml.safe_load(text)
        if isinstance(patch, list):
            target = entry["target"]
            apply_json6902(find(docs, target["kind"], target["name"]), patch)
        elif patch.pop("$patch", None) == "delete":
            docs.remove(find(docs, patch["kind"], patch["metadata"]["name"]))
        else:
            merge(find(docs, patch["kind"], patch["metadata"]["name"]), patch)
    for replicas in kustomization["replicas"]:
        find(docs, "Deployment", replicas["name"])["spec"]["replicas"] = replicas["count"]
    for doc in docs:
        validate_kubernetes(doc, NEWEST_KUBERNETES)
    validate_kubernetes(yaml.safe_load((K8S / "overlays" / overlay / "namespace.yaml").read_text()), NEWEST_KUBERNETES)
