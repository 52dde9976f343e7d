"""One hop of the dependency graph's walk as SQL: the edges into (backward) or out of
(forward) a frontier of processes, files and sockets, as one UNION query over the store.

Edge kinds by direction (see analysis.graph for the time-window rule that bounds them):
process -> file: writes (flows with bytes written), open for writing, truncate, rename,
chmod, chown, link, symlink, unlink, utimes, setxattr; file -> process: reads (flows), open
for reading, exec, mmap; process -> process: fork, kill, ptrace; process <-> connection /
unix socket: connect, accept (both ways; forward, only after the reach: see _sock_sql);
process -> connection / unix socket: the bytes each end wrote (flows), and connection ->
process: the bytes each end read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from forensix.analysis.crosshost import DEFAULT_SLACK_NS
from forensix.analysis.graph_model import WRITE_ACTIONS
from forensix.analysis.lives import NameIndex
from forensix.analysis.noise import noise_case
from forensix.analysis.processes import FOREVER
from forensix.analysis.sockets import SOCK_KEY, UNIX_PAIR, sock_host, sock_name

__all__ = ["LOCAL_HANDSHAKE_NS", "NET_OK", "OK", "WRITE_FLAGS", "Frontier", "handshake_slack", "hop_params",
           "hop_sql", "ints"]

WRITE_FLAGS = 1 | 2 | 64 | 512  # O_WRONLY | O_RDWR | O_CREAT | O_TRUNC
OK = "coalesce(ret, 0) >= 0"
# A non-blocking connect returns EINPROGRESS and goes on to connect: it counts.
NET_OK = "(coalesce(ret, 0) >= 0 OR (event_action = 'connect' AND ret = -115))"
# A connection's two ends on one host, by one clock: the connect returns and the accept
# wakes within the handshake (microseconds); a second covers a loaded scheduler.
LOCAL_HANDSHAKE_NS = 10**9


@dataclass
class Frontier:
    procs: dict[int, int] = field(default_factory=dict)  # entity -> threshold
    # (host, dev, ino, generation) -> threshold; generation 0: unknown (any life of the number)
    files: dict[tuple[str, int, int, int], int] = field(default_factory=dict)
    socks: dict[str, int] = field(default_factory=dict)  # connection/unix key -> threshold
    # forward: connections reached by the connect or accept that made them (see _sock_sql)
    established: set[str] = field(default_factory=set)
    paths: dict[Any, list[str]] = field(default_factory=dict)  # names of the start files
    named: dict[str, int] = field(default_factory=dict)  # lives known by name only (analysis.lives) -> threshold
    index: NameIndex | None = None  # a file target's name index, reused by the walk
    chosen: dict[str, Any] | None = None  # a file target: the life chosen, and the name's others
    others: list[dict[str, Any]] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.procs or self.files or self.socks or self.named)


def hop_params(fr: Frontier) -> dict[str, Any]:
    return {
        "pe": list(fr.procs) or [0], "pt": list(fr.procs.values()) or [0],
        "fh": [h for h, _, _, _ in fr.files] or [""], "fd": [d for _, d, _, _ in fr.files] or [0],
        "fi": [i for _, _, i, _ in fr.files] or [0], "fg": [g for _, _, _, g in fr.files] or [0],
        "ft": list(fr.files.values()) or [0],
        "sk": list(fr.socks) or [""], "st": list(fr.socks.values()) or [0],
        "ss": [handshake_slack(k) if k in fr.established else 0 for k in fr.socks] or [0],
        "bs": [handshake_slack(k) for k in fr.socks] or [0],
        "uh": [h for h, _, _, _ in _unix_pairs(fr)] or [""], "ui": [i for _, i, _, _ in _unix_pairs(fr)] or [0],
        "uk": [k for _, _, k, _ in _unix_pairs(fr)] or [""], "ut": [t for _, _, _, t in _unix_pairs(fr)] or [0],
    }


_FRONTIER_CTES = """
fp AS (SELECT unnest($pe) AS eid, unnest($pt) AS thr),
ff AS (SELECT unnest($fh) AS host, unnest($fd) AS dev, unnest($fi) AS ino, unnest($fg) AS gen, unnest($ft) AS thr),
fs AS (SELECT unnest($sk) AS key, unnest($st) AS thr, unnest($ss) AS slack, unnest($bs) AS bslack),
fu AS (SELECT unnest($uh) AS host, unnest($ui) AS ino, unnest($uk) AS key, unnest($ut) AS thr)
"""
def _unix_pairs(fr: Frontier) -> list[tuple[str, int, str, int]]:
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
    FROM events e JOIN {{JE}} WHERE e.event_action IN ('exec', 'mmap', 'open') AND {OK}
      AND (e.event_action <> 'open' OR (coalesce(e.file_flags, 0) & {WRITE_FLAGS}) = 0)
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
          OR (e.event_action = 'open' AND (coalesce(e.file_flags, 0) & {WRITE_FLAGS}) <> 0))
      AND {OK} AND {{HAS_INODE}} AND {cmp.format(s='e.ts', e='e.ts')}
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
    FROM events e JOIN {{JK}} WHERE e.event_action IN ('kill', 'ptrace') AND {OK}
      AND coalesce(e.target_entity_id, 0) <> 0 AND {cmp.format(s='e.ts', e='e.ts')}
    """


def handshake_slack(key: str) -> int:
    """How long before a connection was reached its other end's connect or accept may be
    recorded: the two ends of one handshake, by one clock (a host's own socket) or two."""
    return LOCAL_HANDSHAKE_NS if sock_host(key) is not None else DEFAULT_SLACK_NS


