"""BackTracker: dependency graphs backward from a detection point, and forward for impact.

Objects are processes (entity ids), files and pipes (device + inode, with the path last
seen), network connections (the unordered pair of endpoints, so a local client and its
local server meet at one node) and unix sockets (path). Every object that lives on one host
(files, pipes, terminals, unix sockets, loopback connections) is keyed by its host as well:
on a store of many hosts, only a connection between two addresses joins two hosts
(analysis.crosshost). Edges carry the direction
information moved and a time interval:

* process -> file: writes (flows with bytes written), open for writing, truncate, rename,
  chmod, chown, link, symlink, unlink, utimes, setxattr
* file -> process: reads (flows), open for reading, exec, mmap
* process -> process: fork, kill, ptrace
* process <-> connection / unix socket: connect, accept (both ways, from then on)

Time-window rule (King & Chen, "Backtracking Intrusions", SOSP 2003): going backward, an
edge into an object counts only if it began before the latest time that object affected
what we already hold; the source then matters only up to the end of that edge. Going
forward, an edge out of an object counts only if it ended after the object was first
affected. Each hop is a few SQL queries joined on the frontier, so the graph is built
from the store without loading it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from forensix.analysis.crosshost import link_hosts
from forensix.analysis.lives import (
    NAME_COLUMNS,
    NameIndex,
    name_matched_rows,
    name_sql,
    start_lives,
)
from forensix.analysis.noise import FILTER_NAMES, FILTERS, noise_case
from forensix.analysis.processes import FOREVER
from forensix.analysis.sockets import SOCK_KEY, UNIX_PAIR, sock_host, sock_name
from forensix.analysis.targets import Target, resolve
from forensix.model.identity import format_entity
from forensix.store.base import Reader

__all__ = [
    "WRITE_ACTIONS",
    "Edge",
    "Graph",
    "Node",
    "TrackOptions",
    "backtrack",
    "forward",
    "forward_processes",
    "graph_tables",
    "node_key",
]

WRITE_ACTIONS = ("truncate", "rename", "chmod", "chown", "link", "symlink", "unlink", "utimes",
                 "setxattr", "removexattr", "mkdir", "rmdir")
_WRITE_FLAGS = 1 | 2 | 64 | 512  # O_WRONLY | O_RDWR | O_CREAT | O_TRUNC
_OK = "coalesce(ret, 0) >= 0"
# A non-blocking connect returns EINPROGRESS and goes on to connect: it counts.
_NET_OK = "(coalesce(ret, 0) >= 0 OR (event_action = 'connect' AND ret = -115))"


@dataclass
class Node:
    key: str
    kind: str  # process | file | connection | unix
    label: str
    depth: int
    time: int  # backward: latest time it mattered; forward: first time it was affected
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Edge:
    src: str
    dst: str
    kind: str
    t_start: int
    t_end: int
    bytes: int = 0
    count: int = 1
    name_matched: bool = False  # joined to the file by name and time, not by inode (see analysis.lives)


@dataclass
class Graph:
    direction: str  # backward | forward
    target: str
    nodes: dict[str, Node]
    edges: list[Edge]
    roots: list[str]
    truncated: bool = False
    filters: tuple[str, ...] = ()
    # a file target: the life of its name the walk started from, and the name's other lives
    life: dict[str, Any] | None = None
    other_lives: list[dict[str, Any]] = field(default_factory=list)
    hidden: dict[str, int] = field(default_factory=dict)  # edges the noise filters dropped, by filter

    def node_by(self, kind: str) -> list[Node]:
        return [n for n in self.nodes.values() if n.kind == kind]


@dataclass
class TrackOptions:
    depth: int = 12  # hops from the detection point
    max_nodes: int = 2000  # stop growing past this many objects (the graph is marked truncated)
    since: int | None = None  # backward: ignore edges that began before this
    until: int | None = None  # forward: ignore edges after this; backward: the detection time
    filters: tuple[str, ...] = FILTER_NAMES  # noise filters on (see analysis.noise)
    at: int | None = None  # a file target: the life that held the name then (default: the last one)


def node_key(kind: str, *parts: Any) -> str:
    if kind == "process":
        return "p:" + format_entity(parts[0])
    if kind == "file":  # (host, device, inode[, generation]): one life of an inode number
        gen = parts[3] if len(parts) > 3 else 0
        return f"f:{parts[0]}:{parts[1]}:{parts[2]}" + (f"~{gen}" if gen else "")
    return str(parts[0])


# -- one hop ---------------------------------------------------------------------------
@dataclass
class _Frontier:
    procs: dict[int, int] = field(default_factory=dict)  # entity -> threshold
    # (host, dev, ino, generation) -> threshold; generation 0: unknown (any life of the number)
    files: dict[tuple[str, int, int, int], int] = field(default_factory=dict)
    socks: dict[str, int] = field(default_factory=dict)  # connection/unix key -> threshold
    paths: dict[Any, list[str]] = field(default_factory=dict)  # names of the start files
    named: dict[str, int] = field(default_factory=dict)  # lives known by name only (analysis.lives) -> threshold
    index: NameIndex | None = None  # a file target's name index, reused by the walk
    chosen: dict[str, Any] | None = None  # a file target: the life chosen, and the name's others
    others: list[dict[str, Any]] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.procs or self.files or self.socks or self.named)


def _params(fr: _Frontier) -> dict[str, Any]:
    return {
        "pe": list(fr.procs) or [0], "pt": list(fr.procs.values()) or [0],
        "fh": [h for h, _, _, _ in fr.files] or [""], "fd": [d for _, d, _, _ in fr.files] or [0],
        "fi": [i for _, _, i, _ in fr.files] or [0], "fg": [g for _, _, _, g in fr.files] or [0],
        "ft": list(fr.files.values()) or [0],
        "sk": list(fr.socks) or [""], "st": list(fr.socks.values()) or [0],
        "uh": [h for h, _, _, _ in _unix_pairs(fr)] or [""], "ui": [i for _, i, _, _ in _unix_pairs(fr)] or [0],
        "uk": [k for _, _, k, _ in _unix_pairs(fr)] or [""], "ut": [t for _, _, _, t in _unix_pairs(fr)] or [0],
    }


_FRONTIER_CTES = """
fp AS (SELECT unnest($pe) AS eid, unnest($pt) AS thr),
ff AS (SELECT unnest($fh) AS host, unnest($fd) AS dev, unnest($fi) AS ino, unnest($fg) AS gen, unnest($ft) AS thr),
fs AS (SELECT unnest($sk) AS key, unnest($st) AS thr),
fu AS (SELECT unnest($uh) AS host, unnest($ui) AS ino, unnest($uk) AS key, unnest($ut) AS thr)
"""
def _unix_pairs(fr: _Frontier) -> list[tuple[str, int, str, int]]:
    out = []
    for key, thr in fr.socks.items():
        m = UNIX_PAIR.match(key)
        if m:
            out += [(m.group(1), int(m.group(2)), key, thr), (m.group(1), int(m.group(3)), key, thr)]
    return out


def _pair_sql(cmp: str, backward: bool, inos: str) -> str:
    """Reads and writes on either end of a connected unix socket pair (from flows)."""
    if backward:
        return f"""
    SELECT 'process', f.entity_id, NULL, NULL, NULL, 'unix', NULL, NULL, NULL, fr.key,
           f.first_ts, f.last_ts, 'write', f.write_bytes, NULL, NULL, NULL
    FROM flows f JOIN fu fr ON f.file_inode = fr.ino AND f.host_id = fr.host AND f.file_inode IN ({inos})
    WHERE f.write_bytes > 0 AND {cmp.format(s='f.first_ts', e='f.last_ts')}"""
    return f"""
    SELECT 'unix', NULL, NULL, NULL, fr.key, 'process', f.entity_id, NULL, NULL, NULL,
           f.first_ts, f.last_ts, 'read', f.read_bytes, NULL, NULL, NULL
    FROM flows f JOIN fu fr ON f.file_inode = fr.ino AND f.host_id = fr.host AND f.file_inode IN ({inos})
    WHERE f.read_bytes > 0 AND {cmp.format(s='f.first_ts', e='f.last_ts')}"""

# Each edge row: src/dst as (kind, entity, dev, ino, key), interval, kind, bytes, path, and
# the file side's inode generation (NULL where there is none or it is unknown).
_COLS = ("src_kind, src_eid, src_dev, src_ino, src_key, dst_kind, dst_eid, dst_dev, dst_ino, dst_key, "
         "t_start, t_end, kind, nbytes, path, tpath, gen")


def _file_read_sql(cmp: str, noise: str) -> str:
    """file -> process edges; ``cmp`` compares the edge with the frontier's threshold."""
    return f"""
    SELECT 'file', NULL, f.file_device, f.file_inode, f.host_id, 'process', f.entity_id, NULL, NULL, NULL,
           f.first_ts, f.last_ts, 'read', f.read_bytes, f.file_path, NULL, f.file_generation
    FROM flows f JOIN {{J}} WHERE f.read_bytes > 0 AND {cmp.format(s='f.first_ts', e='f.last_ts')}
      AND NOT {noise.format(c='f.file_path')} {{CHAR}}
    UNION ALL
    SELECT 'file', NULL, e.file_device, e.file_inode, e.host_id, 'process', e.process_entity_id, NULL, NULL,
           NULL, e.ts, e.ts, CASE WHEN e.event_action = 'open' THEN 'open-read' ELSE e.event_action END,
           0, e.file_path, NULL, e.file_generation
    FROM events e JOIN {{JE}} WHERE e.event_action IN ('exec', 'mmap', 'open') AND {_OK}
      AND (e.event_action <> 'open' OR (coalesce(e.file_flags, 0) & {_WRITE_FLAGS}) = 0)
      AND coalesce(e.file_inode, 0) <> 0 AND {cmp.format(s='e.ts', e='e.ts')}
      AND NOT {noise.format(c='e.file_path')}
    """


