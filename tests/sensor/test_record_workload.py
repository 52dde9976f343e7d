"""`forensix record` on a scripted workload: every expected event, with the right fields.

The host is noisy (other tests, other sessions), so every assertion is made on the
workload's own process subtree, found through the recorded parentage.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from .conftest import record, rows, subtree

pytestmark = pytest.mark.bpf
WORKLOAD = Path(__file__).with_name("workload.sh")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("wl")
    os.chmod(d, 0o755)
    store = d / "store.duckdb"
    work = d / "w"
    work.mkdir()
    marker = f"marker-{uuid.uuid4().hex[:8]}"
    res = record(store, "bash", str(WORKLOAD), str(work), marker)
    assert res.returncode == 0, res.stderr
    st, ids = subtree(store, marker)
    return {"st": st, "ids": ids, "work": work, "store": store}


def _ev(rec: dict[str, Any], where: str, **params: Any) -> list[dict[str, Any]]:
    return rows(
        rec["st"],
        f"SELECT * FROM events WHERE process_entity_id IN (SELECT unnest($ids)) AND {where} ORDER BY ts",
        ids=rec["ids"], **params,
    )


def test_exec_chain_has_arguments_kernel_path_and_parent(recorded: dict[str, Any]) -> None:
    echo = _ev(recorded, "event_action = 'exec' AND list_contains(process_args, 'fx-chain-arg1')")
    assert len(echo) == 1
    e = echo[0]
    # /bin is a symlink to usr/bin on this Debian: the kernel resolved the executable
    assert e["process_executable"] == os.path.realpath("/bin/echo")
    assert e["file_path_raw"] == "/bin/echo"
    assert e["process_args"] == ["/bin/echo", "fx-chain-arg1", "fx chain arg2"]
    assert e["process_working_directory"] == str(recorded["work"])
    sh = rows(
        recorded["st"],
        "SELECT p.executable, p.args FROM processes c JOIN processes p ON p.entity_id = c.parent_entity_id "
        "WHERE c.entity_id = $e AND c.source = 'exec' ORDER BY p.image_seq DESC LIMIT 1",
        e=e["process_entity_id"],
    )
    assert sh and sh[0]["executable"] == os.path.realpath("/bin/sh")
    assert sh[0]["args"][-1].startswith("/bin/echo fx-chain-arg1")


def test_create_through_symlink_records_the_real_file(recorded: dict[str, Any]) -> None:
    w = recorded["work"]
    opens = _ev(recorded, "event_action = 'open' AND file_path = $p", p=f"{w}/real/created.txt")
    assert opens, "the create through the symlink was not recorded at the real path"
    o = opens[0]
    assert o["file_path_raw"] == f"{w}/link/created.txt"
    assert o["file_path_resolution"] == "kernel"
    assert o["file_flags"] & os.O_CREAT
    assert o["file_inode"] and o["file_type"] == "file"


def test_rename_and_unlink(recorded: dict[str, Any]) -> None:
    w = recorded["work"]
    ren = _ev(recorded, "event_action = 'rename'")
    raws = [(r["file_path_raw"], r["file_target_path_raw"]) for r in ren]
    assert (f"{w}/link/created.txt", f"{w}/link/renamed.txt") in raws
    # relative names are resolved against the kernel's cwd, which is the real directory
    rel = [r for r in ren if r["file_path_raw"] == "renamed.txt"]
    assert rel and rel[0]["file_path"] == f"{w}/real/renamed.txt"
    assert rel[0]["file_target_path"] == f"{w}/real/moved.txt"
    assert rel[0]["file_path_resolution"] == "directory"
    rm = _ev(recorded, "event_action = 'unlink' AND file_path_raw = 'moved.txt'")
    assert rm and rm[0]["file_path"] == f"{w}/real/moved.txt" and rm[0]["event_outcome"] == "success"


def test_tcp_listener_and_connection_on_loopback(recorded: dict[str, Any]) -> None:
    port = int((recorded["work"] / "port.txt").read_text())
    listen = _ev(recorded, "event_action = 'listen' AND source_port = $p", p=port)
    assert listen and listen[0]["source_ip"] == "127.0.0.1" and listen[0]["network_transport"] == "tcp"
    conn = _ev(recorded, "event_action = 'connect' AND destination_port = $p", p=port)
    assert conn and conn[0]["destination_ip"] == "127.0.0.1" and conn[0]["source_port"]
    acc = _ev(recorded, "event_action = 'accept' AND source_port = $p", p=port)
    assert acc and acc[0]["destination_port"] == conn[0]["source_port"]
    # the bytes sent show as a data-flow edge on the client's socket
    fl = _ev(recorded, "event_action = 'flow' AND process_entity_id = $e AND flow_write_bytes >= 1000",
             e=conn[0]["process_entity_id"])
    assert fl, "the 1000 bytes written to the socket are not in any flow edge"


def test_pipe_links_two_processes(recorded: dict[str, Any]) -> None:
    pipes = _ev(recorded, "event_action = 'pipe'")
    assert pipes
    inos = {p["file_inode"] for p in pipes} | {p["file_target_inode"] for p in pipes}
    # echo writes and cat reads the same pipe inode: two processes, one edge each way
    flows = _ev(recorded, "event_action = 'flow' AND file_type = 'fifo' AND file_inode IN (SELECT unnest($i))",
                i=[i for i in inos if i])
    linked = []
    for ino in inos:
        writers = {f["process_entity_id"] for f in flows if f["file_inode"] == ino and f["flow_write_bytes"]}
        readers = {f["process_entity_id"] for f in flows if f["file_inode"] == ino and f["flow_read_bytes"]}
        if writers and readers and writers.isdisjoint(readers):
            linked.append(ino)
    assert linked, "no pipe shows one process writing and another reading"


def test_setuid_change_carries_new_ids(recorded: dict[str, Any]) -> None:
    s = _ev(recorded, "event_action = 'setresuid'")
    assert s and s[0]["user_id"] == 65534 and s[0]["user_effective_id"] == 65534
    assert s[0]["event_category"] == "process"


def test_exit_code_three(recorded: dict[str, Any]) -> None:
    ex = _ev(recorded, "event_action = 'exit' AND process_exit_code = 3")
    assert len(ex) == 1 and ex[0]["process_name"] == "sh"


def test_every_process_has_one_lifecycle(recorded: dict[str, Any]) -> None:
    st = recorded["st"]
    for eid in recorded["ids"][1:]:
        forks = rows(st, "SELECT count(*) n FROM processes WHERE entity_id = $e AND source = 'fork'", e=eid)
        exits = rows(st, "SELECT count(*) n FROM events WHERE process_entity_id = $e AND event_action = 'exit'", e=eid)
        assert forks[0]["n"] == 1 and exits[0]["n"] == 1


def test_timestamps_are_utc_and_nothing_was_lost(recorded: dict[str, Any]) -> None:
    import time

    st = recorded["st"]
    t = rows(st, "SELECT min(ts) lo, max(ts) hi FROM events WHERE process_entity_id IN (SELECT unnest($ids))",
             ids=recorded["ids"])[0]
    now = time.time_ns()
    assert now - 600 * 10**9 < t["lo"] <= t["hi"] <= now
    gaps = rows(st, "SELECT coalesce(sum(count), 0) n FROM gaps")[0]["n"]
    assert gaps == 0
    syncs = rows(st, "SELECT count(*) n FROM events WHERE event_action = 'clock-sync'")[0]["n"]
    assert syncs >= 1
