"""Detectors of two-step chains that no single event shows, told by kernel facts.

- a shell or interpreter whose program arrives through a pipe from a decoder or a
  download (``base64 -d | sh``, ``curl | bash``, ``xxd -r -p | bash``, ``openssl enc -d |
  sh``): the two ends of one pipe inode, a writer among the decoders and downloaders and a
  reader among the shells, as the recorder's data-flow edges show them. An interactive
  pipeline leaves no command line with the pipe in it; the pipe inode is still there.
- a binary written and then run: an open for writing, then an exec of the same file (the
  inode's life: device, inode, generation), by any name and any process; a script without
  `#!` fails to exec (ENOEXEC) and is then run by the shell: its exec is matched by path.

Both work on the recorder's rows in whatever order the rings deliver them (the two ends
of a pipe are flushed when each process closes it; the exec of a file can arrive before
the write that made it), so live and hunt find the same pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from forensix.rules.alerts import ALERT_FIELDS, RuleMeta, build_alerts, empty_alerts
from forensix.rules.fields import WRITE_OPEN_MASK
from forensix.rules.ir import And, Node, Or, Pred
from forensix.rules.live import actions_of

__all__ = ["CHAIN_RULES", "BinaryPadding", "PipeToShell", "WriteThenExec"]

PIPE_SHELL = RuleMeta(
    "forensix-pipe-to-shell", "Shell or interpreter fed through a pipe by a decoder or a download", "high",
    ("attack.execution", "attack.stealth", "attack.t1059.004", "attack.t1140"),
)
WRITE_EXEC = RuleMeta(
    "forensix-written-then-executed", "Binary written and then executed", "high",
    ("attack.execution", "attack.command-and-control", "attack.t1105", "attack.t1204.002"),
)
WRITE_EXEC_LOW = RuleMeta(
    "forensix-written-then-executed-other", "File written by a program and then executed", "low",
    ("attack.execution", "attack.t1204.002"),
)
PADDING = RuleMeta(
    "forensix-binary-padding", "Null or random bytes appended to a file (binary padding)", "medium",
    ("attack.stealth", "attack.t1027.001"),
)
CHAIN_RULES = (PIPE_SHELL, WRITE_EXEC, WRITE_EXEC_LOW, PADDING)
_EXEC, _OPEN = frozenset({"exec"}), frozenset({"open"})


def _flag_bits(data: pa.Table, rows: np.ndarray, bits: int) -> np.ndarray:
    """Whether each of ``rows`` has one of ``bits`` in its file_flags (NULL: none)."""
    flags = pc.fill_null(data.column("file_flags").take(pa.array(rows, pa.int64())), 0)
    got: np.ndarray = (flags.to_numpy(zero_copy_only=False).astype(np.int64, copy=False) & bits) != 0
    return got

# Writers of a pipe that make its content a decoded or downloaded program (comm names).
DECODERS = frozenset({
    "base64", "base32", "basenc", "xxd", "openssl", "uudecode", "gpg", "gunzip", "zcat", "rev",
    "curl", "wget", "nc", "ncat", "netcat", "socat", "tftp", "ftp",
})
SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "busybox", "fish", "csh", "tcsh",
                    "perl", "ruby", "php", "node", "lua", "tclsh", "pwsh"})
INTERPRETER_PREFIXES = ("python", "php", "lua", "perl", "ruby")
# Writers whose output is meant to be run: compilers, linkers, package managers.
BUILDERS = frozenset({
    "ld", "ld.bfd", "ld.gold", "ld.lld", "lld", "mold", "collect2", "cc1", "cc1plus", "as", "gcc", "g++",
    "cc", "c++", "clang", "clang++", "rustc", "go", "link", "cargo", "dpkg", "dpkg-deb", "apt", "apt-get",
    "rpm", "dnf", "yum", "unattended-upgr", "snap", "snapd", "flatpak",
})
TEMP_DIRS = ("/tmp/", "/var/tmp/", "/dev/shm/", "/run/user/")
PENDING_NS = 10 * 10**9


class _Writer(NamedTuple):
    """A process that opened a file for writing: its comm, pid and entity then, when, and
    its image then (when the row carries it). (A tuple: a busy host makes tens of
    thousands a batch, and a frozen dataclass costs several times more to make.)"""

    comm: str
    pid: int | None
    entity: int | None
    ts: int
    executable: str | None


def _is_shell(comm: str | None) -> bool:
    return bool(comm) and (comm in SHELLS or str(comm).startswith(INTERPRETER_PREFIXES))


class PipeToShell:
    """Both ends of one pipe: written by a decoder or a downloader, read by a shell."""

    rules: tuple[RuleMeta, ...] = (PIPE_SHELL,)

    def __init__(self, max_tracked: int = 50_000) -> None:
        self.writers: dict[tuple[str, int], str] = {}  # (boot, pipe inode) -> writer comm[pid]
        self.readers: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self.fired: set[tuple[int, str, int]] = set()
        self.max_tracked = max_tracked

    def hunt_filter(self) -> dict[str, Node]:
        return {"flows": Pred("file_type", "eq", "fifo")}

    def _hit(self, r: dict[str, Any], writer: str) -> list[dict[str, Any]]:
        mark = (r["entity_id"] or 0, r["boot_id"], r["file_inode"])
        if mark in self.fired:
            return []
        self.fired.add(mark)
        return [{
            "host_id": r["host_id"], "host_name": r.get("host_name"), "boot_id": r["boot_id"],
            "ts": r["first_ts"], "cpu": None, "seq": None, "process_entity_id": r["entity_id"],
            "process_pid": r.get("pid"), "process_name": r.get("process_name"), "event_action": "flow",
            "file_path": r.get("file_path"), "user_id": r.get("user_id"),
            "fx_detail": f"program from {writer} through {r.get('file_path') or 'a pipe'}",
        }]

    def _step(self, r: dict[str, Any]) -> list[dict[str, Any]]:
        key = (r["boot_id"], r["file_inode"])
        comm = r.get("process_name")
        out: list[dict[str, Any]] = []
        if comm in DECODERS and (r.get("write_count") or 0) > 0:
            writer = f"{comm}[{r.get('pid')}]"
            self.writers.setdefault(key, writer)
            for w in self.readers.pop(key, []):
                out += self._hit(w, writer)
        if _is_shell(comm) and (r.get("read_count") or 0) > 0 and r.get("first_ts") is not None:
            if key in self.writers:
                out += self._hit(r, self.writers[key])
            else:
                self.readers.setdefault(key, []).append(r)
        return out

    def _trim(self) -> None:
        for d in (self.writers, self.readers):
            while len(d) > self.max_tracked:
                d.pop(next(iter(d)))
        if len(self.fired) > self.max_tracked:
            self.fired.clear()

    _COLS = ("host_id", "host_name", "boot_id", "entity_id", "pid", "process_name", "file_type", "file_inode",
             "file_path", "first_ts", "read_count", "write_count", "user_id")

    def observe(self, table: str, data: pa.Table, source: str) -> pa.Table:
        if table != "flows" or data.num_rows == 0:
            return empty_alerts()
        fifo = pc.fill_null(pc.equal(data.column("file_type"), "fifo"), False)
        if not pc.any(fifo).as_py():
            return empty_alerts()
        names = set(data.schema.names)  # (Table.column_names costs ~30 us a call)
        cols = [c for c in self._COLS if c in names]
        rows = data.select(cols).filter(fifo).to_pylist()
        hits: list[dict[str, Any]] = []
        for r in sorted(rows, key=lambda r: (r.get("first_ts") or 0, r.get("file_inode") or 0)):
            hits += self._step(r)
        self._trim()
        return build_alerts(PIPE_SHELL, hits, source) if hits else empty_alerts()


class WriteThenExec:
    """A file opened for writing and later executed (the same inode life), unless its
    writer builds or installs programs. High when the writer is a decoder or a download
    tool, or the file lies in a temporary directory or has a hidden name; low otherwise
    (a script an administrator wrote and ran)."""

    rules: tuple[RuleMeta, ...] = (WRITE_EXEC, WRITE_EXEC_LOW)

    def __init__(self, max_tracked: int = 100_000) -> None:
        self.written: dict[tuple[Any, ...], _Writer] = {}  # file life -> who opened it for writing, when
        self.pending: dict[tuple[Any, ...], list[dict[str, Any]]] = {}  # execs whose write may come late
        # entity -> its images [(exec ts, executable)]: the writer of `base64 -d > f` opened f
        # as the shell's child, before it became base64; the image that wrote is its next one
        self.images: dict[int, list[tuple[int, str]]] = {}
        self.max_tracked = max_tracked
        self.latest = 0

    def hunt_filter(self) -> dict[str, Node]:
        writes = And((Pred("event_action", "eq", "open"), Pred("file_flags", "bits", WRITE_OPEN_MASK)))
        return {"events": Or((Pred("event_action", "eq", "exec"), writes))}

    @staticmethod
    def _key(r: dict[str, Any]) -> tuple[Any, ...]:
        """The file's life; by path when the exec failed before the kernel opened a file of
        its own (a script without #!: ENOEXEC, and the shell then runs it itself)."""
        if r.get("file_inode") is None:
            return (r.get("boot_id"), "path", r.get("file_path"))
        return (r.get("boot_id"), r.get("file_device"), r.get("file_inode"), r.get("file_generation") or 0)

    @staticmethod
    def _meta(r: dict[str, Any], writer: str) -> RuleMeta:
        path = r.get("process_executable") or r.get("file_path") or ""
        base = path.rsplit("/", 1)[-1]
        risky = writer in DECODERS or path.startswith(TEMP_DIRS) or base.startswith(".")
        return WRITE_EXEC if risky else WRITE_EXEC_LOW

    def _writer_image(self, w: _Writer, until: int) -> str | None:
        """The writer's image when it wrote: the last program it ran between opening the
        file and the file's exec (a redirection's child becomes the program whose output
        it is), else the program it was running when it opened the file."""
        imgs = self.images.get(w.entity or 0, [])
        after = [exe for ts, exe in imgs if w.ts <= ts < until]
        if after:
            return after[-1]
        before = [exe for ts, exe in imgs if ts <= w.ts]
        return before[-1] if before else w.executable

    def _hit(self, r: dict[str, Any], w: _Writer) -> tuple[RuleMeta, dict[str, Any]]:
        exe = self._writer_image(w, r["ts"])
        name = exe.rsplit("/", 1)[-1] if exe else w.comm
        r["fx_detail"] = f"written by {name}[{w.pid}]" + (f" ({exe})" if exe else "")
        if w.entity and w.entity != r.get("process_entity_id"):
            r["target_entity_id"] = w.entity  # the writer is in the alert's entity ids
        return self._meta(r, name), r

    def _step(self, r: dict[str, Any]) -> list[tuple[RuleMeta, dict[str, Any]]]:
        key = self._key(r)
        if r["event_action"] == "open":
            comm = r.get("process_name") or ""
            keys = [key, (r.get("boot_id"), "path", r.get("file_path"))]
            if comm in BUILDERS:
                for k in keys:
                    self.written.pop(k, None)  # rebuilt: what runs now is the builder's
                return []
            writer = _Writer(comm, r.get("process_pid"), r.get("process_entity_id"), r["ts"],
                             r.get("fx_image") or r.get("process_executable"))
            out = []
            for k in keys:
                self.written[k] = writer
                out += [self._hit(x, writer) for x in self.pending.pop(k, []) if x["ts"] >= r["ts"]]
            return out
        got = self.written.get(key)
        if got is not None and got.ts <= r["ts"]:
            return [self._hit(r, got)]
        self.pending.setdefault(key, []).append(r)
        return []

    def _trim(self) -> None:
        for k in [k for k, rs in self.pending.items() if rs[-1]["ts"] < self.latest - PENDING_NS]:
            del self.pending[k]
        while len(self.written) > self.max_tracked:
            self.written.pop(next(iter(self.written)))
        while len(self.images) > self.max_tracked:
            self.images.pop(next(iter(self.images)))

    _STEP = ("ts", "boot_id", "event_action", "file_device", "file_inode", "file_generation", "process_name",
             "process_pid", "file_path")
    _WRITER = (*_STEP, "process_entity_id", "fx_image", "process_executable")  # what _step takes of an open

    def observe(self, table: str, data: pa.Table, source: str) -> pa.Table:
        if table != "events" or data.num_rows == 0:
            return empty_alerts()
        # the batch's action codes (shared with the engine and the other detectors), and the
        # flags of its opens only: string compares over every row cost more than the rest
        acts = actions_of(data)
        is_exec = acts.where(_EXEC)
        opens = np.flatnonzero(acts.where(_OPEN))
        writes = opens[_flag_bits(data, opens, WRITE_OPEN_MASK)] if len(opens) else opens
        idx = np.union1d(np.flatnonzero(is_exec), writes)
        if not len(idx):
            return empty_alerts()
        # an exec may become an alert: all its fields; a write-open only names a writer, and
        # a busy host has tens of thousands of them per batch: the few columns that takes,
        # column by column (no dict per row)
        names = set(data.schema.names)
        execs = is_exec[idx]
        at = np.flatnonzero(execs)
        exec_rows: dict[int, dict[str, Any]] = {}
        if len(at):
            wanted = sorted((set(self._STEP) | set(ALERT_FIELDS)) & names)
            got = data.select(wanted).take(pa.array(idx[at])).to_pylist()
            exec_rows = dict(zip(at.tolist(), got))
        opens = np.flatnonzero(~execs)
        cols: dict[str, list[Any]] = {}
        if len(opens):
            take = pa.array(idx[opens])
            cols = {c: data.column(c).take(take).to_pylist() for c in self._WRITER if c in names}
        ts = data.column("ts").take(pa.array(idx)).to_pylist()
        self.latest = max(self.latest, max(ts))
        # the files an exec of this batch or a pending one names: an open of any other only
        # sets (or, by a builder, clears) its writer, done here without the dict per row of ``_step``
        watched = set(self.pending) | {self._key(r) for r in exec_rows.values()}
        watched |= {(r.get("boot_id"), "path", r.get("file_path")) for r in exec_rows.values()}
        open_at = dict(zip(opens.tolist(), range(len(opens))))
        none = [None] * len(opens)
        inode, boot, dev, gen, path, comm, pid, eid, image, exe, ots = (
            cols.get(c, none) for c in ("file_inode", "boot_id", "file_device", "file_generation", "file_path",
                                        "process_name", "process_pid", "process_entity_id", "fx_image",
                                        "process_executable", "ts"))
        written = self.written
        hits: list[tuple[RuleMeta, dict[str, Any]]] = []
        for i in sorted(range(len(idx)), key=ts.__getitem__):
            r = exec_rows.get(i)
            if r is not None:
                if r.get("process_entity_id") and r.get("process_executable"):
                    imgs = self.images.setdefault(r["process_entity_id"], [])
                    imgs.append((r["ts"], r["process_executable"]))
                    del imgs[:-8]  # a process's last few images are enough to name a writer
                if r.get("file_inode") is not None or r.get("file_path"):
                    hits += self._step(r)
                continue
            j = open_at[i]
            if inode[j] is None:
                continue  # (``_step`` is not given opens without an inode)
            key = (boot[j], dev[j], inode[j], gen[j] or 0)
            by_path = (boot[j], "path", path[j])
            if key in watched or by_path in watched:
                hits += self._step({c: v[j] for c, v in cols.items()})
            elif (comm[j] or "") in BUILDERS:  # what ``_step`` does with an open no exec waits on
                written.pop(key, None)
                written.pop(by_path, None)
            else:
                w = _Writer(comm[j] or "", pid[j], eid[j], ots[j], image[j] or exe[j])
                written[key] = w
                written[by_path] = w
        self._trim()
        out = [build_alerts(m, [r for mm, r in hits if mm is m], source) for m in self.rules]
        out = [t for t in out if t.num_rows]
        return pa.concat_tables(out) if out else empty_alerts()


# Devices whose bytes change a file's hash without changing what it does when appended.
PAD_SOURCES = ("/dev/zero", "/dev/random", "/dev/urandom")
# Tools that copy bytes as they are (a program reading a buffered random seed and then
# appending a log line shorter than the buffer is no padding).
COPIERS = frozenset({"dd", "head", "tail", "cat", "tee", "pv", "cp", "busybox"})
O_APPEND, O_ACCMODE = 0o2000, 0o3
APPEND_WINDOW_NS = 60 * 10**9  # an append-open this long before the write still counts


class BinaryPadding:
    """A byte-copying tool (dd, head, cat, ...) writing to a regular file opened for
    appending (by itself or by the shell that redirected its output) within the minute,
    having read /dev/zero, /dev/random or /dev/urandom, and appended to it no more bytes than it
    read from the device (`dd if=/dev/zero bs=1 count=1 >> binary`): padding that changes
    a file's hash. Told from the open's flags and the process's data-flow edges, not its
    command line, so a redirection by the shell counts as much as `oflag=append`; a program
    that reads a buffered random seed and appends a log line does not."""

    rules: tuple[RuleMeta, ...] = (PADDING,)

    def __init__(self, max_tracked: int = 50_000) -> None:
        # (boot, device, inode) -> when it was opened with O_APPEND: by the copier, or by the
        # shell that redirected its output (dash opens `>> f` in itself and hands the fd down)
        self.appends: dict[tuple[Any, ...], list[int]] = {}
        self.pad_read: dict[int, tuple[str, int]] = {}  # entity -> (device path, bytes read)
        self.writes: dict[tuple[Any, ...], dict[str, Any]] = {}  # (entity, device, inode) -> write flow
        self.fired: set[tuple[Any, ...]] = set()
        self.max_tracked = max_tracked

    def hunt_filter(self) -> dict[str, Node]:
        pad = And((Pred("file_type", "eq", "char"), Pred("file_path", "in", tuple(PAD_SOURCES)),
                   Pred("read_count", "gt", 0)))
        written = And((Pred("file_type", "eq", "file"), Pred("write_count", "gt", 0)))
        appends = (Pred("event_action", "eq", "open"), Pred("file_flags", "bits", O_APPEND),
                   Pred("file_flags", "bits", O_ACCMODE))
        return {"events": And(appends), "flows": Or((pad, written))}

    def _check(self, key: tuple[Any, ...]) -> list[dict[str, Any]]:
        w = self.writes.get(key)
        src = self.pad_read.get(key[0])
        if w is None or src is None or key in self.fired:
            return []
        opened = self.appends.get(key[1:], [])
        if not any(w["ts"] - APPEND_WINDOW_NS <= t <= w["ts"] for t in opened):
            return []
        if (w.get("flow_write_bytes") or 0) > src[1] or w.get("process_name") not in COPIERS:
            return []  # more appended than the device gave, or not a byte copier: not padding
        self.fired.add(key)
        name = w.get("process_name") or "?"
        w["fx_detail"] = f"{w.get('flow_write_bytes')} bytes from {src[0]} appended by {name}[{w.get('process_pid')}]"
        return [w]

    def _step(self, r: dict[str, Any]) -> list[dict[str, Any]]:
        ent = r.get("process_entity_id")
        if not ent:
            return []
        act, path = r["event_action"], r.get("file_path")
        if act == "open":
            flags = r.get("file_flags") or 0
            if flags & O_APPEND and flags & O_ACCMODE and r.get("file_inode") is not None:
                fkey = (r.get("boot_id"), r.get("file_device"), r["file_inode"])
                times = self.appends.setdefault(fkey, [])
                times.append(r["ts"])
                del times[:-16]
                return [h for k in [k for k in self.writes if k[1:] == fkey] for h in self._check(k)]
            return []
        if r.get("file_type") == "char" and path in PAD_SOURCES:
            old = self.pad_read.get(ent, (path, 0))
            self.pad_read[ent] = (str(path), old[1] + (r.get("flow_read_bytes") or 0))
            return [h for k in [k for k in self.writes if k[0] == ent] for h in self._check(k)]
        if r.get("file_type") == "file" and (r.get("flow_write_count") or 0) > 0 and r.get("file_inode") is not None:
            key = (ent, r.get("boot_id"), r.get("file_device"), r["file_inode"])
            self.writes[key] = r
            return self._check(key)
        return []

    def _trim(self) -> None:
        while len(self.writes) > self.max_tracked:
            self.writes.pop(next(iter(self.writes)))
        while len(self.pad_read) > self.max_tracked:
            self.pad_read.pop(next(iter(self.pad_read)))
        while len(self.appends) > self.max_tracked:
            self.appends.pop(next(iter(self.appends)))
        if len(self.fired) > self.max_tracked:
            self.fired.clear()

    _FLOW = ("host_id", "host_name", "boot_id", "entity_id", "pid", "process_name", "file_type", "file_device",
             "file_inode", "file_path", "first_ts", "read_bytes", "write_bytes", "write_count", "user_id")

    def _flow_rows(self, data: pa.Table) -> list[dict[str, Any]]:
        """The recorder's flow edges (one per process and open file) as event-like rows:
        those ``_step`` can use. A write by a process that is no byte copier can never be
        padding (``_check``), and is only kept when its process has a write kept already
        or a copier's write in this batch (the same key, overwritten): a build's thousands
        of compiler writes are not turned into Python rows."""
        ftype = data.column("file_type")
        pad = pc.and_(pc.equal(ftype, "char"), pc.is_in(data.column("file_path"), pa.array(PAD_SOURCES)))
        write = pc.and_(pc.equal(ftype, "file"), pc.greater(data.column("write_count"), 0))
        copier = pc.is_in(data.column("process_name"), pa.array(sorted(COPIERS)))
        ents = pc.filter(data.column("entity_id"), pc.fill_null(pc.and_(write, copier), False)).to_pylist()
        ents += [k[0] for k in self.writes]
        kept = pc.or_(copier, pc.is_in(data.column("entity_id"), pa.array(ents, data.column("entity_id").type)))
        ok = pc.fill_null(pc.or_(pad, pc.and_(write, kept)), False)
        names = set(data.schema.names)  # (Table.column_names costs ~30 us a call)
        cols = [c for c in self._FLOW if c in names]
        return [{
            "host_id": f.get("host_id"), "host_name": f.get("host_name"), "boot_id": f.get("boot_id"),
            "ts": f["first_ts"], "cpu": None, "seq": None, "event_action": "flow",
            "process_entity_id": f.get("entity_id"), "process_pid": f.get("pid"),
            "process_name": f.get("process_name"), "file_type": f.get("file_type"),
            "file_device": f.get("file_device"), "file_inode": f.get("file_inode"), "file_path": f.get("file_path"),
            "flow_read_bytes": f.get("read_bytes"), "flow_write_bytes": f.get("write_bytes"),
            "flow_write_count": f.get("write_count"), "user_id": f.get("user_id"),
        } for f in data.select(cols).filter(ok).to_pylist() if f.get("first_ts") is not None]

    def observe(self, table: str, data: pa.Table, source: str) -> pa.Table:
        if data.num_rows == 0 or table not in ("events", "flows"):
            return empty_alerts()
        if table == "flows":
            rows = self._flow_rows(data)
        else:
            opens = np.flatnonzero(actions_of(data).where(_OPEN))
            idx = opens[_flag_bits(data, opens, O_APPEND)] if len(opens) else opens
            if not len(idx):
                return empty_alerts()
            cols = ("ts", "boot_id", "event_action", "file_flags", "file_device", "file_inode", "process_entity_id")
            names = set(data.schema.names)
            rows = data.select([c for c in cols if c in names]).take(pa.array(idx)).to_pylist()
        hits: list[dict[str, Any]] = []
        for r in sorted(rows, key=lambda r: r["ts"]):
            hits += self._step(r)
        self._trim()
        return build_alerts(PADDING, hits, source) if hits else empty_alerts()


def chain_detectors() -> Sequence[PipeToShell | WriteThenExec | BinaryPadding]:
    return [PipeToShell(), WriteThenExec(), BinaryPadding()]
