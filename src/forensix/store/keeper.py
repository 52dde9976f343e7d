"""The store keeper: a process that seals a recorder's journals into DuckDB and answers
queries, started when there is work and gone when there is none.

Why: an idle recorder is a budget (<= 100 MB resident, issue 25), and DuckDB's library,
allocator and buffers were ~45 MB of it while nothing was sealed or asked. So `forensix
record` appends rows to journals itself (store/appender.py: Arrow IPC, pyarrow only) and
starts this keeper when a journal is closed or a query comes on the store's socket; it
exits after ``idle_exit`` seconds with nothing to do. Both are counted as the recorder
(bench/idle.py sums the process and its children).

Nothing is lost when the keeper dies (kill -9 included): it only seals journals the
recorder has closed, in one transaction with the position it sealed to
(``forensix_sealed``), and removes a journal only after that commit; the next keeper seals
what is left. The recorder holds the query socket (the keeper serves it, inherited), so a
query waits in the socket's backlog while the keeper starts, and never finds the store
locked. The recorder holds an exclusive flock on the journal directory for its life: a
second recorder, or another writer of the store, is refused instead of sealing journals
still being written.

    python -m forensix.store.keeper STORE --listen-fd FD [--recover-all] [--idle-exit S]

Commands on stdin, one per line: ``seal`` (journals were closed), ``final`` (the recorder
has closed every journal: seal them all, checkpoint, exit). End of input: the recorder
is gone; seal what is closed and exit.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import pyarrow as pa

from forensix import __version__
from forensix.errors import ForensixError, NotAStoreError, StoreBusyError, StoreError
from forensix.nice import SEAL_NICE, nice_for_child
from forensix.store import codec, schema
from forensix.store.appender import JournalAppender
from forensix.store.journal import Parts, conform, journal_dir
from forensix.store.private import private_dir, private_umask

__all__ = ["IDLE_EXIT_S", "Keeper", "RecorderStore", "lock_journals"]

# Seconds a keeper waits with nothing to seal or answer before it exits. Starting one
# costs ~0.5 s of CPU (Python, DuckDB, the store's catalog): under a trickle of events
# it stays up, on an idle host it is gone within this.
IDLE_EXIT_S = 10.0
# A keeper started to seal within this many seconds of the previous one waits this long
# idle: under sustained load a journal fills every ~10 s, and a keeper per journal cost
# ~1 s of CPU each (bench.idle, mode load).
BUSY_WINDOW_S = 120.0
# Seconds before a journal with rows is closed for the keeper to seal while rows keep
# coming: journal rows are durable and queried as they are, so sealing is about the
# file's compactness, not about safety; a full journal (122,880 rows) is closed at once.
SEAL_SECONDS = 300.0


def _socket_path(store: Path) -> Path:
    return store.with_name(store.name + ".sock")


def lock_journals(store: str | os.PathLike[str], exclusive: bool) -> int:
    """flock the journal directory of ``store``: exclusive for a recorder that appends to
    it, shared for any other writer (several of those in one process are fine). Returns
    the fd holding the lock; raises StoreBusyError when a recorder (or, for a recorder, a
    writer) holds it."""
    jd = private_dir(journal_dir(Path(store)))
    fd = os.open(jd, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreBusyError(f"{store} is being recorded or written by another process",
                             "stop the other recorder, or query through it (it serves STORE.sock)") from None
    return fd


# -- the recorder's side -------------------------------------------------------------------
class Keeper:
    """Starts, pokes and finally stops the keeper process of one store (recorder side)."""

    def __init__(self, store: str | os.PathLike[str], idle_exit: float = IDLE_EXIT_S,
                 on_spawn: Callable[[int], None] | None = None) -> None:
        self.store = Path(store).absolute()
        self.idle_exit = idle_exit
        self.on_spawn = on_spawn
        self.spawns = 0
        self._lock_fd = lock_journals(self.store, exclusive=True)
        self.sock_path = _socket_path(self.store)
        self.sock_path.unlink(missing_ok=True)  # stale: the flock proved no recorder holds the store
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self._sock.bind(str(self.sock_path))
        finally:
            os.umask(old)
        self._sock.listen(64)
        self._proc: subprocess.Popen[bytes] | None = None
        self._mutex = threading.Lock()
        self._stopping = False
        self._last_spawn = 0.0
        self._last_seal_spawn = -BUSY_WINDOW_S
        self._wake_r, self._wake_w = os.pipe()
        self._watcher = threading.Thread(target=self._watch, name="fx-keeper", daemon=True)

    def start(self, spawn: bool = True) -> dict[str, Any]:
        """Start the first keeper, which seals whatever journals an earlier recorder left
        (none is being appended yet), and return what it says: recovery notes, and the
        sequence each table's journals continue from. ``spawn=False`` (a new store, nothing
        to recover, every sequence 0): start none; a query or a closed journal starts one."""
        if spawn:
            with self._mutex:
                hello = self._spawn(recover_all=True)
        else:
            hello = {}
        self._watcher.start()
        return hello

    def _spawn(self, recover_all: bool = False, sealing: bool = False) -> dict[str, Any]:
        fd = self._sock.fileno()
        idle = self.idle_exit
        now = time.monotonic()
        if sealing:  # journals keep filling (sustained load): one keeper, not one start per journal
            if now - self._last_seal_spawn < BUSY_WINDOW_S:
                idle = max(idle, BUSY_WINDOW_S)
            self._last_seal_spawn = now
        cmd = [sys.executable, "-m", "forensix.store.keeper", str(self.store), "--listen-fd", str(fd),
               "--idle-exit", str(idle)] + (["--recover-all"] if recover_all else [])
        # A keeper starts at nice 0 whatever the calling thread runs at (sensor/priority.py):
        # one started to seal also answers the queries that come meanwhile, and a query waits
        # in the socket's backlog until its start-up (~0.45 s of CPU) is done, which at nice 19
        # on a busy host would wait for the workload. Its seal runs at SEAL_NICE (main below).
        with nice_for_child(0):
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE if recover_all else subprocess.DEVNULL, pass_fds=(fd,))
        self._proc, self._last_spawn = proc, time.monotonic()
        self.spawns += 1
        if self.on_spawn is not None:
            self.on_spawn(proc.pid)
        if not recover_all:
            return {}
        assert proc.stdout is not None
        line = proc.stdout.readline()
        proc.stdout.close()
        hello: dict[str, Any] = json.loads(line) if line.strip() else {
            "error": f"the store keeper exited with status {proc.wait()} before opening {self.store}",
            "hint": "see the messages above", "kind": "StoreError"}
        if "error" in hello:
            proc.wait()
            self._proc = None
            cls = {"NotAStoreError": NotAStoreError, "StoreBusyError": StoreBusyError}.get(hello["kind"], StoreError)
            raise cls(hello["error"], hello["hint"])
        return hello

    def _send(self, command: bytes, sealing: bool = False) -> subprocess.Popen[bytes]:
        """Send ``command`` to the keeper, starting one if none runs (or it just exited)."""
        for _ in range(2):
            if self._proc is None or self._proc.poll() is not None:
                self._spawn(sealing=sealing)
            assert self._proc is not None and self._proc.stdin is not None
            try:
                self._proc.stdin.write(command)
                self._proc.stdin.flush()
                return self._proc
            except (BrokenPipeError, ValueError):  # it exited meanwhile (idle): start another
                self._proc.wait()
                self._proc = None
        raise StoreError(f"the store keeper of {self.store} does not take commands",
                         "the journals are kept; the next writer of the store seals them")

    def poke(self) -> None:
        """Journals were closed: have them sealed."""
        with self._mutex:
            if not self._stopping:
                self._send(b"seal\n", sealing=True)

    def alive(self) -> int | None:
        """The running keeper's pid, if one runs."""
        with self._mutex:
            p = self._proc
            return p.pid if p is not None and p.poll() is None else None

    def _watch(self) -> None:
        """While no keeper runs, wait for a query on the socket, and start one for it."""
        from forensix.threadname import name_native_thread

        name_native_thread()
        while True:
            with self._mutex:
                if self._stopping:
                    return
                p = self._proc
            if p is not None and p.poll() is None:
                p.wait()  # until it exits (finish() makes it)
                continue
            ready, _, _ = select.select([self._sock.fileno(), self._wake_r], [], [])
            if self._wake_r in ready:
                return
            with self._mutex:
                if self._stopping:
                    return
                if self._proc is None or self._proc.poll() is not None:
                    failed = self._proc is not None and self._proc.returncode != 0
                    if failed or time.monotonic() - self._last_spawn < 1.0:  # one that cannot open the
                        time.sleep(5.0 if failed else 1.0)  # store (a reader holds it): not in a loop
                    self._spawn()

    def finish(self) -> None:
        """The recorder has closed every journal: the keeper seals them all and exits. With
        no keeper running, this process seals them (``_seal_here``)."""
        with self._mutex:
            self._stopping = True
            os.write(self._wake_w, b"x")
            proc = self._proc if self._proc is not None and self._proc.poll() is None else None
            try:
                if proc is not None:
                    proc = self._send(b"final\n")
                    assert proc.stdin is not None
                    proc.stdin.close()
            finally:
                self._stopping = True
        if proc is None:
            try:
                self._watcher.join(timeout=5)  # it saw _stopping: no keeper starts behind our back
                self._seal_here()
            finally:
                self.close()
            return
        try:
            rc = proc.wait()
        finally:
            self._watcher.join(timeout=5)
            self.close()
        if rc != 0:
            raise StoreError(f"the store keeper of {self.store} failed to seal the last journals (status {rc})",
                             "they are kept; the next `forensix record` or query of the store seals them")

    def _seal_here(self) -> None:
        """The final seal in this process. A keeper started for it cost ~0.6-0.9 s of CPU
        before sealing a row (a Python with pyarrow, numpy and DuckDB imported: most of
        what a short recording's stop cost), and the recorder has pyarrow and numpy already.
        The idle recorder still never holds DuckDB: it is loaded only now, as it exits.
        Queries that come meanwhile wait in the socket's backlog, as for a starting keeper,
        and are refused when it closes (the store is then a plain file again)."""
        from forensix.store.embedded import DuckDBStore

        try:
            store = DuckDBStore(self.store, keeper=True, recover_all=True)  # seals every journal
            try:
                store.limit_threads(1)
                store.seal_closed(everything=True)  # nothing left by now; the checkpoint
            finally:
                store.close()
        except ForensixError as e:
            raise StoreError(f"the last journals of {self.store} could not be sealed: {e.message}",
                             "they are kept; the next `forensix record` or query of the store seals them") from e

    def close(self) -> None:
        """Stop serving the socket and let go of the store (a keeper still running finishes
        what it has and exits when its input closes)."""
        with self._mutex:
            self._stopping = True
            p = self._proc
        if p is not None and p.stdin is not None and not p.stdin.closed:
            try:
                p.stdin.close()
            except OSError:
                pass
        if self._sock.fileno() >= 0:
            self._sock.close()
            self.sock_path.unlink(missing_ok=True)
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


