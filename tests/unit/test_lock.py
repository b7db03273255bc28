"""requirements.lock (what `make install` installs, hashes required) agrees with pyproject.toml's pins."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject_pins() -> dict[str, str]:
    """name -> version of every runtime and dev requirement (each must be pinned with ==)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins: dict[str, str] = {}
    for requirement in [*project["dependencies"], *project["optional-dependencies"]["dev"]]:
        match = PIN.match(requirement.split(";")[0].strip())
        assert match, f"pyproject.toml: {requirement!r} is not pinned with =="
        pins[canonical(match["name"])] = match["version"]
    return pins


def lock_entries() -> list[tuple[str, str, str]]:
    """(name, version, the entry's text) for every requirement in the lock."""
    entries: list[tuple[str, str, str]] = []
    for block in re.split(r"\n(?=\S)", LOCK.read_text()):
        if block.startswith("#") or not block.strip():
            continue
        match = PIN.match(block)
        assert match, f"requirements.lock: not a pinned requirement: {block.splitlines()[0]!r}"
        entries.append((canonical(match["name"]), match["version"], block))
    return entries


def parse_disagreements(pins: dict[str, str], entries: list[tuple[str, str, str]]) -> list[str]:
    locked: dict[str, set[str]] = {}
    for name, version, _ in entries:
        locked.setdefault(name, set()).add(version)
    problems = [f"{name} is pinned in pyproject.toml but not in the lock" for name in pins if name not in locked]
    problems += [
        f"{name}: pyproject.toml pins {version}, the lock has {', '.join(sorted(locked[name]))}"
        for name, version in pins.items()
        if name in locked and locked[name] != {version}
    ]
    return problems


def test_every_pin_of_pyproject_is_in_the_lock_at_the_same_version() -> None:
    problems = parse_disagreements(pyproject_pins(), lock_entries())
    assert not problems, "run `make lock`:\n" + "\n".join(problems)


def test_a_pin_that_moved_or_a_new_one_is_caught() -> None:
    entries = lock_entries()
    pins = pyproject_pins()
    assert parse_disagreements({**pins, "grpcio": "0.0.1"}, entries) == [
        f"grpcio: pyproject.toml pins 0.0.1, the lock has {pins['grpcio']}"
    ]
    assert parse_disagreements({**pins, "left-pad": "1.0"}, entries) == [
        "left-pad is pinned in pyproject.toml but not in the lock"
    ]


def test_every_locked_requirement_has_hashes_and_the_lock_covers_dev_and_every_platform() -> None:
    entries = lock_entries()
    assert len(entries) > len(pyproject_pins())  # transitive dependencies are pinned too
    for name, _, block in entries:
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", block), f"{name} has no hash"
    header = LOCK.read_text().splitlines()[1]
    for option in ("--extra dev", "--universal", "--generate-hashes"):
        assert option in header, f"the lock was not written by `make lock` ({option} missing): {header}"
