"""A dependency graph an investigator can read at a glance: the causal chain drawn, the rest
counted in group nodes.

A backtrack of a seven-process intrusion holds a hundred or more objects, most of them the
loader's and the C library's reads, locale files, ancestors that only forked, and runs of
sibling files. None of that is hidden here; it is folded, and every group node says what it
holds and how many (its members' keys and labels go with it, so the UI can open it). In order:

1. read-only system files (nothing in the graph wrote them), in one node that counts them by
   what they are: shared libraries, system programs run, locale data, name-service and other
   hub configuration, /proc, /sys and /dev;
2. three or more files in one directory that touch the same processes the same way;
3. more than five files (or connections) that touch nothing but one process: its others;
4. chains of processes that did nothing in the graph but fork (a session's ancestors up to
   init, a shell's idle children);
5. past ``limit`` drawn nodes (groups included), the least telling objects (far from the
   target, read only), one group per kind: at most ``limit`` + 4 nodes in all.

Edges between the same two objects become one edge that lists its kinds (one per image a
process end ran then: analysis.images); two objects joined
both ways (a process and its connection) keep the way that leads toward the target backward
and away from it forward, so the drawing reads from cause to effect. Several graphs (an incident's backward and
forward ones) are compacted together, so an object both share is folded, or not, in both.
"""

from __future__ import annotations

import fnmatch
import posixpath
from collections.abc import Sequence
from dataclasses import replace

from forensix.analysis.graph_model import Edge, Graph, Node

__all__ = ["GROUPS", "LIMIT", "compact"]

# Nodes drawn at most, groups included (plus one "more" group per kind): about what a
# 1100 x 640 pixel box shows with 11-pixel labels that do not overlap in a left-to-right
# layout (eight ranks of five).
LIMIT = 40
_READS = frozenset({"read", "open-read", "exec", "mmap"})
# the kind a merged edge is drawn as: what moved data first, then what made or ran things
_RANK = ("write", "read", "exec", "create/trunc", "create", "open-trunc", "open-write", "rename", "unlink",
         "chmod", "chown", "link", "symlink", "truncate", "fork", "kill", "ptrace", "connect", "accept",
         "mmap", "open-read")

# (part, patterns as fnmatch globs): the first that matches a read-only file names its part
# of the one "system files read" group
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("locale", ("/usr/lib/locale/*", "/usr/share/locale/*", "/etc/locale.*", "/usr/lib/*/gconv/*",
                "/etc/default/locale")),
    ("configuration", (
        "/etc/ld.so.cache", "/etc/ld.so.preload", "/etc/passwd", "/etc/group", "/etc/nsswitch.conf",
        "/etc/hosts", "/etc/host.conf", "/etc/resolv.conf", "/etc/gai.conf", "/etc/localtime",
        "/etc/ssl/openssl.cnf", "/etc/ssl/certs/*", "/etc/login.defs", "/etc/inputrc", "/etc/terminfo/*",
        "/etc/mime.types", "/run/utmp", "/var/run/utmp", "/etc/environment", "/etc/profile",
        "/etc/bash.bashrc", "/etc/selinux/config", "/etc/machine-id", "/etc/os-release",
        "/usr/lib/os-release", "/usr/share/zoneinfo/*", "/etc/alternatives/*")),
    ("programs", ("/usr/bin/*", "/usr/sbin/*", "/bin/*", "/sbin/*", "/usr/local/bin/*", "/usr/libexec/*")),
    ("libraries", (
        "/usr/lib/*", "/usr/lib64/*", "/lib/*", "/lib64/*", "/usr/local/lib/*", "/usr/share/*", "*.so",
        "*.so.*", "*/__pycache__/*", "*.pyc", "*/lib/python*", "*/site-packages/*", "/usr/include/*")),
    ("pseudo-files", ("/proc/*", "/sys/*", "/dev/*")),
)
_SYSTEM = "g:system"


def compact(graphs: Sequence[Graph], limit: int = LIMIT) -> list[Graph]:
    """``graphs`` folded as the module says, each in its own direction; one decision per
    object over all of them."""
    nodes: dict[str, Node] = {}
    for g in graphs:
        for k, n in g.nodes.items():
            if k not in nodes or n.depth < nodes[k].depth:
                nodes[k] = n
    edges = [e for g in graphs for e in g.edges]
    roots = {r for g in graphs for r in g.roots}
    fold = _Folding(nodes, edges, roots)
    fold.system_files()
    fold.siblings()
    fold.fan_outs()
    fold.fork_chains({k for g in graphs if g.direction == "forward" for k in g.nodes})
    fold.bound(limit)
    return [_apply(g, fold) for g in graphs]


