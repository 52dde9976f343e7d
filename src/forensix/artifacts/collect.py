"""Preserve what each exec ran, read through the process, and put its hash on the record.

Runs on every decoded batch, before it is stored (``Recorder(post=...)``). For each exec:
the executable is read through ``/proc/PID/exe`` (a file deleted right after it started,
or a memfd, is still there while the process lives), or, once the process is gone, by
its path when the path still names the same inode. A script, given to an interpreter or
run through ``#!``, is read through the descriptor the interpreter holds on it, or by its
path. A shared object mapped executable from a temporary or world-writable directory (or
deleted) is read through ``/proc/PID/map_files``. What cannot be kept becomes an
``artifact.missing`` event with the reason. Exec events and process images get
``process.hash.sha256``.
"""

from __future__ import annotations

import os
import re
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from forensix.artifacts.defer import HeldWriter, Job, Reader, modified_since_exec
from forensix.artifacts.exechold import HOLD_SOURCE, ExecHold
from forensix.artifacts.store import ArtifactStore, Put
from forensix.model.host import HostInfo
from forensix.store import schema

__all__ = ["DEFER_MIN_BYTES", "Collector", "Kept", "Seen", "in_writable_dir", "seen_rows"]

_INTERPRETER = re.compile(r"^(?:ba|da|z|k|c|tc|fi)?sh$|^python[0-9.]*$|^perl[0-9.]*$|^ruby[0-9.]*$|^php[0-9.]*$"
                          r"|^node(?:js)?$|^lua[0-9.]*$|^tclsh[0-9.]*$|^busybox$")
_TEMP_DIRS = ("/tmp/", "/var/tmp/", "/dev/shm/", "/run/user/", "/run/shm/")
_PROT_EXEC = 4
_CACHE = 65_536
CHUNK_BYTES = 1 << 20  # one artifact_blobs row
SHIP_BYTES = 4 << 20  # artifact bytes handed to the sinks per batch (~1 s): evidence is not held up behind them
# files from this size on are read by the Reader (defer.py) when the caller can hold its batch;
# smaller ones cost less to read (~0.1 ms) than to hold a batch for
DEFER_MIN_BYTES = 256 << 10
HOLD_S = 2.0  # a batch held longer than this: the Reader reads at the workload's priority until it is done
HOLD_ROWS = 200_000  # rows held past this: the drainer waits for the reads (memory stays bounded)
_PATH_HOW = "read by path after the process exited"
_HELD_HOW = "read through the exec-time hold"
_DRAIN_ONLY = "executables are read at drain time only"
_NS_ACTIONS = pa.array(["mount", "unshare", "setns"])  # what may bring a new mount namespace or filesystem


@dataclass
class _Want:
    kind: str  # executable | script | library
    path: str | None
    pid: int
    entity: int
    inode: int | None
    addr: int | None = None  # library: where it was mapped


@dataclass(slots=True)
class Seen:
    """What the collector reads of an exec event or a mapping (its events row's columns;
    the raw agent reads them from the kernel's records, agent/execs.py). Not frozen: a
    frozen dataclass's __init__ sets each field through object.__setattr__, ~3x slower,
    and a build's tick makes a few dozen."""

    ts: int  # ts (0: unknown, the time of reading is used)
    exec: bool  # a successful exec (event.action exec, a process event); else a mapping
    pid: int
    entity: int  # process.entity_id
    executable: str | None  # process.executable
    path: str | None  # file.path
    path_raw: str | None  # file.path_raw: the path as the process gave it
    inode: int | None  # file.inode
    device: int | None  # file.device
    args: list[str] | None  # process.args
    cwd: str | None  # process.working_directory
    prot: int | None  # mem.prot
    deleted: bool  # file.deleted
    failed: bool  # event.outcome is failure
    ret: int | None  # ret: where a mapping was made


