"""The incident report: entry point, persistence, files, peers, and its Markdown/HTML."""

from __future__ import annotations

import io
from pathlib import Path

from forensix.analysis.report import build_report
from forensix.analysis.targets import Target
from forensix.render.report import render_html, render_markdown
from forensix.store.embedded import open_reader, open_writer
from forensix.testing.generator import StoreBuilder


def test_report_finds_entry_point_persistence_and_peers(tmp_path: Path) -> None:
    b = StoreBuilder()
    init = b.spawn(None, 1, 0, "/usr/lib/systemd/systemd", ["/sbin/init"])
    sshd = b.spawn(init, 500, 0.5, "/usr/sbin/sshd")
    b.accept(sshd, 9.99, ("10.0.0.5", 22), ("198.51.100.7", 50123))
    conn = b.spawn(sshd, 600, 10, "/usr/sbin/sshd", ["sshd: eve [priv]"])
    sh = b.spawn(conn, 601, 11, "/usr/bin/bash", ["-bash"], uid=1002, auid=1002, sid=12, tty="pts/3")
    sudo = b.spawn(sh, 602, 12, "/usr/bin/sudo", ["sudo", "-s"])
    b.setuid(sudo, 12.1, 0)
    root = b.spawn(sudo, 603, 13, "/usr/bin/bash", ["bash"], uid=0)
    b.write_file(root, 14, "/etc/cron.d/backdoor")
    b.write_file(root, 15, "/root/.ssh/authorized_keys", create=False)
    b.write_file(root, 16, "/etc/ld.so.preload")
    b.write_file(root, 17, "/etc/systemd/system/evil.service")
    b.write_file(root, 18, "/home/eve/.bashrc", create=False)
    b.write_file(root, 19, "/tmp/.sh")
    b.file_op(root, 20, "chmod", "/tmp/.sh", file_mode=0o4755)
    b.connect(root, 21, ("10.0.0.5", 41000), ("203.0.113.9", 443))
    b.file_op(root, 22, "unlink", "/var/log/auth.log")
    path = tmp_path / "s.duckdb"
    w = open_writer(path)
    b.write(w)
    w.close()
    r = open_reader(path)

    rep = build_report(r, Target("file", path="/etc/ld.so.preload"), names=lambda u: {1002: "eve"})
    assert rep.actor == root.entity_id
    assert rep.session is not None
    assert rep.session["kind"] == "sshd" and rep.session["user_id"] == 1002
    assert (rep.session["source_ip"], rep.session["source_port"]) == ("198.51.100.7", 50123)
    assert rep.session["transitions"] == ["sudo[602]"]
    what = {(x["what"], x["file_path"]) for x in rep.persistence.to_pylist()}
    assert {("cron", "/etc/cron.d/backdoor"), ("ssh authorized_keys", "/root/.ssh/authorized_keys"),
            ("ld.so.preload", "/etc/ld.so.preload"), ("systemd unit", "/etc/systemd/system/evil.service"),
            ("shell rc file", "/home/eve/.bashrc"), ("setuid/setgid bit", "/tmp/.sh")} <= what
    assert "/var/log/auth.log" in rep.files_deleted.column("file_path").to_pylist()
    assert "/tmp/.sh" in rep.files_written.column("file_path").to_pylist()
    assert rep.network.to_pylist()[0]["peer_ip"] == "203.0.113.9"
    assert rep.impact is not None and any(n.label == "/etc/cron.d/backdoor" for n in rep.impact.nodes.values())

    md = io.StringIO()
    render_markdown(rep, md)
    text = md.getvalue()
    for needle in ("ssh from 198.51.100.7:50123", "| eve(1002) |", "sudo[602]", "| ld.so.preload |",
                   "```dot", "## Impact"):
        assert needle in text, needle
    html = io.StringIO()
    render_html(rep, html)
    assert "<svg" in html.getvalue() and "setuid/setgid bit" in html.getvalue()