def _new_store(store: Path, jd: Path) -> bool:
    """No store file yet and no journal left by a recorder that died before its first seal:
    nothing to recover, every table's journals start at 0, and no format to check. The
    first keeper (~0.5 s of CPU, most of a start-up's) then starts only for a query or a
    seal, and at a short recording's end this process seals instead (``Keeper._seal_here``)."""
    if store.exists() and store.stat().st_size > 0:
        return False
    if store.with_name(store.name + ".wal").exists():
        return False
    return not any(jd.rglob("*.arrows")) if jd.exists() else True


class RecorderStore:
    """A ``Writer`` for `forensix record`: rows go to journals from this process, a keeper
    process seals them and answers queries (module doc). ``on_spawn``: told each keeper's
    pid (the recorder guard must not take its writes to the store for an attack)."""

    def __init__(self, store: str | os.PathLike[str], *, host: Any = None, idle_exit: float = IDLE_EXIT_S,
                 seal_seconds: float = SEAL_SECONDS, on_spawn: Callable[[int], None] | None = None) -> None:
        self.path = Path(store)
        self.host = host
        self.on_spawn = on_spawn
        self._mutex = threading.RLock()  # the writer thread appends; a keeper started for a query notes itself
        self._due = False
        self._closing = False
        self._spawned: list[int] = []
        jd = journal_dir(self.path)
        made = not jd.exists()
        self.keeper = Keeper(self.path, idle_exit, on_spawn=self._spawned_one)
        try:
            hello = self.keeper.start(spawn=not _new_store(self.path, jd))
        except BaseException:
            self.keeper.close()
            if made:  # refused (not a store, say): leave nothing beside the file
                for d in sorted(jd.rglob("*"), reverse=True):
                    d.rmdir()
                jd.rmdir()
            raise
        self.recovered: list[str] = list(hello.get("recovered", []))
        sealed: Mapping[str, int] = hello.get("sealed", {})
        # a journal per part of a table (codec.PARTS: events' network rows apart, /17)
        self._appenders = {part: JournalAppender(jd, part, codec.NET_SCHEMA if part == codec.NET_TABLE else sch,
                                                 first=int(sealed.get(part, 0)), on_closed=self._closed,
                                                 seal_seconds=seal_seconds)
                           for name, sch in schema.TABLES.items() for part in codec.PARTS.get(name, (name,))}
        self._parts = Parts()
        for pid in self._spawned:
            self._note_keeper(pid)

    def _spawned_one(self, pid: int) -> None:
        self._spawned.append(pid)
        if self.on_spawn is not None:
            self.on_spawn(pid)
        if hasattr(self, "_appenders"):
            self._note_keeper(pid)

    def _note_keeper(self, pid: int) -> None:
        """An agent event naming the keeper's pid: a later hunt's recorder guard learns it
        from there (rules/detectors.py), as it learns the recorder's from its start event.
        Not for the keeper of the final seal: the journals are closed, the sensor detached."""
        if self.host is None or self._closing:
            return
        row = {"host_id": self.host.host_id, "host_name": self.host.host_name, "boot_id": self.host.boot_id,
               "ts": time.time_ns(), "event_kind": "event", "event_category": "agent",
               "event_action": "store-keeper", "process_pid": pid,
               "message": f"forensix {__version__} store keeper started (pid {pid}): seals and serves {self.path}"}
        with self._mutex:
            self._appenders["events"].append(pa.Table.from_pylist([row], schema=schema.EVENTS))

    def _closed(self, name: str) -> None:
        self._due = True

    def append(self, table: str, data: pa.Table | pa.RecordBatch) -> int:
        target = schema.TABLES.get(table)
        if target is None:
            raise StoreError(f"unknown table {table!r}", f"one of {sorted(schema.TABLES)}")
        given = data
        if isinstance(data, pa.RecordBatch):
            data = pa.Table.from_batches([data])
        if data.num_rows == 0:
            return 0
        with self._mutex:
            if table in codec.PARTS:  # split between journals: the rows conformed first (journal.conform)
                rows = conform(data, target, table)
                self._parts.append(given, lambda: codec.parts(table, rows),
                                   lambda part, t: self._appenders[part].append(t))
                n = int(rows.num_rows)
            else:
                n = self._appenders[table].append(data)
            now = time.monotonic()
            for other in self._appenders.values():
                other.tick(now)
            due, self._due = self._due, False
        if due:
            self.keeper.poke()
        return n

    def flush(self) -> None:
        """Every row appended so far durable (the journals fsynced)."""
        with self._mutex:
            for a in self._appenders.values():
                a.sync()

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        from forensix.store.remote import SocketReader

        return SocketReader(self.keeper.sock_path).query(sql, params)

    def close(self) -> None:
        """Close the journals and have the keeper seal them all (a clean stop)."""
        with self._mutex:
            self._closing = True
            for a in self._appenders.values():
                a.close()
        self.keeper.finish()


