"""storm: more syscalls than can be recorded, to show loss is accounted exactly and that no
process lifecycle event is lost.

Eight processes open /dev/null for writing and close it as fast as they can for a few seconds while
another process forks and execs /bin/true, one after the other. With forensix, the bench
then checks in the store that
- every open done by the storm is either recorded or counted in a gap record
  (recorded + lost >= opens done; other processes only add to both sides), and gap counts
  equal the kernel's drop counters when the sensor exposes them;
- every /bin/true child has its fork, exec and exit events.
"""

from __future__ import annotations

import subprocess
from typing import Any

from bench.micro import build_micro
from bench.recorders import Recorder
from bench.workload import Metric, Workload

STORM_PROCS = 8
LIFECYCLE_CHILDREN = 400


class StormWorkload(Workload):
    name = "storm"
    title = "storm"
    metrics = (
        Metric("opens_per_s", "open+close done", "pairs/s", higher_is_better=True),
        Metric("forkexec_ns", "fork+exec during storm", "ns/op"),
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
            "lifecycle_complete": all(
                life.get(k) == self.last.get("children")
                for k in ("fork", "exec", "exit", "exec_true")
            ),
        }