def _file_write_sql(cmp: str, noise: str) -> str:
    """process -> file edges."""
    acts = ", ".join(f"'{a}'" for a in WRITE_ACTIONS)
    return f"""
    SELECT 'process', f.entity_id, NULL, NULL, NULL, 'file', NULL, f.file_device, f.file_inode, f.host_id,
           f.first_ts, f.last_ts, 'write', f.write_bytes, f.file_path, NULL, f.file_generation
    FROM flows f JOIN {{J}} WHERE f.write_bytes > 0 AND {cmp.format(s='f.first_ts', e='f.last_ts')}
      AND NOT {noise.format(c='f.file_path')} {{CHAR}}
    UNION ALL
    SELECT 'process', e.process_entity_id, NULL, NULL, NULL, 'file', NULL, e.file_device, e.file_inode,
           e.host_id, e.ts, e.ts,
           CASE WHEN e.event_action = 'open' THEN
                CASE WHEN (coalesce(e.file_flags, 0) & 576) = 576 THEN 'create/trunc'
                     WHEN (coalesce(e.file_flags, 0) & 512) <> 0 THEN 'open-trunc'
                     WHEN (coalesce(e.file_flags, 0) & 64) <> 0 THEN 'create' ELSE 'open-write' END
                ELSE e.event_action END,
           0, e.file_path, e.file_target_path, e.file_generation
    FROM events e JOIN {{JE}} WHERE (e.event_action IN ({acts})
          OR (e.event_action = 'open' AND (coalesce(e.file_flags, 0) & {_WRITE_FLAGS}) <> 0))
      AND {_OK} AND {{HAS_INODE}} AND {cmp.format(s='e.ts', e='e.ts')}
      AND NOT {noise.format(c='e.file_path')}
    """


