"""Reading deploy/: its YAML documents, the rendered kustomize overlays, and the validators the tests share."""

from __future__ import annotations

import copy
import functools
import json
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from cortado._natsauth import PERMISSIONS, ROUTE_USER

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
BASE = K8S / "base"
OVERLAYS = ("local", "production")
SCHEMAS = DEPLOY / "schemas"
DOCKER = DEPLOY / "docker"
DOCKERFILES = ("Dockerfile.service", "Dockerfile.executor", "Dockerfile.envoy")

OLDEST_KUBERNETES = "1.30.0"
"""The oldest Kubernetes the manifests support (native `sleep` preStop hooks, gRPC probes)."""

NEWEST_KUBERNETES = "1.37.0"

Doc = dict[str, Any]

ROOT_WORKLOAD = "executor"
"""The one Cortado container that runs as root: it runs each API's handler code as a uid of that API's own
(CORTADO_HANDLER_USERS=on), so that user code cannot read its NATS password or environment; only root can switch."""

EXECUTOR_CAPABILITIES = frozenset({"SETUID", "SETGID", "CHOWN", "FOWNER", "KILL", "DAC_OVERRIDE"})
"""All the executor keeps of root's capabilities (test_executor_capabilities.py shows each is needed); every other
container keeps none."""


@functools.cache
def _load_all(path: Path) -> list[Doc]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return [doc for doc in yaml.load_all(path.read_text(), Loader=loader) if doc]


def load_all(path: Path) -> list[Doc]:
    """The YAML documents of a file, empty ones left out (a fresh copy each call: tests may change it)."""
    return copy.deepcopy(_load_all(path))


def base_files() -> list[Path]:
    """The base's resource files, in kustomization.yaml's order."""
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    return [BASE / name for name in kustomization["resources"]]


def base_documents() -> list[Doc]:
    """Every resource of the base, as written."""
    return [doc for path in base_files() for doc in load_all(path)]


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    """The one document of that kind and name."""
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def kubectl() -> str | None:
    """kubectl, whose built-in kustomize renders the overlays offline (None where it is not installed)."""
    return shutil.which("kubectl")


@functools.cache
def _render(overlay: str) -> str:
    binary = kubectl()
    assert binary is not None
    done = subprocess.run(
        [binary, "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@functools.cache
def _rendered(overlay: str) -> list[Doc]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return [doc for doc in yaml.load_all(_render(overlay), Loader=loader) if doc]


def render(overlay: str) -> list[Doc]:
    """The overlay as `kubectl kustomize` renders it (a fresh copy each call)."""
    return copy.deepcopy(_rendered(overlay))


@functools.cache
def keda_validator() -> jsonschema.protocols.Validator:
    """Validator of KEDA ScaledObjects, from the committed schema derived from KEDA's CRD."""
    schema = json.loads((SCHEMAS / "keda-scaledobject.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


@functools.cache
def compose_validator() -> jsonschema.protocols.Validator:
    """Validator of Compose files, from the committed Compose Specification schema."""
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def containers(doc: Doc) -> list[Doc]:
    """The containers of a workload's pod template."""
    return list(doc["spec"]["template"]["spec"]["containers"])


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def nats_password_variable(user: str) -> str:
    """The environment variable nats-server reads a NATS user's password from (deploy/'s NATS configurations)."""
    return f"CORTADO_NATS_{user.upper()}_PASSWORD"


def nats_passwords() -> dict[str, str]:
    """A random password for each NATS user and the route user, as `openssl rand -hex 32` makes them, by variable."""
    return {nats_password_variable(user): secrets.token_hex(32) for user in [*PERMISSIONS, ROUTE_USER]}
