"""An inode number freed by a deleted file names the next file created, often at once:
the kernel's aggregated rows (flow edges, re-open counts) carry inode numbers only, so the
decoder names them as their file was named when they began, not as the number names a file
at the flush. (Found when a `setpriv` that read /etc/passwd was shown reading /etc/shadow:
useradd had replaced both files, and the new /etc/shadow took the old passwd's inode.)"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

from forensix.analysis.filehistory import file_history
from forensix.store.embedded import DuckDBStore

from .conftest import record, rows

pytestmark = pytest.mark.bpf

WORK = """
import os, sys, time
d, mark = sys.argv[1], sys.argv[2]
old = os.path.join(d, "passwd-old")
with open(old, "w") as f:
    f.write("x" * 1000)
time.sleep(1.5)  # the writer's edge is flushed: what follows falls in one flush window
pid = os.fork()
if pid == 0:
    for _ in range(2):  # an open record, a re-open count and a read edge, on the old file
        with open(old) as f:
            f.read()
    os._exit(0)
os.waitpid(pid, 0)
ino = os.stat(old).st_ino
os.unlink(old)
new = "-"
for i in range(200):  # ext4 hands a freed inode to a next file of the directory, mostly the next
    path = os.path.join(d, f"shadow-{i}")
    with open(path, "w") as f:
        f.write("y")
    if os.stat(path).st_ino == ino:
        new = path
        break
print(pid, ino, new, flush=True)
time.sleep(1.5)
"""


@pytest.fixture(scope="module")
def reused(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int, int, str]:
    """The recorded store, its directory, the reader's pid, the inode number and the new file."""
    tmp_path = tmp_path_factory.mktemp("reuse")
    d = tmp_path / "etc"
    d.mkdir()
    os.chmod(tmp_path, 0o755)
    (tmp_path / "work.py").write_text(WORK)
    store = tmp_path / "s.duckdb"
    res = record(store, sys.executable, str(tmp_path / "work.py"), str(d), f"m-{uuid.uuid4().hex[:8]}")
    assert res.returncode == 0, res.stderr
    pid, number, new_file = res.stdout.split()
    assert new_file != "-", "the filesystem did not reuse the inode for 200 new files: this run proves nothing"
    return store, d, int(pid), int(number), new_file


def test_edges_keep_the_name_their_file_had_when_its_inode_is_reused(reused: tuple[Path, Path, int, int, str]) -> None:
    store, d, reader, ino, new_file = reused
    st = DuckDBStore(store, read_only=True)
    got = rows(st, "SELECT event_action, file_path, event_count FROM events WHERE process_pid = $p "
                   "AND file_inode = $i ORDER BY ts", p=reader, i=ino)
    kinds = {(r["event_action"], r["event_count"] is not None) for r in got}
    # the open record (kernel-resolved), the re-open count and the read edge (both named
    # by the decoder from the inode)
    assert {("open", False), ("open", True), ("flow", False)} <= kinds, got
    assert {r["file_path"] for r in got} == {str(d / "passwd-old")}, got
    # the new file's own rows still carry its own name
    new = rows(st, "SELECT DISTINCT file_path FROM events WHERE file_inode = $i AND process_pid <> $p "
                   "AND event_action IN ('open', 'flow') AND ts > (SELECT max(ts) FROM events WHERE process_pid = $p)",
               i=ino, p=reader)
    assert {r["file_path"] for r in new} == {new_file}, new


def test_file_history_keeps_to_the_life_of_the_file_not_of_its_inode_number(
        reused: tuple[Path, Path, int, int, str]) -> None:
    # the kernel's i_generation on every row: the old file's open, re-open count and read edge
    # carry one, the new file's rows another; `forensix file` shows each file its own story
    store, d, reader, ino, new_file = reused
    old = str(d / "passwd-old")
    st = DuckDBStore(store, read_only=True)
    gens = rows(st, "SELECT file_path, event_action, event_count IS NOT NULL AS summary, file_generation AS g "
                    "FROM events WHERE file_inode = $i AND event_action IN ('open', 'flow')", i=ino)
    by_path: dict[str, set[int]] = {}
    for r in gens:  # every row named, an edge whose open was still in the ring at the flush too
        by_path.setdefault(r["file_path"], set()).add(r["g"])
    assert set(by_path) == {old, new_file}, gens
    assert len(by_path[old]) == 1 and len(by_path[new_file]) == 1, gens  # open, count and edge agree
    assert by_path[old] != by_path[new_file] and 0 not in by_path[old] | by_path[new_file], gens
    assert {(r["event_action"], r["summary"]) for r in gens if r["file_path"] == old} >= {
        ("open", False), ("open", True), ("flow", False)}, gens
    new_story = file_history(st, new_file).to_pylist()
    old_story = file_history(st, old).to_pylist()
    assert {r["file_path"] for r in new_story} == {new_file}, new_story
    assert new_story[0]["action"] == "created/opened O_CREAT" and "wrote" in {r["action"] for r in new_story}
    assert {r["file_path"] for r in old_story} == {old}, old_story
    acts = [(r["action"], r["process_pid"]) for r in old_story]
    assert ("read", reader) in acts and acts[-1][0] == "deleted", acts
