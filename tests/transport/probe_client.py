"""A hostile or broken client, run inside the agent's network namespace by the tests.

Prints one JSON line: what the client saw (an error message, the refusal reason, or
that the log host accepted it).
"""

from __future__ import annotations

import json
import socket
import ssl
import sys
from pathlib import Path

from forensix.agent import wire
from forensix.pki.tls import client_context


def attempt(mode: str, host: str, port: int, pki: Path) -> dict[str, object]:
    raw = socket.create_connection((host, port), timeout=5)
    if mode == "plaintext":
        raw.sendall(b"H\x00\x00\x00\x10" + b'{"host":"alpha"}')
        try:
            got = raw.recv(100)
        except OSError as e:
            return {"refused": True, "seen": f"{type(e).__name__}: {e}"}
        return {"refused": got == b"", "seen": repr(got)}
    hosts = pki / "hosts"
    if mode == "nocert":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_verify_locations(str(hosts / "alpha" / "ca.crt"))
        claim = "alpha"
    else:
        cert_host = {"othercert": "beta", "revoked": "gamma", "valid": "alpha"}[mode]
        b = hosts / cert_host
        ctx = client_context(b / "ca.crt", b / f"{cert_host}.crt", b / f"{cert_host}.key")
        claim = "alpha" if mode == "othercert" else cert_host
    try:
        s = ctx.wrap_socket(raw, server_hostname="forensix-server")
        wire.send(s, b"H", {"host": claim, "stream": "cd" * 16, "agent_start_ns": 1})
        kind, body = wire.recv(s)
    except (OSError, ssl.SSLError, wire.WireClosed) as e:
        return {"refused": True, "seen": f"{type(e).__name__}: {e}"}
    if kind == b"E":
        return {"refused": True, "seen": body.decode()}
    return {"refused": False, "seen": kind.decode()}


if __name__ == "__main__":
    mode, addr, pki = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    h, _, p = addr.rpartition(":")
    print(json.dumps(attempt(mode, h, int(p), pki)))
