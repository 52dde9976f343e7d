"""fx_timestomp (Sigma) and forensix-timestomp-not-a-copy (a detector) split the processes
between them: what the rule leaves out by name, the detector judges by what it did."""

from __future__ import annotations

from pathlib import Path

import yaml
from rules_scenario import feed

from forensix.rules import default_detectors, load_rules
from forensix.rules.engine import LiveEngine
from forensix.rules.loader import builtin_rules_dir
from forensix.rules.timestomp import LEFT_OUT, NAMED_TIMESTOMP, PACKAGE_PATHS, TIME_BACK_NS
from forensix.store.embedded import open_reader, open_writer
from forensix.testing.generator import O_CREAT, O_WRONLY, StoreBuilder

O_EXCL = 0o200
DAY = 86400


def test_the_detector_leaves_out_what_the_rule_leaves_out() -> None:
    det = yaml.safe_load((builtin_rules_dir() / "timestomp.yml").read_text())["detection"]
    assert LEFT_OUT == (*det["keepers"]["Image|endswith"], *det["python_copies"]["Image|endswith"])
    assert PACKAGE_PATHS == tuple(det["python_packages"]["file.path|contains"])
    assert TIME_BACK_NS == det["selection"]["fx_time_back|gt"]


def _history() -> StoreBuilder:
    b = StoreBuilder()
    init = b.spawn(None, 1, 0, "/sbin/init")
    sh = b.spawn(init, 100, 1, "/usr/bin/bash")
    old = {"file_atime": b.t(-DAY * 800), "file_mtime": b.t(-DAY * 800)}

    def py(pid: int, t: float) -> object:
        return b.spawn(sh, pid, t, "/usr/bin/python3.11", ["python3", "-c", "..."])

    # raised: os.utime on a file it never wrote (/usr/bin/ssh)
    b.file_op(py(201, 10), 10.1, "utimes", "/usr/bin/ssh", **old)
    # raised: Path.touch (O_CREAT alone: touch's open) and then os.utime back
    p = py(202, 11)
    b.open(p, 11.1, "/srv/notes", O_WRONLY | O_CREAT)
    b.file_op(p, 11.2, "utimes", "/srv/notes", **old)
    # raised: cp --attributes-only -p onto an existing file (no truncate, no exclusive create)
    cp = b.spawn(sh, 203, 12, "/usr/bin/cp", ["cp", "--attributes-only", "-p", "/bin/ls", "/usr/bin/x"])
    b.file_op(cp, 12.1, "utimes", "/usr/bin/x", **old)
    # quiet: copytree's directory (mkdir, then its source's times at the end), after it
    # listed the source directory and read the file it copies
    p = py(301, 20)
    b.open(p, 20.05, "/usr/share/doc/x", 0o200000)
    b.open(p, 20.15, "/usr/share/doc/x/README", 0)
    b.file_op(p, 20.1, "mkdir", "/srv/doc")
    b.write_file(p, 20.2, "/srv/doc/README")
    b.file_op(p, 20.3, "utimes", "/srv/doc/README", **old)
    b.file_op(p, 25, "utimes", "/srv/doc", **old)
    # quiet: tar's exclusive create; set to now (times NULL); back by less than a day
    tar = b.spawn(sh, 302, 30, "/usr/bin/tar", ["tar", "xf", "a.tar"])
    b.open(tar, 30.1, "/srv/a/bin/tool", O_WRONLY | O_CREAT | O_EXCL)
    b.file_op(tar, 30.2, "utimes", "/srv/a/bin/tool", **old)
    p = py(303, 31)
    b.file_op(p, 31.1, "utimes", "/etc/hosts", syscall="utimensat", a2=0, file_atime=0, file_mtime=0)
    b.file_op(p, 31.2, "utimes", "/etc/hosts", file_atime=b.t(31 - 3600), file_mtime=b.t(31 - 3600))
    # raised: another process's copy does not excuse this one
    w = py(304, 32)
    b.write_file(w, 32.1, "/etc/motd", create=True)
    b.file_op(py(204, 33), 33.1, "utimes", "/etc/motd", **old)
    # a package's own files
    b.file_op(py(305, 34), 34.1, "utimes", "/usr/lib/python3/dist-packages/a.py", **old)
    # raised: an interpreter that wrote the file itself, having read only its own start-up
    # (modules, byte code, libraries, certificates) and its script before
    p = b.spawn(sh, 205, 40, "/usr/bin/python3.11", ["python3", "-u", "./drop.py", "x"])
    for f in ("/usr/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/python3.11/__pycache__/os.cpython-311.pyc",
              "/usr/lib/python3/dist-packages/distutils-precedence.pth", "/etc/ssl/certs/ca.pem",
              "/usr/lib/python3.11/encodings/utf_8.py", "/home/u/drop.py"):
        b.open(p, 40.05, f, 0)
    b.write_file(p, 40.1, "/usr/local/bin/helper")
    b.file_op(p, 40.2, "utimes", "/usr/local/bin/helper", **old)
    # raised: it read a file, but only after it made the one it stamps
    p = py(206, 41)
    b.write_file(p, 41.1, "/srv/late")
    b.open(p, 41.15, "/etc/hostname", 0)
    b.file_op(p, 41.2, "utimes", "/srv/late", **old)
    # quiet: shutil.copy2 (the source read, then the copy made and stamped), and a build
    # tree's file (pip's lib/python/, not the interpreter's library)
    p = py(306, 42)
    b.open(p, 42.05, "/usr/lib/python3.11/__pycache__/shutil.cpython-311.pyc", 0)
    b.open(p, 42.06, "/etc/hostname", 0)
    b.write_file(p, 42.1, "/srv/hostname.bak")
    b.file_op(p, 42.2, "utimes", "/srv/hostname.bak", **old)
    p = py(307, 43)
    b.open(p, 43.05, "/tmp/pip-target-1/lib/python/fxdemo/__init__.py", 0)
    b.write_file(p, 43.1, "/srv/site/fxdemo/__init__.py")
    b.file_op(p, 43.2, "utimes", "/srv/site/fxdemo/__init__.py", **old)
    return b


def test_backdating_a_file_the_program_did_not_make_is_raised(tmp_path: Path) -> None:
    b = _history()
    live = feed(LiveEngine(load_rules().ok, detectors=default_detectors()), b.tables())
    got = sorted(r["process_pid"] for r in live.to_pylist() if r["rule_id"] == NAMED_TIMESTOMP.rule_id)
    assert got == [201, 202, 203, 204, 205, 206]
    # fx_timestomp does not raise them too: each backdating is raised once
    assert not [r for r in live.to_pylist() if r["process_pid"] in (201, 202, 203, 204, 205, 206)
                and r["rule_id"] != NAMED_TIMESTOMP.rule_id]
    # a hunt over the store finds the same
    path = tmp_path / "s.duckdb"
    w = open_writer(path)
    b.write(w)
    w.close()
    from forensix.rules import hunt

    st = open_reader(path)
    try:
        found = hunt(st, load_rules().ok, default_detectors()).to_pylist()
        assert sorted(r["process_pid"] for r in found if r["rule_id"] == NAMED_TIMESTOMP.rule_id) == got
    finally:
        st.close()
