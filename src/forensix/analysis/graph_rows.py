"""What one hop's rows become before they join the graph: system files nobody wrote
dropped, socket bytes moved onto their connection, an inode number's other lives told apart,
and, once the walk ends, the nodes named (analysis.graph).
"""

from __future__ import annotations

from typing import Any

from forensix.analysis.graph_hop import NET_OK, OK, WRITE_FLAGS, ints
from forensix.analysis.graph_model import Graph, Node, node_key
from forensix.analysis.images import process_images, split_by_image
from forensix.analysis.noise import FILTERS
from forensix.analysis.sockets import SOCK_KEY, UNIX_CONN, sock_host, sock_name
from forensix.store.base import Reader

__all__ = ["add_names", "drop_read_only_system_files", "end_key", "inode_reused", "label_nodes",
           "latest_accepts", "near_key", "sockets_to_connections"]

_LIBS = next(f for f in FILTERS if f.name == "libraries")
_READ_KINDS = ("read", "open-read", "exec", "mmap")


def _is_system_path(path: str) -> bool:
    """The 'libraries' filter's LIKE patterns, in Python (only '%' wildcards are used)."""
    import fnmatch

    return any(fnmatch.fnmatchcase(path, pat.replace("%", "*")) for pat in _LIBS.patterns)