class Kept(NamedTuple):
    """What ``Collector.preserve`` made of its rows."""

    hashes: dict[int, str | None]  # index of an exec's row -> its executable's sha256 (None: not kept)
    artifacts: pa.Table | None  # the artifacts rows (None: nothing was wanted)
    missing: pa.Table | None  # artifact.missing events


@dataclass(slots=True)
class _Slot:
    """One thing to keep: read already (``put``), or by the Reader (``job``; ``first``: the
    job is this slot's own, else another slot's read of the same file)."""

    i: int  # index of its ``Seen`` row
    w: _Want
    ts: int
    put: Put | None
    source: str | None
    job: Job | None = None
    first: bool = False
    key: tuple[int, ...] | None = None


class Annotating:
    """A decoded batch being annotated: ``tables()`` once ``ready()`` (collect.py ``annotate``)."""

    def __init__(self, owner: Collector, decoded: dict[str, pa.Table], rows: list[int], seen: list[Seen],
                 slots: list[_Slot]) -> None:
        self.owner, self.decoded, self.rows, self.seen, self.slots = owner, decoded, rows, seen, slots
        self.jobs = [s.job for s in slots if s.job is not None]

    def ready(self) -> bool:
        return all(j.done.is_set() for j in self.jobs)

    def wait(self) -> None:
        if self.jobs:
            self.owner.reader().wait(self.jobs)

    def tables(self) -> dict[str, pa.Table]:
        self.wait()
        return self.owner._annotated(self.decoded, self.rows, self.seen, self.owner._finish(self.slots))


