"""Hostile and broken logs: imported as far as they are valid, every skipped line counted by
file and line number, never a traceback."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forensix.imports import FORMATS, Host, Importer
from forensix.imports.rows import BadLine, Processes
from forensix.store.embedded import open_writer

FIX = Path(__file__).parent / "fixtures"
GOOD = (FIX / "auditd/go-libaudit-execve.log").read_bytes()


def _run(tmp_path: Path, fmt: str, data: bytes, name: str = "bad.log") -> tuple[object, list[dict[str, object]]]:
    p = tmp_path / name
    p.write_bytes(data)
    w = open_writer(tmp_path / f"{name}.duckdb")
    res = Importer(w, fmt, FORMATS[fmt].make, Host("h", "h")).import_file(p)
    rows = w.query("SELECT event_action, process_args, message FROM events ORDER BY ts").to_pylist()
    w.close()
    return res, rows


def test_auditd_hostile_lines_are_skipped_by_number(tmp_path: Path) -> None:
    bad = [
        b"type=EXECVE msg=audit(1.000:7): argc=2 a0=ZZ a1=\"x\"",  # 1: bad hex
        b"type=EXECVE msg=audit(1.000:8): argc=99999999999 a0=\"x\"",  # 2: absurd argc
        b"type=SYSCALL msg=audit(1.000:9): \xff\xfe arch=c000003e",  # 3: not UTF-8
        b"type=WHATEVER_NEW msg=audit(1.000:10): foo=bar",  # 4: unknown type: kept quiet, not an error
        b"type=SOCKADDR msg=audit(1.000:11): saddr=0200ZZ",  # 5: bad hex sockaddr
        b"garbage without structure",  # 6
        b"type=PATH msg=audit(1.000:12): item=0 name=2F746D702",  # 7: odd-length hex
    ]
    data = b"\n".join(bad) + b"\n" + GOOD + b"x" * (2 << 20) + b"\n" + GOOD.replace(b":59)", b":60)")[:-40]
    res, rows = _run(tmp_path, "auditd", data)
    lines = {n for n, _ in res.warnings}  # type: ignore[attr-defined]
    assert lines == {1, 2, 3, 5, 6, 7, 14}, res.warnings  # type: ignore[attr-defined]
    reasons = dict(res.warnings)  # type: ignore[attr-defined]
    assert "neither quoted nor hex" in reasons[1] and "argc" in reasons[2] and "UTF-8" in reasons[3]
    assert "1 MiB" in reasons[14]
    # the valid event between the bad lines is imported whole; the truncated one as far as it goes
    execs = [r for r in rows if r["event_action"] == "exec"]
    assert execs[0]["process_args"] == ["grep", "--color=auto", "mapping"]
    assert len(execs) == 2
    stored = [r["message"] for r in rows if r["event_action"] == "import-warning"]
    assert len(stored) == 7 and all(str(m).startswith(str(tmp_path / "bad.log") + ":") for m in stored)


def test_truncated_gzip_keeps_what_was_read(tmp_path: Path) -> None:
    gz = gzip.compress(GOOD * 50)
    res, rows = _run(tmp_path, "auditd", gz[: len(gz) * 2 // 3], "audit.log.2.gz")
    assert res.stopped is not None  # type: ignore[attr-defined]
    assert sum(1 for r in rows if r["event_action"] == "exec") >= 1


def test_laurel_and_sysmon_bad_lines(tmp_path: Path) -> None:
    good = (FIX / "laurel/record-execve.json").read_bytes().strip()
    data = b"\n".join([b"{not json", b"[1,2]", json.dumps({"ID": "x"}).encode(), good, b"\xff\xff"]) + b"\n"
    res, rows = _run(tmp_path, "laurel", data)
    assert [n for n, _ in res.warnings] == [1, 2, 3, 5]  # type: ignore[attr-defined]
    assert any(r["event_action"] == "exec" for r in rows)
    xml = (FIX / "sysmon/go-sysmon-parsing.log").read_bytes().splitlines()
    data = b"\n".join([xml[0][:300], b"x sysmon: <Event><System></Event>",
                       b'x sysmon: <!DOCTYPE a [<!ENTITY b "c">]><Event>&b;</Event>', xml[0]]) + b"\n"
    res, rows = _run(tmp_path, "sysmon", data, "syslog")
    assert [n for n, _ in res.warnings] == [1, 2, 3]  # type: ignore[attr-defined]
    assert sum(1 for r in rows if r["event_action"] == "exec") == 1


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=300) | st.sampled_from(GOOD.splitlines()), max_size=12))
def test_auditd_parser_never_crashes(lines: list[bytes]) -> None:
    """Any bytes: each line is imported or a BadLine, never another exception."""
    from forensix.imports.auditd import AuditdParser

    p = AuditdParser(Processes(Host("h", "h")))
    for i, line in enumerate(lines):
        try:
            list(p.feed(line.replace(b"\n", b" "), i + 1))
        except BadLine:
            pass
    list(p.finish())


@settings(max_examples=150, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(
                        st.sampled_from(["ID", "SYSCALL", "EXECVE", "PATH", "SOCKADDR", "CWD", "ARGV", "saddr",
                                         "syscall", "pid", "ppid", "name", "LOGIN", "PROCTITLE", "exit"]), c,
                        max_size=5), max_leaves=25))
def test_laurel_parser_never_crashes(obj: object) -> None:
    from forensix.imports.laurel import LaurelParser

    if isinstance(obj, dict):
        obj.setdefault("ID", "1.000:1")
    p = LaurelParser(Processes(Host("h", "h")))
    try:
        list(p.feed(json.dumps(obj).encode(), 1))
    except BadLine:
        pass


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**63 - 1))
def test_entity_ids_are_the_recorders(hkey: int, pid: int, start: int) -> None:
    """Imported processes get their ids from the recorder's own mix of (host, boot, pid, start)."""
    from forensix.imports.rows import fast_entity_id
    from forensix.model.identity import entity_id

    assert fast_entity_id(hkey, pid, start) == entity_id(hkey, pid, start)
