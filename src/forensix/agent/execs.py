"""What the raw-record agent decodes for itself: the records the artifact collector reads.

Executed files must be copied while their process lives, on the agent (artifacts/collect.py),
so a raw agent still needs its execs and executable mappings as rows. The decoder's batch
has a fixed cost of several ms (~100 vectorised steps over ~85 columns, labels, the process
cache), paid at every drain tick: more than the rest of the raw agent on a build. These are
the few columns the collector reads, gathered from the same record layout with the
decoder's own helpers; the rows the log host stores come from the full decoder.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from forensix.sensor.decode import Decoder, _gather, _join, _table, repeat
from forensix.sensor.ringbuf import Drained
from forensix.store import schema

__all__ = ["collector_rows", "pick"]

_PROT_EXEC = 4


def pick(dec: Decoder, d: Drained, ordinary: np.ndarray) -> Drained | None:
    """The execs of a drain, and its executable mappings of files not in ``ordinary`` (keys of
    files the collector had no use for) or deleted, copied out. Fields are read by index
    (a gather of the record's word), narrowing at each step: kind, then the syscall number
    of syscalls, then the protection of mmaps, then the file of executable ones."""
    dt = dec.dt
    fields: Any = dt.fields or {}
    ok = np.nonzero(d.lengths >= dt.itemsize)[0]
    if not len(ok):
        return None
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
        maps = maps[deleted | ~np.isin(file_key(ino, word(maps, "dev")), ordinary)]
    idx = np.sort(np.concatenate([execs, maps]))
    if not len(idx):
        return None
    spans = [(int(o) - 8, (int(n) + 15) & ~7) for o, n in zip(d.offsets[idx], d.lengths[idx], strict=True)]
    data = b"".join(d.data[o: o + n] for o, n in spans)
    offs = np.cumsum([0] + [n for _, n in spans[:-1]], dtype=np.int64) + 8
    return Drained(data, offs, d.lengths[idx].copy())


def file_key(ino: np.ndarray, dev: np.ndarray) -> np.ndarray:
    """A file's (inode, device) as one number, as the decoder's labels key it."""
    return np.asarray(ino.astype(np.uint64) ^ (dev.astype(np.uint64) << np.uint64(40)))


def collector_rows(dec: Decoder, d: Drained) -> pa.Table:
    """Events rows of exec and mmap records with what the collector reads (the rest null),
    valued as the decoder values them (sensor/decode.py ``_decode_fixed``)."""
    n = len(d)
    f = dec._gather_fixed(d.data, d.offsets)
    raw = np.frombuffer(d.data, np.uint8)
    slen = f["slen"].astype(np.int64)
    cum = np.zeros((n, 4), np.int64)
    cum[:, 1:] = np.cumsum(slen[:, :3], axis=1)
    sbase = d.offsets + dec.EV
    s = [_gather(raw, sbase + cum[:, i], slen[:, i]) for i in range(4)]
    is_exec = f["kind"] == dec.K["FX_KIND_EXEC"]
    ex = pa.array(is_exec)
    flags = f["flags"].astype(np.int64)
    base0 = (flags & dec.F["FX_F_BASE0"]) != 0
    path0 = pc.if_else(pa.array(base0), _join(s[0], s[1]), s[0]) if base0.any() else s[0]
    ret = f["ret"].astype(np.int64)
    ino0 = f["ino"][:, 0]
    nulls = pa.nulls(n, pa.string())
    argv = pc.utf8_rtrim(pc.if_else(ex, s[1], nulls), characters="\x00")
    cols: dict[str, Any] = dec._origin(n)
    cols.update(
        ts=pa.array(f["ts"].astype(np.int64) + dec.offset_ns, pa.int64()),
        event_kind=repeat("event", n),
        event_category=pc.if_else(ex, "process", "memory"),
        event_action=pc.if_else(ex, "exec", "mmap"),
        syscall=pc.if_else(ex, nulls, "mmap"),
        event_outcome=pc.if_else(ex, nulls, pa.array(np.where((ret < 0) & (ret > -4096), "failure", "success"))),
        ret=pa.array(ret, mask=is_exec),
        process_entity_id=pa.array(dec.ids.ids(f["pid"], f["start"])),
        process_pid=pa.array(f["pid"]),
        process_executable=pc.if_else(ex, s[0], nulls),
        process_working_directory=pc.if_else(ex, s[2], nulls),
        process_args=pc.split_pattern(argv, "\x00"),
        file_path=path0,
        file_path_raw=pc.if_else(ex, s[3], s[1]),
        file_inode=pa.array(ino0, mask=ino0 == 0),
        file_device=pa.array(f["dev"][:, 0].astype(np.uint64), mask=ino0 == 0),
        file_deleted=pa.array(np.ones(n, bool), mask=(flags & dec.F["FX_F_DELETED0"]) == 0),
        mem_prot=pa.array(f["args"][:, 2], mask=is_exec),
    )
    return _table(schema.EVENTS, cols, n)
