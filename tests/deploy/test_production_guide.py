"""docs/production.md names only files that exist and the commands that fit them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from cortado._env import Env
from cortado._natsauth import PERMISSIONS, ROUTE_USER
from services.scheduler.config import SchedulerSettings
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
        "mkdir -p -m 700 ~/.cortado/tls",
        "kubectl -n cortado create secret generic cortado-scheduler ",
        "kubectl -n cortado create secret generic cortado-scheduler-tls",
        "kubectl -n cortado create secret generic cortado-nats",
        "kubectl apply -k deploy/k8s/overlays/production",
        "kubectl -n cortado port-forward svc/scheduler 50053",
        'export CORTADO_SCHEDULER_CA="$HOME/.cortado/tls/ca.crt"',
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
    consumers = {trigger["metadata"]["consumer"] for trigger in scaled["spec"]["triggers"]}
    block = re.search(r"```yaml\n(.*?)```", GUIDE.read_text(), re.S)
    assert block is not None
    [operation] = yaml.safe_load(block.group(1))
    example = operation["value"]["metadata"]
    assert example["natsServerMonitoringEndpoint"] == base["natsServerMonitoringEndpoint"]
    assert example["consumer"] in consumers
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


def tls_recipe() -> str:
    """The guide's commands that make the scheduler's TLS files: the folder, then the subshell that fills it."""
    match = re.search(r"^mkdir -p -m 700 ~/\.cortado/tls\n\(\n.*?\n\)$", GUIDE.read_text(), re.M | re.S)
    assert match is not None, "the guide has no commands making ~/.cortado/tls"
    return match.group(0)


def test_the_guides_openssl_commands_make_a_certificate_the_scheduler_serves_and_its_clients_trust(
    tmp_path: Path,
) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed")
    done = subprocess.run(
        ["bash", "-euc", tls_recipe()],
        env={**os.environ, "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    folder = tmp_path / ".cortado" / "tls"
    assert folder.stat().st_mode & 0o777 == 0o700
    settings = SchedulerSettings.from_env(
        Env(
            {
                "CORTADO_SCHEDULER_ADDRESS": "0.0.0.0:50053",
                "CORTADO_SCHEDULER_TOKEN": "0123456789abcdef" * 2,
                "CORTADO_SCHEDULER_TLS_CERT": str(folder / "tls.crt"),
                "CORTADO_SCHEDULER_TLS_KEY": str(folder / "tls.key"),
            }
        )
    )
    assert settings.tls is not None
    # Every name the probes, port-forwarding and pods of the namespace dial; strict X.509 checks.
    names = [["-verify_ip", "127.0.0.1"], ["-verify_hostname", "localhost"]]
    names += [["-verify_hostname", name] for name in ("scheduler", "scheduler.cortado", "scheduler.cortado.svc")]
    for name in names:
        verify = [openssl, "verify", "-x509_strict", "-purpose", "sslserver", "-CAfile", "ca.crt", *name, "tls.crt"]
        checked = subprocess.run(verify, cwd=folder, capture_output=True, text=True, timeout=30, check=False)
        assert checked.returncode == 0, f"{name}: {checked.stdout}{checked.stderr}"
    wrong = [openssl, "verify", "-CAfile", "ca.crt", "-verify_hostname", "elsewhere", "tls.crt"]
    assert subprocess.run(wrong, cwd=folder, capture_output=True, timeout=30, check=False).returncode != 0


@pytest.mark.parametrize("document", [GUIDE, DEPLOY / "README.md"], ids=lambda p: p.name)
def test_the_tls_secret_the_docs_create_has_every_key_the_scheduler_mounts(document: Path) -> None:
    command = create_secret_command(document.read_text(), "cortado-scheduler-tls")
    files = dict(re.findall(r'--from-file=([\w.]+)="\$HOME/\.cortado/tls/([\w.]+)"', command))
    assert files == {"tls.crt": "tls.crt", "tls.key": "tls.key", "ca.crt": "ca.crt"}
    assert set(files) == secret_keys_read("cortado-scheduler-tls")


@pytest.mark.parametrize("document", [GUIDE, DEPLOY / "README.md"], ids=lambda p: p.name)
def test_the_docs_export_the_scheduler_tls_files_compose_hands_it(document: Path) -> None:
    secrets = yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())["secrets"]
    variables = {s["environment"] for name, s in secrets.items() if name.startswith("scheduler-tls-")}
    assert variables == {"CORTADO_SCHEDULER_TLS_CERT_PEM", "CORTADO_SCHEDULER_TLS_KEY_PEM", "CORTADO_SCHEDULER_CA_PEM"}
    exported = dict(re.findall(r'export (\w+_PEM)="\$\(cat ~/\.cortado/tls/([\w.]+)\)"', document.read_text()))
    assert exported == {
        "CORTADO_SCHEDULER_TLS_CERT_PEM": "tls.crt",
        "CORTADO_SCHEDULER_TLS_KEY_PEM": "tls.key",
        "CORTADO_SCHEDULER_CA_PEM": "ca.crt",
    }


@pytest.mark.parametrize("document", [GUIDE, DEPLOY / "README.md"], ids=lambda p: p.name)
def test_the_docs_make_the_chaining_secret_both_deployments_read(document: Path) -> None:
    command = create_secret_command(document.read_text(), "cortado-chaining")
    assert re.findall(r"--from-literal=(\w+)=", command) == ["secret"] == sorted(secret_keys_read("cortado-chaining"))
    assert 'export CORTADO_CHAIN_SECRET="$(openssl rand -hex 32)"' in document.read_text()
    compose = yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())
    assert compose["secrets"]["chain-secret"] == {"environment": "CORTADO_CHAIN_SECRET"}
