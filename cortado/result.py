"""What a handler may return, and the shape each kind takes on its way to the executor.

A handler returns a ``dict`` (its JSON is the result, as always), or binary output:

- ``bytes`` (or ``bytearray``, ``memoryview``): served as ``application/octet-stream``;
- a ``pathlib.Path`` to a file inside the handler's working directory: its contents, with a media type guessed from
  the file's suffix (``application/octet-stream`` when unknown); meant for output too large to hold in memory;
- ``cortado.Result(data=..., content_type=...)`` or ``cortado.Result(path=..., content_type=...)``: either of the
  above with the media type stated.

Results up to ``INLINE_RESULT_BYTES`` travel in the outcome and are kept in the request's record; larger ones (up to
``MAX_RESULT_BYTES``) travel in chunks and are kept in the results Object Store. A returned file is read, not moved
or deleted: it is the handler's to manage.
"""

from __future__ import annotations

import mimetypes
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from cortado.runtime import InvalidResultError, encode_result

INLINE_RESULT_BYTES = 1024 * 1024
"""Largest result kept in its request's record (and sent in one frame); larger ones go to the object store. It keeps
every record, and so every `GET`, watch and webhook body, well under gRPC's default 4 MiB message limit."""

MAX_RESULT_BYTES = 1024**3
"""Largest result of one request: 1 GiB."""

CHUNK_BYTES = 1024 * 1024
"""Bytes per chunk of a result sent in parts (handler process to executor, results service to client)."""

MAX_CONTENT_TYPE_CHARS = 256
"""Longest media type a result may state."""

OCTET_STREAM = "application/octet-stream"
JSON_TYPE = "application/json"

# A media type: type "/" subtype, each an RFC 9110 token, then optional parameters (no control characters).
_MEDIA_TYPE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+/[!#$%&'*+.^_`|~0-9A-Za-z-]+(\s*;[\x20-\x7e\t]*)?")


@dataclass(frozen=True)
class Result:
    """Binary output of a handler with the media type clients receive it with.

    Give exactly one of ``data`` (the bytes) or ``path`` (a file inside the handler's working directory, for output
    too large to hold in memory). ``content_type`` defaults to ``application/octet-stream`` for data and to a type
    guessed from the file's suffix for a path.
    """

    data: bytes | bytearray | memoryview | None = None
    path: str | os.PathLike[str] | None = None
    content_type: str | None = None

    def __post_init__(self) -> None:
        if (self.data is None) == (self.path is None):
            raise TypeError("cortado.Result takes exactly one of data= (bytes) or path= (a file)")
        if self.data is not None and not isinstance(self.data, bytes | bytearray | memoryview):
            raise TypeError(f"cortado.Result(data=...) must be bytes, not {type(self.data).__name__}")
        if self.content_type is not None:
            check_content_type(self.content_type)


def check_content_type(content_type: str) -> str:
    """content_type when it is a valid media type (``type/subtype`` and parameters, at most MAX_CONTENT_TYPE_CHARS
    characters); ValueError otherwise."""
    if not isinstance(content_type, str) or not _MEDIA_TYPE.fullmatch(content_type):
        raise ValueError(f"content_type must be a media type such as 'image/png', not {content_type!r}")
    if len(content_type) > MAX_CONTENT_TYPE_CHARS:
        raise ValueError(
            f"content_type is {len(content_type)} characters; at most {MAX_CONTENT_TYPE_CHARS} are allowed"
        )
    return content_type


@dataclass(frozen=True)
class PreparedResult:
    """A result ready to send: JSON bytes or binary bytes in memory, or a file to read in chunks.

    ``content_type`` is empty for a dict's JSON (held in ``data``).
    """

    content_type: str
    size: int
    data: bytes = b""
    path: Path | None = None

    @property
    def inline(self) -> bool:
        """Whether it fits in one outcome (and in the record)."""
        return self.size <= INLINE_RESULT_BYTES

    def chunks(self) -> Iterator[bytes]:
        """The bytes in chunks of at most CHUNK_BYTES (an iterator; a file is read as it goes)."""
        if self.path is None:
            view = memoryview(self.data)
            return (bytes(view[i : i + CHUNK_BYTES]) for i in range(0, len(view), CHUNK_BYTES))
        return _file_chunks(self.path, self.size)


def _file_chunks(path: Path, size: int) -> Iterator[bytes]:
    sent = 0
    with path.open("rb") as file:
        while sent < size:
            data = file.read(min(CHUNK_BYTES, size - sent))
            if not data:
                raise InvalidResultError(f"the result file {path} became shorter while it was read")
            sent += len(data)
            yield data


def _too_large(method: str, size: int) -> InvalidResultError:
    return InvalidResultError(
        f"{method} returned a result of {size / 2**20:.1f} MiB; at most {MAX_RESULT_BYTES // 2**30} GiB can be stored"
    )


def _binary(method: str, data: bytes | bytearray | memoryview, content_type: str | None) -> PreparedResult:
    payload = bytes(data)
    if len(payload) > MAX_RESULT_BYTES:
        raise _too_large(method, len(payload))
    return PreparedResult(content_type=content_type or OCTET_STREAM, size=len(payload), data=payload)


def _file(method: str, path: str | os.PathLike[str], content_type: str | None, root: Path) -> PreparedResult:
    given = Path(path)
    resolved = (root / given).resolve()
    base = root.resolve()
    if resolved != base and base not in resolved.parents:
        raise InvalidResultError(
            f"{method} returned the path {str(given)!r}, which is outside the handler's working directory "
            f"({base}): write result files under it (for example Path('outputs') / f'{{request_id}}.bin')"
        )
    if not resolved.is_file():
        what = "does not exist" if not resolved.exists() else "is not a file"
        raise InvalidResultError(f"{method} returned the path {str(given)!r}, which {what}")
    size = resolved.stat().st_size
    if size > MAX_RESULT_BYTES:
        raise _too_large(method, size)
    chosen = content_type or mimetypes.guess_type(resolved.name)[0] or OCTET_STREAM
    if size <= INLINE_RESULT_BYTES:
        # Small enough for the outcome itself: read now (as it is now, should it have changed since stat).
        data = resolved.read_bytes()
        if len(data) <= INLINE_RESULT_BYTES:
            return PreparedResult(content_type=chosen, size=len(data), data=data)
    return PreparedResult(content_type=chosen, size=size, path=resolved)


def prepare_result(value: Any, *, root: Path, method: str = "handle_async", index: int | None = None) -> PreparedResult:
    """The result to send for what a handler returned; InvalidResultError (with a clear message) when it cannot be.

    ``root`` is the handler's working directory, where returned files must lie. A dict becomes its exact JSON (see
    ``cortado.runtime.encode_result``); bytes and files keep their bytes.
    """
    if isinstance(value, Result):
        if value.data is not None:
            return _binary(method, value.data, value.content_type)
        assert value.path is not None
        return _file(method, value.path, value.content_type, root)
    if isinstance(value, bytes | bytearray | memoryview):
        return _binary(method, value, None)
    if isinstance(value, PurePath):
        return _file(method, value, None, root)
    encoded = encode_result(value, method=method, index=index)
    if len(encoded) > MAX_RESULT_BYTES:
        raise _too_large(method, len(encoded))
    return PreparedResult(content_type="", size=len(encoded), data=encoded)
