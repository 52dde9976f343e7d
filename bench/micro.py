"""syscall micro: ns per operation of getppid (not recorded), open+close (recorded) and
fork+exec+wait of /bin/true (recorded), timed inside a small C program (bench/micro.c)
so that no interpreter overhead enters the figures."""

from __future__ import annotations

import shutil
from pathlib import Path

from bench.recorders import Recorder
from bench.workload import Metric, Workload, run

MICRO_C = Path(__file__).with_name("micro.c")

# (mode, iterations full, iterations quick); strace gets 1/STRACE_DIVISOR of them
OPS = (
    ("getppid", 5_000_000, 1_000_000),
    ("openclose", 1_000_000, 200_000),
    ("forkexec", 3_000, 500),
)
STRACE_DIVISOR = 50


def build_micro(out: Path) -> Path:
    cc = shutil.which("gcc") or shutil.which("cc") or shutil.which("clang") or "cc"
    run([cc, "-O2", "-Wall", "-o", str(out), str(MICRO_C)])
    return out


class MicroWorkload(Workload):
    name = "micro"
    paired = True
    title = "syscall micro"
    metrics = (
        Metric("getppid_ns", "getppid (not recorded)", "ns/op"),
        Metric("openclose_ns", "open+close (recorded)", "ns/op"),
        Metric("forkexec_ns", "fork+exec+wait /bin/true", "ns/op"),
    )

    def describe(self) -> str:
        n = {m: (q if self.quick else f) for m, f, q in OPS}
        return (
            f"C loops: {n['getppid']:,} getppid, {n['openclose']:,} open+close of "
            f"/dev/null (O_WRONLY), {n['forkexec']:,} fork+exec /bin/true (strace: 1/{STRACE_DIVISOR})"
        )

    def prepare(self) -> None:
        self.binary = build_micro(self.scratch / "micro")

    def measure(self, rec: Recorder) -> dict[str, float]:
        out: dict[str, float] = {}
        for mode, full, quick in OPS:
            n = quick if self.quick else full
            if rec.name == "strace":
                n = max(n // STRACE_DIVISOR, 100)
            line = run(rec.wrap([str(self.binary), mode, str(n)])).split()
            out[f"{mode}_ns"] = float(line[2])
        return out
