"""Executed artifacts on the real kernel: kept by content, read through the process.

tests/artifacts/intruder.py runs while `forensix record` records: a binary downloaded
from a local HTTP server, started in the background and deleted at once; a program run
from a memfd; one binary run 1,000 times; a #! script; a FIFO given to bash as its
script; a binary over the size limit.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from forensix.store.embedded import DuckDBStore

pytestmark = pytest.mark.bpf

HERE = Path(__file__).parent
FORENSIX = [sys.executable, "-m", "forensix"]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if os.geteuid() != 0:
        pytest.fail("the sensor tests need root (CI runs them as root)")
    d = tmp_path_factory.mktemp("artifacts")
    store, out, work = d / "s.duckdb", d / "out.json", d / "work"
    work.mkdir()
    old = os.umask(0o022)
    try:
        r = subprocess.run([*FORENSIX, "record", "-q", "--no-rules", "--no-tty", "--artifact-max-mb", "2",
                            "--store", str(store), "--", sys.executable, str(HERE / "intruder.py"), str(work),
                            str(out)], check=False, capture_output=True, text=True, timeout=180)
    finally:
        os.umask(old)
    assert r.returncode == 0, r.stderr
    return {"store": store, "work": work, **json.loads(out.read_text())}


def forensix(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*FORENSIX, *args], check=False, capture_output=True, timeout=60)


def q(store: Path, sql: str, **params: Any) -> list[dict[str, Any]]:
    st = DuckDBStore(store, read_only=True)
    try:
        return st.query(sql, params).to_pylist()
    finally:
        st.close()


def test_deleted_download_is_preserved(recorded: dict[str, Any], tmp_path: Path) -> None:
    sha = recorded["dropped_sha"]
    assert not Path(recorded["dropped_path"]).exists()  # the intruder deleted it
    r = forensix("artifacts", "get", "--store", str(recorded["store"]), sha)
    assert r.returncode == 0, r.stderr
    assert hashlib.sha256(r.stdout).hexdigest() == sha
    # the exec event and the process image carry the hash; events --hash finds the process
    ev = q(recorded["store"], "SELECT process_executable, process_hash_sha256 FROM events WHERE event_action = 'exec' "
           "AND process_executable = $p", p=recorded["dropped_path"])
    assert ev and all(e["process_hash_sha256"] == sha for e in ev), ev
    ps = q(recorded["store"], "SELECT hash_sha256 FROM processes WHERE executable = $p AND source = 'exec'",
           p=recorded["dropped_path"])
    assert ps and ps[0]["hash_sha256"] == sha
    r = forensix("events", "--store", str(recorded["store"]), "--hash", sha, "--action", "exec", "--format", "json")
    assert r.returncode == 0 and recorded["dropped_path"].encode() in r.stdout
    out = tmp_path / "sample.bin"
    r = forensix("artifacts", "get", "--store", str(recorded["store"]), sha, "-o", str(out))
    assert r.returncode == 0 and out.stat().st_mode & 0o777 == 0o600
    assert hashlib.sha256(out.read_bytes()).hexdigest() == sha


def test_memfd_program_is_preserved(recorded: dict[str, Any]) -> None:
    rows = q(recorded["store"], "SELECT sha256, kind, source FROM artifacts WHERE process_pid = $p AND kind = 'memfd'",
             p=recorded["memfd_pid"])
    assert rows and rows[0]["sha256"] == recorded["memfd_sha"] and rows[0]["source"].endswith("/exe"), rows
    r = forensix("artifacts", "get", "--store", str(recorded["store"]), recorded["memfd_sha"])
    assert hashlib.sha256(r.stdout).hexdigest() == recorded["memfd_sha"]


def test_library_from_a_temporary_directory_is_preserved(recorded: dict[str, Any]) -> None:
    rows = q(recorded["store"], "SELECT sha256, source FROM artifacts WHERE kind = 'library' AND process_pid = $p",
             p=recorded["lib_pid"])
    assert rows and rows[0]["sha256"] == recorded["lib_sha"] and "/map_files/" in rows[0]["source"], rows


def test_thousand_runs_stored_once(recorded: dict[str, Any]) -> None:
    sha = recorded["loop_sha"]
    rows = q(recorded["store"], "SELECT count(*) AS runs, count(*) FILTER (WHERE stored) AS stored FROM artifacts "
             "WHERE sha256 = $s", s=sha)[0]
    assert rows == {"runs": 1000, "stored": 1}
    blobs = list((Path(str(recorded["store"]) + ".artifacts") / "sha256").rglob(sha))
    assert len(blobs) == 1


def test_script_preserved_and_fifo_refused(recorded: dict[str, Any]) -> None:
    rows = q(recorded["store"], "SELECT sha256 FROM artifacts WHERE kind = 'script' AND sha256 = $s",
             s=recorded["script_sha"])
    assert rows, "the #! script was not preserved"
    fifo = q(recorded["store"], "SELECT sha256, reason FROM artifacts WHERE path = $p", p=recorded["fifo"])
    assert fifo and fifo[0]["sha256"] is None and "fifo" in fifo[0]["reason"], fifo
    miss = q(recorded["store"], "SELECT message FROM events WHERE event_action = 'artifact.missing' AND file_path = $p",
             p=recorded["fifo"])
    assert miss and "fifo" in miss[0]["message"]


def test_oversized_binary_is_a_clear_record(recorded: dict[str, Any]) -> None:
    big = str(recorded["work"] / "bigbin")
    miss = q(recorded["store"], "SELECT message FROM events WHERE event_action = 'artifact.missing' AND file_path = $p",
             p=big)
    assert miss and "limit" in miss[0]["message"], miss
    summary = q(recorded["store"], "SELECT message FROM events WHERE event_action = 'artifacts'")
    assert summary and "refused by limit" in summary[-1]["message"] and "size" in summary[-1]["message"]


def test_artifacts_are_private_and_scannable(recorded: dict[str, Any], tmp_path: Path) -> None:
    root = Path(str(recorded["store"]) + ".artifacts")
    for p in [root, *root.rglob("*")]:
        assert p.stat().st_mode & 0o077 == 0, p
    rules = tmp_path / "r.yar"
    # the memfd payload is a copy of sleep: its ELF header and a string sleep carries
    rules.write_text('rule elf_binary { strings: $elf = { 7F 45 4C 46 } condition: $elf at 0 }\n')
    r = forensix("artifacts", "scan", "--store", str(recorded["store"]), "--yara", str(rules), "--format", "json")
    assert r.returncode == 0, r.stderr
    hits = {json.loads(x)["sha256"] for x in r.stdout.decode().splitlines() if x.strip()}
    assert {recorded["dropped_sha"], recorded["memfd_sha"], recorded["loop_sha"]} <= hits
    assert recorded["script_sha"] not in hits
    bad = tmp_path / "bad.yar"
    bad.write_text("rule { nope")
    r = forensix("artifacts", "scan", "--store", str(recorded["store"]), "--yara", str(bad))
    assert r.returncode == 2 and b"hint:" in r.stderr and b"Traceback" not in r.stderr


def test_sigma_hashes_rule_finds_the_dropped_binary(recorded: dict[str, Any], tmp_path: Path) -> None:
    rule = tmp_path / "dropped.yml"
    rule.write_text(f"""title: Known bad binary by hash
id: 7d1c3f0e-0f1e-4a55-9a3b-5c2f1c0e9d11
status: test
logsource:
  product: linux
  category: process_creation
detection:
  selection:
    Hashes|contains: 'SHA256={recorded["dropped_sha"].upper()}'
  condition: selection
level: high
""")
    r = forensix("hunt", str(rule), "--no-builtin", "--store", str(recorded["store"]), "--format", "json")
    assert r.returncode == 0, r.stderr
    hits = [json.loads(x) for x in r.stdout.decode().splitlines() if x.strip()]
    assert len(hits) == 1 and "Known bad binary" in json.dumps(hits[0]), hits


def test_no_tty_records_no_terminal_bytes(recorded: dict[str, Any]) -> None:
    # recorded with --no-tty while other terminals on the host were busy: the kernel kept none
    assert q(recorded["store"], "SELECT count(*) AS n FROM tty") == [{"n": 0}]
