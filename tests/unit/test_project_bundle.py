"""Tests of cortado.project.bundle: packing a project and unpacking bundles safely."""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

import pytest

from cortado.project.bundle import MAX_BUNDLE_MEMBERS, MAX_PROJECT_BYTES, pack_project, unpack_bundle
from cortado.project.errors import ProjectError
from cortado.project.files import collect_files
from tests.unit.projectsamples import make_tree, write


def test_pack_and_unpack_round_trip(tmp_path: Path) -> None:
    project = tmp_path / "project"
    make_tree(project)
    write(project / "handler.py", "def handle(x):\n    return x\n")
    write(project / "pkg/blob.bin", bytes(range(256)) * 10)
    (project / "run.sh").write_text("#!/bin/sh\n")
    (project / "run.sh").chmod(0o755)
    bundle = pack_project(project, "cortex.yaml")
    assert pack_project(project, "cortex.yaml") == bundle  # same files, same bytes

    dest = tmp_path / "unpacked"
    unpack_bundle(bundle, dest)
    unpacked = sorted(path.relative_to(dest).as_posix() for path in dest.rglob("*") if path.is_file())
    assert unpacked == [name for name, _ in collect_files(project, "cortex.yaml")]
    assert (dest / "handler.py").read_text() == "def handle(x):\n    return x\n"
    assert (dest / "pkg/blob.bin").read_bytes() == bytes(range(256)) * 10
    assert (dest / "run.sh").stat().st_mode & 0o111
    assert not (dest / "cortex.yaml").exists()


def test_a_project_over_the_limit_names_its_total_the_limit_and_the_largest_files(tmp_path: Path) -> None:
    write(tmp_path / "handler.py", "x" * 2048)
    with open(tmp_path / "model.bin", "wb") as f:
        f.truncate(38 * 1024 * 1024)  # sparse: nothing is written
    with open(tmp_path / "weights.bin", "wb") as f:
        f.truncate(2 * 1024 * 1024 + 200 * 1024)
    write(tmp_path / "tiny.txt", "abc")
    with pytest.raises(ProjectError) as caught:
        pack_project(tmp_path, "cortado.yaml")
    assert str(caught.value) == (
        "project is 40.2 MiB, over the 32 MiB limit; largest files: model.bin (38.0 MiB), weights.bin (2.2 MiB), "
        "handler.py (2.0 KiB), tiny.txt (3 B); add a .cortexignore to leave files out"
    )


def test_a_project_of_more_files_than_a_bundle_may_hold_is_refused_before_upload(tmp_path: Path) -> None:
    for i in range(MAX_BUNDLE_MEMBERS + 1):
        (tmp_path / f"f{i}").touch()
    with pytest.raises(ProjectError) as caught:
        pack_project(tmp_path, "cortado.yaml")
    assert str(caught.value) == (
        "project has 10001 files, over the limit of 10000; add a .cortexignore to leave files out"
    )


def test_a_project_at_exactly_the_limit_is_packed(tmp_path: Path) -> None:
    with open(tmp_path / "model.bin", "wb") as f:
        f.truncate(MAX_PROJECT_BYTES)
    assert len(pack_project(tmp_path, "cortado.yaml")) < MAX_PROJECT_BYTES


