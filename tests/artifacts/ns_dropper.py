"""Run in a mount namespace of its own (``unshare --mount --propagation private``): mount a
tmpfs on MNT, drop a copy of ``true`` there, say so in OUT/ready, wait for OUT/go, run it,
delete it, and say its pid in OUT/done. The tests of the exec-time hold's namespace scan
(tests/artifacts/test_exec_hold_*.py)."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

mnt, out = Path(sys.argv[1]), Path(sys.argv[2])
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "execkeep-ns", str(mnt)], check=True)
tool = mnt / "tool"
data = Path(shutil.which("true") or "/bin/true").read_bytes() + os.urandom(16)
tool.write_bytes(data)
tool.chmod(0o755)
(out / "ready").write_text(json.dumps({"dev": tool.stat().st_dev, "ino": tool.stat().st_ino,
                                       "sha": hashlib.sha256(data).hexdigest()}))
deadline = time.monotonic() + 120
while not (out / "go").exists() and time.monotonic() < deadline:
    time.sleep(0.02)
p = subprocess.Popen([str(tool)])
p.wait()
tool.unlink()
(out / "done").write_text(json.dumps({"pid": p.pid, "rc": p.returncode}))
