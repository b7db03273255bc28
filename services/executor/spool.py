"""Large results on their way from a handler process to the object store: each in a temporary file.

The handler process sends a result over 1 MiB as chunks before its outcome; the executor appends them to a file
(memory holds one chunk at a time) and stores the file once the outcome says it is whole. The handler process is
untrusted: chunks past MAX_RESULT_BYTES are not written, and a result is only taken when exactly the bytes its
outcome announces arrived.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from cortado.result import MAX_RESULT_BYTES


@dataclass
class Spooled:
    """One result being received: its file, how many bytes came, and their SHA-256."""

    path: Path
    file: BinaryIO
    size: int = 0
    over_limit: bool = False
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)

    @property
    def sha256(self) -> str:
        """The hex SHA-256 of the bytes received."""
        return self.digest.hexdigest()


class ResultSpool:
    """Results being received, by request id, in files under directory (the system's temporary one by default)."""

    def __init__(self, directory: str | None = None) -> None:
        self._directory = directory
        self._spooled: dict[str, Spooled] = {}

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._spooled

    def add(self, request_id: str, data: bytes) -> None:
        """Append a chunk of the request's result; past MAX_RESULT_BYTES the result is marked, not written."""
        spooled = self._spooled.get(request_id)
        if spooled is None:
            fd, name = tempfile.mkstemp(prefix="cortado-result-", dir=self._directory)
            spooled = self._spooled[request_id] = Spooled(Path(name), os.fdopen(fd, "w+b"))
        if spooled.over_limit or spooled.size + len(data) > MAX_RESULT_BYTES:
            spooled.over_limit = True
            return
        spooled.file.write(data)
        spooled.digest.update(data)
        spooled.size += len(data)

    def take(self, request_id: str) -> Spooled | None:
        """The request's whole result (its file flushed; the caller removes it with `remove`), or None."""
        spooled = self._spooled.pop(request_id, None)
        if spooled is not None:
            spooled.file.close()
        return spooled

    def discard(self, request_id: str) -> None:
        """Forget the request's chunks and delete their file (nothing happens for an unknown id)."""
        spooled = self.take(request_id)
        if spooled is not None:
            remove(spooled)

    def close(self) -> None:
        """Discard every result still being received."""
        for request_id in list(self._spooled):
            self.discard(request_id)


def remove(spooled: Spooled) -> None:
    """Delete a taken result's file."""
    with contextlib.suppress(OSError):
        spooled.path.unlink()
