"""pyarrow's mimalloc in a forensix process commits its arena as it is used, not up front
(forensix/_arrowpool.py): ~3-4 MB less resident in every process once an Arrow buffer exists,
an idle recorder's included (issue 25: idle ≤ 100 MB)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = """
import json, forensix, pyarrow as pa
kept = pa.array(list(range(100000)), memory_pool=pa.mimalloc_memory_pool())  # mimalloc's first buffer
anon = next(int(line.split()[1]) for line in open("/proc/self/smaps_rollup") if line.startswith("Anonymous:"))
print(json.dumps({"anon_kb": anon, "pool": pa.default_memory_pool().backend_name}))
"""


def _probe(**env: str) -> dict[str, object]:
    base = {k: v for k, v in os.environ.items() if k != "MIMALLOC_ARENA_EAGER_COMMIT"}
    res = subprocess.run([sys.executable, "-c", PROBE], env={**base, **env}, capture_output=True, text=True,
                         timeout=120, check=True)
    got: dict[str, object] = json.loads(res.stdout)
    return got


def test_arrows_arena_is_committed_as_used_and_the_users_choice_is_kept() -> None:
    lazy = _probe()
    eager = _probe(MIMALLOC_ARENA_EAGER_COMMIT="1")  # what pyarrow does when left alone
    assert lazy["pool"] == eager["pool"] == "mimalloc"  # the allocator itself is unchanged
    assert int(eager["anon_kb"]) - int(lazy["anon_kb"]) >= 2048, (lazy, eager)  # type: ignore[call-overload]
