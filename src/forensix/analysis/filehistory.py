"""The whole history of a file: who created, wrote, read, renamed, chmod-ed, executed and
deleted it, and when, followed by (device, inode) across renames and links.

The object is found by its name, then by the inodes that name had, then by the names a
rename or link gave those inodes (a few rounds), so ``mv x.sh /tmp/.y`` keeps the story.
An inode is followed only in the lives (its generations) that carried one of those names:
the number a deleted file freed is the next new file's, whose story is another's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pyarrow as pa

from forensix.analysis.targets import Target, resolve
from forensix.store.base import Reader

__all__ = ["VERBS", "FileLife", "file_history", "file_lives"]

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


# One life of a file: (host id, device, inode, generation); inode numbers are per host and
# device. A freed inode number goes to the next new file (on ext4 at once) with a new
# i_generation, so the generation tells the lives of one number apart; 0 where it is
# unknown (a file system without generations, a store before format /7): such a life is
# every life of its inode number.
FileLife = tuple[str, int, int, int]


def file_lives(reader: Reader, path: str, rounds: int = 4,
               fetch: Callable[[set[str]], list[dict[str, Any]]] | None = None) -> tuple[list[str], list[FileLife]]:
    """The names of the objects that were ever called ``path``, and their lives.

    ``fetch``: the events naming a set of names, in this query's columns, from a cache the
    caller keeps (``analysis.lives.NameIndex.rows_for``: the graph scans each name once)."""
    names: set[str] = {path}
    lives: set[FileLife] = set()
    seen_inodes: set[int] = set()
    for _ in range(rounds):
        lit = sql_strings(sorted(names))
        # two scans, each filtered inside the scan (an OR across columns is not)
        rows = fetch(names) if fetch is not None else reader.query(f"""
            SELECT host_id, event_action AS act, file_device AS dev, file_inode AS ino, file_generation AS gen,
                   file_path AS path, file_target_path AS tpath
            FROM events WHERE file_path IN ({lit})
            UNION ALL
            SELECT host_id, event_action, file_device, file_inode, file_generation, file_path, file_target_path
            FROM events WHERE file_target_path IN ({lit}) AND file_path NOT IN ({lit})""").to_pylist()
        before = set(names)
        for r in rows:
            ino, gen = r["ino"] or 0, r["gen"] or 0
            if r["act"] in _RENAMING:
                names.update(x for x in (r["path"], r["tpath"]) if x)
                if ino and r["tpath"] in before:
                    lives.add((r["host_id"], r["dev"], ino, gen))
            elif ino and r["act"] not in _NOT_OBJECT and r["path"] in before:
                lives.add((r["host_id"], r["dev"], ino, gen))
        new_inodes = {i for _, _, i, _ in lives} - seen_inodes
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
    return sorted(names), sorted(lives)


_COLS = ("host_id, ts, cpu, seq, event_category, event_action, file_path, file_target_path, process_entity_id, "
         "process_pid, process_name, user_id, file_mode, file_flags, mem_prot, flow_read_bytes, "
         "flow_write_bytes, file_device, file_inode")


# A row is one of the lives when its (host, device, inode) is one of theirs and its generation
# is the life's, or either generation is unknown (0 or NULL: see FileLife).
_KEY3 = "(host_id || ':' || file_device::VARCHAR || ':' || file_inode::VARCHAR)"
_OF_LIVES = (f"({_KEY3} IN (SELECT unnest($pairs)) AND (coalesce(file_generation, 0) = 0"
             f" OR {_KEY3} IN (SELECT unnest($any_life))"
             f" OR ({_KEY3} || ':' || file_generation::VARCHAR) IN (SELECT unnest($lives))))")


def file_history(reader: Reader, path: str) -> pa.Table:
    names, lives = file_lives(reader, path)
    if not lives and len(names) == 1:
        resolve(reader, Target("file", path=path))  # says clearly when nothing touched it
    inos = sql_ints(sorted({i for _, _, i, _ in lives}))
    params = {
        "pairs": sorted({f"{h}:{d}:{i}" for h, d, i, _ in lives}) or [""],
        "any_life": sorted({f"{h}:{d}:{i}" for h, d, i, g in lives if not g}) or [""],
        "lives": sorted({f"{h}:{d}:{i}:{g}" for h, d, i, g in lives if g}) or [""],
    }
    lit = sql_strings(names)
    sql = f"""
    WITH hits AS (
        SELECT {_COLS} FROM events
        WHERE file_inode IN ({inos}) AND event_category IN ('file', 'flow', 'memory', 'process')
          AND {_OF_LIVES}
        UNION ALL
        SELECT {_COLS} FROM (
            SELECT {_COLS}, file_generation FROM events WHERE file_path IN ({lit})
            UNION ALL
            SELECT {_COLS}, file_generation FROM events
            WHERE file_target_path IN ({lit}) AND file_path NOT IN ({lit}))
        WHERE coalesce(file_inode, 0) = 0 OR NOT {_OF_LIVES}
    ),
    img AS (
        SELECT entity_id, image_seq, min(image_ts) AS image_ts, any_value(executable) AS executable,
               any_value(user_id) AS uid
        FROM processes
        WHERE entity_id IN (SELECT DISTINCT process_entity_id FROM hits) GROUP BY entity_id, image_seq
    ),
    -- the image each event's process ran at the event's time (a shell that wrote the file and
    -- then exec'd chmod wrote it as bash, not as chmod: analysis.images); before any, its first
    acted AS (
        SELECT h.*, coalesce(i.image_seq, 0) AS at_seq
        FROM hits h ASOF LEFT JOIN img i ON i.entity_id = h.process_entity_id AND h.ts >= i.image_ts
    )
    SELECT h.ts, {_verb_sql()} AS action, h.event_action, h.file_path, h.file_target_path, h.process_entity_id,
           h.process_pid, h.process_name, img.executable AS process_executable,
           coalesce(h.user_id, img.uid) AS user_id,  -- NULL on flow edges of /5 stores
           h.file_mode, h.flow_read_bytes, h.flow_write_bytes, h.file_device, h.file_inode
    FROM acted h LEFT JOIN img ON img.entity_id = h.process_entity_id AND img.image_seq = h.at_seq
    ORDER BY h.ts, h.cpu, h.seq
    """
    return reader.query(sql, params | {"path": path})