class Collector:
    def __init__(self, store: ArtifactStore, host: HostInfo, *, ship: bool = False,
                 defer_min_bytes: int = DEFER_MIN_BYTES, exec_hold: bool = True) -> None:
        """``ship``: also hand the bytes of every newly kept file to the sinks (table
        ``artifact_blobs``), for an agent to ship them to the log host. ``defer_min_bytes``:
        files from this size on are read later, at low priority, by ``annotate_later``'s
        callers (defer.py). ``exec_hold``: hold each executed file from its exec on
        (exechold.py), once a recorder calls ``start_hold``."""
        self.exec_hold = exec_hold
        self.hold: ExecHold | None = None
        self.hold_note = _DRAIN_ONLY + " (the exec-time hold was not started)"
        self._hold_lost = (0, 0)  # (overflows, bound hits) the last warning told
        self._hold_warned = -3600.0
        self.store = store
        self.host = host
        self.ship = ship
        self.defer_min_bytes = defer_min_bytes
        self.on_read: Callable[[], None] | None = None  # called by the Reader after each file it read
        self._reader: Reader | None = None
        self._inflight: dict[tuple[int, ...], Job] = {}  # file key -> its read, queued or under way
        self._lock = threading.RLock()  # the drainer and the Reader's hand-over both finish slots
        self.waited = 0  # times the drainer waited for the Reader (too many rows held)
        self._to_ship: list[tuple[int, str, int]] = []  # (ts, sha256, next offset), oldest first
        # (st_dev, st_ino, mtime, ctime, size) -> what came of it: a file run again is not read again
        self._known: OrderedDict[tuple[int, ...], Put] = OrderedDict()
        self._libs_seen: set[tuple[int, int]] = set()  # (entity, inode): one library once per process
        self.missing = 0

    # -- the hooks --------------------------------------------------------------------
    def start_hold(self) -> str:
        """Start the exec-time hold (the recorder's start, after the sensor loaded); what to
        say of it in the start record."""
        if not self.exec_hold:
            self.hold_note = f"{_DRAIN_ONLY} (the exec-time hold is off)"
            return self.hold_note
        try:
            got = ExecHold.open()
        except Exception as e:  # noqa: BLE001 - recording starts without it, and says why
            got = f"it could not start: {type(e).__name__}: {e}"
        if isinstance(got, str):
            self.hold_note = f"{_DRAIN_ONLY} (no exec-time hold: {got})"
            return self.hold_note
        self.hold = got
        return got.describe()

    def poll_hold(self) -> str | None:
        """Each drain tick, once the process ring is drained: take the exec-time hold's
        events. Returns a warning for the record when files went unheld (a queue overflow,
        the bound) or the hold failed: the first at once, then at most one a minute."""
        if self.hold is None:
            return None
        with self._lock:
            h = self.hold
            try:
                h.poll()
            except Exception as e:  # noqa: BLE001 - a bug in the hold must not stop recording: it goes on without it
                self.stop_hold()
                self.hold_note = f"{_DRAIN_ONLY} since the exec-time hold failed: {e}"
                return f"executable preservation: the exec-time hold failed ({e}); {self.hold_note}"
            lost = (h.overflows, h.bound_hits)
            now = time.monotonic()
            if lost == self._hold_lost or now < self._hold_warned + 60.0:
                return None
            self._hold_lost, self._hold_warned = lost, now
        return (f"executable preservation: files not held at their exec ({h.overflows} fanotify queue overflows, "
                f"{h.bound_hits} past the bound of {h.max_files} files held): those execs are read at drain time "
                "only, and are missing if gone by then (their artifact.missing events say so)")

    def hold_scan_soon(self) -> None:
        """The sensor recorded a mount, an unshare or a setns: a container may be starting, its
        filesystems are marked at the next poll (exechold.py ``scan_soon``)."""
        with self._lock:
            if self.hold is not None:
                self.hold.scan_soon()

    def reader(self) -> Reader:
        if self._reader is None:
            self._reader = Reader(self.store, on_done=lambda: self.on_read() if self.on_read else None)
        return self._reader

    def annotate(self, tables: dict[str, pa.Table]) -> dict[str, pa.Table]:
        """A decoded batch's tables, with the artifacts kept, the ``artifact.missing``
        events, and the executables' hashes on their exec events and processes rows."""
        return self.annotate_later(tables, defer=False).tables()

    def annotate_later(self, tables: dict[str, pa.Table], defer: bool = True) -> Annotating:
        """``annotate``, its big files opened now and read by the Reader (``defer``): the
        tables once the result is ``ready()``. For a caller that holds the batch meanwhile
        (defer.py ``HeldWriter``)."""
        ev = tables.get("events")
        if ev is None or ev.num_rows == 0:
            return Annotating(self, tables, [], [], [])
        if self.hold is not None and pc.any(pc.is_in(ev["event_action"], value_set=_NS_ACTIONS)).as_py():
            self.hold_scan_soon()
        rows, seen = self._candidates(ev)
        with self._lock:
            slots = self._start(seen, defer) if rows else []
        return Annotating(self, tables, rows, seen, slots)

    def _annotated(self, tables: dict[str, pa.Table], rows: list[int], seen: list[Seen],
                   kept: Kept) -> dict[str, pa.Table]:
        if kept.artifacts is None:
            return tables
        ev = tables["events"]
        out = dict(tables)
        out["artifacts"] = kept.artifacts
        hashes = {rows[i]: h for i, h in kept.hashes.items()}  # events row -> executable hash
        if hashes:  # the exec rows' hashes, NULL elsewhere: no Python step per row of the batch
            col = np.full(ev.num_rows, None, dtype=object)
            col[np.fromiter(hashes, np.int64, count=len(hashes))] = list(hashes.values())
            idx = ev.schema.get_field_index("process_hash_sha256")
            ev = ev.set_column(idx, ev.schema.field(idx), pa.array(col, pa.string()))
        if kept.missing is not None:
            ev = pa.concat_tables([ev, kept.missing])
        out["events"] = ev
        procs = tables.get("processes")
        if procs is not None and any(s.exec for s in seen):
            by_entity = {seen[i].entity: h for i, h in kept.hashes.items()}
            ents = procs["entity_id"].to_pylist()
            src = procs["source"].to_pylist()
            col_p = [by_entity.get(e) if s == "exec" else None for e, s in zip(ents, src)]
            idx = procs.schema.get_field_index("hash_sha256")
            out["processes"] = procs.set_column(idx, procs.schema.field(idx), pa.array(col_p, pa.string()))
        return out

    def preserve(self, seen: list[Seen]) -> Kept:
        """Keep what ``seen`` (execs and executable mappings, in record order) ran or mapped.
        The raw agent's hook: it reads these few fields straight from the kernel's records
        (agent/execs.py), where an events table of ~85 columns made for them, and turned
        back into rows here, was most of the collector's cost per drain tick. Read inline
        (a file still being read for a batch ``annotate_later`` holds is waited for)."""
        with self._lock:
            slots = self._start(seen, False)
        jobs = [s.job for s in slots if s.job is not None]
        if jobs:
            self.reader().wait(jobs)
        return self._finish(slots)

    def overdue(self, held: HeldWriter) -> bool:
        """Whether ``held`` holds a batch longer than ``HOLD_S`` or more than ``HOLD_ROWS``
        rows (the batches carry alerts, and give ring space back once written): then the
        Reader reads at the workload's priority until it is done, and past the rows, the
        caller waits for it (counted in ``waited``)."""
        since = held.oldest()
        if since is None:
            return False
        if held.held_rows > HOLD_ROWS:
            self.waited += 1
            held.release(wait=True)
            return True
        if time.monotonic() - since < HOLD_S:
            return False
        self.reader().hurry()
        return True

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        self.stop_hold()

    def stop_hold(self) -> None:
        with self._lock:
            if self.hold is not None:
                self.hold.close()
                self.hold = None

    def _start(self, seen: list[Seen], defer: bool) -> list[_Slot]:
        slots = []
        for i, w in self._wanted(seen):
            ts = seen[i].ts or time.time_ns()
            slots.append(self._take(i, w, ts, defer))
        return slots

    def _finish(self, slots: list[_Slot]) -> Kept:
        """The rows of ``slots``, every read done. The artifacts rows are made a column at a
        time: a build runs ~1,000 execs, each a row (a dict per row and ``from_pylist`` cost
        ~4 µs a row on the raw agent's drain tick)."""
        missing_rows: list[dict[str, Any]] = []
        hashes: dict[int, str | None] = {}
        puts: list[Put] = []
        with self._lock:
            for sl in slots:
                put, w, ts = self._result(sl), sl.w, sl.ts
                puts.append(put)
                if put.sha256 is None:
                    self.missing += 1
                    missing_rows.append(self._missing_row(ts, w, put.reason or "not preserved"))
                if w.kind == "executable":
                    hashes[sl.i] = put.sha256
                if self.ship and put.stored and put.sha256:
                    self._to_ship.append((ts, put.sha256, 0))
        return Kept(hashes, self._art_table(slots, puts) if slots else None,
                    pa.Table.from_pylist(missing_rows, schema=schema.EVENTS) if missing_rows else None)

    def _art_table(self, slots: list[_Slot], puts: list[Put]) -> pa.Table:
        n = len(slots)
        ws = [sl.w for sl in slots]
        cols: dict[str, list[Any]] = {
            "host_id": [self.host.host_id] * n, "host_name": [self.host.host_name] * n,
            "boot_id": [self.host.boot_id] * n, "ts": [sl.ts for sl in slots],
            "sha256": [p.sha256 for p in puts], "size": [p.size for p in puts],
            "kind": ["memfd" if (w.path or "").startswith("/memfd:") else w.kind for w in ws],
            "path": [w.path for w in ws], "source": [sl.source for sl in slots],
            "process_entity_id": [w.entity for w in ws], "process_pid": [w.pid for w in ws],
            "stored": [p.stored for p in puts], "certain": [p.certain if p.sha256 else None for p in puts],
            "reason": [p.reason for p in puts]}
        return pa.Table.from_arrays([pa.array(cols[f.name], f.type) for f in schema.ARTIFACTS],
                                    schema=schema.ARTIFACTS)

    def _result(self, sl: _Slot) -> Put:
        """What came of a slot: its read's, or (a later slot of the same file) as a file run again."""
        if sl.job is None:
            assert sl.put is not None
            return sl.put
        put = sl.job.put
        assert put is not None
        if sl.key is not None and self._inflight.get(sl.key) is sl.job:
            del self._inflight[sl.key]
            self._remember(sl.key, put)
        if sl.first:
            return put
        return Put(put.sha256, put.size, False, put.certain, put.reason)

    def _remember(self, key: tuple[int, ...], put: Put) -> None:
        if put.certain or put.sha256 is None:
            self._known[key] = put
            if len(self._known) > _CACHE:
                self._known.popitem(last=False)

    def blobs_to_ship(self, limit: int = SHIP_BYTES) -> pa.Table | None:
        """The next chunks of kept files to ship (at most ``limit`` bytes), or None."""
        with self._lock:  # the reader's hand-over adds to the list
            return self._blobs(limit)

    def _blobs(self, limit: int) -> pa.Table | None:
        rows: list[dict[str, Any]] = []
        taken = 0
        while self._to_ship and taken < limit:
            ts, sha, off = self._to_ship[0]
            path = self.store.path_of(sha)
            try:
                size = path.stat().st_size
                with open(path, "rb") as f:
                    f.seek(off)
                    data = f.read(min(CHUNK_BYTES, limit - taken))
            except OSError:
                self._to_ship.pop(0)  # removed meanwhile: its artifacts row says it was kept here
                continue
            rows.append({**self._origin(), "ts": ts, "sha256": sha, "offset": off, "size": size, "data": data})
            taken += len(data)
            if off + len(data) >= size:
                self._to_ship.pop(0)
            else:
                self._to_ship[0] = (ts, sha, off + len(data))
        return pa.Table.from_pylist(rows, schema=schema.ARTIFACT_BLOBS) if rows else None

    def summary(self) -> str:
        s = self.store
        refused = ", ".join(f"{k} {v}" for k, v in sorted(s.refused.items())) or "none"
        out = (f"artifacts: {s.stored_files} new files kept ({s.stored_bytes} bytes; {s.used_bytes} in the store), "
               f"{self.missing} not preserved; refused by limit: {refused} ({s.refused_bytes} bytes)")
        out += f"; {self.hold.summary() if self.hold is not None else self.hold_note}"
        h = s.hashes
        if h is not None:  # hashes.py: files read in earlier recordings, copied without hashing
            out += f"; hashes known from before {h.hits}, kept for later {h.added}" + (f" ({h.note})" if h.note else "")
        r = self._reader
        if r is not None:
            out += (f"; {r.deferred} read later at nice {r.nice} ({r.cpu_s:.2f} s CPU), {r.overflow} inline past "
                    f"the queue's bound, hurried {r.boosts} times, waited for {self.waited} times")
        return out

    # -- what to keep -----------------------------------------------------------------
    def _candidates(self, ev: pa.Table) -> tuple[list[int], list[Seen]]:
        """The rows of a decoded batch that may hold something to keep (its execs, and the
        mappings ``_maps_wanted`` passes), read as ``Seen``."""
        act = ev["event_action"]
        is_exec = pc.fill_null(pc.equal(act, "exec"), False)
        is_exec = pc.and_(is_exec, pc.equal(pc.fill_null(ev["event_category"], ""), "process"))
        is_exec = pc.and_(is_exec, pc.is_null(ev["syscall"]))  # a failed execve is a syscall row
        rows = pc.indices_nonzero(pc.or_(is_exec, self._maps_wanted(ev))).to_pylist()
        if not rows:
            return [], []
        return rows, seen_rows(ev.take(pa.array(rows)))

    def _wanted(self, seen: list[Seen]) -> list[tuple[int, _Want]]:
        """What to keep, with the index of the ``seen`` row it comes from: each exec's
        executable (and script), and each library mapped executable, not failed, from a
        deleted file or a directory anyone may write to, once per process."""
        wants: list[tuple[int, _Want]] = []
        dirs: dict[str, bool] = {}  # a directory's mode looked up once per batch
        for i, r in enumerate(seen):
            if r.exec:
                exe = r.executable or r.path
                wants.append((i, _Want("executable", exe, r.pid, r.entity, r.inode)))
                script = _script_of(exe, r.path_raw, r.args or [], r.cwd)
                if script:
                    wants.append((i, _Want("script", script, r.pid, r.entity, None)))
            elif r.path is not None and (int(r.prot or 0) & _PROT_EXEC) and not r.failed and (
                    r.deleted or _writable_cached(r.path, dirs)):
                key = (r.entity, int(r.inode or 0))
                if key in self._libs_seen:
                    continue
                self._libs_seen.add(key)
                if len(self._libs_seen) > _CACHE:
                    self._libs_seen.clear()
                wants.append((i, _Want("library", r.path, r.pid, r.entity, r.inode, int(r.ret or 0))))
        return wants

    @staticmethod
    def _maps_wanted(ev: pa.Table) -> pa.Array:
        """The mmaps ``_wanted`` may keep: mapped executable, not failed, from a deleted file
        or a directory anyone may write to. Decided with whole columns, the directory once per
        distinct path: a build maps libraries thousands of times (a third of its events), and
        a Python row and a stat() per mapping were most of this hook's CPU."""
        is_map = pc.and_(pc.fill_null(pc.equal(ev["event_action"], "mmap"), False), pc.is_valid(ev["file_path"]))
        is_map = pc.and_(is_map, pc.not_equal(pc.bit_wise_and(pc.fill_null(ev["mem_prot"], 0), _PROT_EXEC), 0))
        is_map = pc.and_(is_map, pc.fill_null(pc.not_equal(ev["event_outcome"], "failure"), True))
        rows = pc.indices_nonzero(is_map)
        if not len(rows):
            return is_map
        # the candidates' paths only (a batch's opens name hundreds of other files), each once
        paths = pc.dictionary_encode(pc.take(ev["file_path"], rows)).combine_chunks()
        dirs: dict[str, bool] = {}  # a build's libraries live in a few directories: one stat each
        writable = np.fromiter((_writable_cached(p, dirs) for p in paths.dictionary.to_pylist()), bool,
                               count=len(paths.dictionary))
        mask = np.zeros(ev.num_rows, bool)
        mask[rows.to_numpy()] = writable[paths.indices.to_numpy(zero_copy_only=False)]
        return pc.and_(is_map, pc.or_(pc.fill_null(ev["file_deleted"], False), pa.array(mask)))

    # -- reading it -------------------------------------------------------------------
    def _take(self, i: int, w: _Want, ts: int, defer: bool) -> _Slot:
        """The artifact, by the best way still open: the process, then the path. Opened now;
        read now, or (``defer``, a big file) by the Reader."""
        tried: list[str] = []
        for source, fd in self._opened(w):
            if fd is None:
                tried.append(source)
                continue
            keep = False
            try:
                st = os.fstat(fd)
                if w.inode and w.kind == "executable" and st.st_ino != w.inode:  # pid reused, or the path replaced
                    tried.append(f"{source} (now another file)")
                    continue
                if not stat.S_ISREG(st.st_mode):
                    return _Slot(i, w, ts, self.store.put_fd(fd), source)  # refused with the file's type
                key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)
                known = self._known.get(key)
                if known is not None and (known.sha256 is None or self.store.has(known.sha256)):
                    self._known.move_to_end(key)  # run again: not read again (nor refused again)
                    return _Slot(i, w, ts, Put(known.sha256, known.size, False, known.certain, known.reason), source)
                job = self._inflight.get(key)
                if job is not None:  # being read for an earlier batch: its result is this one's
                    return _Slot(i, w, ts, None, source, job, False, key)
                # read by name, or through the hold (the process may be gone): the exec's time bounds mtime
                by_path = not source.startswith("/proc/")
                how = _HELD_HOW if source == HOLD_SOURCE else _PATH_HOW
                if defer and st.st_size >= self.defer_min_bytes and self.reader().room(st.st_size):
                    job = Job(fd, st, by_path, ts, w.path, how=how)
                    self._inflight[key] = job
                    self.reader().submit(job)
                    keep = True  # the Reader's now, closed once read
                    return _Slot(i, w, ts, None, source, job, True, key)
                put = self.store.put_fd(fd)
                if by_path:
                    modified_since_exec(put, w.path, st.st_mtime_ns, ts, how)
                self._remember(key, put)
                return _Slot(i, w, ts, put, source)
            finally:
                if not keep:
                    os.close(fd)
        typ = _type_by_path(w.path)
        if typ:
            return _Slot(i, w, ts, Put(None, 0, False, reason=f"{typ}: not a regular file, its content cannot be "
                                                               "preserved"), None)
        why = (f"the process exited and {w.path} was gone or replaced before it could be read"
               if w.kind != "script" else f"the script {w.path} could not be read")
        why += f" (tried {', '.join(tried) or 'nothing'})"
        if w.kind != "library":
            why += f"; {self.hold.why_not(w.pid) if self.hold is not None else self.hold_note}"
        return _Slot(i, w, ts, Put(None, 0, False, reason=why), None)

    def _opened(self, w: _Want) -> Iterator[tuple[str, int | None]]:
        """Each way to read it, best first, opened (None: that way failed): the exec-time
        hold (the very file the kernel ran, deleted or not), then ``_sources``."""
        if self.hold is not None and w.kind != "library":
            fd = self.hold.take(w.pid, w.inode if w.kind == "executable" else None,
                                w.path if w.kind == "script" else None)
            if fd is not None:
                yield HOLD_SOURCE, fd
        for source in self._sources(w):
            yield source, _open(source)

    def _sources(self, w: _Want) -> Iterator[str]:
        """Where to read it, best first; the path (a stat, to never open a FIFO) only once the
        process's own ways failed: most execs are read through /proc/PID/exe."""
        proc = f"/proc/{w.pid}"
        if w.kind == "executable":
            yield f"{proc}/exe"
        elif w.kind == "library" and w.addr:
            rng = _mapping(w.pid, w.addr)
            if rng:
                yield f"{proc}/map_files/{rng}"
        elif w.kind == "script" and w.path:
            yield from _fds_naming(w.pid, w.path)
        if w.path and w.path.startswith("/") and not w.path.endswith(" (deleted)") and _type_by_path(w.path) is None:
            yield w.path

    # -- rows -------------------------------------------------------------------------
    def _origin(self) -> dict[str, Any]:
        return {"host_id": self.host.host_id, "host_name": self.host.host_name, "boot_id": self.host.boot_id}

    def _missing_row(self, ts: int, w: _Want, why: str) -> dict[str, Any]:
        return {**self._origin(), "ts": ts, "event_kind": "event", "event_category": "process",
                "event_action": "artifact.missing", "process_entity_id": w.entity, "process_pid": w.pid,
                "file_path": w.path, "message": f"{w.kind} not preserved: {why}"}


