"""Timestomping by the programs the Sigma rule leaves out by name, told by what they did.

``fx_timestomp`` (rules/builtin/timestomp.yml) raises a utimes call that sets a time more
than a day back, except by package managers, archivers, copiers (``keepers``) and Python
interpreters (``python_copies``): a copy or an extraction sets the times its source had,
and cannot be told from ``touch -r`` by the call. The program's name is a weak reason,
though: ``python3 -c 'os.utime("/etc/passwd", (t, t))'`` is a timestomp, and so is
``cp --attributes-only -p /bin/ls /usr/bin/x``. What tells a copy is the data: a copy (cp -p,
shutil.copy2/copytree, tar, dpkg's .dpkg-new, rsync's temporary file, useradd's /etc/skel)
first *made* the file it then stamps: an open that truncated it or created it exclusively,
or a mkdir. ``NamedTimestomp`` raises, for exactly the processes the rule leaves out by
name, a time set back on a file that process did not make before.

An interpreter makes files of its own, though: ``open(p, "w").write(x); os.utime(p, (t, t))``
made the file it then stamps, and looked like a copy. A copy sets the times its *source*
had, and a copy reads its source before it makes the destination (cp, shutil.copy2 and
copytree open the source first, tarfile the archive). So an interpreter's stamp counts as
a copy only if, before it made the file, it opened for reading a file that was not its own
start-up (its modules and byte code, shared libraries, locale and certificate data, /proc,
/sys, /dev) or its script: a file that could be the source. Other programs left out by name
(cp, tar, rsync, dpkg, useradd) copy by what they are and are judged as before.

The names, the threshold and the package paths are the rule's (a test holds them equal), so
the two always split the processes between them.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from forensix.model.timefmt import format_ns
from forensix.rules.alerts import ALERT_FIELDS, RuleMeta, build_alerts, empty_alerts
from forensix.rules.fields import O_CREAT, O_DIRECTORY, O_EXCL, O_TRUNC, WRITE_OPEN_MASK
from forensix.rules.ir import And, Node, Or, Pred
from forensix.rules.live import actions_of, enrich, null_false

__all__ = ["INTERPRETERS", "LEFT_OUT", "NAMED_TIMESTOMP", "PACKAGE_PATHS", "TIME_BACK_NS", "NamedTimestomp",
           "is_startup_read"]

NAMED_TIMESTOMP = RuleMeta(
    "forensix-timestomp-not-a-copy", "File timestamps set back on a file the program did not make (timestomping)",
    "high", ("attack.stealth", "attack.t1070.006"),
)
DAY_NS = 86400 * 10**9
_WATCH = frozenset({"open", "mkdir", "utimes"})
_EXEC = frozenset({"exec"})


# What timestomp.yml leaves out by name (keepers, python_copies), its package paths and its
# threshold: restated here because the recorder's engine runs from compiled rules and never
# imports a YAML parser; tests/rules/test_timestomp_split.py checks that both say the same.
LEFT_OUT = (
    "/dpkg", "/apt", "/apt-get", "/rpm", "/dnf", "/yum", "/tar", "/bsdtar", "/cpio", "/rsync", "/unzip", "/7z",
    "/gzip", "/gunzip", "/xz", "/bzip2", "/zstd", "/cp", "/mv", "/install", "/useradd", "/adduser", "/pip",
    "/pip3", "/python", "/python2", "/python2.7", "/python3", "/python3.8", "/python3.9", "/python3.10",
    "/python3.11", "/python3.12", "/python3.13", "/python3.14", "/pypy3",
)
PACKAGE_PATHS = ("/site-packages/", "/dist-packages/")
TIME_BACK_NS = DAY_NS
# Of LEFT_OUT, the interpreters: they make files of their own, and are judged by their source.
INTERPRETERS = tuple(x for x in LEFT_OUT if x.startswith(("/python", "/pypy", "/pip")))
# What an interpreter reads to start and to import, never a copy's source.
_STARTUP_PREFIXES = ("/proc/", "/sys/", "/dev/", "/etc/ld.so", "/etc/ssl/", "/etc/locale", "/etc/localtime",
                     "/usr/lib/locale/", "/usr/share/locale/", "/usr/share/zoneinfo/", "/usr/lib/x86_64-linux-gnu/",
                     "/usr/lib/aarch64-linux-gnu/", "/lib/", "/lib64/", "/usr/lib64/")
_STARTUP_PARTS = ("/__pycache__/", "/site-packages/", "/dist-packages/", "/lib-dynload/")
_STARTUP_SUFFIXES = (".pyc", ".pth", ".so", "pyvenv.cfg")
_STDLIB = re.compile(r"/lib/python\d")  # the interpreter's own library (not pip's build trees, lib/python/)


def is_startup_read(path: str) -> bool:
    """A file an interpreter reads to start or to import: no copy's source."""
    return (path.startswith(_STARTUP_PREFIXES) or any(p in path for p in _STARTUP_PARTS)
            or path.endswith(_STARTUP_SUFFIXES) or ".so." in path or bool(_STDLIB.search(path)))