class _Folding:
    """Which group each folded object went to, decided over the union of the graphs."""

    def __init__(self, nodes: dict[str, Node], edges: list[Edge], roots: set[str]) -> None:
        self.nodes, self.edges, self.roots = nodes, edges, roots
        self.into: dict[str, str] = {}  # member key -> group key
        self.groups: dict[str, Node] = {}
        self.around: dict[str, list[Edge]] = {k: [] for k in nodes}
        for e in edges:
            for k in (e.src, e.dst):
                if k in self.around:
                    self.around[k].append(e)

    def _add(self, key: str, label: str, what: str, members: list[str]) -> None:
        ms = [self.nodes[m] for m in members]
        g = self.groups.get(key)
        if g is None:
            g = self.groups[key] = Node(key, "group", label, min(m.depth for m in ms), max(m.time for m in ms),
                                        {"group": what, "members": [], "member_labels": [], "of": ms[0].kind})
        g.attrs["members"] += members
        g.attrs["member_labels"] += [m.label for m in ms]
        g.depth = min([g.depth] + [m.depth for m in ms])
        # reached from where its nearest member was (the text's tree hangs it there)
        near = min(((m.depth, str(m.attrs["via"])) for m in ms if m.attrs.get("via")), default=None)
        if near is not None and (g.attrs.get("via") is None or near[0] <= g.attrs["via_depth"]):
            g.attrs.update(via=near[1], via_depth=near[0])
        for m in members:
            self.into[m] = key
        n = len(g.attrs["members"])
        g.attrs["count"] = n
        g.label = label.format(n=n)

    def _free(self, kind: str) -> list[Node]:
        return [n for k, n in self.nodes.items() if n.kind == kind and k not in self.into and k not in self.roots]

    def _only_read(self, key: str) -> bool:
        es = self.around[key]
        return bool(es) and all(e.src == key and e.kind in _READS for e in es)

    def system_files(self) -> None:
        for n in self._free("file"):
            path = n.attrs.get("path") or ""
            if not path or not self._only_read(n.key):
                continue
            part = next((name for name, pats in GROUPS if any(fnmatch.fnmatchcase(path, p) for p in pats)), None)
            if part is not None:
                self._add(_SYSTEM, "{n} system files read", "system", [n.key])
                parts = self.groups[_SYSTEM].attrs.setdefault("parts", {})
                parts[part] = parts.get(part, 0) + 1

    def _signature(self, key: str) -> frozenset[tuple[str, str, bool]]:
        """Which objects a file touches and how (ends seen through groups already made)."""
        return frozenset((self.into.get(o, o), e.kind, e.src == key)
                         for e in self.around[key] for o in (e.dst if e.src == key else e.src,))

    def siblings(self) -> None:
        runs: dict[tuple[str, frozenset[tuple[str, str, bool]]], list[str]] = {}
        for n in self._free("file"):
            path = n.attrs.get("path") or ""
            if path.startswith("/"):
                runs.setdefault((posixpath.dirname(path), self._signature(n.key)), []).append(n.key)
        for (d, sig), keys in sorted(runs.items(), key=lambda kv: (kv[0][0], min(kv[1]))):
            if len(keys) >= 3:
                self._add(f"g:dir:{d}:{len(self.groups)}", "{n} files in " + (d.rstrip("/") + "/"), "directory",
                          sorted(keys))

    def fan_outs(self, most: int = 5) -> None:
        """More than ``most`` objects of one kind that touch nothing but one process (what a
        busy process, say a test runner that also received the data, did besides): one group."""
        leaves: dict[tuple[str, str], list[str]] = {}
        for k, n in self.nodes.items():
            if k in self.into or k in self.roots or n.kind == "process":
                continue
            ends = {self.into.get(o, o) for e in self.around[k] for o in (e.src, e.dst) if o != k}
            if len(ends) == 1:
                leaves.setdefault((ends.pop(), n.kind), []).append(k)
        for (p, kind), keys in sorted(leaves.items()):
            if len(keys) > most and p in self.nodes:
                self._add(f"g:leaves:{p}:{kind}", "{n} " + f"other {kind}s of {self.nodes[p].label}", "leaves",
                          sorted(keys))

    def _started(self, key: str) -> tuple[int, str]:
        return self.nodes[key].attrs.get("start_ts") or 0, key  # (a set's order varies run to run)

    def _fork_only(self, key: str) -> bool:
        """Nothing but forks, or reads of what was already folded as system files."""
        return all(e.kind == "fork" or self.into.get(e.src if e.dst == key else e.dst) == _SYSTEM
                   for e in self.around[key])

    def fork_chains(self, ahead: set[str]) -> None:
        """``ahead``: the objects of forward graphs (a chain none of them holds: ancestors)."""
        idle = {n.key for n in self._free("process") if self._fork_only(n.key)}
        seen: set[str] = set()
        for start in sorted(idle, key=self._started):
            if start in seen:
                continue
            chain, todo = [], [start]
            while todo:  # the run of idle processes joined by forks
                k = todo.pop()
                if k in seen:
                    continue
                seen.add(k)
                chain.append(k)
                todo += [o for e in self.around[k] if e.kind == "fork"
                         for o in (e.src, e.dst) if o in idle and o not in seen]
            if len(chain) >= 2:
                chain.sort(key=self._started)
                first, last = (self.nodes[chain[i]].label.split(" [")[0] for i in (0, -1))
                word = "forked" if ahead & set(chain) else "ancestor"
                self._add(f"g:procs:{chain[0]}", "{n} " + f"{word} processes ({first} … {last})", "processes", chain)

    def bound(self, limit: int) -> None:
        """Past ``limit`` drawn objects, fold the least telling ones, by kind."""
        shown = [n for k, n in self.nodes.items() if k not in self.into]
        limit = max(limit - len(self.groups), 1)  # the groups drawn count too
        if len(shown) <= limit:
            return
        writes = {k for e in self.edges if e.kind not in _READS and e.kind != "fork" for k in (e.src, e.dst)}

        def rank(n: Node) -> tuple[int, int, str]:
            tier = 0 if n.key in self.roots else 1 if n.key in writes or n.kind != "file" else 2
            return tier, n.depth, n.key

        for n in sorted(shown, key=rank)[limit:]:
            self._add(f"g:more:{n.kind}", "{n} more " + n.kind + "s (far from the target)", "more", [n.key])