def seen_rows(ev: pa.Table) -> list[Seen]:
    """Every row of an events table as ``Seen``: what the collector reads of it."""
    sub = ev.select(["ts", "event_action", "process_pid", "process_entity_id", "file_path", "file_path_raw",
                     "file_inode", "file_device", "process_args", "process_working_directory", "mem_prot",
                     "file_deleted", "ret", "process_executable", "event_outcome"]).to_pylist()
    return [Seen(ts=r["ts"] or 0, exec=r["event_action"] == "exec", pid=int(r["process_pid"] or 0),
                 entity=int(r["process_entity_id"] or 0), executable=r["process_executable"], path=r["file_path"],
                 path_raw=r["file_path_raw"], inode=r["file_inode"], device=r["file_device"], args=r["process_args"],
                 cwd=r["process_working_directory"], prot=r["mem_prot"], deleted=bool(r["file_deleted"]),
                 failed=r["event_outcome"] == "failure", ret=r["ret"]) for r in sub]


def in_writable_dir(path: str | None) -> bool:
    """A directory anyone may write to: where an intruder drops a library."""
    if not path:
        return False
    if path.startswith(_TEMP_DIRS):
        return True
    try:
        return bool(os.stat(os.path.dirname(path)).st_mode & stat.S_IWOTH)
    except OSError:
        return False


