"""A non-blocking server's accept loop: every connection once, its addresses and bytes exact.

A server on a non-blocking listening socket (asyncio, Go's netpoller, nginx with multi_accept)
accepts until accept4 fails with EAGAIN, once per wake-up. fx_exit_sock (bpf/sensor.bpf.c) now
decides from the tracepoint alone, before it copies the registers, which calls make no record:
a failed accept; a failed call other than connect. A failed connect is a record (a refused one
names the port tried, a non-blocking one is EINPROGRESS), and so is every accepted connection.
This guards that decision with exact counts: N non-blocking connects, N accepts in rounds that
each end in EAGAIN, a refused connect, and each connection's socket edges with their bytes.
"""

from __future__ import annotations

import json
import os
import textwrap
import uuid
from pathlib import Path

import pytest

from .conftest import record, rows, subtree

pytestmark = pytest.mark.bpf

ROUNDS, PER_ROUND = 6, 5
REQUEST, REPLY = 37, 1234  # bytes each way on every connection

CASE = textwrap.dedent(
    f"""
    import errno, json, select, socket, sys
    out = sys.argv[1]
    srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(64); srv.setblocking(False)
    port = srv.getsockname()[1]
    closed = socket.socket(); closed.bind(("127.0.0.1", 0)); dead = closed.getsockname()[1]; closed.close()
    refused = socket.socket()
    assert refused.connect_ex(("127.0.0.1", dead)) == errno.ECONNREFUSED
    refused.close()
    eagain, clients = 0, []
    for r in range({ROUNDS}):
        batch = {{}}
        for i in range({PER_ROUND}):
            c = socket.socket(); c.setblocking(False)
            assert c.connect_ex(("127.0.0.1", port)) in (0, errno.EINPROGRESS)
            batch[c.getsockname()[1]] = c
        select.select([srv], [], [], 5)
        got = 0
        while True:  # the accept loop of a non-blocking server: until EAGAIN
            try:
                s, _ = srv.accept()
            except BlockingIOError:
                eagain += 1
                if got == {PER_ROUND}:
                    break
                select.select([srv], [], [], 5)
                continue
            got += 1
            s.setblocking(True)
            peer = s.getpeername()[1]
            c = batch.pop(peer)
            c.setblocking(True)
            c.sendall(b"q" * {REQUEST})
            n = 0
            while n < {REQUEST}:
                n += len(s.recv(4096))
            s.sendall(b"a" * {REPLY})
            s.close()
            n = 0
            while True:
                b = c.recv(4096)
                if not b:
                    break
                n += len(b)
            assert n == {REPLY}
            clients.append(peer)
            c.close()
    json.dump({{"port": port, "dead": dead, "clients": clients, "eagain": eagain}}, open(out, "w"))
    """
)


def test_accept_loop_facts_exact(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    marker = f"marker-{uuid.uuid4().hex[:8]}"
    script = tmp_path / "case.py"
    script.write_text(CASE)
    out = tmp_path / "case.json"
    res = record(tmp_path / "s.duckdb", "python3", str(script), str(out), marker, extra=("--no-rules",))
    assert res.returncode == 0, res.stdout + res.stderr
    case = json.loads(out.read_text())
    n = ROUNDS * PER_ROUND
    assert len(case["clients"]) == n and case["eagain"] >= ROUNDS  # every round ended in EAGAIN
    st, ids = subtree(tmp_path / "s.duckdb", marker)
    net = rows(st, """SELECT event_action AS a, ret, source_port AS sp, destination_port AS dp, file_inode AS ino
                      FROM events WHERE process_entity_id IN (SELECT unnest($ids)) AND event_action IN ('accept', 'connect')""",
               ids=ids)
    accepts = [r for r in net if r["a"] == "accept"]
    # one record per connection taken, none for the EAGAINs of the loop
    assert len(accepts) == n, (len(accepts), case["eagain"])
    assert sorted(r["dp"] for r in accepts) == sorted(case["clients"])
    assert {r["sp"] for r in accepts} == {case["port"]}
    connects = [r for r in net if r["a"] == "connect" and r["dp"] == case["port"]]
    assert len(connects) == n and all(r["ret"] in (0, -115) for r in connects)
    assert sorted(r["sp"] for r in connects) == sorted(case["clients"])
    refused = [r for r in net if r["a"] == "connect" and r["dp"] == case["dead"]]
    assert len(refused) == 1 and refused[0]["ret"] == -111, refused  # ECONNREFUSED, the port tried
    # each connection's two sockets: their edges carry the bytes each way, once
    inos = [r["ino"] for r in accepts + connects]
    got = rows(st, """SELECT file_inode AS ino, sum(read_bytes) AS rb, sum(write_bytes) AS wb FROM flows
                      WHERE entity_id IN (SELECT unnest($ids)) AND file_inode IN (SELECT unnest($inos))
                      GROUP BY file_inode""", ids=ids, inos=inos)
    by = {g["ino"]: (g["rb"], g["wb"]) for g in got}
    assert {by.get(r["ino"]) for r in accepts} == {(REQUEST, REPLY)}, by
    assert {by.get(r["ino"]) for r in connects} == {(REPLY, REQUEST)}, by
