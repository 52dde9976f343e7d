"""Socket records decoded apart (``Decoder._decode_network``: only the network columns built)
give exactly the rows the full decode gives: every table, column and value, in ring order.

The records are the real sensor's, of real sockets: TCP accepts and connects (blocking,
non-blocking, refused), a UDP connect, unix stream connects and accepts, a socketpair, bind
and listen, and the flow edges of the traffic; decoded as drains of socket records only, and
as drains where they lie in runs among the other records (pipes, files, processes).
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from forensix.model.host import HostInfo
from forensix.sensor.decode import Decoder
from forensix.sensor.recorder import Recorder
from forensix.sensor.ringbuf import Drained
from forensix.testing.sinks import NullSink

pytestmark = pytest.mark.bpf

HOST = HostInfo("host-id", "host", "boot-id", "6.18")
SOCKETS = textwrap.dedent(
    """
    import os, socket, sys
    d = sys.argv[1]
    srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(128)
    port = srv.getsockname()[1]
    closed = socket.socket(); closed.bind(("127.0.0.1", 0)); dead = closed.getsockname()[1]; closed.close()
    for i in range(60):
        c = socket.socket(); c.connect(("127.0.0.1", port)); a, _ = srv.accept()
        c.sendall(b"x"); a.recv(1); a.close(); c.close()
        r = socket.socket()
        try:
            r.connect(("127.0.0.1", dead))
        except ConnectionRefusedError:
            pass
        r.close()
        nb = socket.socket(); nb.setblocking(False)
        try:
            nb.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        srv.accept()[0].close(); nb.close()
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.connect(("127.0.0.1", 9)); u.close()
        open(os.path.join(d, "f%d" % i), "w").close()
    us = socket.socket(socket.AF_UNIX); us.bind(os.path.join(d, "u.sock")); us.listen(8)
    for i in range(20):
        uc = socket.socket(socket.AF_UNIX); uc.connect(os.path.join(d, "u.sock"))
        ua, _ = us.accept(); uc.sendall(b"u"); ua.recv(1); ua.close(); uc.close()
        p, q = socket.socketpair(); p.close(); q.close()
    """
)


def _capture(tmp_path: Path) -> tuple[dict[str, Any], list[Drained]]:
    drains: list[Drained] = []

    class Capturing(Recorder):
        def poll_once(self, wait: float = 0.0) -> int:
            got = [d for d in (r.drain(max_bytes=16 << 20) for r in self.rings) if len(d)]
            if got:
                drains.append(Drained.join(got))
            return sum(len(d) for d in got)

    script = tmp_path / "sockets.py"
    script.write_text(SOCKETS)
    rec = Capturing([NullSink()])
    assert rec.run(command=[sys.executable, str(script), str(tmp_path)]) == 0
    return rec.abi, drains


def _decode(abi: dict[str, Any], drains: list[Drained], apart: bool) -> list[tuple[str, pa.Table]]:
    dec = Decoder(abi, HOST, offset_ns=10**18)
    if not apart:
        dec._network_rows = lambda f, slen: np.zeros(len(f), bool)  # type: ignore[method-assign]
    return [(name, t) for d in drains for name, t in sorted(dec.decode(d).items())]


def _arranged(dec: Decoder, drains: list[Drained]) -> list[Drained]:
    """Socket records alone, then in two runs among the rest of their drain."""
    out = []
    for d in drains:
        f = dec._gather_fixed(d.data, d.offsets)
        net = dec._network_rows(f, f["slen"].astype(np.int64))
        at, rest = np.flatnonzero(net), np.flatnonzero(~net)
        if not len(at):
            continue
        h, r = len(at) // 2, len(rest) // 2
        for order in (at, np.concatenate([rest[:r], at[:h], rest[r:], at[h:]])):
            out.append(Drained(d.data, d.offsets[order], d.lengths[order]))
    return out


def test_socket_records_decoded_apart_give_the_full_decode_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    abi, captured = _capture(tmp_path)
    drains = _arranged(Decoder(abi, HOST), captured) + captured
    apart: list[int] = []
    plain = Decoder._decode_network

    def counted(self: Decoder, *a: Any) -> pa.Table:
        t = plain(self, *a)
        apart.append(t.num_rows)
        return t

    monkeypatch.setattr(Decoder, "_decode_network", counted)
    got = _decode(abi, drains, apart=True)
    assert sum(apart) >= 2 * 300, f"the socket records were not decoded apart ({sum(apart)} rows)"
    want = _decode(abi, drains, apart=False)
    assert [n for n, _ in got] == [n for n, _ in want]
    actions = set()
    for (name, g), (_, w) in zip(got, want, strict=True):
        assert g.schema == w.schema, name
        for col in w.column_names:
            assert g[col].equals(w[col]), f"{name}.{col} differs from the full decode"
        if name == "events":
            actions |= set(w["event_action"].to_pylist())
    for action in ("accept", "connect", "bind", "listen", "socketpair"):
        assert action in actions, f"no {action} record was captured"
    outcomes = {(a, o) for d in got if d[0] == "events"
                for a, o in zip(d[1]["event_action"].to_pylist(), d[1]["event_outcome"].to_pylist())}
    assert ("connect", "failure") in outcomes and ("connect", "unknown") in outcomes
