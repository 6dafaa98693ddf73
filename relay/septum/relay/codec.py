"""The relay's grpclib codec: forwarded messages stay bytes, everything else is protobuf."""

from __future__ import annotations

from typing import Any

from grpclib.encoding.base import CodecBase


class PassthroughCodec(CodecBase):
    """Bytes pass unchanged both ways (GetFlows messages are forwarded as the agents sent them,
    never parsed into objects); protobuf messages are (de)serialized as usual."""

    __content_subtype__ = "proto"

    def encode(self, message: Any, message_type: Any) -> bytes:
        if isinstance(message, bytes):
            return message
        data: bytes = message.SerializeToString()
        return data

    def decode(self, data: bytes, message_type: Any) -> Any:
        if message_type is bytes:
            return data
        return message_type.FromString(data)
