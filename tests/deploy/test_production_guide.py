"""docs/production.md names only files that exist and the commands that fit them."""

from __future__ import annotations

import re

import yaml

from tests.deploy.manifests import BASE, DEPLOY, ROOT, find, load_all

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
