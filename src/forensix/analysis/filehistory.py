"""The whole history of a file: who created, wrote, read, renamed, chmod-ed, executed and
deleted it, and when, followed by (device, inode) across renames and links.

The object is found by its name, then by the inodes that name had, then by the names a
rename or link gave those inodes (a few rounds), so ``mv x.sh /tmp/.y`` keeps the story.
"""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa

from forensix.analysis.targets import Target, resolve
from forensix.store.base import Reader

__all__ = ["VERBS", "FileObject", "file_history", "file_objects"]

# What happened to the file, as data: (condition over an event row, verb).
VERBS: list[tuple[str, str]] = [
    ("event_action = 'open' AND (coalesce(file_flags, 0) & 64) <> 0", "created/opened O_CREAT"),
    ("event_action = 'open' AND (coalesce(file_flags, 0) & 512) <> 0", "opened O_TRUNC"),
    ("event_action = 'open' AND (coalesce(file_flags, 0) & 3) <> 0", "opened for writing"),
    ("event_action = 'open'", "opened for reading"),
    ("event_action = 'flow' AND coalesce(flow_write_bytes, 0) > 0 AND coalesce(flow_read_bytes, 0) > 0",
     "read and wrote"),
    ("event_action = 'flow' AND coalesce(flow_write_bytes, 0) > 0", "wrote"),
    ("event_action = 'flow'", "read"),
    ("event_action = 'exec'", "executed"),
    ("event_action = 'mmap' AND (coalesce(mem_prot, 0) & 4) <> 0", "mapped executable"),
    ("event_action = 'mmap'", "mapped"),
    ("event_action = 'unlink'", "deleted"),
    ("event_action = 'rename' AND file_target_path = $path", "renamed to this name"),
    ("event_action = 'rename'", "renamed"),
    ("event_action = 'chmod'", "chmod"),
    ("event_action = 'chown'", "chown"),
    ("event_action = 'truncate'", "truncated"),
    ("event_action = 'utimes'", "changed times"),
]


def _verb_sql() -> str:
    whens = " ".join(f"WHEN {cond} THEN '{verb}'" for cond, verb in VERBS)
    return f"CASE {whens} ELSE event_action END"


def sql_strings(xs: Iterable[str]) -> str:
    """A literal SQL list of strings (quotes doubled), so DuckDB filters inside the scan."""
    return ", ".join("'" + x.replace("'", "''") + "'" for x in xs) or "NULL"


def sql_ints(xs: Iterable[int]) -> str:
    return ", ".join(str(int(x)) for x in xs) or "0"


_RENAMING = ("rename", "link")
_NOT_OBJECT = ("rename", "link", "symlink", "unlink", "rmdir", "mkdir")


FileObject = tuple[str, int, int]  # (host id, device, inode): inode numbers are per host


def file_objects(reader: Reader, path: str, rounds: int = 4) -> tuple[list[str], list[FileObject]]:
    """The names and (host, device, inode) of the objects that were ever called ``path``."""
    names: set[str] = {path}
    objs: set[FileObject] = set()
    seen_inodes: set[int] = set()
    for _ in range(rounds):
        lit = sql_strings(sorted(names))
        # two scans, each filtered inside the scan (an OR across columns is not)
        rows = reader.query(f"""
            SELECT host_id, event_action, file_device, file_inode, file_path, file_target_path FROM events
            WHERE file_path IN ({lit})
            UNION ALL
            SELECT host_id, event_action, file_device, file_inode, file_path, file_target_path FROM events
            WHERE file_target_path IN ({lit}) AND file_path NOT IN ({lit})""").to_pylist()
        before = set(names)
        for r in rows:
            ino = r["file_inode"] or 0
            if r["event_action"] in _RENAMING:
                names.update(x for x in (r["file_path"], r["file_target_path"]) if x)
                if ino and r["file_target_path"] in before:
                    objs.add((r["host_id"], r["file_device"], ino))
            elif ino and r["event_action"] not in _NOT_OBJECT and r["file_path"] in before:
                objs.add((r["host_id"], r["file_device"], ino))
        new_inodes = {i for _, _, i in objs} - seen_inodes
        if new_inodes:
            seen_inodes |= new_inodes
            t = reader.query(f"""
                SELECT file_path, file_target_path FROM events
                WHERE file_inode IN ({sql_ints(sorted(new_inodes))})
                  AND event_action IN ('rename', 'link')""")
            for a, b in zip(t.column("file_path").to_pylist(), t.column("file_target_path").to_pylist()):
                names.update(x for x in (a, b) if x)
        if names == before:
            break
    return sorted(names), sorted(objs)


_COLS = ("host_id, ts, cpu, seq, event_category, event_action, file_path, file_target_path, process_entity_id, "
         "process_pid, process_name, user_id, file_mode, file_flags, mem_prot, flow_read_bytes, "
         "flow_write_bytes, file_device, file_inode")


def file_history(reader: Reader, path: str) -> pa.Table:
    names, objs = file_objects(reader, path)
    if not objs and len(names) == 1:
        resolve(reader, Target("file", path=path))  # says clearly when nothing touched it
    inos = sql_ints(sorted({i for _, _, i in objs}))
    pairs = {f"{h}:{d}:{i}" for h, d, i in objs}
    lit = sql_strings(names)
    sql = f"""
    WITH hits AS (
        SELECT {_COLS} FROM events
        WHERE file_inode IN ({inos}) AND event_category IN ('file', 'flow', 'memory', 'process')
          AND (host_id || ':' || file_device::VARCHAR || ':' || file_inode::VARCHAR) IN (SELECT unnest($pairs))
        UNION ALL
        SELECT {_COLS} FROM (
            SELECT {_COLS} FROM events WHERE file_path IN ({lit})
            UNION ALL
            SELECT {_COLS} FROM events WHERE file_target_path IN ({lit}) AND file_path NOT IN ({lit}))
        WHERE (coalesce(file_inode, 0) = 0
               OR (host_id || ':' || file_device::VARCHAR || ':' || file_inode::VARCHAR)
                  NOT IN (SELECT unnest($pairs)))
    ),
    img AS (
        SELECT entity_id, arg_max(executable, image_seq) AS executable, arg_max(user_id, image_seq) AS uid
        FROM processes
        WHERE entity_id IN (SELECT DISTINCT process_entity_id FROM hits) GROUP BY entity_id
    )
    SELECT h.ts, {_verb_sql()} AS action, h.file_path, h.file_target_path, h.process_entity_id,
           h.process_pid, h.process_name, img.executable AS process_executable,
           coalesce(h.user_id, img.uid) AS user_id,  -- NULL on flow edges of /5 stores
           h.file_mode, h.flow_read_bytes, h.flow_write_bytes, h.file_device, h.file_inode
    FROM hits h LEFT JOIN img ON img.entity_id = h.process_entity_id
    ORDER BY h.ts, h.cpu, h.seq
    """
    return reader.query(sql, {"pairs": sorted(pairs) or [""], "path": path})