def _proc_sql(cmp: str) -> str:
    """process -> process edges (fork, kill, ptrace)."""
    return f"""
    SELECT 'process', p.parent_entity_id, NULL, NULL, NULL, 'process', p.entity_id, NULL, NULL, NULL,
           p.start_ts, p.start_ts, 'fork', 0, NULL, NULL, NULL
    FROM processes p JOIN {{JP}} WHERE p.image_seq = 0 AND p.parent_entity_id IS NOT NULL
      AND {cmp.format(s='p.start_ts', e='p.start_ts')}
    UNION ALL
    SELECT 'process', e.process_entity_id, NULL, NULL, NULL, 'process', e.target_entity_id, NULL, NULL,
           NULL, e.ts, e.ts, e.event_action, 0, NULL, NULL, NULL
    FROM events e JOIN {{JK}} WHERE e.event_action IN ('kill', 'ptrace') AND {_OK}
      AND coalesce(e.target_entity_id, 0) <> 0 AND {cmp.format(s='e.ts', e='e.ts')}
    """


def _sock_sql(cmp: str, src_is_proc: bool, unix_noise: str) -> str:
    """process <-> connection edges; both directions exist from connect/accept on."""
    a = ("'process', n.process_entity_id, NULL, NULL, NULL, n.sock_kind, NULL, NULL, NULL, n.key"
         if src_is_proc else
         "n.sock_kind, NULL, NULL, NULL, n.key, 'process', n.process_entity_id, NULL, NULL, NULL")
    return f"""
    SELECT {a}, n.ts, {FOREVER}, n.event_action, 0, n.unix_path, NULL, NULL
    FROM (SELECT process_entity_id, ts, event_action, unix_path, {SOCK_KEY} AS key,
                 CASE WHEN network_transport = 'unix' THEN 'unix' ELSE 'connection' END AS sock_kind
          FROM events WHERE event_category = 'network' {{NF}}
            AND event_action IN ('connect', 'accept') AND {_NET_OK}) n
    JOIN {{JS}} WHERE {cmp.format(s='n.ts', e=str(FOREVER))}
      AND NOT {unix_noise.format(c='n.unix_path')}
    """


def _ports_filter(fr: _Frontier) -> str:
    """Narrow the network events to the frontier's ports before building their keys."""
    ports: set[int] = set()
    for key in fr.socks:
        if not key.startswith("c:"):
            return ""  # unix sockets: keyed by path or inode, no port to narrow by
        for end in sock_name(key).split("|"):
            port = end.rsplit(":", 1)[-1]
            if not port.isdigit():
                return ""
            ports.add(int(port))
    lit = _ints(sorted(ports))
    return f"AND (source_port IN ({lit}) OR destination_port IN ({lit}))"


_EVP_COLS = ("host_id, process_entity_id, target_entity_id, event_category, event_action, ret, ts, file_flags, "
             "file_inode, file_device, file_generation, file_path, file_target_path, file_path_resolution, network_transport, unix_path, "
             "unix_peer_inode, source_ip, source_port, destination_ip, destination_port")
_EVP_ACTIONS = ", ".join(f"'{a}'" for a in ("exec", "mmap", "open", "connect", "accept", "kill", "ptrace",
                                            *WRITE_ACTIONS))


def _ints(xs: Iterable[int]) -> str:
    return ", ".join(str(int(x)) for x in xs) or "0"


