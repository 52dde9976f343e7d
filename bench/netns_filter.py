"""What a sensor recording one network namespace (``forensix record --netns``) costs.

    python -m bench.netns_filter [--ops 200000] [--rounds 5] [--against REV] [--write]

Two figures:

- **Instructions after the verifier**, per program, of the default sensor (``cfg.netns``
  0: the filter's branch is dead and the verifier drops it) and of a filtered one; with
  ``--against REV`` also the sensor of that commit (before the filter: 5806bbc), built from
  a ``git archive`` of its bpf/. Counted from the kernel
  (``bpf_prog_info.xlated_prog_len``): a property of the build, not a timing.
- **What the rest of the host pays** for a filtered sensor: ns per open+close and per
  one-byte pipe write (bench/micro.c) of a process outside the namespace, with no sensor,
  then with the filtered sensor attached and, alternating with it, the same sensor paused
  (every program returns on its first load: the tracepoints' own cost). Filtered minus
  paused is the filter's check; paused minus none the hooks'.

``--write`` puts the tables into docs/benchmarks-netns.md. The figures are noisy on a
shared machine: the load average is written beside them.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.micro import build_micro
from forensix.sensor import libbpf as lb
from forensix.sensor.loader import Sensor, SensorConfig

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks-netns.md"
_MODES = ("openclose", "pipewrite")


def xlated(netns: int, bpf_dir: Path | None = None) -> dict[str, int]:
    """Instructions of each program as the verifier left them (loaded, not attached)."""
    old = os.environ.get("FORENSIX_BPF_DIR")
    if bpf_dir is not None:
        os.environ["FORENSIX_BPF_DIR"] = str(bpf_dir)
    try:
        s = Sensor(SensorConfig(netns=netns))
        s.open_and_load()
    finally:
        if bpf_dir is not None and old is None:
            del os.environ["FORENSIX_BPF_DIR"]
        elif bpf_dir is not None and old is not None:
            os.environ["FORENSIX_BPF_DIR"] = old
    out: dict[str, int] = {}
    for name, fd in s.prog_fds().items():
        info = (ctypes.c_uint32 * 64)()  # struct bpf_prog_info: xlated_prog_len is the 6th u32
        size = ctypes.c_uint32(ctypes.sizeof(info))
        if fd >= 0 and lb.lib.bpf_obj_get_info_by_fd(fd, info, ctypes.byref(size)) == 0:
            out[name] = info[5] // 8
    s.close()
    return out


def build_at(rev: str) -> Path:
    """The sensor object and ABI of commit ``rev``, built against this kernel."""
    d = Path(tempfile.mkdtemp(prefix="fx-netns-rev-"))
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "bpf"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(d)], input=tar, check=True)
    shutil.copy(ROOT / "bpf" / "vmlinux.h", d / "bpf" / "vmlinux.h")  # generated at set-up, not in git
    subprocess.run(["make", "-s", "-C", str(d / "bpf"), f"OUT={d / 'out'}"], check=True)
    return d / "out"


def _ns_per_op(binary: Path, mode: str, ops: int) -> float:
    line = subprocess.run([str(binary), mode, str(ops)], capture_output=True, text=True, check=True).stdout.split()
    return float(line[2])


def _round(binary: Path, ops: int) -> dict[str, float]:
    return {m: _ns_per_op(binary, m, ops) for m in _MODES}


def host_cost(ops: int, rounds: int) -> tuple[dict[str, dict[str, list[float]]], tuple[float, float]]:
    """ns/op per state (none, filtered, paused) and mode, and the load average before and after."""
    load0 = os.getloadavg()[0]
    binary = build_micro(Path(tempfile.mkdtemp(prefix="fx-netns-bench-")) / "micro")
    got: dict[str, dict[str, list[float]]] = {s: {m: [] for m in _MODES} for s in ("none", "filtered", "paused")}

    def keep(state: str, r: dict[str, float]) -> None:
        for m, v in r.items():
            got[state][m].append(v)

    for _ in range(rounds):
        keep("none", _round(binary, ops))
    # a namespace with no task in it: nothing on this host is recorded, every program checks
    subprocess.run(["ip", "netns", "add", name := f"fx-bench-{os.getpid()}"], check=True)
    try:
        s = Sensor(SensorConfig(netns=os.stat(f"/run/netns/{name}").st_ino))
        s.open_and_load()
        s.attach()
        s.set_control(paused=False)
        for _ in range(rounds):
            keep("filtered", _round(binary, ops))
            s.set_control(paused=True)
            keep("paused", _round(binary, ops))
            s.set_control(paused=False)
        s.close()
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
    for _ in range(rounds):
        keep("none", _round(binary, ops))
    return got, (load0, os.getloadavg()[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ops", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--against", default=None, metavar="REV", help="also count the sensor of this commit")
    ap.add_argument("--write", action="store_true")
    a = ap.parse_args()
    default, filtered = xlated(0), xlated(os.stat("/proc/self/ns/net").st_ino)
    base = xlated(0, build_at(a.against)) if a.against else {}
    lines = ["| program | " + (f"{a.against} | " if base else "") + "default (netns 0) | filtered |",
             "|---|" + ("---:|" if base else "") + "---:|---:|"]
    for p in sorted(default):
        lines.append(f"| {p} | " + (f"{base.get(p, '')} | " if base else "") + f"{default[p]} | {filtered.get(p, '')} |")
    got, load = host_cost(a.ops, a.rounds)
    lines += ["", (f"ns per operation of a process outside the namespace, median of {a.rounds * 2} rounds (none: "
                   f"before and after) or {a.rounds} (alternating), {a.ops:,} ops each; load average "
                   f"{load[0]:.1f} before, {load[1]:.1f} after."), "",
              "| operation | no sensor | filtered sensor, paused | filtered sensor |", "|---|---:|---:|---:|"]
    for m in _MODES:
        med = {s: statistics.median(got[s][m]) for s in got}
        lines.append(f"| {m} | {med['none']:.0f} | {med['paused']:.0f} | {med['filtered']:.0f} |")
    if max(load) > 2:
        lines += ["", (f"The machine was loaded (load average up to {max(load):.0f} on 2 cores, other work sharing "
                  "them): these timings are not the machine's; take them again on a quiet one.")]
    text = "\n".join(lines)
    print(text)
    if a.write:
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        DOC.write_text(f"# Recording one network namespace: what it costs (bench.netns_filter)\n\n"
                       f"Taken {stamp} with `python -m bench.netns_filter --ops {a.ops} --rounds {a.rounds}"
                       f"{' --against ' + a.against if a.against else ''} --write`.\n\n"
                       "Instructions after the verifier, per program:\n\n" + text + "\n")


if __name__ == "__main__":
    main()