# -- the keeper process ----------------------------------------------------------------------
class _Counted:
    """The store as the query server sees it, counting queries in flight: a keeper does
    not exit while one runs, nor right after one came."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.busy = 0
        self.last = time.monotonic()
        self._lock = threading.Lock()

    def query_readonly(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        with self._lock:
            self.busy += 1
        try:
            got: pa.Table = self.store.query_readonly(sql, params)
            return got
        finally:
            with self._lock:
                self.busy -= 1
                self.last = time.monotonic()


def _say(out: IO[str], msg: dict[str, Any]) -> None:
    out.write(json.dumps(msg) + "\n")
    out.flush()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m forensix.store.keeper", description=__doc__.split("\n\n")[0])
    ap.add_argument("store")
    ap.add_argument("--listen-fd", type=int, required=True)
    ap.add_argument("--idle-exit", type=float, default=IDLE_EXIT_S)
    ap.add_argument("--recover-all", action="store_true")
    a = ap.parse_args(argv)
    from forensix.store.embedded import DuckDBStore
    from forensix.store.remote import QueryServer
    from forensix.threadname import name_native_thread

    name_native_thread("fx-keeper")
    private_umask()  # DuckDB creates the file and its WAL itself
    try:
        store = DuckDBStore(a.store, keeper=True, recover_all=a.recover_all)
    except ForensixError as e:
        _say(sys.stdout, {"error": e.message, "hint": e.hint, "kind": type(e).__name__})
        return 2
    store.limit_threads(1)
    _say(sys.stdout, {"recovered": store.recovered, "sealed": store.sealed_seqs()})
    listen = socket.socket(fileno=a.listen_fd)
    counted = _Counted(store)
    server = QueryServer(counted, store.path.with_name(store.path.name + ".sock"), sock=listen).start()  # type: ignore[arg-type]
    try:  # sealing is never urgent: the workload first (the query threads keep their priority)
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), SEAL_NICE)
    except OSError:
        pass
    final = False
    last = time.monotonic()
    try:
        while True:
            wait = 0.5 if counted.busy else max(0.0, a.idle_exit - (time.monotonic() - max(last, counted.last)))
            ready, _, _ = select.select([0], [], [], wait)
            if ready:
                got = os.read(0, 4096)
                final = b"final" in got
                if final or not got:  # the recorder stops: its user waits for this seal, not a workload
                    try:
                        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 0)
                    except OSError:
                        pass
                store.seal_closed(everything=final)
                if not got or final:
                    break
                last = time.monotonic()
                continue
            if counted.busy or time.monotonic() - counted.last < a.idle_exit:
                continue
            if select.select([listen], [], [], 0)[0]:  # a query waits: not now
                last = time.monotonic()
                continue
            break
    finally:
        server.stop()
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