def _hop_sql(backward: bool, active: set[str], fr: _Frontier) -> str:
    """Edges into (backward) or out of (forward) the frontier, as one UNION query.

    Only the parts whose frontier is not empty are built, and each repeats its join key as
    a literal IN list so DuckDB filters inside the scan instead of reading every row.
    """
    cmp = "{s} <= fr.thr" if backward else "{e} >= fr.thr"
    # Noise is judged on the hop's few rows, outside the scans: pushed into a scan, the
    # LIKE ladder would run on every row there (the frontier's IN list only prunes).
    read_noise = write_noise = unix_noise = "FALSE"
    # libraries: judged in Python (_drop_read_only_system_files), where "written" is known
    judge = noise_case(active, skip=frozenset({"libraries"}))
    pe, fi = _ints(fr.procs), _ints(i for _, _, i, _ in fr.files)
    # one scan of the frontier processes' events, shared by the parts that need them
    # a process's path-resolved calls (no inode) come along; analysis.lives joins them by name
    on_proc = {"{J}": f"fp fr ON f.entity_id = fr.eid AND f.entity_id IN ({pe})",
               "FROM events e JOIN {JE}": "FROM evp e JOIN {JE}",
               "{JE}": "fp fr ON e.process_entity_id = fr.eid",
               "{HAS_INODE}": "(coalesce(e.file_inode, 0) <> 0 OR e.file_path_resolution = 'directory')"}
    # a row of another life of the inode number is another file's (either generation unknown: the same)
    life = "(fr.gen = 0 OR coalesce({t}.file_generation, 0) IN (0, fr.gen))"
    on_file = {"{J}": f"ff fr ON f.file_inode = fr.ino AND f.file_device = fr.dev AND f.host_id = fr.host"
                      f" AND {life.format(t='f')} AND f.file_inode IN ({fi})",
               "{JE}": f"ff fr ON e.file_inode = fr.ino AND e.file_device = fr.dev AND e.host_id = fr.host"
                       f" AND {life.format(t='e')} AND e.file_inode IN ({fi})",
               "{HAS_INODE}": "coalesce(e.file_inode, 0) <> 0"}
    parts: list[str] = []

    def add(sql: str, subs: dict[str, str]) -> None:
        for k, v in subs.items():
            sql = sql.replace(k, v)
        parts.append(sql)

    if fr.procs:
        if backward:
            add(_file_read_sql(cmp, read_noise), on_proc)
            add(_proc_sql(cmp), {"{JP}": "fp fr ON p.entity_id = fr.eid",
                                 "{JK}": f"fp fr ON e.target_entity_id = fr.eid AND e.target_entity_id IN ({pe})"})
            add(_sock_sql(cmp, False, unix_noise), {"{JS}": "fp fr ON n.process_entity_id = fr.eid",
                                                    "FROM events WHERE": "FROM evp WHERE", "{NF}": ""})
        else:
            add(_file_write_sql(cmp, write_noise), on_proc)
            add(_proc_sql(cmp), {"{JP}": "fp fr ON p.parent_entity_id = fr.eid",
                                 "FROM events e JOIN {JK}": "FROM evp e JOIN {JK}",
                                 "{JK}": "fp fr ON e.process_entity_id = fr.eid"})
            add(_sock_sql(cmp, True, unix_noise), {"{JS}": "fp fr ON n.process_entity_id = fr.eid",
                                                   "FROM events WHERE": "FROM evp WHERE", "{NF}": ""})
    if fr.files:
        add(_file_write_sql(cmp, write_noise) if backward else _file_read_sql(cmp, read_noise), on_file)
    if fr.socks:
        add(_sock_sql(cmp, backward, unix_noise), {"{JS}": "fs fr ON n.key = fr.key", "{NF}": _ports_filter(fr)})
        pairs = _unix_pairs(fr)
        if pairs:
            parts.append(_pair_sql(cmp, backward, _ints(i for _, i, _, _ in pairs)))
    if not parts:
        return ""
    union = "\nUNION ALL\n".join(f"SELECT * FROM ({p})" for p in parts)
    # character devices (terminals, /dev/null) reached through an inherited descriptor
    # carry no path in flows: the pseudo filter drops them by type
    union = union.replace("{CHAR}", "AND f.file_type IS DISTINCT FROM 'char'" if "pseudo" in active else "")
    evp = ""
    if fr.procs:
        evp = (f"evp AS MATERIALIZED (SELECT {_EVP_COLS} FROM events WHERE process_entity_id IN ({pe})"
               f" AND event_action IN ({_EVP_ACTIONS})),\n")
    # the rows a filter drops come back as one count per filter (hidden_by, hidden_n)
    return (f"WITH {_FRONTIER_CTES},\n{evp}hop AS MATERIALIZED (SELECT * FROM ({union}) AS x({_COLS})),\n"
            f"judged AS MATERIALIZED (SELECT *, {judge} AS hidden_by FROM hop)\n"
            "SELECT * FROM judged WHERE hidden_by IS NULL\nUNION ALL BY NAME\n"
            "SELECT hidden_by, count(*) AS hidden_n FROM judged WHERE hidden_by IS NOT NULL GROUP BY hidden_by")


_LIBS = next(f for f in FILTERS if f.name == "libraries")
_READ_KINDS = ("read", "open-read", "exec", "mmap")


def _is_system_path(path: str) -> bool:
    """The 'libraries' filter's LIKE patterns, in Python (only '%' wildcards are used)."""
    import fnmatch

    return any(fnmatch.fnmatchcase(path, pat.replace("%", "*")) for pat in _LIBS.patterns)


def _drop_read_only_system_files(reader: Reader, rows: list[dict[str, Any]],
                                 written: dict[tuple[str, int, int], bool]) -> list[dict[str, Any]]:
    """Drop reads, execs and mmaps of system files, unless something wrote that file.

    "Written" means an open for writing, a truncate, or a rename or link that put the
    object (its inode) in place, while recorded; a flow row alone is too weak a witness to
    bring every reader of libc back. Asked once per object, only for the system files a
    hop actually meets, by inode (a numeric scan, not a string one).
    """
    def obj(r: dict[str, Any]) -> tuple[str, int, int] | None:
        if r["kind"] in _READ_KINDS and r["src_kind"] == "file" and r["path"] and _is_system_path(r["path"]):
            return (r["src_key"], r["src_dev"], r["src_ino"])
        return None

    cands = {o for o in map(obj, rows) if o is not None}
    ask = sorted(cands - set(written))
    if ask:
        t = reader.query(f"""
            SELECT DISTINCT host_id, file_device, file_inode FROM events
            WHERE file_inode IN ({_ints(i for _, _, i in ask)})
              AND (event_action IN ('truncate', 'rename', 'link')
                   OR (event_action = 'open' AND (coalesce(file_flags, 0) & {_WRITE_FLAGS}) <> 0))""")
        hit = set(zip(t.column("host_id").to_pylist(), t.column("file_device").to_pylist(),
                      t.column("file_inode").to_pylist()))
        written.update({o: o in hit for o in ask})
    return [r for r in rows if (o := obj(r)) is None or written.get(o, False)]