def drop_read_only_system_files(reader: Reader, rows: list[dict[str, Any]],
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
            WHERE file_inode IN ({ints(i for _, _, i in ask)})
              AND (event_action IN ('truncate', 'rename', 'link')
                   OR (event_action = 'open' AND (coalesce(file_flags, 0) & {WRITE_FLAGS}) <> 0))""")
        hit = set(zip(t.column("host_id").to_pylist(), t.column("file_device").to_pylist(),
                      t.column("file_inode").to_pylist()))
        written.update({o: o in hit for o in ask})
    return [r for r in rows if (o := obj(r)) is None or written.get(o, False)]



def end_key(row: dict[str, Any], side: str) -> tuple[str, str, Any]:
    kind = row[f"{side}_kind"]
    if kind == "process":
        return node_key("process", row[f"{side}_eid"]), kind, row[f"{side}_eid"]
    if kind == "file" and row.get("node"):  # name-matched: the life that held the name then
        return row["node"], kind, row["life"]
    if kind == "file":
        obj = (row[f"{side}_key"], row[f"{side}_dev"], row[f"{side}_ino"], row["gen"] or 0)
        return node_key("file", *obj), kind, obj
    return row[f"{side}_key"], kind, row[f"{side}_key"]



def near_key(r: dict[str, Any], side: str, nodes: dict[str, Node]) -> str:
    """The frontier's node a row leads into: a file of unknown life (generation 0, a start
    file of an older store) takes the rows of every life of its number."""
    key, kind, obj = end_key(r, side)
    if kind == "file" and key not in nodes and isinstance(obj, tuple):
        return node_key("file", *obj[:3])
    return key


def _file_side(r: dict[str, Any], nodes: dict[str, Node]) -> str | None:
    for side in ("src", "dst"):
        if r[f"{side}_kind"] == "file":
            return near_key(r, side, nodes)
    return None


def inode_reused(r: dict[str, Any], nodes: dict[str, Node]) -> bool:
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


def add_names(node: Node, r: dict[str, Any]) -> None:
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


def sockets_to_connections(reader: Reader, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Reads and writes on a socket (flows know only its inode) go to its connection node.

    The connect or accept that made the socket carries its inode, so the socket's bytes join
    the node its connect/accept edges lead to (a TCP 4-tuple, a unix socket's path): one node
    per connection, whichever way the bytes were counted. A socket's inode number is its
    host's: the socket is looked up by (host, inode). The two ends of a socketpair (its event
    names both inodes) meet at one node, as do flows that carry the unix peer's inode."""
    socks = {(r[f"{side}_key"], r[f"{side}_ino"]) for r in rows for side in ("src", "dst")
             if _is_socket_row(r, side)}
    if not socks:
        return rows
    lit = ints(sorted({ino for _, ino in socks}))
    t = reader.query(
        f"""SELECT host_id, file_inode, any_value({SOCK_KEY}) AS key, 0 AS pri FROM events
            WHERE event_category = 'network' AND event_action IN ('connect', 'accept') AND {NET_OK}
              AND file_inode IN ({lit}) GROUP BY 1, 2
            UNION ALL
            SELECT host_id, ino, 'u:' || host_id || ':' || least(a, b) || '|' || greatest(a, b), 1 FROM (
                SELECT host_id, file_inode AS a, file_target_inode AS b, unnest([file_inode, file_target_inode]) AS ino
                FROM events WHERE event_action = 'socketpair' AND {OK}
                  AND (file_inode IN ({lit}) OR file_target_inode IN ({lit})))
            WHERE ino IN ({lit})
            UNION ALL
            SELECT host_id, file_inode, 'u:' || host_id || ':' || least(file_inode, any_value(unix_peer_inode))
                               || '|' || greatest(file_inode, any_value(unix_peer_inode)), 2 FROM events
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


def latest_accepts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep, per accepting process, only its latest accept edge (see the 'servers' filter)."""
    latest: dict[int, int] = {}
    for r in rows:
        if r["kind"] == "accept" and r["dst_kind"] == "process":
            latest[r["dst_eid"]] = max(latest.get(r["dst_eid"], r["t_start"]), r["t_start"])
    return [r for r in rows if not (r["kind"] == "accept" and r["dst_kind"] == "process")
            or r["t_start"] == latest[r["dst_eid"]]]



def label_nodes(reader: Reader, g: Graph, ident: dict[str, tuple[str, Any]]) -> None:
    procs = [obj for kind, obj in ident.values() if kind == "process"]
    if procs:
        t = reader.query(
            """SELECT entity_id, arg_max(executable, image_seq) AS exe, arg_min(pid, image_seq) AS pid,
                      arg_max(args, image_seq) AS args, arg_max(user_id, image_seq) AS uid,
                      min(start_ts) AS start_ts, any_value(host_id) AS host_id, any_value(host_name) AS host_name
               FROM processes WHERE entity_id IN (SELECT unnest($e)) GROUP BY entity_id""",
            {"e": procs})
        for r in t.to_pylist():
            n = g.nodes[node_key("process", r["entity_id"])]
            exe = r["exe"] or ((r["args"] or [None])[0]) or "?"
            n.label = f"{exe.rsplit('/', 1)[-1]} [{r['pid']}]"
            n.attrs.update(entity_id=r["entity_id"], executable=exe, pid=r["pid"], args=r["args"],
                           user_id=r["uid"], start_ts=r["start_ts"], host_id=r["host_id"])
            if r["host_name"]:  # the host's name, as analysis.crosshost names every node's
                n.attrs["host_name"] = r["host_name"]
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
    _unix_conn_paths(reader, g)
    # the edges name the image each process ran at their time (a node names its last)
    by_entity = process_images(reader, procs)
    images = {node_key("process", e): imgs for e, imgs in by_entity.items()}
    for key, imgs in images.items():
        if key in g.nodes:
            g.nodes[key].attrs["images"] = [i.name for i in imgs]
    split_by_image(g, images)


def _unix_conn_paths(reader: Reader, g: Graph) -> None:
    """Label a unix stream connection (keyed by its client's socket, analysis.sockets) by the
    path the client connected to, and that socket: one node per connection, not per path."""
    conns = {k: m for k in g.nodes if (m := UNIX_CONN.match(k))}
    if not conns:
        return
    lit = ints(sorted({int(m.group(2)) for m in conns.values()}))
    t = reader.query(f"""
        SELECT host_id, ino, any_value(unix_path) AS path FROM (
            SELECT host_id, file_inode AS ino, unix_path FROM events
            WHERE event_action = 'connect' AND network_transport = 'unix' AND file_inode IN ({lit})
            UNION ALL
            SELECT host_id, unix_peer_inode, unix_path FROM events
            WHERE event_action = 'accept' AND network_transport = 'unix' AND unix_peer_inode IN ({lit}))
        WHERE unix_path IS NOT NULL GROUP BY 1, 2""")
    paths = {(r["host_id"], r["ino"]): r["path"] for r in t.to_pylist()}
    for k, m in conns.items():
        n = g.nodes[k]
        path = paths.get((m.group(1), int(m.group(2))))
        n.attrs.update(client_socket=int(m.group(2)), **({"path": path} if path else {}))
        n.label = f"unix {path or 'socket'} [client {m.group(2)}]"


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
           FROM flows WHERE file_inode IN ({ints(obj[2] for _, obj in missing)}) GROUP BY 1, 2, 3, 4
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

