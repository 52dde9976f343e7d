"""An agent older than this forensix refuses, loudly, the sensor this one pinned, and leaves it
recording for this one to adopt.

The slot caches are one mmapable array since liveflush. An agent from before read a pinned
``flow_slots`` as per-CPU values: its one check (the value size) passed, and it stored wrong rows;
one of the first mmapped agents has no way to tell either. So this forensix pins the arrays under
names of their own and a small map under the old names ("the decoy", sensor/loader.py
SLOT_BANK_PINS), which fails that very check. The older agents run here are real trees of this
repository (``git archive``: per-CPU slots at d1b7939, the first mmapped ones at 667f9f3), on the
spool of this tree's killed agent: they must stop with their size message before recording,
leave every pin as it was, and this tree's next agent must adopt the sensor."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from forensix.pki.authority import Authority
from forensix.sensor.loader import bpf_dir, pin_dir_for

pytestmark = pytest.mark.bpf

REPO = Path(__file__).resolve().parents[2]
OLDER = {"d1b7939": "per-CPU slots", "667f9f3": "the first mmapped slots"}


def _cannot(why: str) -> None:
    """CI runs a full clone as root: there the older trees must be made, never skipped."""
    if os.environ.get("CI"):
        pytest.fail(why)
    pytest.skip(why)


def _older_tree(commit: str, where: Path) -> Path:
    if shutil.which("git") is None:
        _cannot("git makes the older trees")
    where.mkdir()
    r = subprocess.run(["git", "-C", str(REPO), "archive", commit, "src"], capture_output=True, check=False)
    if r.returncode:
        _cannot(f"no commit {commit} in {REPO} (a shallow clone?): {r.stderr.decode(errors='replace')[:200]}")
    subprocess.run(["tar", "-x", "-C", str(where)], input=r.stdout, check=True)
    return where / "src"


def _agent(bundle: Path, spool: Path, log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A raw ``forensix agent`` with no log host (its frames stay in the spool); returns once it
    records or has exited."""
    p = subprocess.Popen([sys.executable, "-m", "forensix", "agent", "--server", "127.0.0.1:9", "--bundle",
                          str(bundle), "--spool", str(spool), "--drain", "0", "--no-artifacts"],
                         stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 90
    while "recording: every program attached" not in log.read_text(errors="replace") and p.poll() is None:
        assert time.monotonic() < deadline, log.read_text(errors="replace")[-2000:]
        time.sleep(0.2)
    return p


def _killed(bundle: Path, spool: Path, log: Path, env: dict[str, str]) -> None:
    """An agent killed once it records (as a crash or an upgrade): its sensor stays pinned, recording."""
    p = _agent(bundle, spool, log, env)
    assert p.poll() is None, log.read_text(errors="replace")[-2000:]
    p.send_signal(signal.SIGKILL)
    p.wait()


def _older_env(env: dict[str, str], src: Path) -> dict[str, str]:
    """An older tree with this tree's abi.json (the layouts it reads are the same; its build is not in git)."""
    return dict(env, PYTHONPATH=str(src), FORENSIX_BPF_DIR=str(bpf_dir()))


@pytest.mark.parametrize("commit", list(OLDER))
def test_an_older_agent_refuses_the_pinned_sensor_and_this_one_adopts_it(tmp_path: Path, commit: str) -> None:
    old_src = _older_tree(commit, tmp_path / "old")
    pki = Authority(tmp_path / "pki")
    pki.init(["127.0.0.1"])
    bundle = pki.issue("alpha").directory
    spool = tmp_path / "spool"
    env = {k: v for k, v in os.environ.items() if k != "FORENSIX_BPF_DIR"}
    _killed(bundle, spool, tmp_path / "first.log", env)
    _refused(bundle, spool, tmp_path / "older.log", _older_env(env, old_src), commit)
    _adopted_and_stopped(bundle, spool, tmp_path / "second.log", env)


def test_a_sensor_pinned_by_the_first_mmapped_agent_is_guarded_once_adopted(tmp_path: Path) -> None:
    """A sensor pinned by an agent of 667f9f3 (its slot arrays under the old names, no decoy), adopted by
    this forensix and left pinned again: an agent of d1b7939 then refuses it too."""
    mmapped, percpu = _older_tree("667f9f3", tmp_path / "mm"), _older_tree("d1b7939", tmp_path / "pc")
    pki = Authority(tmp_path / "pki")
    pki.init(["127.0.0.1"])
    bundle = pki.issue("alpha").directory
    spool = tmp_path / "spool"
    env = {k: v for k, v in os.environ.items() if k != "FORENSIX_BPF_DIR"}
    _killed(bundle, spool, tmp_path / "mm.log", _older_env(env, mmapped))
    assert (pin_dir_for(spool) / "flow_slots").exists() and not (pin_dir_for(spool) / "flow_slot_banks").exists()
    _killed(bundle, spool, tmp_path / "this.log", env)  # adopts, and pins the arrays apart
    _refused(bundle, spool, tmp_path / "pc.log", _older_env(env, percpu), "d1b7939")
    _adopted_and_stopped(bundle, spool, tmp_path / "last.log", env)


def _refused(bundle: Path, spool: Path, old_log: Path, env: dict[str, str], commit: str) -> None:
    """The older agent stops with its size message, before recording, and every pin stays."""
    pin = pin_dir_for(spool)
    pinned = sorted(p.name for p in pin.iterdir())
    older = _agent(bundle, spool, old_log, env)
    try:
        rc = older.wait(timeout=60)
    except subprocess.TimeoutExpired:
        older.send_signal(signal.SIGINT)
        older.wait(60)
        raise AssertionError(f"the agent of {commit} ({OLDER[commit]}) adopted this tree's sensor: "
                             + old_log.read_text(errors="replace")[-1500:]) from None
    said = old_log.read_text(errors="replace")
    assert rc != 0 and "the sensor's flow_slots slots are 8 bytes" in said, said[-1500:]
    assert "recording: every program attached" not in said
    assert sorted(p.name for p in pin.iterdir()) == pinned  # nothing unpinned, nothing detached


def _adopted_and_stopped(bundle: Path, spool: Path, log: Path, env: dict[str, str]) -> None:
    """This tree's agent adopts the sensor the older one refused, and stops cleanly."""
    p = _agent(bundle, spool, log, env)
    assert p.poll() is None, log.read_text(errors="replace")[-2000:]
    p.send_signal(signal.SIGINT)
    assert p.wait(60) == 0, log.read_text(errors="replace")[-2000:]
    assert not pin_dir_for(spool).exists()  # a clean stop: the adopted sensor is gone with it
