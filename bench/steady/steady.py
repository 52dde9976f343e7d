"""A steady build-like load for 20 s whose wall time does not stretch with the machine's load:
every 25 ms one exec of /bin/true and 25 files written and read back (~40 execs and ~1,000
files a second). `python -m bench.build_cost --netns --src bench/steady --make-args steady`
measures the recorder's CPU per second of building on it (docs/build-cost.md)."""
import os
import subprocess
import time

end = time.monotonic() + 20
n = 0
os.makedirs("out", exist_ok=True)
while time.monotonic() < end:
    t = time.monotonic()
    subprocess.run(["/bin/true"], check=True)
    for i in range(25):
        p = f"out/f{n % 2000}.o"
        with open(p, "w") as f:
            f.write("x" * 100)
        with open(p) as f:
            f.read()
        n += 1
    time.sleep(max(0.0, 0.025 - (time.monotonic() - t)))
