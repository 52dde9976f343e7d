"""Messages on the agent ↔ log host connection (inside TLS).

Each message is ``type (1 byte) | length (u32, big-endian) | body``:

    H hello      agent → server  JSON {host, stream, agent_start_ns, boot_id, version}
    W welcome    server → agent  JSON {next_seq}: the server has every frame below it
    F frame      agent → server  one sealed frame (agent/frame.py)
    A ack        server → agent  u64 sequence: that frame is durably stored
    R refused    server → agent  JSON {seq, reason}: that frame is refused for good (not stored)
    K heartbeat  agent → server  JSON {ts, epoch, spooled, dropped}
    B bye        agent → server  JSON {ts}: clean stop
    E error      server → agent  utf-8 reason, then the server closes the connection
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

from forensix.agent.frame import HEADER, MAC_LEN, MAX_BODY, FrameError

__all__ = ["MAX_CONTROL", "MSG_TYPES", "WireClosed", "recv", "recv_json", "send"]

_HEAD = struct.Struct("!cI")
MAX_CONTROL = 64 << 10
MAX_FRAME_MSG = HEADER.size + 255 + 255 + MAX_BODY + MAC_LEN
MSG_TYPES = {b"H", b"W", b"F", b"A", b"R", b"K", b"B", b"E"}


class WireClosed(ConnectionError):
    """The peer closed the connection (cleanly or not) between or inside messages."""


def send(sock: socket.socket, kind: bytes, body: bytes | dict[str, Any]) -> None:
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    sock.sendall(_HEAD.pack(kind, len(body)) + body)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        b = sock.recv(min(n, 1 << 20))
        if not b:
            raise WireClosed("connection closed")
        chunks.append(b)
        n -= len(b)
    return b"".join(chunks)


def recv(sock: socket.socket) -> tuple[bytes, bytes]:
    """One message; raises FrameError on a malformed one (the caller closes the connection)."""
    head = _recv_exact(sock, _HEAD.size)
    kind, length = _HEAD.unpack(head)
    if kind not in MSG_TYPES:
        raise FrameError(f"unknown message type {kind!r}")
    limit = MAX_FRAME_MSG if kind == b"F" else MAX_CONTROL
    if length > limit:
        raise FrameError(f"message of type {kind.decode()} too long: {length} > {limit}")
    return kind, _recv_exact(sock, length)


def recv_json(body: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise FrameError("control message is not JSON") from None
    if not isinstance(obj, dict):
        raise FrameError("control message is not a JSON object")
    return obj
