"""What the raw-record agent decodes for itself: the records the artifact collector reads.

Executed files must be copied while their process lives, on the agent (artifacts/collect.py),
so a raw agent still needs its execs and executable mappings as rows. The decoder's batch
has a fixed cost of several ms (~100 vectorised steps over ~85 columns, labels, the process
cache), paid at every drain tick: more than the rest of the raw agent on a build. These are
the few columns the collector reads, gathered from the same record layout with the
decoder's own helpers; the rows the log host stores come from the full decoder.

What a drain tick pays here is a fixed number of numpy calls, whatever the number of
records: ``pick`` reads a few fields of every record at once (no Python per record), and
``collector_rows`` gathers the candidates' fields in one call each, then makes the
collector's rows (``Seen``) in Python, per candidate: its strings are sliced from the drain.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from forensix.artifacts.collect import Seen
from forensix.sensor.decode import Decoder
from forensix.sensor.ringbuf import Drained

__all__ = ["collector_rows", "file_key", "file_key_of", "pick", "pick_all"]

_PROT_EXEC = 4
# syscalls that may bring a new mount namespace or filesystem (the collector's _NS_ACTIONS)
_NS_SYSCALLS = ("mount", "unshare", "setns")


def pick(dec: Decoder, d: Drained, ordinary: np.ndarray) -> np.ndarray:
    """Indices (into ``d``, ascending) of its execs, and of its executable mappings of files
    not in ``ordinary`` (sorted keys of files the collector had no use for) or deleted. Fields are
    read by index (a gather of the record's word), narrowing at each step: kind, then the
    syscall number of syscalls, then the protection of mmaps, then the file of executable
    ones."""
    return pick_all(dec, d, ordinary)[0]


def pick_all(dec: Decoder, d: Drained, ordinary: np.ndarray) -> tuple[np.ndarray, bool]:
    """``pick``, and whether ``d`` holds a mount, an unshare or a setns (a container may be
    starting: the exec-time hold looks for new mount namespaces at once, as the decoding
    recorder's collector does from its rows)."""
    dt = dec.dt
    fields: Any = dt.fields or {}
    ok = np.nonzero(d.lengths >= dt.itemsize)[0]
    if not len(ok):
        return ok, False
    words = np.frombuffer(d.data, np.uint32)

    def word(rows: np.ndarray, name: str, plus: int = 0, bits: int = 32) -> np.ndarray:
        b = fields[name][1] + plus  # a field's byte offset; a narrower one shares its word
        v = words[d.offsets[rows] // 4 + b // 4] >> np.uint32(8 * (b % 4))
        return np.asarray(v & np.uint32((1 << bits) - 1))

    kind = word(ok, "kind")
    execs = ok[kind == dec.K["FX_KIND_EXEC"]]
    maps = ok[kind == dec.K["FX_KIND_SYSCALL"]]
    nr = word(maps, "nr")
    ns = bool(np.isin(nr, [dec.nr.get(n, -1) for n in _NS_SYSCALLS]).any())
    maps = maps[nr == dec.nr.get("mmap", -1)]
    maps = maps[(word(maps, "args", 16) & _PROT_EXEC) != 0]
    if len(maps):
        ino = word(maps, "ino").astype(np.uint64) | (word(maps, "ino", 4).astype(np.uint64) << np.uint64(32))
        deleted = (word(maps, "flags", bits=16) & dec.F["FX_F_DELETED0"]) != 0
        maps = maps[deleted | ~_member(file_key(ino, word(maps, "dev")), ordinary)]
    return np.sort(np.concatenate([execs, maps])), ns


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


def file_key_of(ino: int, dev: int) -> int:
    """``file_key`` of one file (the same 64-bit wrap)."""
    return (ino ^ (dev << 40)) & 0xFFFF_FFFF_FFFF_FFFF


def collector_rows(dec: Decoder, d: Drained, idx: np.ndarray | None = None) -> list[Seen]:
    """What the collector reads (``Seen``) of the exec and mmap records ``idx`` of ``d`` (all
    of them if None), valued as the decoder values those columns (sensor/decode.py
    ``_decode_fixed``). A tick holds a few dozen: each field is one numpy step over them and
    a ``tolist``, the rest Python per candidate (its strings sliced from the drain), which
    costs less here than Arrow's calls over an events table the collector would turn back
    into Python rows. The four strings follow the fixed part, one after the other, each
    counted with its NUL (length 0: absent): their ends are one cumulative sum; a row is
    made positionally, each string decoded once (a build runs ~1,000 execs: ~25% less)."""
    offs = d.offsets if idx is None else d.offsets[idx]
    if not len(offs):
        return []
    f = dec._gather_fixed(d.data, offs)
    exec_kind, base0, deleted0 = dec.K["FX_KIND_EXEC"], dec.F["FX_F_BASE0"], dec.F["FX_F_DELETED0"]
    slen = f["slen"][:, :4].astype(np.int64)
    starts = offs + dec.EV
    ends = np.cumsum(slen, axis=1) + starts[:, None]
    # the integers of a row as one list (one ``tolist`` for them all): start, the strings' ends
    # and lengths, ts, kind, flags, ret, protection; the 64-bit ones apart (no int64 wrap)
    ints = np.column_stack([starts, ends, slen, f["ts"].astype(np.int64) + dec.offset_ns,
                            f["kind"].astype(np.int64), f["flags"].astype(np.int64), f["ret"].astype(np.int64),
                            f["args"][:, 2].astype(np.uint32).astype(np.int64),
                            f["pid"].astype(np.uint32).astype(np.int64)]).tolist()
    ents = np.asarray(dec.ids.ids(f["pid"], f["start"]), np.uint64).tolist()
    inos = f["ino"][:, 0].astype(np.uint64).tolist()
    devs = f["dev"][:, 0].astype(np.uint64).tolist()
    data = d.data
    out: list[Seen] = []
    add = out.append
    for (off, e0, e1, e2, e3, l0, l1, l2, l3, ts, kind, fl, r, prot, pid), ent, ino, dev in zip(
            ints, ents, inos, devs, strict=True):
        # as the decoder's ``_to_str``: UTF-8, or backslash escapes for bytes that are not
        first = data[off: e0 - 1].decode("utf-8", "backslashreplace") if l0 else None
        second = data[e0: e1 - 1].decode("utf-8", "backslashreplace") if l1 else None
        # file.path (or the base a relative path was resolved from, then joined)
        path = _joined(first, second) if fl & base0 else first
        inode, device = (None, None) if ino == 0 else (ino, dev)
        # positional (``Seen``'s field order): a dataclass's keyword call costs ~2x
        if kind == exec_kind:  # strings: executable, argv, cwd, the path as given
            add(Seen(ts, True, pid, ent, first, path,
                     data[e2: e3 - 1].decode("utf-8", "backslashreplace") if l3 else None, inode, device,
                     None if second is None else second.rstrip("\x00").split("\x00"),
                     data[e1: e2 - 1].decode("utf-8", "backslashreplace") if l2 else None,
                     None, bool(fl & deleted0), False, None))
        else:  # a mapping: the path, the path as given
            add(Seen(ts, False, pid, ent, None, path, second, inode, device, None, None, prot,
                     bool(fl & deleted0), -4096 < r < 0, r))
    return out


def _joined(base: str | None, raw: str | None) -> str | None:
    """A name the kernel resolved against ``base``, as the decoder's ``_join`` makes it."""
    if base is None:
        return raw
    if raw is None:
        return None
    return ("" if base == "/" else base) + ("" if raw.startswith("/") else "/") + raw
