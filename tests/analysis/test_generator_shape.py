"""forensix.testing.generator writes what the real recorder writes (compared with the flows
and network rows of tests/analysis/test_socket_nodes_bpf.py's recordings): a socket's or
pipe's flows named ``socket:[N]``/``fifo:[N]`` on sockfs/pipefs with no peer inode, the
socket inode on connect/accept, a socketpair naming both ends. The old shape (no path, a
peer inode on flows) is why a socket-node bug went unseen. And the realistic host reads
/etc/shadow only as a host does (never, here) and never renames or deletes its logs, so the
curated rules stay quiet on it but for the planted intrusion."""

from __future__ import annotations

from pathlib import Path

from forensix.rules import load_rules
from forensix.rules.hunt import hunt_rules
from forensix.store.embedded import open_reader, open_writer
from forensix.testing.generator import PIPEFS_DEV, SOCKFS_DEV, StoreBuilder, generate


def test_socket_and_pipe_rows_have_the_recorders_shape(tmp_path: Path) -> None:
    b = StoreBuilder()
    init = b.spawn(None, 1, 0, "/sbin/init")
    c = b.spawn(init, 10, 1, "/usr/bin/curl")
    b.connect(c, 2, ("127.0.0.1", 40000), ("127.0.0.1", 80), inode=700)
    b.flow(c, 2.1, 2.2, "sock", write=83, file_type="socket", inode=700)
    b.pipe(c, 3, 800)
    b.flow(c, 3.1, 3.2, "pipe", write=9, file_type="fifo", inode=800, stored_once=True)
    b.socketpair(c, 4, 901, 902)
    path = tmp_path / "s.duckdb"
    w = open_writer(path)
    b.write(w)
    w.close()
    r = open_reader(path)
    flows = r.query("SELECT file_type, file_path, file_device, file_inode FROM flows ORDER BY file_inode").to_pylist()
    assert [tuple(x.values()) for x in flows] == [("socket", "socket:[700]", SOCKFS_DEV, 700),
                                                 ("fifo", "fifo:[800]", PIPEFS_DEV, 800)]
    ev = r.query("SELECT event_category, event_action, file_inode, file_target_inode, unix_peer_inode FROM events"
                 " WHERE event_action IN ('connect', 'pipe', 'socketpair', 'flow') ORDER BY ts").to_pylist()
    assert [tuple(x.values()) for x in ev] == [
        ("network", "connect", 700, None, None), ("flow", "flow", 700, None, None),
        ("file", "pipe", 800, 800, None), ("flow", "flow", 800, None, None),  # the events view's row of a flow
        ("network", "socketpair", 901, 902, None)]


def test_the_realistic_host_raises_only_the_planted_findings(tmp_path: Path) -> None:
    path = tmp_path / "host.duckdb"
    w = open_writer(path)
    res = generate(w, 20_000, 300)
    w.close()
    names = {r.rule_id: r.name for r in load_rules().ok}
    got = hunt_rules(open_reader(path), load_rules().ok)
    by_rule: dict[str, int] = {}
    for rid in got.column("rule_id").to_pylist():
        by_rule[names.get(rid, rid)] = by_rule.get(names.get(rid, rid), 0) + 1
    assert "fx_shadow_read" not in by_rule and "fx_logs_tampered" not in by_rule, by_rule
    assert res.target_file in set(got.column("object_name").to_pylist() if "object_name" in got.column_names
                                  else []) or "fx_cron_drop" in by_rule, by_rule
