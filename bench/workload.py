"""What a workload is to the runner: untimed set-up, a measured run, its metrics."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.recorders import Recorder


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    higher_is_better: bool = False


class Workload:
    name = ""
    title = ""
    metrics: tuple[Metric, ...] = ()
    recorders: tuple[str, ...] = ("none", "forensix", "floor", "base", "auditd", "strace", "forensix-agent")
    # takes the extra repetitions of the baseline, forensix and the floor (--paired-reps):
    # a workload with a target on its ratio to the baseline
    paired = False

    def __init__(self, quick: bool, scratch: Path) -> None:
        self.quick = quick
        self.scratch = scratch / self.name
        self.scratch.mkdir(parents=True, exist_ok=True)

    def check(self) -> str | None:
        """Why this workload cannot run here, or None."""
        return None

    def prepare(self) -> None:
        """Once, untimed: build or fetch what every run needs."""

    def before_run(self, rec: Recorder) -> None:
        """Untimed, before a host-wide recorder starts (fresh copies, servers)."""

    def measure(self, rec: Recorder) -> dict[str, float]:
        raise NotImplementedError

    def after_run(self, rec: Recorder) -> None:
        """Untimed clean-up after the recorder stopped."""

    def inspect_forensix(self, reader: Any) -> dict[str, Any]:
        """Workload-specific checks on the forensix store of the last run."""
        return {}

    def describe(self) -> str:
        return self.title

    def finish(self) -> None:
        """Once, after all runs."""

    def extra(self) -> dict[str, Any]:
        """Workload-specific figures measured once (kept in the JSON, shown in the report)."""
        return {}


def run(argv: list[str], *, cwd: Path | None = None, timeout: float = 3600) -> str:
    """Run a command, return its stdout; a failure raises with its output."""
    p = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    if p.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv[:6])} exited {p.returncode}: {(p.stderr or p.stdout)[-1500:]}"
        )
    return p.stdout
