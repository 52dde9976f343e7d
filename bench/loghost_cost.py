"""The log host's fixed costs beside a raw agent (docs/agent-raw-records.md, "What it costs").

    python -m bench.loghost_cost checkpoint        # a decoder checkpoint at three state sizes, Arrow vs JSON
    python -m bench.loghost_cost start DIR [--base-src SRC]
        # CPU of a `forensix server` start on the store and evidence in DIR (a copy each time):
        # this tree with the checkpoint a clean stop wrote, against SRC without one

Figures are thread or process CPU; write the load average beside them (a shared host).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def checkpoint() -> None:
    import json
    from dataclasses import asdict

    import zstandard

    from forensix.sensor.decode import Decoder, _Proc
    from forensix.sensor.decoder_state import export_state, import_state
    from forensix.sensor.loader import load_abi
    from forensix.server.rawdecode import StreamDecoder
    from forensix.testing.shipping import host_info

    abi = load_abi()
    for nproc, nlab in ((5_000, 20_000), (50_000, 200_000), (200_000, 500_000)):
        sd = StreamDecoder("alpha", "s")
        dec = Decoder(abi, host_info("alpha"))
        for i in range(nproc):  # processes of 300 programs, each with its own arguments
            dec.cache.add(10**12 + i, _Proc(1000 + i, 10**12 + i - 1, 1, f"/usr/bin/prog{i % 300}",
                                            [f"prog{i % 300}", "--flag", f"/var/lib/x/{i}"], "/home/user", False))
        dec.labels = {10**9 + i: f"/var/lib/app/data/file-{i}.log" for i in range(nlab)}
        dec.label_history = {10**9 + i: [(10**18 + i, f"/tmp/old-{i}")] for i in range(nlab // 10)}
        sd.decoder, sd.abi, sd.info, sd.last_seq = dec, abi, host_info("alpha"), 5
        d = Path(tempfile.mkdtemp(prefix="fx-ckpt-"))
        take = write = load = old_take = old_load = 9e9
        size = old_size = 0
        for _ in range(3):  # this tree's Arrow checkpoint and the zstd JSON before it, alternating
            t = time.thread_time()
            sd.take_checkpoint()
            t1 = time.thread_time()
            assert sd.pending is not None
            size = len(sd.pending[1])
            sd.write_checkpoint(d, 10)
            t2 = time.thread_time()
            assert StreamDecoder("alpha", "s").restore(d) == 5
            t3 = time.thread_time()
            take, write, load = min(take, t1 - t), min(write, t2 - t1), min(load, t3 - t2)
            t = time.thread_time()
            body = zstandard.ZstdCompressor(level=1).compress(json.dumps({
                "format": 1, "seq": 5, "abi": abi, "host": asdict(sd.info), "state": export_state(dec)}).encode())
            t1 = time.thread_time()
            json_state = json.loads(zstandard.ZstdDecompressor().decompress(body, max_output_size=1 << 31))
            import_state(Decoder(abi, host_info("alpha")), json_state["state"])
            old_take, old_load = min(old_take, t1 - t), min(old_load, time.thread_time() - t1)
            old_size = len(body)
        shutil.rmtree(d)
        print(f"{nproc:>7} processes, {nlab:>7} labels: Arrow IPC {size / 1e6:.1f} MB, take {take * 1000:.0f} ms"
              f" + write {write * 1000:.0f} ms, load {load * 1000:.0f} ms | zstd JSON {old_size / 1e6:.1f} MB,"
              f" take+zstd {old_take * 1000:.0f} ms, load {old_load * 1000:.0f} ms"
              f" (connection thread CPU; load {os.getloadavg()[0]:.1f})")


def _start_cpu(src: str, base: Path, keep_checkpoint: bool) -> tuple[float, str]:
    d = Path(tempfile.mkdtemp(prefix="fx-start-"))
    shutil.copytree(base, d, dirs_exist_ok=True, ignore=shutil.ignore_patterns("spool*"))
    if not keep_checkpoint:
        for p in d.glob("*.evidence/*/*/decoder-*.ckpt"):
            p.unlink()
    store = next(d.glob("*.duckdb"))
    log = d / "server.log"
    p = subprocess.Popen([sys.executable, "-m", "forensix", "server", "--pki", str(d / "pki"), "--listen",
                          "127.0.0.1:0", "--store", str(store), "--no-rules"], env=dict(os.environ, PYTHONPATH=src),
                         stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        while "listening on" not in log.read_text():
            if p.poll() is not None:
                raise RuntimeError(log.read_text()[-2000:])
            time.sleep(0.05)
        f = open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()
        cpu = (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(60)
    said = [line.split("forensix.server: ", 1)[1] for line in log.read_text().splitlines() if "decoder of" in line]
    shutil.rmtree(d)
    return cpu, "; ".join(said)


def start(base: Path, base_src: str | None, reps: int) -> None:
    here = str(Path(__file__).resolve().parent.parent / "src")
    for _ in range(reps):  # alternating
        for src, keep in ((base_src, False), (here, True)):
            if src is None:
                continue
            cpu, said = _start_cpu(src, base, keep)
            print(f"{src}: CPU to listening {cpu:.2f} s ({said or 'no raw stream'}); load {os.getloadavg()[0]:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.loghost_cost")
    sub = ap.add_subparsers(dest="what", required=True)
    sub.add_parser("checkpoint")
    st = sub.add_parser("start")
    st.add_argument("dir", type=Path, help="a stopped log host's directory: pki/, STORE.duckdb, STORE.duckdb.evidence/")
    st.add_argument("--base-src", default=None, help="the src/ of the tree to compare with (no checkpoint kept)")
    st.add_argument("--reps", type=int, default=2)
    a = ap.parse_args()
    if a.what == "checkpoint":
        checkpoint()
    else:
        start(a.dir, a.base_src, a.reps)


if __name__ == "__main__":
    main()