def tar_with(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, content in members:
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def test_unpack_refuses_a_path_with_dot_dot(tmp_path: Path) -> None:
    bundle = tar_with((tarfile.TarInfo("../evil"), b"evil"))
    with pytest.raises(ProjectError, match=re.escape("unsafe path: '../evil'")):
        unpack_bundle(bundle, tmp_path / "dest")
    assert not (tmp_path / "evil").exists()


def test_unpack_refuses_an_absolute_path(tmp_path: Path) -> None:
    bundle = tar_with((tarfile.TarInfo(str(tmp_path / "abs")), b"evil"))
    with pytest.raises(ProjectError, match="unsafe path"):
        unpack_bundle(bundle, tmp_path / "dest")
    assert not (tmp_path / "abs").exists()


def special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, b""


def file_member(name: str, content: bytes = b"x", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mode = mode
    return info, content


@pytest.mark.parametrize(
    ("member", "kind"),
    [
        (special("link", tarfile.SYMTYPE, "/etc/passwd"), "a symbolic link"),
        # Links that stay inside the destination are refused too: a bundle never needs one.
        (special("inside", tarfile.SYMTYPE, "handler.py"), "a symbolic link"),
        (special("hard", tarfile.LNKTYPE, "handler.py"), "a hard link"),
        (special("tty", tarfile.CHRTYPE), "a character device"),
        (special("disk", tarfile.BLKTYPE), "a block device"),
        (special("pipe", tarfile.FIFOTYPE), "a FIFO"),
    ],
    ids=lambda value: value if isinstance(value, str) else value[0].name,
)
def test_unpack_accepts_regular_files_and_folders_only_naming_the_member(
    tmp_path: Path, member: tuple[tarfile.TarInfo, bytes], kind: str
) -> None:
    name = member[0].name
    bundle = tar_with(file_member("handler.py"), member)
    with pytest.raises(ProjectError) as caught:
        unpack_bundle(bundle, tmp_path / "dest")
    assert str(caught.value) == f"bundle holds {kind}, {name!r}: only regular files and folders are allowed"
    # Every member is checked before anything is written.
    assert not (tmp_path / "dest").exists()


def test_unpack_caps_the_number_of_members(tmp_path: Path) -> None:
    bundle = tar_with(*(file_member(f"f{i}") for i in range(4)))
    with pytest.raises(ProjectError) as caught:
        unpack_bundle(bundle, tmp_path / "dest", max_members=3)
    assert str(caught.value) == "bundle holds more than 3 entries, over the limit"
    assert not (tmp_path / "dest").exists()
    unpack_bundle(bundle, tmp_path / "dest", max_members=4)
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["f0", "f1", "f2", "f3"]


def test_the_default_member_cap_is_the_documented_constant(tmp_path: Path) -> None:
    bundle = tar_with(*(file_member(f"f{i}", b"") for i in range(MAX_BUNDLE_MEMBERS + 1)))
    with pytest.raises(ProjectError, match=f"^bundle holds more than {MAX_BUNDLE_MEMBERS} entries"):
        unpack_bundle(bundle, tmp_path / "dest")
    docs = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    assert f"| {MAX_BUNDLE_MEMBERS:,} |" in docs


def test_unpack_caps_the_unpacked_size(tmp_path: Path) -> None:
    bundle = tar_with(file_member("a", b"x" * 600), file_member("b", b"x" * 600))
    with pytest.raises(ProjectError) as caught:
        unpack_bundle(bundle, tmp_path / "dest", max_bytes=1024)
    assert str(caught.value) == "bundle unpacks to more than 1.0 KiB, over the limit (reached at 'b')"


@pytest.mark.parametrize("name", ["a\\b", "a/../../b", "/etc/x", "."])
def test_unpack_refuses_paths_that_could_land_outside(tmp_path: Path, name: str) -> None:
    with pytest.raises(ProjectError) as caught:
        unpack_bundle(tar_with(file_member(name)), tmp_path / "dest")
    assert str(caught.value) == f"bundle holds an unsafe path: {name!r}"


def test_unpack_refuses_a_file_given_twice(tmp_path: Path) -> None:
    with pytest.raises(ProjectError) as caught:
        unpack_bundle(tar_with(file_member("a", b"1"), file_member("./a", b"2")), tmp_path / "dest")
    assert str(caught.value) == "bundle holds the file './a' twice"


def test_unpack_writes_folders_files_and_the_executable_bit_only(tmp_path: Path) -> None:
    folder = tarfile.TarInfo("pkg")
    folder.type = tarfile.DIRTYPE
    folder.mode = 0o777
    bundle = tar_with(
        (folder, b""), file_member("pkg/run.sh", b"#!/bin/sh\n", 0o4777), file_member("pkg/data", b"d", 0o666)
    )
    unpack_bundle(bundle, tmp_path / "dest")
    assert (tmp_path / "dest/pkg/run.sh").read_bytes() == b"#!/bin/sh\n"
    assert (tmp_path / "dest/pkg/run.sh").stat().st_mode & 0o7777 == 0o755
    assert (tmp_path / "dest/pkg/data").stat().st_mode & 0o7777 == 0o644


def test_unpack_refuses_garbage(tmp_path: Path) -> None:
    with pytest.raises(ProjectError, match="cannot unpack bundle"):
        unpack_bundle(b"not a tar", tmp_path / "dest")
