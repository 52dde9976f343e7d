"""The whole history of a file: who created, wrote, read, renamed, chmod-ed, executed and
deleted it, and when, followed by (device, inode) across renames and links.

The object is found by its name, then by the inodes that name had, then by the names a
rename or link gave those inodes (a few rounds), so ``mv x.sh /tmp/.y`` keeps the story.
"""

from __future__ import annotations

import pyarrow as pa

from forensix.analysis.targets import Target, resolve
from forensix.store.base import Reader

__all__ = ["file_history", "file_objects", "VERBS"]

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


def file_objects(reader: Reader, path: str, rounds: int = 3) -> tuple[list[str], list[tuple[int, int]]]:
    """The names and (device, inode) pairs of the object that was ever called ``path``."""
    names, objs = {path}, set()
    for _ in range(rounds):
        t = reader.query(
            """SELECT DISTINCT file_device, file_inode FROM events
               WHERE file_path IN (SELECT unnest($names)) AND coalesce(file_inode, 0) <> 0
                 AND event_action NOT IN ('rename', 'link', 'symlink', 'unlink', 'rmdir', 'mkdir')
               UNION
               SELECT DISTINCT file_device, file_inode FROM events
               WHERE event_action IN ('rename', 'link') AND file_target_path IN (SELECT unnest($names))
                 AND coalesce(file_inode, 0) <> 0""", {"names": sorted(names)})
        new_objs = set(zip(t.column("file_device").to_pylist(), t.column("file_inode").to_pylist()))
        r = reader.query(
            """SELECT DISTINCT file_path, file_target_path FROM events
               WHERE event_action IN ('rename', 'link')
                 AND (file_path IN (SELECT unnest($names)) OR file_target_path IN (SELECT unnest($names))
                      OR (file_inode IN (SELECT unnest($inos))))""",
            {"names": sorted(names), "inos": sorted({i for _, i in new_objs | objs}) or [0]})
        new_names = set(names)
        for a, b in zip(r.column("file_path").to_pylist(), r.column("file_target_path").to_pylist()):
            new_names.update(x for x in (a, b) if x)
        if new_names == names and new_objs <= objs:
            break
        names, objs = new_names, objs | new_objs
    return sorted(names), sorted(objs)


def file_history(reader: Reader, path: str) -> pa.Table:
    resolve(reader, Target("file", path=path))
    names, objs = file_objects(reader, path)
    devs = [d for d, _ in objs] or [0]
    inos = [i for _, i in objs] or [0]
    sql = f"""
    WITH objs AS (SELECT unnest($devs) AS dev, unnest($inos) AS ino),
    hits AS (
        SELECT e.* FROM events e JOIN objs o ON e.file_inode = o.ino AND e.file_device = o.dev
        WHERE e.event_category IN ('file', 'flow', 'memory', 'process')
        UNION ALL BY NAME
        SELECT * FROM events WHERE (file_path IN (SELECT unnest($names))
                                    OR file_target_path IN (SELECT unnest($names)))
          AND (coalesce(file_inode, 0) = 0
               OR (file_device, file_inode) NOT IN (SELECT (dev, ino) FROM objs))
    ),
    img AS (
        SELECT entity_id, arg_max(executable, image_seq) AS executable FROM processes
        WHERE entity_id IN (SELECT DISTINCT process_entity_id FROM hits) GROUP BY entity_id
    )
    SELECT h.ts, {_verb_sql()} AS action, h.file_path, h.file_target_path, h.process_entity_id,
           h.process_pid, h.process_name, img.executable AS process_executable, h.user_id,
           h.file_mode, h.flow_read_bytes, h.flow_write_bytes, h.file_device, h.file_inode
    FROM hits h LEFT JOIN img ON img.entity_id = h.process_entity_id
    ORDER BY h.ts, h.cpu, h.seq
    """
    return reader.query(sql, {"devs": devs, "inos": inos, "names": names, "path": path})
