"""What the raw-record agent decodes for itself: the records the artifact collector reads.

Executed files must be copied while their process lives, on the agent (artifacts/collect.py),
so a raw agent still needs its execs and executable mappings as rows. The decoder's batch
has a fixed cost of several ms (~100 vectorised steps over ~85 columns, labels, the process
cache), paid at every drain tick: more than the rest of the raw agent on a build. These are
the few columns the collector reads, gathered from the same record layout with the
decoder's own helpers; the rows the log host stores come from the full decoder.

What a drain tick pays here is a fixed number of numpy and Arrow calls (~30), whatever the
number of records: ``pick`` reads a few fields of every record at once (no Python per
record), ``collector_rows`` gathers the candidates' fields and strings in one call each (the
few text columns are Python lists, per candidate), and the columns the collector does not
read are slices of cached nulls.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from forensix.sensor.decode import Decoder, _join, _to_str
from forensix.sensor.ringbuf import Drained
from forensix.store import schema

__all__ = ["collector_rows", "file_key", "pick"]

_PROT_EXEC = 4


def pick(dec: Decoder, d: Drained, ordinary: np.ndarray) -> np.ndarray:
    """Indices (into ``d``, ascending) of its execs, and of its executable mappings of files
    not in ``ordinary`` (sorted keys of files the collector had no use for) or deleted. Fields are
    read by index (a gather of the record's word), narrowing at each step: kind, then the
    syscall number of syscalls, then the protection of mmaps, then the file of executable
    ones."""
    dt = dec.dt
    fields: Any = dt.fields or {}
    ok = np.nonzero(d.lengths >= dt.itemsize)[0]
    if not len(ok):
        return ok
    words = np.frombuffer(d.data, np.uint32)

    def word(rows: np.ndarray, name: str, plus: int = 0, bits: int = 32) -> np.ndarray:
        b = fields[name][1] + plus  # a field's byte offset; a narrower one shares its word
        v = words[d.offsets[rows] // 4 + b // 4] >> np.uint32(8 * (b % 4))
        return np.asarray(v & np.uint32((1 << bits) - 1))

    kind = word(ok, "kind")
    execs = ok[kind == dec.K["FX_KIND_EXEC"]]
    maps = ok[kind == dec.K["FX_KIND_SYSCALL"]]
    maps = maps[word(maps, "nr") == dec.nr.get("mmap", -1)]
    maps = maps[(word(maps, "args", 16) & _PROT_EXEC) != 0]
    if len(maps):
        ino = word(maps, "ino").astype(np.uint64) | (word(maps, "ino", 4).astype(np.uint64) << np.uint64(32))
        deleted = (word(maps, "flags", bits=16) & dec.F["FX_F_DELETED0"]) != 0
        maps = maps[deleted | ~_member(file_key(ino, word(maps, "dev")), ordinary)]
    return np.sort(np.concatenate([execs, maps]))


def _member(keys: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Which ``keys`` are in ``known`` (sorted, as ``np.union1d`` keeps it): a binary search
    each; ``np.isin`` sorted or hashed both sides at every tick (~0.14 ms)."""
    if not len(known):
        return np.zeros(len(keys), bool)
    at = np.minimum(np.searchsorted(known, keys), len(known) - 1)
    return np.asarray(known[at] == keys)


def file_key(ino: np.ndarray, dev: np.ndarray) -> np.ndarray:
    """A file's (inode, device) as one number, as the decoder's labels key it."""
    return np.asarray(ino.astype(np.uint64) ^ (dev.astype(np.uint64) << np.uint64(40)))


class _Nulls:
    """All-null columns of the events schema, and the host's, made once and sliced (a slice
    is a view), the slices kept by row count: the collector's rows fill ~20 of ~85 columns,
    and making the rest cost a call each at every tick."""

    def __init__(self) -> None:
        self.n = 0
        self.cols: dict[str, pa.Array] = {}
        self.host: Any = None
        self.by_n: dict[int, dict[str, pa.Array]] = {}

    def get(self, n: int, dec: Decoder) -> dict[str, pa.Array]:
        """The null columns, and the host's (the same on every row of a decoder), ``n`` rows."""
        if n > self.n or dec.host is not self.host:
            self.n = max(n, 2 * self.n, 1024)
            self.host = dec.host  # frozen: a new decoder's host is another object
            self.cols = {f.name: pa.nulls(self.n, f.type) for f in schema.EVENTS}
            self.cols.update(dec._origin(self.n))
            self.by_n = {}
        got = self.by_n.get(n)
        if got is None:
            if len(self.by_n) >= 256:  # ticks of a few dozen candidates: few distinct counts
                self.by_n = {}
            got = self.by_n[n] = {k: v.slice(0, n) for k, v in self.cols.items()}
        return dict(got)


_nulls = _Nulls()


def collector_rows(dec: Decoder, d: Drained, idx: np.ndarray | None = None) -> pa.Table:
    """Events rows of the exec and mmap records ``idx`` of ``d`` (all of them if None) with
    what the collector reads (the rest null), valued as the decoder values them
    (sensor/decode.py ``_decode_fixed``). A tick holds a few dozen: the text columns are
    made from Python lists, cheaper there than an Arrow kernel's call each."""
    offs = d.offsets if idx is None else d.offsets[idx]
    n = len(offs)
    f = dec._gather_fixed(d.data, offs)
    is_exec = f["kind"] == dec.K["FX_KIND_EXEC"]
    flags = f["flags"].astype(np.int64)
    base0 = (flags & dec.F["FX_F_BASE0"]) != 0
    # the four strings follow the fixed part, each counted with its NUL (0: absent)
    slen = f["slen"][:, :4].astype(np.int64)
    start = offs[:, None] + dec.EV + np.concatenate([np.zeros((n, 1), np.int64), np.cumsum(slen[:, :3], 1)], 1)
    exec_len = slen * is_exec[:, None]
    # one gather for every string column: (start, length) per column, a column's absent rows 0
    want = [(start[:, 0], exec_len[:, 0]),  # process.executable
            (start[:, 2], exec_len[:, 2]),  # process.working_directory
            (start[:, 1], exec_len[:, 1]),  # argv, NUL-separated
            (np.where(is_exec, start[:, 3], start[:, 1]), np.where(is_exec, slen[:, 3], slen[:, 1])),  # as given
            (start[:, 0], slen[:, 0])]  # file.path (or the base a relative path was resolved from)
    if base0.any():
        want.append((start[:, 1], slen[:, 1]))
    got = _strings(d.data, np.concatenate([s for s, _ in want]), np.concatenate([ln for _, ln in want]))
    exe, cwd, argv, path_raw, s0 = (got.slice(i * n, n) for i in range(5))
    path0 = pc.if_else(pa.array(base0), _join(s0, got.slice(5 * n, n)), s0) if base0.any() else s0
    ret = f["ret"].astype(np.int64)
    ino0 = f["ino"][:, 0].astype(np.uint64)
    no_file = ino0 == 0
    ex = is_exec.tolist()
    failed = ((ret < 0) & (ret > -4096)).tolist()
    cols = _nulls.get(n, dec)
    cols.update(
        ts=pa.array(f["ts"].astype(np.int64) + dec.offset_ns, pa.int64()),
        event_kind=pa.array(["event"] * n, pa.string()),
        event_category=pa.array(["process" if e else "memory" for e in ex], pa.string()),
        event_action=pa.array(["exec" if e else "mmap" for e in ex], pa.string()),
        syscall=pa.array([None if e else "mmap" for e in ex], pa.string()),
        event_outcome=pa.array([None if e else "failure" if bad else "success" for e, bad in zip(ex, failed)],
                               pa.string()),
        ret=pa.array(ret, pa.int64(), mask=is_exec),
        process_entity_id=pa.array(np.asarray(dec.ids.ids(f["pid"], f["start"]), np.uint64), pa.uint64()),
        process_pid=pa.array(f["pid"].astype(np.uint32), pa.uint32()),
        process_executable=exe,
        process_working_directory=cwd,
        process_args=pc.split_pattern(pc.utf8_rtrim(argv, characters="\x00"), "\x00"),
        file_path=path0,
        file_path_raw=path_raw,
        file_inode=pa.array(ino0, pa.uint64(), mask=no_file),
        file_device=pa.array(f["dev"][:, 0].astype(np.uint64), pa.uint64(), mask=no_file),
        file_deleted=pa.array(np.ones(n, bool), pa.bool_(), mask=(flags & dec.F["FX_F_DELETED0"]) == 0),
        mem_prot=pa.array(f["args"][:, 2].astype(np.uint32), pa.uint32(), mask=is_exec),
    )
    # every column made in its schema type (from_arrays checks it): no cast, no test per column
    return pa.Table.from_arrays([cols[name] for name in schema.EVENTS.names], schema=schema.EVENTS)


def _strings(data: bytes, start: np.ndarray, ln: np.ndarray) -> pa.Array:
    """Strings at data[start : start+ln-1] (ln counts the NUL; 0: null), as the decoder's
    ``_gather`` makes them (not UTF-8: backslash escapes). Sliced per string: a tick's few
    hundred strings (compiler command lines among them) cost less so than an index per byte,
    and a string-view gather copied the whole ~1 MB drain."""
    valid = ln > 0
    size = np.where(valid, ln - 1, 0)
    offsets = np.zeros(len(ln) + 1, np.int64)
    np.cumsum(size, out=offsets[1:])
    if offsets[-1] >= 1 << 31:
        raise ValueError("strings of more than 2 GiB in one drain tick")
    body = b"".join([data[a: a + n] for a, n in zip(start.tolist(), size.tolist(), strict=True)])
    arr = pa.Array.from_buffers(pa.binary(), len(ln), [
        pa.py_buffer(np.packbits(valid, bitorder="little")), pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(body)])
    return _to_str(arr)
