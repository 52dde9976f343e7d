"""Built-in detectors that need state beyond one event: they watch the recorder itself.

They raise alerts exactly like Sigma rules (same table, same outputs), live through
``observe`` and over history through ``hunt_filter`` (the store rows replayed through
``observe`` in time order, so both paths share one implementation).

- the recorder killed: a signal sent to a recorder process by another process;
- bpf() by another process, and BPF detach commands (the sensor's programs unhooked);
- ring-buffer gaps: records the kernel could not deliver (the ``gaps`` table);
- the store or spool touched (written, truncated, removed, renamed) by another process;
- timestomping by the programs fx_timestomp leaves out by name (rules.timestomp).

Recorder processes are learnt from agent ``start`` events (their pid; ``file_path`` when
set is the store path, protected from then on) and from what the live recorder passes in.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from forensix.model.timefmt import format_ns
from forensix.rules.alerts import ALERT_FIELDS, RuleMeta, build_alerts, empty_alerts
from forensix.rules.chains import CHAIN_RULES, chain_detectors
from forensix.rules.fields import WRITE_OPEN_MASK
from forensix.rules.ir import And, Const, Node, Or, Pred
from forensix.rules.live import actions_of, null_false
from forensix.rules.timestomp import NAMED_TIMESTOMP, NamedTimestomp

__all__ = ["DETECTOR_RULES", "Detector", "GapDetector", "RecorderGuard", "default_detectors"]

KILLED = RuleMeta(
    "forensix-recorder-killed", "Recorder signalled by another process", "critical",
    ("attack.defense-impairment", "attack.t1685"),
)
BPF_DETACH = RuleMeta(
    "forensix-bpf-detach", "BPF program or link detached by another process", "critical",
    ("attack.defense-impairment", "attack.t1685"),
)
BPF_OTHER = RuleMeta(
    "forensix-bpf-other-process", "bpf() called by a process other than the recorder", "medium",
    ("attack.defense-impairment", "attack.t1685"),
)
STORE_TOUCHED = RuleMeta(
    "forensix-store-touched", "Recorder store or spool modified by another process", "critical",
    ("attack.stealth", "attack.t1070"),
)
GAP = RuleMeta(
    "forensix-ring-buffer-gap", "Events lost: recording gap", "high",
    ("attack.defense-impairment", "attack.t1685"),
)
COPIED_EXEC = RuleMeta(
    "forensix-system-binary-copy-executed", "System binary copied to a temporary directory and executed",
    "high", ("attack.stealth", "attack.t1036.003"),
)
HISTORY_TREE = RuleMeta(
    "forensix-history-tree-removed", "Shell history removed with its whole directory (a cleanup)", "low",
    ("attack.stealth", "attack.t1070.003"),
)
HISTORY_WALK = RuleMeta(
    "forensix-history-removed-in-walk", "Shell history removed by a directory walk that kept the directory",
    "high", ("attack.stealth", "attack.t1070.003"),
)
DETECTOR_RULES = (KILLED, BPF_DETACH, BPF_OTHER, STORE_TOUCHED, GAP, COPIED_EXEC, HISTORY_TREE, HISTORY_WALK,
                  NAMED_TIMESTOMP, *CHAIN_RULES)

# Signals that stop or kill (SIGHUP INT QUIT ABRT KILL SEGV TERM STOP TSTP).
LETHAL = {1, 2, 3, 6, 9, 11, 15, 19, 20}
BPF_DETACH_CMDS = {9, 34}  # BPF_PROG_DETACH, BPF_LINK_DETACH
# "store-keeper": the recorder's store keeper process (store/keeper.py), which writes the store too
_START, _SIGNAL_BPF = frozenset({"start", "store-keeper"}), frozenset({"kill", "bpf"})
_WATCHED = frozenset({"open", "exec", "rename"})  # by CopiedBinaryExec
_REMOVALS = frozenset({"unlink", "rmdir"})  # by HistoryWalk
_FILE_WRITES = ("truncate", "unlink", "rename", "chmod", "chown", "utimes", "link", "setxattr", "removexattr")


class Detector(Protocol):
    rules: tuple[RuleMeta, ...]

    def observe(self, table: str, data: pa.Table, source: str) -> pa.Table: ...

    def hunt_filter(self) -> dict[str, Node]:
        """table -> the rows to replay through ``observe`` (a predicate over its columns:
        DuckDB and ClickHouse SQL are both made from it)."""
        ...


def _concat(tables: Iterable[pa.Table]) -> pa.Table:
    ts = [t for t in tables if t.num_rows]
    return pa.concat_tables(ts) if ts else empty_alerts()


def _rows(data: pa.Table, mask: pa.Array) -> list[dict[str, Any]]:
    if not pc.any(mask).as_py():
        return []
    rows: list[dict[str, Any]] = data.filter(mask).to_pylist()
    return rows


_ROW = "_row"  # a narrow row's index in its batch


def _narrow_rows(data: pa.Table, mask: pa.Array, columns: Sequence[str]) -> list[dict[str, Any]]:
    """The rows under ``mask`` with only ``columns`` (and their index, for ``_whole``):
    most candidate rows are looked at and dropped, and turning a row of every events
    column into Python costs more than the look."""
    if not pc.any(mask).as_py():
        return []
    idx = np.nonzero(pc.fill_null(mask, False).to_numpy(zero_copy_only=False))[0]
    rows: list[dict[str, Any]] = data.select(list(columns)).take(pa.array(idx)).to_pylist()
    for r, i in zip(rows, idx.tolist()):
        r[_ROW] = i
    return rows


def _whole(data: pa.Table, row: dict[str, Any]) -> dict[str, Any]:
    """What an alert needs of the row a narrow row stands for."""
    if _ROW not in row:
        return row
    return _alert_rows(data, [row[_ROW]])[0]


def _alert_rows(data: pa.Table, rows: Sequence[int]) -> list[dict[str, Any]]:
    """The fields ``build_alerts`` reads (``ALERT_FIELDS``) of these rows of the batch."""
    names = [c for c in ALERT_FIELDS if data.schema.get_field_index(c) >= 0]
    got: list[dict[str, Any]] = data.select(names).take(pa.array(rows, pa.int64())).to_pylist()
    return got


class RecorderGuard:
    """Signals, bpf() and store writes aimed at the recorder."""

    rules: tuple[RuleMeta, ...] = (KILLED, BPF_DETACH, BPF_OTHER, STORE_TOUCHED)

    def __init__(self, self_pids: Sequence[int] = (), protected: Sequence[str] = ()) -> None:
        self.self_pids = set(self_pids)
        self.pids: dict[tuple[str, str], set[int]] = {}
        self.protected = [p for p in protected if p]
        self._bpf_seen: dict[tuple[str, int], None] = {}  # (rule, entity): one alert per process

    def _recorders(self, r: dict[str, Any]) -> set[int]:
        return self.pids.get((r["host_id"], r["boot_id"]), set()) | self.self_pids

    def _learn(self, rows: list[dict[str, Any]]) -> None:
        for r in rows:
            self.pids.setdefault((r["host_id"], r["boot_id"]), set()).add(r["process_pid"])
            path = r.get("file_path")
            if path and path not in self.protected:
                self.protected.append(path)

    def hunt_prelude(self) -> dict[str, Node]:
        """Rows a hunt shows first, to learn from: the recorder's start rows name its pids
        and the store files it protects (``_learn``), which ``hunt_filter`` then narrows to."""
        return {"events": And((Pred("event_category", "eq", "agent"), Pred("event_action", "in", tuple(_START))))}

    def hunt_filter(self) -> dict[str, Node]:
        # only writes that ``_candidates`` keeps: to a protected path, and an open only when
        # it may write (most events are opens and unlinks of other files)
        opens = And((Pred("event_action", "eq", "open"), Pred("file_flags", "bits", WRITE_OPEN_MASK)))
        writes: Node = Or((Pred("event_action", "in", _FILE_WRITES), opens))
        near = [Pred(c, "prefix", base.rstrip("/")) for base in self.protected
                for c in ("file_path", "file_target_path")]
        watched = [And((writes, Or(tuple(near))))] if near else []
        acts = Pred("event_action", "in", tuple(_SIGNAL_BPF))
        return {"events": Or((Pred("event_category", "eq", "agent"), acts, *watched))}

    def _touches(self, r: dict[str, Any]) -> bool:
        act = r["event_action"]
        if act == "open" and not (r.get("file_flags") or 0) & WRITE_OPEN_MASK:
            return False
        if act != "open" and act not in _FILE_WRITES:
            return False
        paths = [p for p in (r.get("file_path"), r.get("file_target_path")) if p]
        return any(p == base or p.startswith((base + ".", base.rstrip("/") + "/"))
                   for p in paths for base in self.protected)

    def _first_bpf(self, meta: RuleMeta, r: dict[str, Any]) -> bool:
        """bpftool makes dozens of bpf() calls: one alert per process (and kind) is enough."""
        key = (meta.rule_id, r.get("process_entity_id") or r.get("process_pid") or 0)
        if key in self._bpf_seen:
            return False
        self._bpf_seen[key] = None
        if len(self._bpf_seen) > 10_000:
            self._bpf_seen.pop(next(iter(self._bpf_seen)))
        return True

    def _candidates(self, data: pa.Table) -> pa.Array:
        """Rows worth a look, chosen vectorised (most events are opens of other files)."""
        act = data.column("event_action")
        keep = pa.array(actions_of(data).where(_SIGNAL_BPF))
        if self.protected:
            near = functools.reduce(  # a missing path is not near (_touches skips it too)
                pc.or_,
                [null_false(pc.starts_with(data.column(c), base.rstrip("/")))
                 for base in self.protected for c in ("file_path", "file_target_path")],
            )
            if not pc.any(near).as_py():  # the usual batch: nothing near the store
                return null_false(keep)
            flags = pc.fill_null(data.column("file_flags"), 0)
            writes = pc.or_(
                pc.is_in(act, pa.array(list(_FILE_WRITES))),
                pc.and_(pc.equal(act, "open"), pc.not_equal(pc.bit_wise_and(flags, WRITE_OPEN_MASK), 0)),
            )
            keep = pc.or_(keep, pc.and_(writes, near))
        return null_false(keep)

    # what the decisions below read; an alert gets the whole row
    _DECIDE = ("host_id", "boot_id", "ts", "event_action", "process_pid", "process_entity_id", "target_pid",
               "signal", "a0", "file_flags", "file_path", "file_target_path")

    def observe(self, table: str, data: pa.Table, source: str) -> pa.Table:
        if table != "events" or data.num_rows == 0:
            return empty_alerts()
        acts = actions_of(data)
        if acts.any(_START):  # rare: compare categories only then
            start = pa.array(acts.where(_START))
            self._learn(_rows(data, pc.and_(pc.equal(data.column("event_category"), "agent"), start)))
        out: dict[RuleMeta, list[dict[str, Any]]] = {m: [] for m in self.rules}
        for r in sorted(_narrow_rows(data, self._candidates(data), self._DECIDE), key=lambda x: x["ts"]):
            mine = self._recorders(r)
            if r.get("process_pid") in mine:
                continue
            a = r["event_action"]
            if a == "kill" and r.get("target_pid") in mine and r.get("signal") in LETHAL:
                hit = _whole(data, r)
                hit["fx_detail"] = f"signal {r['signal']} to recorder pid {r['target_pid']}"
                out[KILLED].append(hit)
            elif a == "bpf":
                meta = BPF_DETACH if (r.get("a0") or 0) in BPF_DETACH_CMDS else BPF_OTHER
                if meta is BPF_OTHER and r.get("process_pid") == 1:
                    continue  # systemd loads cgroup programs routinely
                if self._first_bpf(meta, r):
                    out[meta].append(_whole(data, r))
            elif self.protected and self._touches(r):
                out[STORE_TOUCHED].append(_whole(data, r))
        return _concat(build_alerts(m, rows, source) for m, rows in out.items() if rows)


class GapDetector:
    """Every recorded loss window becomes an alert."""

    rules: tuple[RuleMeta, ...] = (GAP,)

    def hunt_filter(self) -> dict[str, Node]:
        # The recorder also writes an agent 'gap' event per gap record: the gaps table
        # alone is watched, so one loss raises one alert.
        return {"gaps": Const(True)}

    def observe(self, table: str, data: pa.Table, source: str) -> pa.Table:
        if data.num_rows == 0:
            return empty_alerts()
        if table == "gaps":
            rows = []
            for g in data.to_pylist():
                rows.append(
                    {
                        "host_id": g["host_id"], "host_name": g.get("host_name"), "boot_id": g["boot_id"],
                        "ts": g["ts_from"], "cpu": g.get("cpu"), "seq": f"gap-{g.get('event_class')}",
                        "fx_detail": f"{'unknown number of' if g.get('count_unknown') else g['count']} "
                        f"{g.get('event_class') or ''} records lost"
                        f" on cpu {g.get('cpu')} ({g['reason']}) until {format_ns(g['ts_to'])}",
                    }
                )
            return build_alerts(GAP, rows, source)
        return empty_alerts()


SYSTEM_BIN_DIRS = ("/bin/", "/sbin/", "/usr/bin/", "/usr/sbin/", "/usr/local/bin/", "/usr/local/sbin/")
TEMP_DIRS = ("/tmp/", "/var/tmp/", "/dev/shm/")
COPY_WINDOW_NS = 30 * 10**9


class CopiedBinaryExec:
    """A process reads a system binary, writes a file in a temporary directory (cp, dd,
    install), and that file is executed - under its own or another name.

    The recorder drains the process ring before the file ring, so the exec of the copy
    can arrive before the writes that made it: execs from temporary directories are
    kept for ``PENDING_NS`` and matched when the copy shows up.
    """

    rules: tuple[RuleMeta, ...] = (COPIED_EXEC,)
    PENDING_NS = 10 * 10**9

    def __init__(self, max_tracked: int = 10_000) -> None:
        self.reads: dict[int, tuple[str, int]] = {}  # entity -> (system binary, ts)
        self.copies: dict[str, tuple[str, int]] = {}  # temp path -> (system binary, ts written)
        self.pending: dict[str, list[dict[str, Any]]] = {}  # temp path -> execs not yet matched
        self.max_tracked = max_tracked

    def hunt_filter(self) -> dict[str, Node]:
        dirs = [Pred("file_path", "prefix", d) for d in SYSTEM_BIN_DIRS + TEMP_DIRS]
        dirs += [Pred("file_target_path", "prefix", d) for d in TEMP_DIRS]
        return {"events": And((Pred("event_action", "in", ("open", "exec", "rename")), Or(tuple(dirs))))}

    def _hit(self, r: dict[str, Any], exe: str, src: str) -> dict[str, Any]:
        r["fx_image"] = exe
        r["fx_detail"] = f"copy of {src}"
        return r

    def _copied(self, path: str, src: str, ts: int) -> list[dict[str, Any]]:
        self.copies[path] = (src, ts)
        waiting = self.pending.pop(path, [])
        return [self._hit(r, path, src) for r in waiting if r["ts"] >= ts]

    def _step(self, r: dict[str, Any]) -> list[dict[str, Any]]:
        act, path, eid = r["event_action"], r.get("file_path") or "", r.get("process_entity_id") or 0
        if act == "open":
            writes = (r.get("file_flags") or 0) & WRITE_OPEN_MASK
            if not writes and path.startswith(SYSTEM_BIN_DIRS):
                self.reads[eid] = (path, r["ts"])
            elif writes and path.startswith(TEMP_DIRS) and eid in self.reads:
                src, ts = self.reads[eid]
                if r["ts"] - ts <= COPY_WINDOW_NS:
                    return self._copied(path, src, r["ts"])
        elif act == "rename" and path in self.copies and r.get("file_target_path"):
            src, ts = self.copies.pop(path)
            return self._copied(r["file_target_path"], src, ts)
        elif act == "exec":
            exe = r.get("process_executable") or path
            if exe in self.copies:
                return [self._hit(r, exe, self.copies[exe][0])]
            if exe.startswith(TEMP_DIRS):
                self.pending.setdefault(exe, []).append(r)
        return []

    def _trim(self, now: int) -> None:
        for path in [p for p, rs in self.pending.items() if rs[-1]["ts"] < now - self.PENDING_NS]:
            del self.pending[path]
        if len(self.reads) > self.max_tracked:
            self.reads.clear()
        while len(self.copies) > self.max_tracked:
            self.copies.pop(next(iter(self.copies)))

    # what ``_step`` reads; an exec it keeps or reports gets the fields of an alert
    _STEP = ("ts", "event_action", "file_path", "file_target_path", "file_flags",
             "process_entity_id", "process_executable")

    def _kept(self, r: dict[str, Any]) -> bool:
        """Whether ``_step`` keeps this exec row or reports it."""
        exe = r.get("process_executable") or r.get("file_path") or ""
        return exe in self.copies or exe.startswith(TEMP_DIRS)

    def _near(self, data: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """The rows of the paths watched (opens, execs and renames of system binaries
        or in temporary directories): their indices in the batch, their actions, and
        which of them are system binaries and temporary files."""
        rows = np.flatnonzero(actions_of(data).where(_WATCHED))
        if not len(rows):
            return None
        take = pa.array(rows)
        sysbin, temp = _prefixed(data.column("file_path").take(take), SYSTEM_BIN_DIRS, TEMP_DIRS)
        near = sysbin | temp
        target = data.column("file_target_path")
        if target.null_count < len(target):  # renames and links only
            near |= _prefixed(target.take(take), TEMP_DIRS)[0]
        if not near.any():
            return None
        keep = np.flatnonzero(near)
        rows = rows[keep]
        acts = data.column("event_action").take(pa.array(rows)).to_numpy(zero_copy_only=False)
        return rows, acts, sysbin[keep], temp[keep]

    def _useful(self, data: pa.Table, rows: np.ndarray, act: np.ndarray, sysbin: np.ndarray,
                temp: np.ndarray) -> np.ndarray:
        """Which of the watched ``rows`` ``_step`` can do anything with, decided vectorised:
        most are reads of temporary files, writes by processes that read no system
        binary, and execs of system binaries, which it ignores."""
        is_open, is_exec = act == "open", act == "exec"
        flags = pc.fill_null(data.column("file_flags").take(pa.array(rows)), 0).to_numpy()
        writes = (flags & WRITE_OPEN_MASK) != 0
        reads = is_open & ~writes & sysbin
        useful: np.ndarray = reads | (act == "rename")
        written = np.flatnonzero(is_open & writes & temp)
        if len(written):  # a copy only by a process that read a system binary (before, or in this batch)
            eid = pc.fill_null(data.column("process_entity_id").take(pa.array(rows)), 0).to_numpy()
            readers = set(self.reads) | set(eid[reads].tolist())
            for i, e in zip(written.tolist(), eid[written].tolist()):
                useful[i] = e in readers
        execs = np.flatnonzero(is_exec)
        if len(execs):  # an exec matters if it may be a copy: in a temporary directory, or copied before
            copied = np.flatnonzero(useful & ~reads & (act == "open"))
            made = set(data.column("file_path").take(pa.array(rows[copied])).to_pylist())
            renames = pa.array(rows[act == "rename"])
            made |= {t for t in data.column("file_target_path").take(renames).to_pylist() if t}
            at = pa.array(rows[execs])
            exe = data.column("process_executable").take(at).to_pylist()
            path = data.column("file_path").take(at).to_pylist()
            for i, x, p in zip(execs.tolist(), exe, path):
                x = x or p or ""
                useful[i] = x.startswith(TEMP_DIRS) or x in self.copies or x in made
        return useful

    def observe(self, table: str, data: pa.Table, source: str) -> pa.Table:
        if table != "events" or data.num_rows == 0:
            return empty_alerts()
        found = self._near(data)
        if found is None:
            return empty_alerts()
        idx, act, sysbin, temp = found
        latest = pc.max(data.column("ts").take(pa.array(idx))).as_py()
        idx = idx[self._useful(data, idx, act, sysbin, temp)]
        rows = data.select(list(self._STEP)).take(pa.array(idx)).to_pylist()
        for r, i in zip(rows, idx.tolist()):
            r[_ROW] = i
        hits: list[dict[str, Any]] = []
        kept: list[dict[str, Any]] = []
        for r in sorted(rows, key=lambda r: r["ts"]):
            if r["event_action"] == "exec" and self._kept(r):
                kept.append(r)  # kept or reported: it gets the fields of an alert below
            hits.extend(self._step(r))
        if kept:  # in place: the rows kept pending are these dicts
            for r, f in zip(kept, _alert_rows(data, [r.pop(_ROW) for r in kept])):
                r.update(f)
        self._trim(latest)
        return build_alerts(COPIED_EXEC, hits, source) if hits else empty_alerts()


def _prefixed(strings: pa.Array | pa.ChunkedArray, *groups: Sequence[str]) -> list[np.ndarray]:
    """For each group of prefixes, whether each string starts with one of them (NULL does
    not). Decided once per distinct head of the strings: a batch's paths begin in a few
    dozen ways, and one pass over them costs less than a scan per prefix."""
    width = max(len(p) for g in groups for p in g)
    heads = pc.dictionary_encode(pc.utf8_slice_codeunits(strings, 0, width))
    if isinstance(heads, pa.ChunkedArray):
        heads = heads.combine_chunks()
    values = heads.dictionary.to_pylist()
    idx = heads.indices
    idx = (idx.fill_null(len(values)) if idx.null_count else idx).to_numpy()
    out = []
    for g in groups:
        starts = tuple(g)
        ok = np.fromiter((v.startswith(starts) for v in values), dtype=bool, count=len(values))
        out.append(np.append(ok, False)[idx])  # the last code: NULL
    return out


# the names fx_history_removed watches; its unlinks relative to a directory descriptor (a
# tree walk: rm -r, shutil.rmtree, find -delete) are left to HistoryWalk
HISTORY_NAMES = ("/.bash_history", "/.zsh_history", "/.sh_history", "/.history", "/.ash_history", "/.histfile",
                 "/fish_history")
AT_FDCWD = (4294967196, 18446744073709551516)  # -100 as the sensor's 32-bit or a 64-bit register
TREE_WINDOW_NS = 10**9


class HistoryWalk:
    """A history file unlinked inside a directory walk: low when the same process removes
    the file's directory within a second (a cleanup of a whole tree, pytest's temp dirs),
    high otherwise (``find ~ -name .bash_history -delete``). Held until the directory's
    removal, a second of later events, or the end of the recording (``flush``)."""

    rules: tuple[RuleMeta, ...] = (HISTORY_TREE, HISTORY_WALK)

    def __init__(self) -> None:
        self._held: dict[tuple[int, str], dict[str, Any]] = {}  # (entity, directory) -> the unlink

    def hunt_filter(self) -> dict[str, Node]:
        unlinkat = And((Pred("event_action", "eq", "unlink"), Pred("syscall", "eq", "unlinkat")))
        return {"events": Or((Pred("event_action", "eq", "rmdir"), unlinkat))}

    def _walked(self, r: dict[str, Any]) -> bool:
        return (r["event_action"] == "unlink" and r["syscall"] == "unlinkat" and r["a0"] not in AT_FDCWD
                and (r["file_path"] or "").endswith(HISTORY_NAMES))

    def observe(self, table: str, data: pa.Table, source: str) -> pa.Table:
        if table != "events" or data.num_rows == 0:
            return empty_alerts()
        acts = actions_of(data)
        low = []
        rows = (_narrow_rows(data, pa.array(acts.where(_REMOVALS)),
                             ("ts", "process_entity_id", "event_action", "syscall", "a0", "file_path"))
                if acts.any(_REMOVALS) else [])
        for r in rows:
            if self._walked(r):
                self._held[(r["process_entity_id"], r["file_path"].rsplit("/", 1)[0])] = _whole(data, r)
            elif r["event_action"] == "rmdir":
                u = self._held.pop((r["process_entity_id"], r["file_path"]), None)
                if u is not None and r["ts"] - u["ts"] <= TREE_WINDOW_NS:
                    low.append(u | {"fx_detail": f"its directory {r['file_path']} removed by the same process"})
                elif u is not None:
                    self._held[(r["process_entity_id"], r["file_path"])] = u
        latest = (pc.max(data.column("ts")).as_py() or 0) if self._held else 0  # (none held: nothing is late)
        late = [k for k, u in self._held.items() if latest - u["ts"] > TREE_WINDOW_NS]
        high = [self._held.pop(k) for k in late]
        out = [build_alerts(HISTORY_TREE, low, source), build_alerts(HISTORY_WALK, high, source)]
        if source == "hunt":  # the hunt replays every row at once: nothing more will come
            out.append(self.flush(source))
        return _concat(out)

    def flush(self, source: str) -> pa.Table:
        """The walks whose directory was not removed by the end of the recording."""
        held, self._held = list(self._held.values()), {}
        return build_alerts(HISTORY_WALK, held, source)


def default_detectors(self_pids: Sequence[int] = (), protected: Sequence[str] = ()) -> list[Detector]:
    return [RecorderGuard(self_pids, protected), GapDetector(), CopiedBinaryExec(), HistoryWalk(),
            NamedTimestomp(), *chain_detectors()]