_KIND = {"open": 1, "mkdir": 2, "utimes": 3}


def _watched(data: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows that matter, vectorised (most of a batch is opens of files nobody stamps):
    opens that truncated the file or created it exclusively, mkdirs (the file is the
    process's own making from then on; touch opens with O_CREAT alone), utimes, and opens
    for reading (an interpreter's possible sources). Their indices, whether each is a utimes,
    and whether each is a read."""
    acts = actions_of(data)
    kind = np.fromiter((_KIND.get(v, 0) for v in acts.values), np.int8, len(acts.values))[acts.codes]
    # one conversion, then numpy (a pyarrow call costs ~10 us a batch whatever its length);
    # an open always has its flags, and other rows are not asked about them
    f = pc.fill_null(data.column("file_flags"), 0).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    made = ((f & O_TRUNC) != 0) | ((f & (O_CREAT | O_EXCL)) == (O_CREAT | O_EXCL))
    opens = kind == 1
    reads = opens & ((f & WRITE_OPEN_MASK) == 0) & ~made
    # most of a batch is opens for reading: only an interpreter's (by its command name, as the
    # hunt asks for them) go further
    at = np.flatnonzero(reads)
    if len(at):
        reads[at[~_interpreter_comm(data.column("process_name").take(pa.array(at)))]] = False
    idx = np.flatnonzero((kind >= 2) | (opens & made) | reads)
    return idx, kind[idx] == 3, reads[idx]


_COMMS = ("python", "pypy", "pip")  # an interpreter's command name starts so (the hunt's filter too)


def _interpreter_comm(comm: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Whether each command name is an interpreter's, decided once per distinct name."""
    enc = pc.dictionary_encode(comm)
    if isinstance(enc, pa.ChunkedArray):
        enc = enc.combine_chunks()
    hit = np.array([bool(c) and c.startswith(_COMMS) for c in enc.dictionary.to_pylist()] + [False], bool)
    got: np.ndarray = hit[enc.indices.fill_null(len(enc.dictionary)).to_numpy()]
    return got


class NamedTimestomp:
    """utimes setting a time back (``fx_time_back``, as the rule reads it) by a process
    ``fx_timestomp`` leaves out by name, on a path that process did not make before."""

    rules: tuple[RuleMeta, ...] = (NAMED_TIMESTOMP,)

    def __init__(self, max_tracked: int = 100_000) -> None:
        self.suffixes, self.packages, self.back = LEFT_OUT, PACKAGE_PATHS, TIME_BACK_NS
        self.images: dict[int, str] = {}  # entity -> its latest image (an exec's) if left out by name, else ""
        # (host, entity, path) it made -> whether it had read a possible source by then
        self.made: dict[tuple[str | None, int, str], bool] = {}
        self.scripts: dict[int, str] = {}  # interpreter entity -> the script it runs (its own code, no source)
        # interpreters that read a possible source: a file (for a file), a directory (copytree's, for a directory)
        self.sourced: dict[tuple[str | None, int, bool], None] = {}
        self.sourced_files: dict[int, None] = {}  # their entities, for a vectorised skip
        self.max_tracked = max_tracked

    def hunt_filter(self) -> dict[str, Node]:
        # what they made; and an interpreter's reads (its sources), by its command name: all
        # opens would be most of a store (a fleet hunt refuses that many rows)
        made = And((Pred("event_action", "eq", "open"), Pred("file_flags", "bits", O_CREAT | O_TRUNC)))
        reads = And((Pred("event_action", "eq", "open"),
                     Or(tuple(Pred("process_name", "prefix", n) for n in _COMMS))))
        return {"events": Or((Pred("event_action", "in", ("exec", "mkdir", "utimes")), made, reads))}

    def _learn_images(self, data: pa.Table, execs: np.ndarray) -> None:
        at = pa.array(np.flatnonzero(execs))
        args = (data.column("process_args").take(at).to_pylist() if "process_args" in data.column_names
                else [None] * len(at))
        for e, exe, argv in zip(data.column("process_entity_id").take(at).to_pylist(),
                                data.column("process_executable").take(at).to_pylist(), args):
            if e and exe:  # the executable of a process left out by name, else "" (not one)
                self.images.pop(e, None)
                self.images[e] = exe if exe.endswith(self.suffixes) else ""
                self.scripts.pop(e, None)
                if exe.endswith(INTERPRETERS) and (script := _script(argv or [])):
                    self.scripts[e] = script

    def _named(self, data: pa.Table, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Which rows' processes the rule leaves out by name, and which of those are
        interpreters: by the image an exec showed (what the rule's Image is), else by the
        comm (a process older than the recording). Decided once per distinct process and
        comm: a batch has a few of each."""
        at = pa.array(idx)
        ent = pc.fill_null(data.column("process_entity_id").take(at), 0).to_numpy(zero_copy_only=False)
        comm = pc.dictionary_encode(data.column("process_name").take(at))
        if isinstance(comm, pa.ChunkedArray):
            comm = comm.combine_chunks()
        names = ["/" + c if c else "" for c in comm.dictionary.to_pylist()] + [""]
        by_comm = np.array([c.endswith(self.suffixes) for c in names], dtype=bool)
        interp_comm = np.array([c.endswith(INTERPRETERS) for c in names], dtype=bool)
        codes = comm.indices.fill_null(len(comm.dictionary)).to_numpy()
        uniq, inv = np.unique(ent, return_inverse=True)
        known = [self.images.get(e) for e in uniq.tolist()]
        seen = np.array([k is not None for k in known], bool)[inv]
        by_image = np.array([bool(k) for k in known], bool)[inv]
        interp_image = np.array([(k or "").endswith(INTERPRETERS) for k in known], bool)[inv]
        named: np.ndarray = np.where(seen, by_image, by_comm[codes])
        interp: np.ndarray = np.where(seen, interp_image, interp_comm[codes])
        return named, interp

    _COLS = ("ts", "host_id", "event_action", "file_path", "process_entity_id")

    def observe(self, table: str, data: pa.Table, source: str) -> pa.Table:
        if table != "events" or data.num_rows == 0:
            return empty_alerts()
        acts = actions_of(data)
        if acts.any(_EXEC):
            self._learn_images(data, acts.where(_EXEC))
        if not acts.any(_WATCH):
            return empty_alerts()
        idx, utimes, reads = _watched(data)
        named, interp = self._named(data, idx) if len(idx) else (np.zeros(0, bool), np.zeros(0, bool))
        # reads matter only as an interpreter's sources; everything else, of the left-out
        keep = named & (~reads | interp)
        if self.sourced_files and keep.any():
            # an interpreter that read a possible file source already: its reads say no more
            # (a directory source matters for a directory alone; rare enough to judge by file)
            ent = pc.fill_null(data.column("process_entity_id").take(pa.array(idx)), 0).to_numpy(zero_copy_only=False)
            keep &= ~(reads & np.isin(ent, np.fromiter(self.sourced_files, np.uint64, len(self.sourced_files))))
        idx, utimes, reads, interp = idx[keep], utimes[keep], reads[keep], interp[keep]
        if not len(idx):
            return empty_alerts()
        rows = data.select(list(self._COLS)).take(pa.array(idx)).to_pylist()
        dirs = _is_dir(data, idx)
        back = self._time_back(data, idx, utimes)
        hits: list[dict[str, Any]] = []
        for i in sorted(range(len(rows)), key=lambda i: rows[i]["ts"]):
            r = rows[i]
            path = r.get("file_path")
            if not path:
                continue
            ent = r.get("process_entity_id") or 0
            who, key = (r.get("host_id"), ent), (r.get("host_id"), ent, path)
            if reads[i]:
                src = (*who, bool(dirs[i]))
                if src not in self.sourced and self._source(ent, path):
                    self.sourced[src] = None
                    if not src[2]:
                        self.sourced_files[ent] = None
                continue
            if r["event_action"] != "utimes":
                # a file copies a file's times; a directory (mkdir) a directory's, or a file's
                sourced = (*who, False) in self.sourced or (r["event_action"] == "mkdir" and (*who, True) in self.sourced)
                self.made.pop(key, None)
                self.made[key] = not interp[i] or sourced
                continue
            b = back.get(i)
            made = self.made.get(key)
            if b is None or b <= self.back or made or any(p in path for p in self.packages):
                continue
            hit = _alert_row(data, int(idx[i]))
            if self.images.get(key[1]):
                hit["fx_image"] = self.images[key[1]]
            hit["fx_detail"] = (f"a time set {b // DAY_NS} days back, to {format_ns(r['ts'] - b)}, " + (
                "on a file this process did not write or create: no copy or extraction" if made is None else
                "on a file this interpreter made itself before it read any file it could copy: no copy"))
            hits.append(hit)
        self._trim()
        return build_alerts(NAMED_TIMESTOMP, hits, source) if hits else empty_alerts()

    @staticmethod
    def _time_back(data: pa.Table, idx: np.ndarray, utimes: np.ndarray) -> dict[int, int]:
        """Row position -> how far back the call set a time (as the rule's fx_time_back)."""
        at = np.flatnonzero(utimes)
        if not len(at):
            return {}
        got = enrich(data.take(pa.array(idx[at])), ["fx_time_back"], None).column("fx_time_back").to_pylist()
        return {int(i): int(v) for i, v in zip(at, got) if v is not None}

    def _source(self, ent: int, path: str) -> bool:
        """Could an interpreter have copied its times from ``path``: a file (or a directory,
        copytree's) it opened for reading that is not its start-up nor its own script. (A
        directory on its module path, listed at import, counts only for a directory.)"""
        if is_startup_read(path):
            return False
        script = self.scripts.get(ent)
        return not (script and (path == script or path.endswith("/" + script.lstrip("./"))))

    def _trim(self) -> None:
        _bound(self.made, self.max_tracked)
        _bound(self.images, self.max_tracked)
        _bound(self.scripts, self.max_tracked)
        _bound(self.sourced, self.max_tracked)
        _bound(self.sourced_files, self.max_tracked)


def _bound(d: dict[Any, Any], most: int) -> None:
    """Forget the oldest entries past ``most`` (a dict keeps insertion order)."""
    while len(d) > most:
        d.pop(next(iter(d)))


def _script(argv: list[str]) -> str | None:
    """The script an interpreter runs: its first argument that is no option (none with -c or -m)."""
    for a in argv[1:]:
        if a in ("-c", "-m"):
            return None
        if a and not a.startswith("-"):
            return a
    return None


def _is_dir(data: pa.Table, idx: np.ndarray) -> np.ndarray:
    f = data.column("file_flags").take(pa.array(idx))
    got = null_false(pc.not_equal(pc.bit_wise_and(f, pa.scalar(O_DIRECTORY, f.type)), pa.scalar(0, f.type)))
    return got.to_numpy(zero_copy_only=False) if len(got) else np.zeros(0, bool)


def _alert_row(data: pa.Table, row: int) -> dict[str, Any]:
    names = [c for c in ALERT_FIELDS if data.schema.get_field_index(c) >= 0]
    got: dict[str, Any] = data.select(names).take(pa.array([row], pa.int64())).to_pylist()[0]
    return got