def _sock_sql(cmp: str, src_is_proc: bool, unix_noise: str) -> str:
    """process <-> connection edges; both directions exist from connect/accept on.

    Forward, the connect or accept itself must come after the reach (``cmp`` on its time, not
    on an open end): a server reached late did not affect the connections it accepted
    before, unless it wrote into them afterwards (its flows say so, ``_file_write_sql``).
    A connection reached by the connect or accept that made it takes its other end even
    when that end's event was recorded a moment earlier (``fr.slack``, handshake_slack)."""
    a = ("'process', n.process_entity_id, NULL, NULL, NULL, n.sock_kind, NULL, NULL, NULL, n.key"
         if src_is_proc else
         "n.sock_kind, NULL, NULL, NULL, n.key, 'process', n.process_entity_id, NULL, NULL, NULL")
    return f"""
    SELECT {a}, n.ts, {FOREVER}, n.event_action, 0, n.unix_path, NULL, NULL
    FROM (SELECT process_entity_id, ts, event_action, unix_path, {SOCK_KEY} AS key,
                 CASE WHEN network_transport = 'unix' THEN 'unix' ELSE 'connection' END AS sock_kind
          FROM events WHERE event_category = 'network' {{NF}}
            AND event_action IN ('connect', 'accept') AND {NET_OK}) n
    JOIN {{JS}} WHERE {cmp.format(s='n.ts', e='n.ts')}
      AND NOT {unix_noise.format(c='n.unix_path')}
    """


def _sock_bytes_sql(cmp: str, backward: bool) -> str:
    """Bytes on the sockets of the frontier's connections and unix sockets: backward, what
    each end wrote into it (the client's request, the server's reply); forward, what each
    end read from it. Flows know a socket only by its inode; the connect or accept that
    made the socket names both (analysis.sockets).

    Forward, a read may be recorded a moment before the write whose bytes it took: on a
    local socket the sender's call is stamped once it returns, after the kernel delivered
    the bytes, and a reader on the other core can have taken them meanwhile (seen under
    load: the server's read 'before' the client's write, and forward from the client's
    file stopped at the connection). Its reads count from ``handshake_slack`` before the
    reach (``fs.bslack``), as the other end's handshake does."""
    slack = "0" if backward else "fr.bslack"
    col, kind, ends = (("write_bytes", "'write'", "'process', f.entity_id, NULL, NULL, NULL, s.kind, NULL, NULL, NULL, s.key")
                       if backward else
                       ("read_bytes", "'read'", "s.kind, NULL, NULL, NULL, s.key, 'process', f.entity_id, NULL, NULL, NULL"))
    return f"""
    SELECT {ends}, f.first_ts, f.last_ts, {kind}, f.{col}, NULL, NULL, NULL
    FROM flows f JOIN (
        SELECT DISTINCT n.host_id, n.file_inode, n.key, fr.thr - {slack} AS thr,
               CASE WHEN n.key LIKE 'u:%' THEN 'unix' ELSE 'connection' END AS kind
        FROM (SELECT host_id, file_inode, {SOCK_KEY} AS key FROM events
              WHERE event_category = 'network' {{NF}} AND event_action IN ('connect', 'accept') AND {NET_OK}
                AND coalesce(file_inode, 0) <> 0) n
        JOIN fs fr ON n.key = fr.key) s ON f.file_inode = s.file_inode AND f.host_id = s.host_id
    WHERE f.{col} > 0 AND {cmp.replace('fr.thr', 's.thr').format(s='f.first_ts', e='f.last_ts')}"""


def _ports_filter(fr: Frontier) -> str:
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
    lit = ints(sorted(ports))
    return f"AND (source_port IN ({lit}) OR destination_port IN ({lit}))"


_EVP_COLS = ("host_id, process_entity_id, target_entity_id, event_category, event_action, ret, ts, file_flags, "
             "file_inode, file_device, file_generation, file_path, file_target_path, file_path_resolution, network_transport, unix_path, "
             "unix_peer_inode, source_ip, source_port, destination_ip, destination_port")
_EVP_ACTIONS = ", ".join(f"'{a}'" for a in ("exec", "mmap", "open", "connect", "accept", "kill", "ptrace",
                                            *WRITE_ACTIONS))


def ints(xs: Iterable[int]) -> str:
    return ", ".join(str(int(x)) for x in xs) or "0"


def hop_sql(backward: bool, active: set[str], fr: Frontier) -> str:
    """Edges into (backward) or out of (forward) the frontier, as one UNION query.

    Only the parts whose frontier is not empty are built, and each repeats its join key as
    a literal IN list so DuckDB filters inside the scan instead of reading every row.
    """
    cmp = "{s} <= fr.thr" if backward else "{e} >= fr.thr"
    # forward from a connection: its other end's handshake may precede the reach a little
    sock_cmp = cmp if backward else "{e} >= fr.thr - fr.slack"
    # Noise is judged on the hop's few rows, outside the scans: pushed into a scan, the
    # LIKE ladder would run on every row there (the frontier's IN list only prunes).
    read_noise = write_noise = unix_noise = "FALSE"
    # libraries: judged in Python (drop_read_only_system_files), where "written" is known
    judge = noise_case(active, skip=frozenset({"libraries"}))
    pe, fi = ints(fr.procs), ints(i for _, _, i, _ in fr.files)
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
        add(_sock_sql(sock_cmp, backward, unix_noise), {"{JS}": "fs fr ON n.key = fr.key",
                                                        "{NF}": _ports_filter(fr)})
        add(_sock_bytes_sql(cmp, backward), {"{NF}": _ports_filter(fr)})
        pairs = _unix_pairs(fr)
        if pairs:
            parts.append(_pair_sql(cmp, backward, ints(i for _, i, _, _ in pairs)))
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

