"""A file's whole life in the graph: path-resolved calls joined by name and time, deleted and
replaced files as detection points, system-changing writes never hidden as noise.

Histories are built with the sensor's shape of path-resolved calls (unlink, rename,
symlink, chmod, setxattr, chown by path: ``file_path_resolution = directory`` and no inode).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from forensix.analysis.graph import Graph, TrackOptions, backtrack, forward, node_key
from forensix.analysis.noise import FILTER_NAMES
from forensix.analysis.report import build_report
from forensix.analysis.targets import Target
from forensix.cli.main import cli
from forensix.render.graph import render_graph
from forensix.store.base import Reader
from forensix.store.embedded import open_reader, open_writer
from forensix.testing.generator import StoreBuilder

_BY_PATH = {"file_inode": None, "file_device": None, "file_type": None, "file_path_resolution": "directory"}


def _by_path(b: StoreBuilder, p: Any, t: float, action: str, path: str, **kw: Any) -> None:
    b.file_op(p, t, action, path, **(_BY_PATH | kw))


def _write(tmp_path: Path, b: StoreBuilder) -> tuple[Reader, str]:
    path = tmp_path / "s.duckdb"
    w = open_writer(path)
    b.write(w)
    w.close()
    return open_reader(path), str(path)


def _procs(g: Graph) -> set[str]:
    return {n.attrs.get("executable", "") for n in g.node_by("process")}


def _history() -> tuple[StoreBuilder, dict[str, Any]]:
    b = StoreBuilder()
    init = b.spawn(None, 1, 0, "/sbin/init")
    sh = b.spawn(init, 100, 1, "/usr/bin/bash", ["-bash"])
    p: dict[str, Any] = {"sh": sh}
    # ~/.bash_history written by the shell, then removed by rm
    b.file_op(sh, 2, "open", "/root/.bash_history", file_flags=0o1101, file_inode=700, file_generation=7)
    b.flow(sh, 2.1, 2.2, "/root/.bash_history", write=300, inode=700, generation=7)
    p["rm"] = rm = b.spawn(sh, 101, 3, "/usr/bin/rm", ["rm", "/root/.bash_history"])
    _by_path(b, rm, 3.5, "unlink", "/root/.bash_history")
    # another history swapped for a symlink to /dev/null: ln makes a link and renames it over
    b.file_op(sh, 4, "open", "/home/u/.bash_history", file_flags=0o1101, file_inode=701, file_generation=8)
    b.flow(sh, 4.1, 4.2, "/home/u/.bash_history", write=100, inode=701, generation=8)
    p["ln"] = ln = b.spawn(sh, 102, 5, "/usr/bin/ln", ["ln", "-sf", "/dev/null", "/home/u/.bash_history"])
    _by_path(b, ln, 5.1, "symlink", "/home/u/.bash_historyXyZ")
    _by_path(b, ln, 5.2, "rename", "/home/u/.bash_historyXyZ", file_target_path="/home/u/.bash_history")
    # a copied binary made setuid and given a capability, by path
    p["cp"] = cp = b.spawn(sh, 103, 6, "/usr/bin/cp", ["cp", "/bin/true", "/tmp/suid"])
    b.file_op(cp, 6.1, "open", "/tmp/suid", file_flags=0o1101, file_inode=702, file_generation=9)
    b.flow(cp, 6.2, 6.3, "/tmp/suid", write=1000, inode=702, generation=9)
    p["chmod"] = chmod = b.spawn(sh, 104, 7, "/usr/bin/chmod", ["chmod", "u+s", "/tmp/suid"])
    _by_path(b, chmod, 7.1, "chmod", "/tmp/suid", file_mode=0o4755)
    p["setcap"] = setcap = b.spawn(sh, 105, 8, "/usr/sbin/setcap", ["setcap", "cap_net_raw+ep", "/tmp/suid"])
    _by_path(b, setcap, 8.1, "setxattr", "/tmp/suid")
    # ASLR turned off through /proc/sys, and /proc read by everyone
    p["sysctl"] = sysctl = b.spawn(sh, 106, 9, "/usr/sbin/sysctl", ["sysctl", "-w", "kernel.randomize_va_space=0"])
    b.read_file(sysctl, 9.05, "/proc/self/status")
    b.write_file(sysctl, 9.1, "/proc/sys/kernel/randomize_va_space", nbytes=2, create=False)
    return b, p


def test_a_deleted_file_is_still_a_detection_point(tmp_path: Path) -> None:
    b, p = _history()
    r, _ = _write(tmp_path, b)
    g = backtrack(r, Target("file", path="/root/.bash_history"))
    assert {"/usr/bin/rm", "/usr/bin/bash"} <= _procs(g)
    assert g.life is not None and g.life["ended_by"] == "unlink" and g.life["file_inode"] == 700
    unlink = next(e for e in g.edges if e.kind == "unlink")
    assert unlink.name_matched and unlink.src == node_key("process", p["rm"].entity_id)
    # the shell that forked rm is its origin
    assert any(e.kind == "fork" and e.dst == unlink.src for e in g.edges)
    rep = build_report(r, Target("file", path="/root/.bash_history"))
    assert rep.actor == p["rm"].entity_id
    assert [a[2] for a in rep.actors if a[0] == p["rm"].entity_id] == [["unlink (by name)"]]


def test_a_file_replaced_by_a_symlink_swap(tmp_path: Path) -> None:
    b, p = _history()
    r, _ = _write(tmp_path, b)
    # default: the last life that had the name, the symlink ln put there
    g = backtrack(r, Target("file", path="/home/u/.bash_history"))
    assert g.life is not None and (g.life["life"], g.life["lives"]) == (2, 2) and "file_inode" not in g.life
    assert "/usr/bin/ln" in _procs(g) and "/usr/bin/bash" in _procs(g)
    # --at: the file the shell wrote, replaced by ln's rename over it
    g1 = backtrack(r, Target("file", path="/home/u/.bash_history"), TrackOptions(at=b.t(4.5)))
    assert g1.life is not None and g1.life["ended_by"] == "renamed-over" and g1.life["file_inode"] == 701
    over = [e for e in g1.edges if e.kind == "renamed-over"]
    assert len(over) == 1 and over[0].name_matched and over[0].src == node_key("process", p["ln"].entity_id)
    out = io.StringIO()
    render_graph(g1, "json", out)
    doc = json.loads(out.getvalue())
    assert doc["life"]["life"] == 1 and doc["other_lives"][0]["life"] == 2
    assert [e["kind"] for e in doc["edges"] if e["name_matched"]] == ["renamed-over"]


def test_changes_by_path_are_on_the_file_node(tmp_path: Path) -> None:
    b, p = _history()
    r, _ = _write(tmp_path, b)
    g = backtrack(r, Target("file", path="/tmp/suid"))
    kinds = {(g.nodes[e.src].attrs.get("executable"), e.kind, e.name_matched) for e in g.edges}
    assert {("/usr/bin/chmod", "chmod", True), ("/usr/sbin/setcap", "setxattr", True),
            ("/usr/bin/cp", "write", False)} <= kinds
    assert len(g.node_by("file")) == 1  # one life: the by-path changes joined the inode's node
    # forward from chmod finds the file it made setuid, by name
    f = forward(r, Target("process", entity=p["chmod"].entity_id))
    assert [n.attrs.get("inode") for n in f.node_by("file")] == [702]
    rep = build_report(r, Target("file", path="/tmp/suid"))
    whats = set(rep.persistence.column("what").to_pylist())
    assert {"setuid/setgid bit", "extended attribute (file capability, ACL, label)"} <= whats


def test_system_writes_are_never_noise_and_hidden_edges_are_counted(tmp_path: Path) -> None:
    b, p = _history()
    r, _ = _write(tmp_path, b)
    g = backtrack(r, Target("file", path="/proc/sys/kernel/randomize_va_space"))
    assert "/usr/sbin/sysctl" in _procs(g) and "/usr/bin/bash" in _procs(g)
    # backward from sysctl, its read of /proc/self/status is noise, and is counted
    s = backtrack(r, Target("process", entity=p["sysctl"].entity_id))
    assert "/proc/self/status" not in {n.label for n in s.nodes.values()}
    assert s.hidden.get("pseudo", 0) >= 1
    out = io.StringIO()
    render_graph(s, "text", out)
    assert "--no-filter pseudo" in out.getvalue()
    shown = backtrack(r, Target("process", entity=p["sysctl"].entity_id),
                      TrackOptions(filters=tuple(x for x in FILTER_NAMES if x != "pseudo")))
    assert "/proc/self/status" in {n.label for n in shown.nodes.values()}


def test_an_empty_answer_exits_3(tmp_path: Path) -> None:
    b, _ = _history()
    _, store = _write(tmp_path, b)
    run = CliRunner().invoke(cli, ["backtrack", "--store", store, "/tmp/suid", "--until", str(b.t(6.0))])
    assert run.exit_code == 3, run.output
    assert "nothing recorded is linked to file /tmp/suid" in run.output
    run = CliRunner().invoke(cli, ["backtrack", "--store", store, "/tmp/other/suid"])
    assert run.exit_code == 3
    assert "near: same name elsewhere: /tmp/suid" in run.output
    run = CliRunner().invoke(cli, ["report", "--store", store, "/root/.bash_history"])
    assert run.exit_code == 0 and "| Acting process | rm [101]" in run.output
    assert "| — |" not in run.output


def test_a_path_on_a_log_hosts_store_is_one_life_per_host(tmp_path: Path) -> None:
    """Two hosts each remove their own history: backtrack from the path reaches both rms."""
    path = tmp_path / "s.duckdb"
    w = open_writer(path)
    rms = []
    for host in ("web01", "db01"):
        b = StoreBuilder(host_id=f"id-{host}", host_name=host, boot_id=f"boot-{host}")
        init = b.spawn(None, 1, 0, "/sbin/init")
        sh = b.spawn(init, 100, 1, "/usr/bin/bash", ["-bash"])
        b.file_op(sh, 2, "open", "/root/.bash_history", file_flags=0o1101, file_inode=700, file_generation=7)
        rms.append(rm := b.spawn(sh, 101, 3, "/usr/bin/rm", ["rm", "/root/.bash_history"]))
        _by_path(b, rm, 3.5, "unlink", "/root/.bash_history")
        b.write(w)
    w.close()
    g = backtrack(open_reader(path), Target("file", path="/root/.bash_history"))
    assert all(node_key("process", rm.entity_id) in g.nodes for rm in rms)
    assert len([k for k in g.roots if k.startswith("f:")]) == 2
    assert g.life is not None and [o["host_id"] for o in g.other_lives] != [g.life["host_id"]]