def _writable_cached(path: str, dirs: dict[str, bool]) -> bool:
    """``in_writable_dir``, its directory's mode looked up once per ``dirs`` (one batch)."""
    if path.startswith(_TEMP_DIRS):
        return True
    d = os.path.dirname(path)
    got = dirs.get(d)
    if got is None:
        try:
            got = dirs[d] = bool(os.stat(d).st_mode & stat.S_IWOTH)
        except OSError:
            got = dirs[d] = False
    return got


def _script_of(exe: str | None, raw: str | None, args: list[str], cwd: str | None) -> str | None:
    """The script an exec runs: the file a #! exec named, or the first argument of an interpreter."""
    base = (exe or "").rsplit("/", 1)[-1]
    if not _INTERPRETER.match(base):
        return None
    if raw and raw.rsplit("/", 1)[-1] != base and not _INTERPRETER.match(raw.rsplit("/", 1)[-1]):
        return _abs(raw, cwd)  # #!: the kernel ran the interpreter for this file
    for a in args[1:]:
        if a == "--":
            continue
        if a.startswith("-"):
            if a in ("-c", "-m", "-e", "-E", "-r"):
                return None  # code on the command line, not in a file
            continue
        return _abs(a, cwd)
    return None


def _abs(p: str, cwd: str | None) -> str:
    return p if p.startswith("/") else str(Path(cwd or "/") / p)


