"""`make run` says where the local mesh keeps its state, and `--fresh` (`make run FRESH=1`) starts it empty."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cortado import mesh
from cortado.mesh import LocalMesh, MeshError


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A mesh folder holding what an earlier run kept, with CORTADO_HOME beside it and no mesh really started."""
    monkeypatch.setenv("CORTADO_HOME", str(tmp_path / "home"))

    def no_start(self: LocalMesh) -> LocalMesh:
        raise MeshError("not started by this test")

    monkeypatch.setattr(LocalMesh, "start", no_start)
    folder = tmp_path / "home" / "mesh"
    for kept in ("jetstream-nats/jetstream/$G/streams/KV_cortado_apis/msgs/1.blk", "logs/ingest.log"):
        (folder / kept).parent.mkdir(parents=True, exist_ok=True)
        (folder / kept).write_text("from an earlier run")
    (folder / "credentials").mkdir()
    (folder / "nats.conf").write_text("listen: 127.0.0.1:4222\n")
    (folder / "envoy.yaml").write_text("admin: {}\n")
    (folder / "notes.txt").write_text("not the mesh's")
    return folder


def test_the_start_names_the_state_folder_and_keeps_what_earlier_runs_left(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert mesh.main(["--workdir", str(workdir)]) == 1
    first = capsys.readouterr().out.splitlines()[0]
    assert first == (
        f"state: {workdir} (APIs and requests kept from earlier runs, from any checkout; "
        "`make run FRESH=1` or --fresh starts empty)"
    )
    assert (workdir / "jetstream-nats").is_dir()


def test_fresh_deletes_the_stored_state_and_nothing_else(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert mesh.main(["--workdir", str(workdir), "--fresh"]) == 1
    assert capsys.readouterr().out.splitlines()[0] == f"state: {workdir} (fresh: cleared)"
    assert sorted(p.name for p in workdir.iterdir()) == ["notes.txt"]
    # Again: nothing left to clear.
    assert mesh.main(["--workdir", str(workdir), "--fresh"]) == 1
    assert capsys.readouterr().out.splitlines()[0] == f"state: {workdir} (fresh: nothing was kept there)"


def test_fresh_refuses_to_clear_the_state_of_a_mesh_that_runs(
    workdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = {"pid": str(os.getpid()), "logs": str(workdir / "logs")}
    (tmp_path / "home" / mesh.STATE_FILE).write_text(json.dumps(state))
    assert mesh.main(["--workdir", str(workdir), "--fresh"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == (
        f"error: a local mesh (pid {os.getpid()}) runs on {workdir}: stop it first (Ctrl-C, or `cortado down`)"
    )
    assert (workdir / "jetstream-nats").is_dir()
