"""Bundles: the project's files packed as a gzip-compressed tar for upload, and unpacked, checked entry by
entry, on the scheduler and the executors."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import zlib
from pathlib import Path, PurePosixPath

from cortado.project.errors import ProjectError
from cortado.project.files import IGNORE_FILE, collect_files
from cortado.project.units import MIB, human_size

MAX_PROJECT_BYTES = 32 * 1024 * 1024
MAX_BUNDLE_MEMBERS = 10_000
"""Most entries (files and folders) a bundle may hold: the scheduler and every executor unpack it."""


def pack_project(project_dir: Path, config_name: str) -> bytes:
    """Return the project's files (those of collect_files) as a gzip-compressed tar, paths relative to the root.

    Owners are cleared and permissions normalised to 0644/0755, so the same files give the same archive.
    Raises ProjectError when there are more than MAX_BUNDLE_MEMBERS files, or when they total more than
    MAX_PROJECT_BYTES (naming the largest ones).
    """
    files = collect_files(project_dir, config_name)
    if len(files) > MAX_BUNDLE_MEMBERS:
        raise ProjectError(
            f"project has {len(files)} files, over the limit of {MAX_BUNDLE_MEMBERS}; "
            f"add a {IGNORE_FILE} to leave files out"
        )
    total = sum(size for _, size in files)
    if total > MAX_PROJECT_BYTES:
        largest = sorted(files, key=lambda item: (-item[1], item[0]))[:5]
        listed = ", ".join(f"{name} ({human_size(size)})" for name, size in largest)
        raise ProjectError(
            f"project is {human_size(total)}, over the {MAX_PROJECT_BYTES // MIB} MiB limit; "
            f"largest files: {listed}; add a {IGNORE_FILE} to leave files out"
        )
    root = project_dir.resolve()
    buffer = io.BytesIO()
    # mtime=0 in the gzip header keeps the archive's bytes (and so its SHA-256) stable across packs.
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name, _ in files:
            try:
                with open(root / name, "rb") as handle:
                    info = os.fstat(handle.fileno())
                    member = tarfile.TarInfo(name)
                    member.size = info.st_size
                    member.mtime = int(info.st_mtime)
                    member.mode = 0o755 if info.st_mode & 0o111 else 0o644
                    tar.addfile(member, handle)
            except OSError as e:
                raise ProjectError(f"cannot read {name}: {e}") from e
    return buffer.getvalue()


_MEMBER_KINDS = {
    tarfile.SYMTYPE: "a symbolic link",
    tarfile.LNKTYPE: "a hard link",
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
    tarfile.FIFOTYPE: "a FIFO",
    tarfile.CONTTYPE: "a contiguous file",
    tarfile.GNUTYPE_SPARSE: "a sparse file",
}
_FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE)
_COPY_CHUNK = 1024 * 1024


def _member_path(member: tarfile.TarInfo) -> PurePosixPath:
    """The member's path relative to the destination; ProjectError for anything that could land outside it."""
    name = member.name
    parts = PurePosixPath(name).parts
    if not name or name.startswith(("/", "\\")) or "\\" in name or "\0" in name or ".." in parts:
        raise ProjectError(f"bundle holds an unsafe path: {name!r}")
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def _check_member(member: tarfile.TarInfo) -> PurePosixPath:
    """The relative path of a regular file or folder; ProjectError naming any other kind of entry."""
    path = _member_path(member)
    if member.type not in _FILE_TYPES and member.type != tarfile.DIRTYPE:
        kind = _MEMBER_KINDS.get(member.type, f"an entry of unknown type {member.type!r}")
        raise ProjectError(f"bundle holds {kind}, {member.name!r}: only regular files and folders are allowed")
    if member.type in _FILE_TYPES and path == PurePosixPath("."):
        raise ProjectError(f"bundle holds an unsafe path: {member.name!r}")
    return path


def unpack_bundle(
    data: bytes, dest: Path, max_bytes: int = MAX_PROJECT_BYTES, max_members: int = MAX_BUNDLE_MEMBERS
) -> None:
    """Extract a bundle made by pack_project into `dest` (created if missing).

    Every entry is checked here before anything is written (tarfile's extraction filters are not relied on):
    only regular files and folders are accepted, with relative paths free of `..`, each at most once. Refuses,
    with ProjectError naming the entry, archives that are corrupt, hold anything else (links, devices, FIFOs),
    hold more than `max_members` entries, or whose files total more than `max_bytes`. Files are written with
    mode 0644, or 0755 when the archive marks them executable; owners and other mode bits are not kept.
    Blocking: run it in a thread from async code.
    """
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            entries: list[tuple[tarfile.TarInfo, PurePosixPath]] = []
            seen: set[PurePosixPath] = set()
            total = 0
            for member in tar:
                if len(entries) >= max_members:
                    raise ProjectError(f"bundle holds more than {max_members} entries, over the limit")
                path = _check_member(member)
                if member.type in _FILE_TYPES:
                    if path in seen:
                        raise ProjectError(f"bundle holds the file {member.name!r} twice")
                    seen.add(path)
                    total += member.size
                    if total > max_bytes:
                        raise ProjectError(
                            f"bundle unpacks to more than {human_size(max_bytes)}, over the limit "
                            f"(reached at {member.name!r})"
                        )
                entries.append((member, path))
            dest.mkdir(parents=True, exist_ok=True)
            for member, path in entries:
                _extract(tar, member, dest, path)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise ProjectError(f"cannot unpack bundle: {e}") from e


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path, path: PurePosixPath) -> None:
    """Write one checked member; only folders and regular files are ever created, so no link can redirect a write."""
    target = dest.joinpath(path)
    if member.type == tarfile.DIRTYPE:
        target.mkdir(mode=0o755, parents=True, exist_ok=True)
        return
    target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    source = tar.extractfile(member)
    if source is None:  # not reached for regular files
        raise ProjectError(f"cannot read {member.name!r} from the bundle")
    mode = 0o755 if member.mode & 0o111 else 0o644
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    with source, os.fdopen(os.open(target, flags, mode), "wb") as out:
        remaining = member.size
        while remaining > 0:
            chunk = source.read(min(_COPY_CHUNK, remaining))
            if not chunk:
                raise ProjectError(f"bundle is truncated in {member.name!r}")
            out.write(chunk)
            remaining -= len(chunk)
    os.chmod(target, mode)