def _type_by_path(path: str | None) -> str | None:
    """'fifo', 'device', ... when ``path`` names something that is not a regular file (never opened)."""
    if not path or not path.startswith("/"):
        return None
    try:
        m = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(m):
        return None
    return "fifo" if stat.S_ISFIFO(m) else "device" if stat.S_ISCHR(m) or stat.S_ISBLK(m) else "not a regular file"


def _open(path: str) -> int | None:
    """Open for reading without blocking (a FIFO must never hang the recorder) or following a last symlink
    (except /proc's magic links, which are how a deleted file is still reached)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
    if not path.startswith("/proc/"):
        flags |= os.O_NOFOLLOW
    try:
        return os.open(path, flags)
    except OSError:
        return None


def _mapping(pid: int, addr: int) -> str | None:
    """The ``start-end`` name of the mapping of ``pid`` that holds ``addr`` (as map_files names it)."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                rng = line.split(" ", 1)[0]
                lo, _, hi = rng.partition("-")
                if int(lo, 16) <= addr < int(hi, 16):
                    return rng
    except (OSError, ValueError):
        return None
    return None


def _fds_naming(pid: int, path: str) -> list[str]:
    """/proc/PID/fd entries that name ``path`` (bash keeps its script open, on fd 255)."""
    d = f"/proc/{pid}/fd"
    try:
        names = os.listdir(d)
    except OSError:
        return []
    out = []
    for n in names:
        try:
            if os.readlink(f"{d}/{n}") == path:
                out.append(f"{d}/{n}")
        except OSError:
            continue
    return out
