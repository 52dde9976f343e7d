"""Garfinkel's traps: the record shows the file the kernel opened, not the string passed."""

from __future__ import annotations

import os
import textwrap
import uuid
from pathlib import Path

import pytest

from .conftest import record, rows, subtree

pytestmark = pytest.mark.bpf

SCRIPT = textwrap.dedent(
    """
    import os, sys
    d = sys.argv[1]
    os.chdir(d)
    # 1. a symlink swapped between the check and the open (TOCTOU)
    open("benign.txt", "w").write("benign")
    open("secret.txt", "w").write("secret")
    os.symlink("benign.txt", "link")
    os.stat("link")                                   # the check sees benign.txt
    os.symlink("secret.txt", "link.new"); os.replace("link.new", "link")
    open("link").read()                               # the open gets secret.txt
    # 2. a relative path used after its directory was moved
    os.mkdir("dir1"); os.chdir("dir1"); os.rename(d + "/dir1", d + "/dir2")
    open("moved.txt", "w").write("x")                 # lands in dir2
    os.chdir(d)
    # 3. /proc/self/root/... is the root, seen through a magic link
    open("/proc/self/root" + d + "/benign.txt").read()
    # 4. a/../b where a is a symlink: '..' is taken from where a points, not lexically
    os.makedirs("elsewhere/deep"); os.makedirs("elsewhere/b"); os.makedirs("b")
    open("elsewhere/b/target.txt", "w").write("real")
    open("b/target.txt", "w").write("decoy")
    os.symlink(d + "/elsewhere/deep", "a")
    open("a/../b/target.txt").read()
    """
)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("truth")
    os.chmod(d, 0o755)
    work = d / "w"
    work.mkdir()
    script = d / "traps.py"
    script.write_text(SCRIPT)
    marker = f"marker-{uuid.uuid4().hex[:8]}"
    res = record(d / "s.duckdb", "python3", str(script), str(work), marker)
    assert res.returncode == 0, res.stderr
    st, ids = subtree(d / "s.duckdb", marker)
    opens = rows(st, "SELECT file_path, file_path_raw, file_inode FROM events WHERE event_action = 'open' "
                     "AND process_entity_id IN (SELECT unnest($ids)) ORDER BY ts", ids=ids)
    return {"work": work, "opens": opens}


def _opened(rec: dict, raw: str) -> list[str]:
    return [o["file_path"] for o in rec["opens"] if o["file_path_raw"] == raw]


def test_symlink_swapped_after_the_check(recorded: dict) -> None:
    assert _opened(recorded, "link") == [f"{recorded['work']}/secret.txt"]


def test_relative_path_after_directory_moved(recorded: dict) -> None:
    assert _opened(recorded, "moved.txt") == [f"{recorded['work']}/dir2/moved.txt"]


def test_proc_self_root(recorded: dict) -> None:
    w = recorded["work"]
    assert _opened(recorded, f"/proc/self/root{w}/benign.txt") == [f"{w}/benign.txt"]


def test_dot_dot_through_a_symlink(recorded: dict) -> None:
    w = recorded["work"]
    assert _opened(recorded, "a/../b/target.txt") == [f"{w}/elsewhere/b/target.txt"]
    assert Path(f"{w}/elsewhere/b/target.txt").read_text() == "real"
