"""Each action of the forensic set is recorded with its key fields."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest

from .conftest import record, rows, subtree

pytestmark = pytest.mark.bpf


@pytest.fixture(scope="module")
def rec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("set")
    os.chmod(d, 0o755)
    work = d / "w"
    work.mkdir()
    marker = f"marker-{uuid.uuid4().hex[:8]}"
    res = record(d / "s.duckdb", "python3", str(Path(__file__).with_name("forensic_set.py")), str(work), marker)
    assert res.returncode == 0, res.stderr
    st, ids = subtree(d / "s.duckdb", marker)
    ev = rows(st, "SELECT * FROM events WHERE process_entity_id IN (SELECT unnest($ids)) ORDER BY ts", ids=ids)
    # when an event is missing, say whether the kernel counted a loss (a saturated host) or not (a defect)
    gaps = rows(st, "SELECT event_class, reason, sum(count)::BIGINT AS n FROM gaps GROUP BY ALL")
    return {"w": work, "ev": ev, "why": f"(loss the kernel counted in this recording: {gaps or 'none'})"}


def _one(rec: dict[str, Any], action: str, **match: Any) -> dict[str, Any]:
    got = [e for e in rec["ev"] if e["event_action"] == action and all(e.get(k) == v for k, v in match.items())]
    assert got, f"no {action} event with {match} {rec['why']}"
    return got[0]


def test_file_metadata_changes(rec: dict[str, Any]) -> None:
    f = f"{rec['w']}/f.txt"
    assert _one(rec, "chmod", file_path=f)["file_mode"] == 0o4755
    ch = _one(rec, "chown", file_path=f)
    assert (ch["file_uid"], ch["file_gid"]) == (65534, 65534)
    ut = _one(rec, "utimes", file_path=f)
    assert ut["file_mtime"] == 946684800 * 10**9 and ut["file_atime"] == 946684800 * 10**9
    _one(rec, "setxattr", file_path=f)
    _one(rec, "truncate", file_path=f)


def test_links_and_directories(rec: dict[str, Any]) -> None:
    w = rec["w"]
    ln = _one(rec, "link", file_path=f"{w}/f.txt")
    assert ln["file_target_path"] == f"{w}/hard.txt"
    sl = _one(rec, "symlink", file_path=f"{w}/soft.txt")
    assert sl["file_target_path_raw"] == "f.txt"
    _one(rec, "mkdir", file_path=f"{w}/newdir")
    _one(rec, "rmdir", file_path=f"{w}/newdir")


def test_memory(rec: dict[str, Any]) -> None:
    mm = _one(rec, "mmap", file_path=f"{rec['w']}/f.txt")
    assert mm["mem_prot"] & 0x4  # PROT_EXEC
    # a mapping is recorded when it gives the process a new right over the file (read,
    # exec, write through a shared mapping); a private writable copy writes only memory
    maps = [(e["mem_prot"], e["mem_flags"] & 0x3) for e in rec["ev"]
            if e["event_action"] == "mmap" and e["file_path"] == f"{rec['w']}/maps.bin"]
    assert maps == [(0x1, 0x2), (0x3, 0x1)], f"{maps} {rec['why']}"
    mf = _one(rec, "memfd_create", file_path_raw="fx-memfd")
    assert mf["file_path"].startswith("/memfd:fx-memfd")
    # the bytes written into the memfd are a flow edge on its inode
    assert any(e["event_action"] == "flow" and e["file_inode"] == mf["file_inode"] and e["flow_write_bytes"] == 4
               for e in rec["ev"])


def test_signals_and_ptrace(rec: dict[str, Any]) -> None:
    k = _one(rec, "kill", signal=int(signal.SIGTERM))
    sleeper = [e for e in rec["ev"] if e["event_action"] == "exec" and e["process_args"] == ["/bin/sleep", "30"]]
    assert sleeper and k["target_pid"] == sleeper[0]["process_pid"], rec["why"]
    assert k["target_entity_id"] == sleeper[0]["process_entity_id"]
    pt = [e for e in rec["ev"] if e["event_action"] == "ptrace"]
    assert pt and any(e["process_name"] == "strace" for e in pt), rec["why"]


def test_privileged_actions(rec: dict[str, Any]) -> None:
    w = rec["w"]
    assert any(e["event_action"] == "bpf" and e["process_name"] == "bpftool" for e in rec["ev"])
    mo = _one(rec, "mount", file_path=f"{w}/mnt")
    assert "fstype=tmpfs" in mo["message"] and "source=fxtmp" in mo["message"]
    _one(rec, "umount", file_path=f"{w}/mnt")
    un = _one(rec, "unshare")
    assert un["mem_flags"] & 0x40000000  # CLONE_NEWNET
    _one(rec, "chroot", file_path=f"{w}/jail")


def test_sendfile_is_a_data_flow(rec: dict[str, Any]) -> None:
    src = [e for e in rec["ev"] if e["event_action"] == "flow" and e["file_path"] == f"{rec['w']}/payload.bin"
           and e["flow_read_bytes"] == 3000]
    assert src, f"the file side of sendfile is not a read edge {rec['why']}"
    sock = [e for e in rec["ev"] if e["event_action"] == "flow" and e["file_type"] == "socket"
            and e["process_entity_id"] == src[0]["process_entity_id"] and e["flow_write_bytes"] == 3000]
    assert sock, f"the socket side of sendfile is not an edge {rec['why']}"


def test_read_only_reopens_are_counted_not_repeated(rec: dict[str, Any]) -> None:
    p = f"{rec['w']}/many.txt"
    ro = [e for e in rec["ev"] if e["event_action"] == "open" and e["file_path"] == p and not (e["file_flags"] or 0) & 3]
    full = [e for e in ro if e["event_count"] is None]
    summaries = [e for e in ro if e["event_count"] is not None]
    assert full and summaries, f"expected a full record and a summary of the repeats {rec['why']}"
    assert len(full) + sum(e["event_count"] for e in summaries) == 50  # every open accounted for
    assert all(e["event_start"] <= e["event_end"] == e["ts"] for e in summaries)


def test_a_flow_edge_carries_the_uid_that_moved_the_data(rec: dict[str, Any]) -> None:
    # the writer was root when it forked and nobody (65534) when it wrote: the edge says nobody,
    # as the kernel saw it, not the uid the process started with
    w = [e for e in rec["ev"] if e["event_action"] == "flow" and e["file_path"] == f"{rec['w']}/as-nobody.txt"
         and e["flow_write_bytes"] == 17]
    assert w, f"no write edge on as-nobody.txt {rec['why']}"
    assert w[0]["user_id"] == 65534


def test_a_reopen_after_an_exec_or_a_setuid_is_recorded_in_full(rec: dict[str, Any]) -> None:
    # one process opens a file as root twice, as nobody once, then execs cat, which opens it
    # again: only the second root open is a repeat. Counted under the first image or user,
    # cat's open would escape the rules about what cat (or nobody) reads.
    p = f"{rec['w']}/reopened.txt"
    ro = [e for e in rec["ev"] if e["event_action"] == "open" and e["file_path"] == p and not (e["file_flags"] or 0) & 3]
    full = [(e["process_name"], e["user_effective_id"]) for e in ro if e["event_count"] is None]
    assert full == [("python3", 0), ("python3", 65534), ("cat", 65534)], f"{full} {rec['why']}"
    summaries = [(e["process_name"], e["user_id"], e["user_effective_id"], e["event_count"])
                 for e in ro if e["event_count"] is not None]
    assert summaries == [("python3", 0, 0, 1)], f"{summaries} {rec['why']}"
    assert len({e["process_entity_id"] for e in ro}) == 1  # one process throughout


def test_an_exec_or_a_setuid_starts_a_new_flow_edge(rec: dict[str, Any]) -> None:
    # the same process read the file twice as root (one edge), once as nobody, then as cat:
    # each edge names the program and the user that moved the bytes
    p = f"{rec['w']}/reopened.txt"
    edges = sorted((e["process_name"], e["user_id"], e["flow_read_count"], e["flow_read_bytes"])
                   for e in rec["ev"] if e["event_action"] == "flow" and e["file_path"] == p and e["flow_read_count"])
    assert edges == [("cat", 65534, 1, 1), ("python3", 0, 2, 2), ("python3", 65534, 1, 1)], f"{edges} {rec['why']}"
