"""The CLI's text graph and the HTML report are compact by default (analysis.graph_compact),
on a real recording: python's http.server serves a script, curl downloads it, bash runs it.

Before, ``forensix backtrack out.txt`` listed every directory of the interpreter's library
under http.server at depth 6-7 (the closing note of 2026-12-07 tried it as a user); the web
incident page already folded them. Now the text names the causal chain and counts what it
folded; ``--full`` lists every object again. The noise filters are turned off for the
counting checks, so the system files are there to fold whichever python runs the test."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from forensix.analysis.graph import TrackOptions, backtrack
from forensix.analysis.report import build_report
from forensix.analysis.targets import Target
from forensix.cli.main import cli
from forensix.render.graph import render_graph
from forensix.render.report import render_html
from forensix.store.embedded import open_reader
from forensix.testing.scenario import free_port

pytestmark = pytest.mark.bpf

CASE = Path(__file__).with_name("download_case.sh")
NO_FILTERS = ("--no-filter", "libraries", "--no-filter", "hubs")
SYSTEM = re.compile(r"(\.so(\.[\d.]+)?|/lib/python3[^ ]*|/etc/ld\.so\.cache|/usr/lib/locale/\S*)$")


@pytest.fixture(scope="module")
def rec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("compact-text")
    os.chmod(work, 0o755)
    (work / "www").mkdir()
    (work / "www" / "x.sh").write_text("echo downloaded and run\n")
    port = free_port()
    store = work / "s.duckdb"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    # run as a login (loginuid written, as pam_loginuid does): the report's session is the case's
    login = f"echo 4545 > /proc/self/loginuid && exec bash {CASE} {work} {port}"
    r = subprocess.run([sys.executable, "-m", "forensix", "record", "-q", "--no-rules", "--store", str(store),
                        "--", "sh", "-c", login],
                       check=False, capture_output=True, text=True, timeout=180, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (work / "out.txt").read_text() == "downloaded and run\n"
    return {"store": str(store), "work": work, "port": port}


def _cli(rec: dict[str, Any], *args: str) -> str:
    r = CliRunner().invoke(cli, [args[0], "--store", rec["store"], *args[1:]])
    assert r.exit_code == 0, r.output
    return r.stdout


def _objects(text: str) -> list[str]:
    """The lines of the text's object list."""
    part = text.split("\nobjects:\n", 1)[1].split("\nedges, in time order:\n", 1)[0]
    return [x.strip() for x in part.splitlines() if x.strip()]


def test_the_text_tree_names_the_chain(rec: dict[str, Any]) -> None:
    out = _cli(rec, "backtrack", str(rec["work"] / "out.txt"))
    objs = "\n".join(_objects(out))
    for what in (f"{rec['work']}/out.txt", "bash got.sh", f"{rec['work']}/got.sh", "curl -s -o got.sh",
                 f"http.server {rec['port']}", f"{rec['work']}/www/x.sh"):
        assert what in objs, (what, objs)
    conn = r"connection 127\.0\.0\.1:\d+ <-> 127\.0\.0\.1:\d+"
    assert [x for x in _objects(out) if re.search(conn, x) and f":{rec['port']}" in x], objs
    assert not [x for x in _objects(out) if re.search(r"/lib/python3\.\d+/", x)], objs  # no stdlib directories


def test_system_files_are_counted_not_listed(rec: dict[str, Any]) -> None:
    target = str(rec["work"] / "out.txt")
    small = _cli(rec, "backtrack", target, *NO_FILTERS)
    # --full is the whole graph's text (the CLI's flag: test_analysis_cli); one walk less here
    g = backtrack(open_reader(rec["store"]), Target("file", path=target), TrackOptions(filters=("pseudo", "servers")))
    buf = io.StringIO()
    render_graph(g, "text", buf)
    full = buf.getvalue()
    listed = [x for x in _objects(full) if x.split()[1] == "file" and SYSTEM.search(x)]
    assert len(listed) >= 10, _objects(full)  # libc, the loader cache, python's modules ...
    groups = [x for x in _objects(small) if x.split()[1] == "group"]
    system = [x for x in groups if "system files read:" in x]
    assert len(system) == 1, groups
    count = int(re.search(r"\] group\s+(\d+) system files read", system[0]).group(1))  # type: ignore[union-attr]
    parts = {k: int(v) for v, k in [p.split()[::-1] for p in system[0].split("read: ", 1)[1].split(", ")]}
    assert count == sum(parts.values()) >= len(listed) and parts.get("libraries", 0) >= 5, system[0]
    assert not [x for x in _objects(small) if x.split()[1] == "file" and SYSTEM.search(x)], _objects(small)
    # what the header says: drawn of how many, folded into how many groups
    m = re.search(r": (\d+) of (\d+) objects drawn, (\d+) folded into (\d+) counted group", small)
    assert m, small.splitlines()[0]
    drawn, total, folded, ngroups = map(int, m.groups())
    assert total == len(_objects(full)) == drawn + folded and ngroups == len(groups)
    assert len(_objects(small)) == drawn + ngroups <= 44 < total
    assert "objects drawn" not in full.splitlines()[0]


def test_the_report_draws_the_compact_graph(rec: dict[str, Any]) -> None:
    """One report built (its walks are the cost), drawn compact and --full."""
    from dataclasses import replace

    rep = build_report(open_reader(rec["store"]), Target("file", path=str(rec["work"] / "out.txt")),
                       opts=TrackOptions(filters=("pseudo", "servers")))
    html, full = io.StringIO(), io.StringIO()
    render_html(rep, html)
    render_html(replace(rep, full=True), full)
    assert "<svg" in html.getvalue() and "folded: " in html.getvalue()
    assert "system files read: libraries" in html.getvalue() and "folded: " not in full.getvalue()
    svg_files = set(re.findall(r"<text[^>]*>([^<]*\.so[.\d]*)</text>", full.getvalue()))
    assert svg_files and not svg_files & set(re.findall(r"<text[^>]*>([^<]*)</text>", html.getvalue()))
    assert rep.session is not None and rep.session["user_id"] == 4545  # the case's login, not the host's


def test_both_ends_bytes_on_the_connection(rec: dict[str, Any]) -> None:
    """Backward from the downloaded script: the server's reply (its write into the connection)
    and curl's request are drawn, the bytes each end read equal to what the other wrote."""
    r = open_reader(rec["store"])
    g = backtrack(r, Target("file", path=str(rec["work"] / "got.sh")))
    (conn,) = [n.key for n in g.node_by("connection") if f":{rec['port']}" in n.label]
    server = [n.key for n in g.node_by("process") if (n.attrs.get("args") or [])[1:3] == ["-m", "http.server"]]
    curl = [n.key for n in g.node_by("process") if (n.attrs.get("executable") or "").endswith("/curl")]
    assert len(server) == 1 and len(curl) == 1, [n.label for n in g.node_by("process")]
    moved = {(e.src, e.kind, e.dst): e.bytes for e in g.edges}
    reply, request = moved.get((server[0], "write", conn)), moved.get((curl[0], "write", conn))
    assert reply and request, sorted((g.nodes[s].label, k, g.nodes[d].label) for s, k, d in moved)
    assert moved[(conn, "read", curl[0])] == reply  # curl read the reply: the HTTP headers and x.sh
    assert reply > len("echo downloaded and run\n") and request > len("GET /x.sh")
