"""The per-CPU slot caches in front of the flow and re-open maps lose and misattribute
nothing: counts and bytes are exact per (process, file) across the agent's bank flips, a
reused descriptor counts for its new file, a name unlinked and made again is another edge,
files beyond the slots' room are given up to the hash map and still counted, two threads'
writes to one file add up, and a file's re-opens are counted once each."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from .conftest import record, rows, subtree

pytestmark = pytest.mark.bpf


def test_slot_caches_keep_every_count_exact(tmp_path: Path) -> None:
    marker = f"marker-{uuid.uuid4().hex[:8]}"
    work = tmp_path / "w"
    work.mkdir()
    res = record(tmp_path / "s.duckdb", "python3", str(Path(__file__).with_name("slot_case.py")), str(work), marker,
                 timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    st, ids = subtree(tmp_path / "s.duckdb", marker)
    edges = rows(st, """SELECT file_path, file_inode, file_generation, sum(read_count) AS rc,
                               sum(write_count) AS wc, sum(write_bytes) AS wb, count(*) AS n, min(fd) AS fd
                        FROM flows WHERE entity_id IN (SELECT unnest($ids)) AND starts_with(file_path, $d)
                        GROUP BY ALL""", ids=ids, d=str(work))
    by_path: dict[str, list[dict]] = {}
    for e in edges:
        by_path.setdefault(e["file_path"], []).append(e)

    def one(name: str) -> dict:
        got = by_path.get(str(work / name), [])
        assert len(got) == 1, (name, got)
        return got[0]

    # a reused descriptor: b's writes are b's, a's stay 3 (and a's re-opens read nothing)
    assert (one("a.txt")["wc"], one("a.txt")["wb"]) == (3, 6)
    assert (one("b.txt")["wc"], one("b.txt")["wb"]) == (5, 25)
    assert one("b.txt")["n"] >= 2, "b's writes did not straddle a flush: the bank flip was not crossed"
    # one name, two files: two edges, each with its own count
    first, second = (int(x) for x in (work / "inodes").read_text().split())
    again = sorted(((e["file_inode"], e["file_generation"], e["wc"]) for e in edges if e["file_inode"] in (first, second)
                    and e["file_path"] in (str(work / "again.txt"), None)), key=lambda x: x[2])
    assert [c for *_, c in again] == [2, 4], again
    assert again[0][:2] != again[1][:2], again
    # more files than slots: every one counted exactly
    wrong = {k: by_path.get(str(work / f"m{k}")) for k in range(1500)
             if [e["wc"] for e in by_path.get(str(work / f"m{k}"), [])] != [k % 4 + 1]}
    assert not wrong, f"{len(wrong)} of 1500 files miscounted, e.g. {list(wrong.items())[:3]}"
    # two threads, 2000 one-byte writes each
    assert (one("threads.txt")["wc"], one("threads.txt")["wb"]) == (4000, 4000)
    # re-opens of a.txt: each of the 300 read-only opens is an open record or counted once
    opens = rows(st, """SELECT coalesce(sum(coalesce(event_count, 1)), 0) AS n FROM events
                        WHERE event_action = 'open' AND process_entity_id IN (SELECT unnest($ids))
                          AND file_path = $p AND file_flags & 3 = 0""", ids=ids, p=str(work / "a.txt"))
    assert opens[0]["n"] == 300, opens
