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

The names, the threshold and the package paths are the rule's (a test holds them equal), so
the two always split the processes between them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from forensix.model.timefmt import format_ns
from forensix.rules.alerts import ALERT_FIELDS, RuleMeta, build_alerts, empty_alerts
from forensix.rules.fields import O_CREAT, O_EXCL, O_TRUNC
from forensix.rules.ir import And, Node, Or, Pred
from forensix.rules.live import actions_of, enrich, null_false

__all__ = ["LEFT_OUT", "NAMED_TIMESTOMP", "PACKAGE_PATHS", "TIME_BACK_NS", "NamedTimestomp"]

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


_KIND = {"open": 1, "mkdir": 2, "utimes": 3}


def _watched(data: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """The rows that matter, vectorised (most of a batch is opens of files nobody stamps):
    opens that truncated the file or created it exclusively, mkdirs (the file is the
    process's own making from then on; touch opens with O_CREAT alone), and utimes. Their
    indices, and whether each is a utimes."""
    acts = actions_of(data)
    kind = np.fromiter((_KIND.get(v, 0) for v in acts.values), np.int8, len(acts.values))[acts.codes]
    f = data.column("file_flags")
    made = pc.or_(pc.not_equal(pc.bit_wise_and(f, pa.scalar(O_TRUNC, f.type)), pa.scalar(0, f.type)),
                  pc.equal(pc.bit_wise_and(f, pa.scalar(O_CREAT | O_EXCL, f.type)),
                           pa.scalar(O_CREAT | O_EXCL, f.type)))
    made_np = null_false(made)
    keep = (kind >= 2) | ((kind == 1) & (made_np.to_numpy(zero_copy_only=False) if len(made_np) else False))
    idx = np.flatnonzero(keep)
    return idx, kind[idx] == 3


class NamedTimestomp:
    """utimes setting a time back (``fx_time_back``, as the rule reads it) by a process
    ``fx_timestomp`` leaves out by name, on a path that process did not make before."""

    rules: tuple[RuleMeta, ...] = (NAMED_TIMESTOMP,)

    def __init__(self, max_tracked: int = 100_000) -> None:
        self.suffixes, self.packages, self.back = LEFT_OUT, PACKAGE_PATHS, TIME_BACK_NS
        self.images: dict[int, str] = {}  # entity -> its latest image (an exec's) if left out by name, else ""
        self.made: dict[tuple[str | None, int, str], None] = {}  # (host, entity, path) it made
        self.max_tracked = max_tracked

    def hunt_filter(self) -> dict[str, Node]:
        opens = And((Pred("event_action", "eq", "open"), Pred("file_flags", "bits", O_CREAT | O_TRUNC)))
        return {"events": Or((Pred("event_action", "in", ("exec", "mkdir", "utimes")), opens))}

    def _learn_images(self, data: pa.Table, execs: np.ndarray) -> None:
        at = pa.array(np.flatnonzero(execs))
        for e, exe in zip(data.column("process_entity_id").take(at).to_pylist(),
                          data.column("process_executable").take(at).to_pylist()):
            if e and exe:  # the executable of a process left out by name, else "" (not one)
                self.images.pop(e, None)
                self.images[e] = exe if exe.endswith(self.suffixes) else ""

    def _named(self, data: pa.Table, idx: np.ndarray) -> np.ndarray:
        """Which rows' processes the rule leaves out by name: by the image an exec showed
        (what the rule's Image is), else by the comm (a process older than the recording).
        Decided once per distinct process and comm: a batch has a few of each."""
        at = pa.array(idx)
        ent = pc.fill_null(data.column("process_entity_id").take(at), 0).to_numpy(zero_copy_only=False)
        comm = pc.dictionary_encode(data.column("process_name").take(at))
        if isinstance(comm, pa.ChunkedArray):
            comm = comm.combine_chunks()
        by_comm = np.array([("/" + c).endswith(self.suffixes) if c else False
                            for c in comm.dictionary.to_pylist()] + [False], dtype=bool)
        codes = comm.indices.fill_null(len(comm.dictionary)).to_numpy()
        uniq, inv = np.unique(ent, return_inverse=True)
        known = [self.images.get(e) for e in uniq.tolist()]
        seen = np.array([k is not None for k in known], bool)[inv]
        by_image = np.array([bool(k) for k in known], bool)[inv]
        named: np.ndarray = np.where(seen, by_image, by_comm[codes])
        return named

    _COLS = ("ts", "host_id", "event_action", "file_path", "process_entity_id")

    def observe(self, table: str, data: pa.Table, source: str) -> pa.Table:
        if table != "events" or data.num_rows == 0:
            return empty_alerts()
        acts = actions_of(data)
        if acts.any(_EXEC):
            self._learn_images(data, acts.where(_EXEC))
        if not acts.any(_WATCH):
            return empty_alerts()
        idx, utimes = _watched(data)
        named = self._named(data, idx) if len(idx) else np.zeros(0, bool)
        idx, utimes = idx[named], utimes[named]
        if not len(idx):
            return empty_alerts()
        rows = data.select(list(self._COLS)).take(pa.array(idx)).to_pylist()
        back = self._time_back(data, idx, utimes)
        hits: list[dict[str, Any]] = []
        for i in sorted(range(len(rows)), key=lambda i: rows[i]["ts"]):
            r = rows[i]
            path = r.get("file_path")
            if not path:
                continue
            key = (r.get("host_id"), r.get("process_entity_id") or 0, path)
            if r["event_action"] != "utimes":
                self.made.pop(key, None)
                self.made[key] = None
                continue
            b = back.get(i)
            if b is None or b <= self.back or key in self.made or any(p in path for p in self.packages):
                continue
            hit = _alert_row(data, int(idx[i]))
            if self.images.get(key[1]):
                hit["fx_image"] = self.images[key[1]]
            hit["fx_detail"] = (f"a time set {b // DAY_NS} days back, to {format_ns(r['ts'] - b)}, "
                                "on a file this process did not write or create: no copy or extraction")
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

    def _trim(self) -> None:
        while len(self.made) > self.max_tracked:
            self.made.pop(next(iter(self.made)))
        while len(self.images) > self.max_tracked:
            self.images.pop(next(iter(self.images)))


def _alert_row(data: pa.Table, row: int) -> dict[str, Any]:
    names = [c for c in ALERT_FIELDS if data.schema.get_field_index(c) >= 0]
    got: dict[str, Any] = data.select(names).take(pa.array([row], pa.int64())).to_pylist()[0]
    return got

