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
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from forensix.rules.alerts import ALERT_FIELDS, RuleMeta, build_alerts, empty_alerts
from forensix.rules.fields import WRITE_OPEN_MASK

__all__ = ["CHAIN_RULES", "PipeToShell", "WriteThenExec"]

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
CHAIN_RULES = (PIPE_SHELL, WRITE_EXEC, WRITE_EXEC_LOW)

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

    def hunt_filter(self) -> dict[str, str]:
        return {"flows": "file_type = 'fifo'"}

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
        cols = [c for c in self._COLS if c in data.column_names]
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
        self.written: dict[tuple[Any, ...], tuple[str, int]] = {}  # file life -> (writer comm[pid], ts)
        self.pending: dict[tuple[Any, ...], list[dict[str, Any]]] = {}  # execs whose write may come late
        self.max_tracked = max_tracked
        self.latest = 0

    def hunt_filter(self) -> dict[str, str]:
        return {"events": f"event_action = 'exec' OR (event_action = 'open' AND (file_flags & {WRITE_OPEN_MASK}) <> 0)"}

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
        wcomm = writer.split("[", 1)[0]
        risky = wcomm in DECODERS or path.startswith(TEMP_DIRS) or base.startswith(".")
        return WRITE_EXEC if risky else WRITE_EXEC_LOW

    def _hit(self, r: dict[str, Any], writer: str) -> tuple[RuleMeta, dict[str, Any]]:
        r["fx_detail"] = f"written by {writer}"
        return self._meta(r, writer), r

    def _step(self, r: dict[str, Any]) -> list[tuple[RuleMeta, dict[str, Any]]]:
        key = self._key(r)
        if r["event_action"] == "open":
            comm = r.get("process_name") or ""
            keys = [key, (r.get("boot_id"), "path", r.get("file_path"))]
            if comm in BUILDERS:
                for k in keys:
                    self.written.pop(k, None)  # rebuilt: what runs now is the builder's
                return []
            writer = f"{comm}[{r.get('process_pid')}]"
            out = []
            for k in keys:
                self.written[k] = (writer, r["ts"])
                out += [self._hit(x, writer) for x in self.pending.pop(k, []) if x["ts"] >= r["ts"]]
            return out
        got = self.written.get(key)
        if got is not None and got[1] <= r["ts"]:
            return [self._hit(r, got[0])]
        self.pending.setdefault(key, []).append(r)
        return []

    def _trim(self) -> None:
        for k in [k for k, rs in self.pending.items() if rs[-1]["ts"] < self.latest - PENDING_NS]:
            del self.pending[k]
        while len(self.written) > self.max_tracked:
            self.written.pop(next(iter(self.written)))

    _STEP = ("ts", "boot_id", "event_action", "file_device", "file_inode", "file_generation", "process_name",
             "process_pid", "file_path")

    def observe(self, table: str, data: pa.Table, source: str) -> pa.Table:
        if table != "events" or data.num_rows == 0:
            return empty_alerts()
        act = data.column("event_action")
        is_exec = pc.fill_null(pc.equal(act, "exec"), False)
        flags = pc.fill_null(data.column("file_flags"), 0)
        writes = pc.and_(pc.fill_null(pc.equal(act, "open"), False),
                         pc.not_equal(pc.bit_wise_and(flags, pa.scalar(WRITE_OPEN_MASK, flags.type)), 0))
        keep = pc.or_(is_exec, writes)
        idx = np.flatnonzero(keep.to_numpy(zero_copy_only=False))
        if not len(idx):
            return empty_alerts()
        cols = sorted(set(self._STEP) | {c for c in ALERT_FIELDS if c in data.column_names})
        rows = data.select(cols).take(pa.array(idx)).to_pylist()
        self.latest = max(self.latest, max(r["ts"] for r in rows))
        hits: list[tuple[RuleMeta, dict[str, Any]]] = []
        for r in sorted(rows, key=lambda r: r["ts"]):
            if r.get("file_inode") is not None or (r["event_action"] == "exec" and r.get("file_path")):
                hits += self._step(r)
        self._trim()
        out = [build_alerts(m, [r for mm, r in hits if mm is m], source) for m in self.rules]
        out = [t for t in out if t.num_rows]
        return pa.concat_tables(out) if out else empty_alerts()


def chain_detectors() -> Sequence[PipeToShell | WriteThenExec]:
    return [PipeToShell(), WriteThenExec()]
