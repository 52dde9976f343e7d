"""compile: a real C project from Debian source, ``./configure && make -j2``, wall time.

The source tree comes from ``apt-get source`` (scripts/bench-setup.sh unpacks it under
/var/cache/forensix-bench/src). Every run builds a fresh copy, so each configuration does
the same work. ``--quick`` builds only readline inside an already configured copy.

Another project than bash (the build the recorder was tuned on): ``BENCH_SRC_PACKAGE``
names it and ``BENCH_SRC_DIR`` where ``apt-get source`` unpacked it; a tree without a
``configure`` script (zstd: a plain Makefile) is built with ``make -j2 $BENCH_MAKE_ARGS``
alone (e.g. ``-C lib libzstd.a``: zstd's library, ~30 files at -O3).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from bench.recorders import Recorder
from bench.workload import Metric, Workload, run

SRC_ROOT = Path(os.environ.get("BENCH_SRC_DIR", "/var/cache/forensix-bench/src"))
SRC_PACKAGE = os.environ.get("BENCH_SRC_PACKAGE", "bash")
# what `make -j2` builds in a tree without configure (default: its default target)
MAKE_ARGS = os.environ.get("BENCH_MAKE_ARGS", "")


def source_tree() -> Path | None:
    trees = sorted(p for p in SRC_ROOT.glob(f"{SRC_PACKAGE}-*") if p.is_dir())
    return trees[-1] if trees else None


class CompileWorkload(Workload):
    name = "compile"
    paired = True
    title = "compile"
    metrics = (Metric("wall_s", "wall time", "s"),)

    def check(self) -> str | None:
        if source_tree() is None:
            return f"no {SRC_PACKAGE} source under {SRC_ROOT}: run scripts/bench-setup.sh"
        return None

    @property
    def _template(self) -> Path:
        return self.scratch / "template"

    @property
    def _build(self) -> Path:
        return self.scratch / "build"

    def prepare(self) -> None:
        tree = source_tree()
        assert tree is not None
        shutil.rmtree(self._template, ignore_errors=True)
        shutil.copytree(tree, self._template, symlinks=True)
        if self.quick:
            run(["sh", "-c", "./configure -q >/dev/null"], cwd=self._template)
        # one untimed build first, so every measured run starts with a warm page cache
        self.before_run(Recorder())
        run(self._command(), cwd=self._build)
        self.after_run(Recorder())

    def describe(self) -> str:
        tree = source_tree()
        what = tree.name if tree else SRC_PACKAGE
        if self.quick:
            return f"`make -j2 -C lib/readline` in a configured {what} tree (quick subset)"
        if tree is not None and not (tree / "configure").is_file():
            return f"`make -j2 {MAKE_ARGS}`".replace(" `", "`") + f" of {what} (Debian source, no configure step), fresh copy per run"
        return f"`./configure && make -j2` of {what} (Debian source), fresh copy per run"

    def before_run(self, rec: Recorder) -> None:
        shutil.rmtree(self._build, ignore_errors=True)
        shutil.copytree(self._template, self._build, symlinks=True)

    def _configured(self) -> bool:
        return (self._template / "configure").is_file()

    def _command(self) -> list[str]:
        if self.quick:
            return ["make", "-j2", "-s", "-C", "lib/readline"]
        if not self._configured():
            return ["sh", "-c", f"make -j2 -s {MAKE_ARGS} >/dev/null"]
        return ["sh", "-c", "./configure -q >/dev/null && make -j2 -s >/dev/null"]

    def measure(self, rec: Recorder) -> dict[str, float]:
        t0 = time.monotonic()
        run(rec.wrap(self._command()), cwd=self._build)
        return {"wall_s": time.monotonic() - t0}

    def after_run(self, rec: Recorder) -> None:
        shutil.rmtree(self._build, ignore_errors=True)
