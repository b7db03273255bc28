"""docs/production.md names only files that exist and the commands that fit them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from cortado.natsauth import PERMISSIONS, ROUTE_USER
from tests.deploy.manifests import BASE, DEPLOY, ROOT, base_documents, find, load_all, nats_password_variable

GUIDE = ROOT / "docs" / "production.md"


def test_every_deploy_path_the_guide_names_exists() -> None:
    paths = set(re.findall(r"`(deploy/[^` ]+)`", GUIDE.read_text()))
    paths |= set(re.findall(r"\s(deploy/[\w./-]+\w)", GUIDE.read_text()))
    assert len(paths) > 10
    for path in sorted(paths):
        assert (ROOT / path).exists(), f"docs/production.md names {path}, which does not exist"


def test_the_guide_says_images_are_never_built_on_the_development_machine() -> None:
    text = GUIDE.read_text()
    assert "No Docker engine runs" in text
    assert "never built" in text


def test_the_guide_walks_from_kubectl_apply_to_a_first_request() -> None:
    text = GUIDE.read_text()
    order = [
        "docker build -f deploy/docker/Dockerfile.service",
        "kubectl -n cortado create secret generic cortado-scheduler",
        "kubectl -n cortado create secret generic cortado-nats",
        "kubectl apply -k deploy/k8s/overlays/production",
        "kubectl -n cortado port-forward svc/scheduler 50053",
        "cortado deploy examples/iris",
        'curl -s -X POST "http://$HOST:8888/iris"',
    ]
    positions = [text.index(step) for step in order]
    assert positions == sorted(positions)


def test_the_secret_the_guide_creates_is_the_one_the_scheduler_reads() -> None:
    scheduler = find(load_all(BASE / "scheduler.yaml"), "Deployment", "scheduler")
    env = {e["name"]: e for e in scheduler["spec"]["template"]["spec"]["containers"][0]["env"]}
    ref = env["CORTADO_SCHEDULER_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert f"create secret generic {ref['name']} --from-literal={ref['key']}=" in GUIDE.read_text()


def test_the_keda_trigger_example_in_the_guide_matches_the_base_trigger() -> None:
    [scaled] = [d for d in load_all(BASE / "keda.yaml") if d["kind"] == "ScaledObject"]
    base = scaled["spec"]["triggers"][0]["metadata"]
    block = re.search(r"```yaml\n(.*?)```", GUIDE.read_text(), re.S)
    assert block is not None
    [operation] = yaml.safe_load(block.group(1))
    example = operation["value"]["metadata"]
    assert example["natsServerMonitoringEndpoint"] == base["natsServerMonitoringEndpoint"]
    assert example["consumer"] == base["consumer"]
    assert (DEPLOY / "k8s" / "base" / "keda.yaml").is_file()


def secret_keys_read(name: str) -> set[str]:
    """The keys of Secret name that the base's pods read (environment variables and volumes)."""
    keys: set[str] = set()
    for doc in base_documents():
        if doc["kind"] not in ("Deployment", "StatefulSet"):
            continue
        pod = doc["spec"]["template"]["spec"]
        for container in pod["containers"]:
            for variable in container.get("env", []):
                ref = variable.get("valueFrom", {}).get("secretKeyRef", {})
                if ref.get("name") == name:
                    keys.add(ref["key"])
        for volume in pod.get("volumes", []):
            if volume.get("secret", {}).get("secretName") == name:
                keys |= {item["key"] for item in volume["secret"]["items"]}
    return keys


def create_secret_command(text: str, name: str) -> str:
    """The `kubectl ... create secret generic <name>` command of a document, continuation lines joined."""
    match = re.search(rf"kubectl -n cortado create secret generic {name}((?:[^\n]*\\\n)*[^\n]*)", text)
    assert match is not None, f"no command creates the Secret {name}"
    return match.group(0)


@pytest.mark.parametrize("document", [GUIDE, DEPLOY / "README.md"], ids=lambda p: p.name)
def test_the_nats_secret_the_docs_create_has_every_key_the_pods_read_each_random(document: Path) -> None:
    command = create_secret_command(document.read_text(), "cortado-nats")
    literals = dict(re.findall(r'--from-literal=(\w+)=("[^"]*")', command))
    assert set(literals) == {*PERMISSIONS, ROUTE_USER} == secret_keys_read("cortado-nats")
    assert set(literals.values()) == {'"$(openssl rand -hex 32)"'}


@pytest.mark.parametrize("document", [GUIDE, DEPLOY / "README.md"], ids=lambda p: p.name)
def test_the_docs_set_every_variable_compose_requires(document: Path) -> None:
    compose = (DEPLOY / "docker-compose.yaml").read_text()
    required = set(re.findall(r"\$\{(\w+):\?", compose))
    assert required == {"CORTADO_SCHEDULER_TOKEN", *map(nats_password_variable, PERMISSIONS)}
    text = document.read_text()
    exported = set(re.findall(r'export (\w+)="\$\(openssl rand -hex 32\)"', text))
    # deploy/README.md exports the NATS passwords in a loop over the users.
    loop = re.search(
        r"for user in ([A-Z ]+); do\n\s*export \"CORTADO_NATS_\$\{user\}_PASSWORD=\$\(openssl rand -hex 32\)\"", text
    )
    if loop:
        exported |= {nats_password_variable(user) for user in loop.group(1).split()}
    assert required <= exported
