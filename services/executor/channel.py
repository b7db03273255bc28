"""The executor ↔ handler-process channel: length-prefixed protobuf frames over a local socket pair.

Both sides import this module; the messages are `cortado.v1.handler` (ToHandler one way, FromHandler
the other). A frame is a 4-byte big-endian length, then the serialized message, at most the contract's
`MAX_FRAME_BYTES` (`services.executor.contract`).
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import TypeVar

from google.protobuf.message import Message

from services.executor.contract import MAX_FRAME_BYTES

M = TypeVar("M", bound=Message)

_LENGTH = struct.Struct(">I")

STREAM_LIMIT = 1024 * 1024
"""asyncio stream buffer size; frames themselves are read with readexactly and may be larger."""


class ChannelClosedError(EOFError):
    """The other side closed the channel (or died)."""


async def open_channel(sock: socket.socket) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Streams over one end of the socket pair."""
    return await asyncio.open_unix_connection(sock=sock, limit=STREAM_LIMIT)


def frame(message: Message) -> bytes:
    """The bytes that carry message on the channel."""
    data = message.SerializeToString()
    return _LENGTH.pack(len(data)) + data


async def read_frame(reader: asyncio.StreamReader, kind: type[M]) -> M:
    """The next message; ChannelClosedError at the end of the stream, ValueError on a malformed length."""
    try:
        header = await reader.readexactly(_LENGTH.size)
    except asyncio.IncompleteReadError as exc:
        raise ChannelClosedError from exc
    (length,) = _LENGTH.unpack(header)
    if length > MAX_FRAME_BYTES:
        raise ValueError(f"a frame of {length} bytes is over the channel's limit of {MAX_FRAME_BYTES}")
    try:
        data = await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise ChannelClosedError from exc
    return kind.FromString(data)
