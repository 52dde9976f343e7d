"""storm: more syscalls than can be recorded, to show loss is accounted exactly and that no
process lifecycle event is lost.

Eight processes open /dev/null for writing with O_TRUNC (each open a record of its own: a plain
re-open would only be counted) and close it as fast as they can for a few seconds while
another process forks and execs /bin/true, one after the other. With forensix, the bench
then checks in the store that
- every open done by the storm is either recorded or counted in a gap record
  (recorded + lost >= opens done; other processes only add to both sides), and gap counts
  equal the kernel's drop counters when the sensor exposes them;
- every /bin/true child has its fork, exec and exit events.

Then the storm kinds of issue 25, one after the other, each from one process as uid 65534
(bench/micro.c): the same file opened and closed 1 M times, 200 k distinct files created
and deleted, 10 k fork+exec, 65 k connects to local ports (a port scan), 1 M one-byte
writes into a pipe (quick: a fifth of each). For each, the store must hold every call
(records, plus the repeats the kernel counted) or a gap naming the process: stored +
lost = attempted, and the goal is lost = 0.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench.micro import build_micro
from bench.recorders import Recorder
from bench.workload import Metric, Workload

STORM_PROCS = 8
LIFECYCLE_CHILDREN = 400
# (micro mode, calls at full size); quick: a fifth
KINDS = (("openclose", 1_000_000), ("createdelete", 200_000), ("forkexec", 10_000), ("connect", 65_535),
         ("pipewrite", 1_000_000))
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


class StormWorkload(Workload):
    name = "storm"
    title = "storm"
    metrics = (
        Metric("opens_per_s", "open+close done", "pairs/s", higher_is_better=True),
        Metric("forkexec_ns", "fork+exec during storm", "ns/op"),
        *(Metric(f"{k}_ns", f"storm {k}", "ns/op") for k, _ in KINDS),
    )
    recorders = ("none", "forensix", "auditd")

    def __init__(self, quick: bool, scratch: Any) -> None:
        super().__init__(quick, scratch)
        self.seconds = 3.0 if quick else 10.0
        self.children = LIFECYCLE_CHILDREN // 4 if quick else LIFECYCLE_CHILDREN
        self.last: dict[str, float] = {}

    def describe(self) -> str:
        return (
            f"{STORM_PROCS} processes doing open+close for {self.seconds:g} s, beside "
            f"{self.children} fork+exec of /bin/true"
        )

    def prepare(self) -> None:
        self.binary = build_micro(self.scratch / "micro")
        # the storm kinds run as uid 65534: a directory it can reach (the scratch's parents
        # may be closed to it), removed at exit
        shared = Path(tempfile.mkdtemp(prefix="fx-storm-kinds-"))
        atexit.register(shutil.rmtree, shared, True)
        os.chmod(shared, 0o777)
        self.kind_binary = shutil.copy(self.binary, shared / "micro")
        self.kind_dir = shared / "files"
        self.kind_dir.mkdir()
        os.chmod(self.kind_dir, 0o777)
        self.target = shared / "target"
        self.target.touch()
        os.chmod(self.target, 0o666)

    def _kinds(self, rec: Recorder) -> dict[str, float]:
        env = dict(os.environ, MICRO_NO_WARMUP="1", MICRO_DIR=str(self.kind_dir), MICRO_OPEN_PATH=str(self.target))
        out: dict[str, float] = {}
        self.kind_pids: dict[str, int] = {}
        for kind, full in KINDS:
            n = full // 5 if self.quick else full
            p = subprocess.Popen(rec.wrap([*NOBODY, str(self.kind_binary), kind, str(n)]), stdout=subprocess.PIPE,
                                 text=True, env=env)
            line, _ = p.communicate(timeout=900)
            if p.returncode != 0:
                raise RuntimeError(f"micro {kind} exited {p.returncode}")
            out[f"{kind}_ns"] = float(line.split()[2])
            self.kind_pids[kind] = p.pid  # setpriv execs micro: the same process
            self.last[f"{kind}_calls"] = n
        return out

    def measure(self, rec: Recorder) -> dict[str, float]:
        storm = subprocess.Popen(
            rec.wrap([str(self.binary), "storm", str(STORM_PROCS), str(self.seconds)]),
            stdout=subprocess.PIPE, text=True,
        )
        life = subprocess.Popen(
            rec.wrap([str(self.binary), "forkexec", str(self.children)]),
            stdout=subprocess.PIPE, text=True,
        )
        life_out, _ = life.communicate(timeout=self.seconds + 600)
        if life.returncode != 0:
            raise RuntimeError(f"micro forkexec exited {life.returncode}")
        out, _ = storm.communicate(timeout=self.seconds + 120)
        if storm.returncode != 0:
            raise RuntimeError(f"storm exited {storm.returncode}")
        ops = int(out.split()[1])
        # micro forkexec runs a warm-up of n/100+1 children before the timed loop
        self.last = {"storm_opens": ops, "children": self.children + self.children // 100 + 1,
                     "parent_pid": life.pid}
        return {
            "opens_per_s": ops / self.seconds,
            "forkexec_ns": float(life_out.split()[2]),
            **self._kinds(rec),
        }

    def inspect_forensix(self, reader: Any) -> dict[str, Any]:
        opens = reader.query(
            "SELECT count(*) AS n FROM events WHERE event_action = 'open' "
            "AND process_name = 'micro' AND file_path = '/dev/null'"
        ).column("n")[0].as_py()
        gaps = reader.query(
            "SELECT event_class, reason, sum(count) AS n, count(*) AS rows "
            "FROM gaps GROUP BY ALL ORDER BY ALL"
        ).to_pylist()
        # the children of our fork+exec process (others on the host may run /bin/true too)
        children = reader.query(
            "SELECT DISTINCT target_entity_id AS e FROM events WHERE event_action = 'fork' "
            "AND process_pid = $pid AND target_entity_id IS NOT NULL",
            {"pid": int(self.last.get("parent_pid", 0))},
        ).column("e").to_pylist()
        life = {"fork": len(children)}
        if children:
            for action in ("exec", "exit"):
                life[action] = reader.query(
                    f"SELECT count(DISTINCT process_entity_id) AS n FROM events "
                    f"WHERE event_action = '{action}' AND process_entity_id IN "
                    "(SELECT unnest($ids))",
                    {"ids": children},
                ).column("n")[0].as_py()
            life["exec_true"] = reader.query(
                "SELECT count(DISTINCT process_entity_id) AS n FROM events "
                "WHERE event_action = 'exec' AND process_entity_id IN (SELECT unnest($ids)) "
                "AND process_executable IN ('/bin/true', '/usr/bin/true')",
                {"ids": children},
            ).column("n")[0].as_py()
        kinds = {k: self._inspect_kind(reader, k) for k, _ in KINDS if k in getattr(self, "kind_pids", {})}
        lost_total = sum(int(g["n"]) for g in gaps)
        lost_file = sum(int(g["n"]) for g in gaps if g["event_class"] in ("file", None))
        expected = self.last.get("storm_opens", 0)
        return {
            "storm_opens_done": expected,
            "storm_opens_recorded": opens,
            "gaps": gaps,
            "lost_total": lost_total,
            "lost_file": lost_file,
            "opens_accounted": opens + lost_file >= expected,
            "lifecycle_expected": self.last.get("children"),
            "lifecycle_seen": life,
            "kinds": kinds,
            "kinds_complete": all(k["stored"] + k["lost"] == k["attempted"] and k["lost"] == 0
                                  for k in kinds.values()),
            "lifecycle_complete": all(
                life.get(k) == self.last.get("children")
                for k in ("fork", "exec", "exit", "exec_true")
            ),
        }

    def _inspect_kind(self, reader: Any, kind: str) -> dict[str, int]:
        """Calls of one storm kind: stored (records, and repeats counted in the kernel),
        lost (gaps naming the storm's process), attempted (what micro did)."""
        pid = self.kind_pids[kind]
        n = int(self.last[f"{kind}_calls"])
        ent = ("(SELECT entity_id FROM processes WHERE pid = $pid AND source = 'exec' "
               "AND executable LIKE '%/micro' ORDER BY image_ts DESC LIMIT 1)")
        q = {"pid": pid}
        try:
            lost = reader.query(f"SELECT coalesce(sum(count), 0) n FROM gaps WHERE process_entity_id = {ent}",
                                q).column("n")[0].as_py()
        except Exception:  # noqa: BLE001 - a forensix before gaps named processes: all of the run's file gaps
            lost = -1
        calls = "count(*) FILTER (WHERE event_count IS NULL) + coalesce(sum(event_count), 0)"
        if kind == "openclose":
            stored = reader.query(f"SELECT {calls} n FROM events WHERE process_entity_id = {ent} "
                                  "AND event_action = 'open' AND file_path = $p", {**q, "p": str(self.target)})
        elif kind == "createdelete":
            stored = reader.query(f"SELECT {calls} n FROM events WHERE process_entity_id = {ent} "
                                  "AND event_action IN ('open', 'unlink') AND starts_with(file_path, $p)",
                                  {**q, "p": f"{self.kind_dir}/fx"})
            n *= 2
        elif kind == "forkexec":
            stored = reader.query(
                "SELECT count(*) n FROM events WHERE event_action IN ('exec', 'exit') AND process_entity_id IN "
                f"(SELECT target_entity_id FROM events WHERE process_entity_id = {ent} AND event_action = 'fork')", q)
            n *= 2
        elif kind == "connect":
            stored = reader.query(f"SELECT count(*) n FROM events WHERE process_entity_id = {ent} "
                                  "AND event_action = 'connect' AND destination_ip = '127.0.0.1'", q)
        else:
            # its own pipe: the busiest fifo it wrote (its stdout, to the bench, is one too)
            stored = reader.query("SELECT coalesce(max(w), 0) n FROM (SELECT sum(write_count) w FROM flows "
                                  f"WHERE file_type = 'fifo' AND entity_id = {ent} GROUP BY file_inode)", q)
        return {"attempted": n, "stored": int(stored.column("n")[0].as_py()), "lost": int(lost)}  # -1: not known