# -- the walk --------------------------------------------------------------------------
def _end_key(row: dict[str, Any], side: str) -> tuple[str, str, Any]:
    kind = row[f"{side}_kind"]
    if kind == "process":
        return node_key("process", row[f"{side}_eid"]), kind, row[f"{side}_eid"]
    if kind == "file" and row.get("node"):  # name-matched: the life that held the name then
        return row["node"], kind, row["life"]
    if kind == "file":
        obj = (row[f"{side}_key"], row[f"{side}_dev"], row[f"{side}_ino"], row["gen"] or 0)
        return node_key("file", *obj), kind, obj
    return row[f"{side}_key"], kind, row[f"{side}_key"]


def _walk(reader: Reader, start: _Frontier, backward: bool, opts: TrackOptions, target: str) -> Graph:
    active = set(opts.filters) & set(FILTER_NAMES)
    written: dict[tuple[str, int, int], bool] = {}
    nodes: dict[str, Node] = {}
    edges: dict[tuple[str, str, str], Edge] = {}
    ident: dict[str, tuple[str, Any]] = {}
    index = start.index or NameIndex(reader)
    hidden: dict[str, int] = {}
    for kind, items in (("process", start.procs), ("file", start.files), ("sock", start.socks),
                        ("file", start.named)):
        for obj, thr in items.items():
            key = obj if isinstance(obj, str) and kind == "file" else node_key(
                kind, *(obj if isinstance(obj, tuple) else (obj,)))
            k = ("connection" if key.startswith("c:") else "unix") if kind == "sock" else kind
            nodes[key] = _node(key, k, obj, 0, thr)
            if obj in start.paths:
                nodes[key].attrs.update(path=target.split(" ", 1)[-1], names=set(start.paths[obj]))
            ident[key] = (k, obj)
    roots = list(nodes)
    frontier, depth, truncated = start, 0, False
    while not frontier.empty() and depth < opts.depth:
        depth += 1
        sql = _hop_sql(backward, active, frontier)
        # backward, the names of the frontier's files are asked within the hop's query (one
        # round trip): who held them when, and the path-resolved calls made on them
        ask = index.unasked(_frontier_names(frontier, nodes)) if backward else []
        if ask:
            nsql = f"SELECT {', '.join(f'{c} AS nm_{c}' for c in NAME_COLUMNS)}, TRUE AS name_row FROM ({name_sql(ask)})"
            sql = f"{sql}\nUNION ALL BY NAME\n{nsql}" if sql else nsql
        params = {k: v for k, v in _params(frontier).items() if f"${k}" in sql}
        rows = reader.query(sql, params).to_pylist() if sql else []
        if ask:
            index.ingest(ask, [{c: r[f"nm_{c}"] for c in NAME_COLUMNS} for r in rows if r.get("name_row")])
            rows = [r for r in rows if not r.get("name_row")]
        for r in rows:
            if r.get("hidden_by"):
                hidden[r["hidden_by"]] = hidden.get(r["hidden_by"], 0) + int(r["hidden_n"])
        rows = [r for r in rows if not r.get("hidden_by")]
        rows = _by_name(index, rows, frontier, nodes, backward)
        if "libraries" in active:
            n = len(rows)
            rows = _drop_read_only_system_files(reader, rows, written)
            hidden["libraries"] = hidden.get("libraries", 0) + n - len(rows)
        rows = _sockets_to_connections(reader, rows)
        if backward and "servers" in active:
            n = len(rows)
            rows = _latest_accepts(rows)
            hidden["servers"] = hidden.get("servers", 0) + n - len(rows)
        nxt = _Frontier()
        for r in rows:
            near, far = ("dst", "src") if backward else ("src", "dst")
            nkey = _near_key(r, near, nodes)
            fkey, fkind, fobj = _end_key(r, far)
            if nkey not in nodes or fkey == nkey:
                continue
            if not _in_window(r, backward, opts) or _inode_reused(r, nodes):
                continue
            base = nodes[nkey].time
            t = min(r["t_end"], base) if backward else max(r["t_start"], base)
            _add_edge(edges, r, *((fkey, nkey) if backward else (nkey, fkey)))
            old = nodes.get(fkey)
            if old is None:
                if len(nodes) >= opts.max_nodes:
                    truncated = True
                    continue
                nodes[fkey] = _node(fkey, fkind, fobj, depth, t)
                _name(nodes[fkey], r)
                ident[fkey] = (fkind, fobj)
            elif (backward and t > old.time) or (not backward and t < old.time):
                old.time = t  # reached with a wider window: look again
                _name(old, r)
            else:
                _name(old, r)
                continue
            if fkind == "file" and isinstance(fobj, str):
                nxt.named[fobj] = nodes[fkey].time
                continue
            bucket = nxt.procs if fkind == "process" else nxt.files if fkind == "file" else nxt.socks
            bucket[fobj] = nodes[fkey].time
        frontier = nxt
    if not frontier.empty():
        truncated = True
    kept = [e for e in edges.values() if e.src in nodes and e.dst in nodes]
    g = Graph("backward" if backward else "forward", target, nodes, kept, roots, truncated,
              tuple(sorted(active)), life=start.chosen, other_lives=start.others,
              hidden={k: v for k, v in sorted(hidden.items()) if v})
    _label(reader, g, ident)
    return g


