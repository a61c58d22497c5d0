"""Cast v2 framing: a 4-byte big-endian length, then a CastMessage protobuf with JSON inside."""

from __future__ import annotations

import asyncio
import json
import struct
from dataclasses import dataclass
from typing import Any

from pychromecast.generated.cast_channel_pb2 import CastMessage

NS_CONNECTION = "urn:x-cast:com.google.cast.tp.connection"
NS_HEARTBEAT = "urn:x-cast:com.google.cast.tp.heartbeat"
NS_RECEIVER = "urn:x-cast:com.google.cast.receiver"
NS_MEDIA = "urn:x-cast:com.google.cast.media"
PLATFORM_ID = "receiver-0"
MAX_FRAME = 64 * 1024


@dataclass(frozen=True, slots=True)
class Frame:
    source_id: str
    destination_id: str
    namespace: str
    data: dict[str, Any]


async def read_frame(reader: asyncio.StreamReader) -> Frame:
    """The next message; IncompleteReadError when the sender hung up."""
    (length,) = struct.unpack(">I", await reader.readexactly(4))
    if length > MAX_FRAME:
        raise ValueError(f"frame of {length} bytes")
    message = CastMessage()
    message.ParseFromString(await reader.readexactly(length))
    try:
        data = json.loads(message.payload_utf8)
    except ValueError:
        data = {}
    return Frame(message.source_id, message.destination_id, message.namespace, data)


def encode_frame(
    source_id: str, destination_id: str, namespace: str, data: dict[str, Any]
) -> bytes:
    message = CastMessage()
    message.protocol_version = CastMessage.CASTV2_1_0
    message.source_id = source_id
    message.destination_id = destination_id
    message.namespace = namespace
    message.payload_type = CastMessage.STRING
    message.payload_utf8 = json.dumps(data)
    body = message.SerializeToString()
    return struct.pack(">I", len(body)) + body
