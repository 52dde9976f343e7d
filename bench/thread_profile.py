"""thread_profile: run a forensix command with every thread under cProfile on its own CPU clock.

    python -m bench.thread_profile OUT_PREFIX record --store S ...

Each thread's profile (the main thread, the writer, the rules timer, ...) is written to
``OUT_PREFIX.<thread name>.prof`` when the thread ends (the main thread: when the command
exits), timed with ``time.thread_time_ns``: what a thread spends waiting is not counted, so
the figures are the CPU a busy second costs, by function. bench/build_cost.py ``--profile``
runs the recorder this way. Read them with ``python -m pstats`` or ``--top``:

    python -m bench.thread_profile --top OUT_PREFIX.MainThread.prof
"""

from __future__ import annotations

import cProfile
import gc
import json
import pstats
import sys
import threading
import time
from typing import Any

_lock = threading.Lock()
_done: dict[str, int] = {}


def _dump(prof: cProfile.Profile, prefix: str, name: str) -> None:
    with _lock:
        n = _done.get(name, 0)
        _done[name] = n + 1
    prof.dump_stats(f"{prefix}.{name}{f'-{n}' if n else ''}.prof")


def _patch(prefix: str) -> None:
    inner = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]  # calls run(), also an overridden one

    def profiled(self: threading.Thread) -> None:
        prof = cProfile.Profile(time.thread_time_ns, 1e-9)
        prof.enable()
        try:
            inner(self)
        finally:
            prof.disable()
            _dump(prof, prefix, self.name)

    threading.Thread._bootstrap_inner = profiled  # type: ignore[attr-defined]


def _watch_gc(prefix: str) -> None:
    """The cyclic collector's passes and CPU by generation (a pass stops every thread)."""
    started: dict[str, float] = {}
    spent = {0: [0, 0.0], 1: [0, 0.0], 2: [0, 0.0]}

    def cb(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started["t"] = time.thread_time()
        elif "t" in started:
            got = spent[info["generation"]]
            got[0] += 1
            got[1] += time.thread_time() - started.pop("t")

    gc.callbacks.append(cb)

    def dump() -> None:
        with open(f"{prefix}.gc.json", "w") as f:
            json.dump({"passes_and_cpu_s_by_generation": spent, "tracked_objects": len(gc.get_objects())}, f)

    import atexit

    atexit.register(dump)


def top(path: str, n: int = 40) -> None:
    st = pstats.Stats(path)
    print(f"{path}: {st.total_tt:.3f} s CPU")  # type: ignore[attr-defined]
    st.sort_stats("tottime").print_stats(n)
    st.sort_stats("cumulative").print_stats(n)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help") or argv[0].startswith("-") and argv[0] != "--top":
        print(__doc__, file=sys.stderr)  # not a prefix: `--help` made files named --help.*.prof
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    if argv[0] == "--top":
        for p in argv[1:]:
            top(p)
        return 0
    prefix, args = argv[0], argv[1:]
    _patch(prefix)
    _watch_gc(prefix)
    from forensix.cli.main import cli
    from forensix.store.private import private_umask

    private_umask()  # as forensix.cli.main.main does

    prof = cProfile.Profile(time.thread_time_ns, 1e-9)
    code: Any = 0
    prof.enable()
    try:
        cli(args, prog_name="forensix")
    except SystemExit as e:
        code = e.code
    finally:
        prof.disable()
        _dump(prof, prefix, "MainThread")
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