def _frontier_files(fr: _Frontier) -> dict[str, int]:
    return {node_key("file", *life): t for life, t in fr.files.items()} | fr.named


def _frontier_names(fr: _Frontier, nodes: dict[str, Node]) -> set[str]:
    return {x for k in _frontier_files(fr) if k in nodes
            for x in (set(nodes[k].attrs.get("names") or ()) | {nodes[k].attrs.get("path")}) if x}


def _by_name(index: NameIndex, rows: list[dict[str, Any]], fr: _Frontier, nodes: dict[str, Node],
             backward: bool) -> list[dict[str, Any]]:
    """Path-resolved calls, joined to the life that held their name then (analysis.lives)."""
    if not backward:
        return name_matched_rows(index, rows, {}, set(), backward)
    return name_matched_rows(index, rows, _frontier_files(fr), _frontier_names(fr, nodes), backward)


def _node(key: str, kind: str, obj: Any, depth: int, t: int) -> Node:
    """A new node; a file of a known life carries its generation (see _inode_reused)."""
    n = Node(key, kind, key, depth, t)
    if kind == "file" and isinstance(obj, tuple) and obj[3]:
        n.attrs["generation"] = obj[3]
    return n


def _near_key(r: dict[str, Any], side: str, nodes: dict[str, Node]) -> str:
    """The frontier's node a row leads into: a file of unknown life (generation 0, a start
    file of an older store) takes the rows of every life of its number."""
    key, kind, obj = _end_key(r, side)
    if kind == "file" and key not in nodes and isinstance(obj, tuple):
        return node_key("file", *obj[:3])
    return key


def _file_side(r: dict[str, Any], nodes: dict[str, Node]) -> str | None:
    for side in ("src", "dst"):
        if r[f"{side}_kind"] == "file":
            return _near_key(r, side, nodes)
    return None


def _inode_reused(r: dict[str, Any], nodes: dict[str, Node]) -> bool:
    """An inode number given to another file after this one was deleted is another object.

    The kernel's inode generation says so exactly: a row whose generation is not the file
    node's is another file's (store /7). Where either is unknown, the names decide: a file
    node knows the names it had; an event on the same (device, inode) under a name it never
    had (and not a rename or link to or from one) belongs to an earlier or later file that
    happened to get the same inode number (tmpfs and ext4 reuse them quickly).
    """
    if r.get("nm"):  # matched to the life that held the name at the time: its own
        return False
    key = _file_side(r, nodes)
    node = nodes.get(key) if key else None
    gen = node.attrs.get("generation") if node is not None else None
    if gen and r["gen"]:  # one life, whatever name it had then (a rename keeps the life)
        return bool(r["gen"] != gen)
    names = node.attrs.get("names") if node is not None else None
    if not names or r["path"] is None:
        return False
    return r["path"] not in names and r["tpath"] not in names


def _name(node: Node, r: dict[str, Any]) -> None:
    if node.kind != "file":
        return
    names = node.attrs.setdefault("names", set())
    names.update(x for x in (r["path"], r["tpath"]) if x)
    newest = r["tpath"] or r["path"]
    if newest and "path" not in node.attrs:
        node.attrs["path"] = newest


def _is_socket_row(r: dict[str, Any], side: str) -> bool:
    """A read or write on a socket: the recorder names it ``socket:[inode]`` (stores before
    /flows-by-inode left the name empty)."""
    if r[f"{side}_kind"] != "file" or r["kind"] not in ("read", "write"):
        return False
    return r["path"] is None or r["path"] == f"socket:[{r[f'{side}_ino']}]"