def _apply(g: Graph, fold: _Folding) -> Graph:
    def to(k: str) -> str:
        return fold.into.get(k, k)

    nodes: dict[str, Node] = {}
    for k, n in g.nodes.items():
        nk = to(k)
        nodes[nk] = fold.groups.get(nk, n)
    merged: dict[tuple[str, str], list[Edge]] = {}
    for e in g.edges:
        s, d = to(e.src), to(e.dst)
        if s != d:
            merged.setdefault((s, d), []).append(e)
    edges = _one_way(merged, nodes, g.direction == "backward")
    return replace(g, nodes=nodes, edges=[m for (s, d), es in sorted(edges.items()) for m in _by_image(s, d, es)],
                   roots=[to(r) for r in g.roots], full=(len(g.nodes), len(g.edges)))


def _by_image(src: str, dst: str, es: list[Edge]) -> list[Edge]:
    """One merged edge per image of the process ends: what a shell did before it exec'd
    chmod stays apart from what chmod did (analysis.images)."""
    parts: dict[tuple[str, str], list[Edge]] = {}
    for e in es:
        parts.setdefault((e.src_image, e.dst_image), []).append(e)
    return [replace(_merge(src, dst, part), src_image=si, dst_image=di) for (si, di), part in sorted(parts.items())]


def _one_way(merged: dict[tuple[str, str], list[Edge]], nodes: dict[str, Node],
             backward: bool) -> dict[tuple[str, str], list[Edge]]:
    """Two objects joined both ways (a process and its connection, a file read and written)
    keep the way that leads to the target backward, or away from it forward; at the same
    distance, both."""
    out = dict(merged)
    for (s, d) in merged:
        if (d, s) not in merged:
            continue
        ds, dd = nodes[s].depth, nodes[d].depth
        if (ds > dd) if backward else (ds < dd):
            out.pop((d, s), None)
    return out


def _merge(src: str, dst: str, es: list[Edge]) -> Edge:
    kinds = sorted({e.kind for e in es}, key=lambda k: (_RANK.index(k) if k in _RANK else len(_RANK), k))
    return Edge(src, dst, kinds[0], min(e.t_start for e in es), max(e.t_end for e in es),
                sum(e.bytes for e in es), sum(e.count for e in es),
                name_matched=all(e.name_matched for e in es), kinds=tuple(kinds))