def _sockets_to_connections(reader: Reader, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Reads and writes on a socket (flows know only its inode) go to its connection node.

    The connect or accept that made the socket carries its inode, so the socket's bytes join
    the node its connect/accept edges lead to (a TCP 4-tuple, a unix socket's path): one node
    per connection, whichever way the bytes were counted. A socket's inode number is its
    host's: the socket is looked up by (host, inode). Flows that carry the unix peer's inode
    (a connected pair with no connect, as the generator writes them) meet at the pair."""
    socks = {(r[f"{side}_key"], r[f"{side}_ino"]) for r in rows for side in ("src", "dst")
             if _is_socket_row(r, side)}
    if not socks:
        return rows
    lit = _ints(sorted({ino for _, ino in socks}))
    t = reader.query(
        f"""SELECT host_id, file_inode, any_value({SOCK_KEY}) AS key, 0 AS pri FROM events
            WHERE event_category = 'network' AND event_action IN ('connect', 'accept') AND {_NET_OK}
              AND file_inode IN ({lit}) GROUP BY 1, 2
            UNION ALL
            SELECT host_id, file_inode, 'u:' || host_id || ':' || least(file_inode, any_value(unix_peer_inode))
                               || '|' || greatest(file_inode, any_value(unix_peer_inode)), 1 FROM events
            WHERE event_action = 'flow' AND file_inode IN ({lit}) AND coalesce(unix_peer_inode, 0) <> 0
            GROUP BY 1, 2
            ORDER BY pri""")
    key_of: dict[tuple[str, int], str] = {}
    for host, ino, key in zip(t.column("host_id").to_pylist(), t.column("file_inode").to_pylist(),
                              t.column("key").to_pylist()):
        key_of.setdefault((host, ino), key)
    for r in rows:
        for side in ("src", "dst"):
            sock = (r[f"{side}_key"], r[f"{side}_ino"])
            if _is_socket_row(r, side) and sock in key_of:
                k = key_of[sock]
                r[f"{side}_kind"] = "unix" if k.startswith("u:") else "connection"
                r[f"{side}_key"] = k
    return rows


def _latest_accepts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep, per accepting process, only its latest accept edge (see the 'servers' filter)."""
    latest: dict[int, int] = {}
    for r in rows:
        if r["kind"] == "accept" and r["dst_kind"] == "process":
            latest[r["dst_eid"]] = max(latest.get(r["dst_eid"], r["t_start"]), r["t_start"])
    return [r for r in rows if not (r["kind"] == "accept" and r["dst_kind"] == "process")
            or r["t_start"] == latest[r["dst_eid"]]]


def _in_window(r: dict[str, Any], backward: bool, opts: TrackOptions) -> bool:
    if backward and opts.since is not None and r["t_end"] < opts.since:
        return False
    return not (not backward and opts.until is not None and r["t_start"] > opts.until)


def _add_edge(edges: dict[tuple[str, str, str], Edge], r: dict[str, Any], src: str, dst: str) -> None:
    k = (src, dst, r["kind"])
    e = edges.get(k)
    if e is None:
        edges[k] = Edge(src, dst, r["kind"], r["t_start"], r["t_end"], int(r["nbytes"] or 0),
                        name_matched=bool(r.get("nm")))
    else:
        e.t_start, e.t_end = min(e.t_start, r["t_start"]), max(e.t_end, r["t_end"])
        e.bytes += int(r["nbytes"] or 0)
        e.count += 1


def _label(reader: Reader, g: Graph, ident: dict[str, tuple[str, Any]]) -> None:
    procs = [obj for kind, obj in ident.values() if kind == "process"]
    if procs:
        t = reader.query(
            """SELECT entity_id, arg_max(executable, image_seq) AS exe, arg_min(pid, image_seq) AS pid,
                      arg_max(args, image_seq) AS args, arg_max(user_id, image_seq) AS uid,
                      min(start_ts) AS start_ts
               FROM processes WHERE entity_id IN (SELECT unnest($e)) GROUP BY entity_id""",
            {"e": procs})
        for r in t.to_pylist():
            n = g.nodes[node_key("process", r["entity_id"])]
            exe = r["exe"] or ((r["args"] or [None])[0]) or "?"
            n.label = f"{exe.rsplit('/', 1)[-1]} [{r['pid']}]"
            n.attrs.update(entity_id=r["entity_id"], executable=exe, pid=r["pid"], args=r["args"],
                           user_id=r["uid"], start_ts=r["start_ts"])
    for key, (kind, obj) in ident.items():
        n = g.nodes[key]
        if kind == "file" and isinstance(obj, str):  # known by name only (analysis.lives)
            n.attrs.update(host_id=obj.split(":", 2)[1], name_matched=True)
            n.label = n.attrs.get("path") or obj
            n.attrs["names"] = sorted(n.attrs.get("names") or [])
        elif kind == "file":
            n.attrs.update(host_id=obj[0], device=obj[1], inode=obj[2])
            n.label = n.attrs.get("path") or f"inode {obj[2]}"
            n.attrs["names"] = sorted(n.attrs.get("names") or [])
        elif kind == "connection":
            a, _, b = sock_name(key).partition("|")
            n.attrs.update(endpoints=[a, b])
            n.label = f"{a} <-> {b}"
        elif kind == "unix":
            n.label = "unix " + sock_name(key)
        if kind in ("connection", "unix") and (host := sock_host(key)) is not None:
            n.attrs["host_id"] = host
    _fill_paths(reader, g, ident)


def _fill_paths(reader: Reader, g: Graph, ident: dict[str, tuple[str, Any]]) -> None:
    """Name the file nodes no event named (inherited descriptors) from their flow edges: the
    edges of the node's own life where the generation is known, of the number's otherwise."""
    missing = [(g.nodes[key], obj) for key, (kind, obj) in ident.items()
               if kind == "file" and "path" not in g.nodes[key].attrs and isinstance(obj, tuple)]
    if not missing:
        return
    t = reader.query(
        f"""SELECT host_id, file_device, file_inode, coalesce(file_generation, 0) AS gen,
                  arg_max(file_path, last_ts) AS path, any_value(file_type) AS type
           FROM flows WHERE file_inode IN ({_ints(obj[2] for _, obj in missing)}) GROUP BY 1, 2, 3, 4
           ORDER BY max(last_ts)""")
    seen: dict[tuple[str, int, int, int], dict[str, Any]] = {}
    for r in t.to_pylist():  # latest last: the number's latest name wins for an unknown life
        seen[(r["host_id"], r["file_device"], r["file_inode"], r["gen"])] = r
        seen[(r["host_id"], r["file_device"], r["file_inode"], 0)] = r
    for n, obj in missing:
        r = seen.get(obj[:3] + (obj[3],)) or seen.get(obj[:3] + (0,))
        if r is None:
            continue
        if r["path"]:
            n.attrs["path"] = n.label = r["path"]
        elif r["type"]:
            n.label = f"{r['type']}:[{r['file_inode']}]"
            n.attrs["file_type"] = r["type"]


# -- entry points ----------------------------------------------------------------------
def _start(reader: Reader, target: Target, backward: bool, opts: TrackOptions,
           members: Iterable[int] = ()) -> _Frontier:
    fr = _Frontier()
    t0 = (opts.until if opts.until is not None else FOREVER) if backward else (opts.since or 0)
    if target.kind == "file":
        _start_file(reader, target.path or "", opts.at, t0, fr)
    elif target.kind == "process":
        fr.procs[target.entity or 0] = t0 if backward else _start_ts(reader, target.entity or 0)
    elif target.kind == "endpoint":
        t = reader.query(
            f"""SELECT DISTINCT {SOCK_KEY} AS key FROM events
                WHERE event_category = 'network' AND event_action IN ('connect', 'accept')
                  AND ((destination_ip = $ip AND destination_port = $port)
                       OR (source_ip = $ip AND source_port = $port))""",
            {"ip": target.ip, "port": target.port})
        for k in t.column("key").to_pylist():
            fr.socks[k] = t0
    members = list(members)
    if members and not backward:
        t = reader.query(f"""SELECT entity_id, min(start_ts) AS s FROM processes
                             WHERE entity_id IN ({_ints(members)}) GROUP BY 1""")
        fr.procs.update(zip(t.column("entity_id").to_pylist(), t.column("s").to_pylist()))
    for e in members:
        fr.procs.setdefault(e, t0)
    return fr


def _start_file(reader: Reader, path: str, at: int | None, t0: int, fr: _Frontier) -> None:
    """The life of the name at ``at`` (default: the last one that had it) starts the walk."""
    fr.index = NameIndex(reader)
    st = start_lives(fr.index, path, at)
    for obj, names in st.files.items():
        (fr.named if isinstance(obj, str) else fr.files)[obj] = t0
        fr.paths[obj] = names
    fr.chosen, fr.others = st.chosen, st.others


def _start_ts(reader: Reader, entity: int) -> int:
    t = reader.query("SELECT min(start_ts) AS s FROM processes WHERE entity_id = $e", {"e": entity})
    v = t.column("s")[0].as_py()
    return int(v) if v is not None else 0


def _session_target(reader: Reader, target: Target) -> tuple[Target, list[int]]:
    from forensix.analysis.sessions import find_session

    leader, att = find_session(reader, target.session or "")
    return target, att.members(leader)


def _track(reader: Reader, target: Target, opts: TrackOptions | None, backward: bool) -> Graph:
    opts = opts or TrackOptions()
    members: list[int] = []
    if target.kind == "session":
        target, members = _session_target(reader, target)
    elif target.kind != "file":
        target = resolve(reader, target)
    g = _walk(reader, _start(reader, target, backward, opts, members), backward, opts, target.describe())
    return link_hosts(reader, g)  # a connection between two hosts of the store: the right peer only


def backtrack(reader: Reader, target: Target, opts: TrackOptions | None = None) -> Graph:
    """Everything that could have caused ``target``, as a dependency graph."""
    return _track(reader, target, opts, backward=True)


def forward(reader: Reader, target: Target, opts: TrackOptions | None = None) -> Graph:
    """Everything ``target`` affected: what it touched and spawned, and who later used that."""
    return _track(reader, target, opts, backward=False)


def forward_processes(reader: Reader, entities: list[int], label: str,
                      opts: TrackOptions | None = None) -> Graph:
    """Forward from a set of processes (a session whose members are already known)."""
    opts = opts or TrackOptions()
    start = _start(reader, Target("session", session=label), False, opts, entities)
    return link_hosts(reader, _walk(reader, start, False, opts, label))


def graph_tables(g: Graph) -> tuple[pa.Table, pa.Table]:
    """The graph as two tables (nodes, edges) for the table renderers."""
    nodes = pa.Table.from_pylist([
        {"node": n.key, "kind": n.kind, "label": n.label, "depth": n.depth,
         "time": n.time if 0 < n.time < FOREVER else None,
         "entity_id": n.attrs.get("entity_id"), "pid": n.attrs.get("pid"),
         "user_id": n.attrs.get("user_id"), "executable": n.attrs.get("executable"),
         "file_path": n.attrs.get("path"), "file_inode": n.attrs.get("inode"),
         "host_id": n.attrs.get("host_id"), "host_name": n.attrs.get("host_name")}
        for n in sorted(g.nodes.values(), key=lambda n: (n.depth, n.kind, n.label))
    ], schema=pa.schema([("node", pa.string()), ("kind", pa.string()), ("label", pa.string()),
                         ("depth", pa.int32()), ("time", pa.int64()), ("entity_id", pa.uint64()),
                         ("pid", pa.uint32()), ("user_id", pa.uint32()), ("executable", pa.string()),
                         ("file_path", pa.string()), ("file_inode", pa.uint64()),
                         ("host_id", pa.string()), ("host_name", pa.string())]))
    edges = pa.Table.from_pylist([
        {"first_ts": e.t_start, "last_ts": e.t_end if e.t_end < FOREVER else None, "src": e.src,
         "src_label": g.nodes[e.src].label, "kind": e.kind, "dst": e.dst, "dst_label": g.nodes[e.dst].label,
         "bytes": e.bytes, "count": e.count, "name_matched": e.name_matched}
        for e in sorted(g.edges, key=lambda e: (e.t_start, e.src, e.dst))
    ], schema=pa.schema([("first_ts", pa.int64()), ("last_ts", pa.int64()), ("src", pa.string()),
                         ("src_label", pa.string()), ("kind", pa.string()), ("dst", pa.string()),
                         ("dst_label", pa.string()), ("bytes", pa.int64()), ("count", pa.int64()),
                         ("name_matched", pa.bool_())]))
    return nodes, edges
