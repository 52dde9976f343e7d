"""A user added and then renamed while the real sensor records: the recorder stores the
host's /etc/passwd as it changes, so what the user ran before the rename is shown under
the old name and what they ran after under the new one, in ps, tree, sessions and the
report, whatever this machine's /etc/passwd says by the time anyone looks (the user is
deleted at the end).

useradd, usermod and userdel (Debian's passwd package) change the real /etc/passwd: the
names are unique to this run, and the user is removed again whatever happens.
"""

from __future__ import annotations

import json
import pwd
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from forensix.cli.main import cli
from forensix.testing.scenario import FORENSIX

pytestmark = pytest.mark.bpf

# each action as a login of its own (loginuid written, as pam_loginuid does): a session each
SCRIPT = """
set -e
useradd -M -u {uid} -s /usr/sbin/nologin {old}
sleep 1.2
sh -c 'echo {uid} > /proc/self/loginuid && exec setpriv --reuid={uid} --regid={uid} --clear-groups touch {work}/before'
sleep 1.2
usermod -l {new} {old}
sleep 1.2
sh -c 'echo {uid} > /proc/self/loginuid && exec setpriv --reuid={uid} --regid={uid} --clear-groups touch {work}/after'
sleep 1.2
userdel {new}
"""


def _free_uid() -> int:
    used = {p.pw_uid for p in pwd.getpwall()}
    return next(u for u in range(50000 + uuid.uuid4().int % 9000, 60000) if u not in used)


def _remove(*names: str) -> None:
    for n in names:
        subprocess.run(["userdel", n], capture_output=True, check=False)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    # the new user writes its files here (pytest's own temp dirs are root's alone)
    work = Path(tempfile.mkdtemp(prefix="host-users-"))
    work.chmod(0o777)
    tag = uuid.uuid4().hex[:8]
    old, new, uid = f"fxold{tag}", f"fxnew{tag}", _free_uid()
    (work / "run.sh").write_text(SCRIPT.format(uid=uid, old=old, new=new, work=work))
    store = work / "case.duckdb"
    try:
        r = subprocess.run([*FORENSIX, "record", "--quiet", "--store", str(store), "--", "sh", str(work / "run.sh")],
                           capture_output=True, text=True, timeout=120, check=False)
        assert r.returncode == 0, r.stderr
    finally:
        _remove(old, new)
    with pytest.raises(KeyError):
        pwd.getpwuid(uid)  # gone from this machine: any name shown came from the recording
    yield {"store": str(store), "work": work, "old": old, "new": new, "uid": uid}
    shutil.rmtree(work, ignore_errors=True)


def _cli(*args: str) -> str:
    r = CliRunner().invoke(cli, list(args))
    assert r.exit_code == 0, (args, r.output, r.exception)
    return r.stdout


def _ours(rec: dict[str, Any], fmt_json: list[dict[str, Any]], key: str = "user.id") -> list[dict[str, Any]]:
    return [x for x in fmt_json if x.get(key) == rec["uid"]]


def test_ps_names_the_user_as_it_was_called_when_each_process_ran(recorded: dict[str, Any]) -> None:
    rows = [json.loads(x) for x in _cli("ps", "--store", recorded["store"], "--all", "--format", "json").splitlines()]
    touches = {r["process.args"][-1]: r for r in _ours(recorded, rows) if r.get("process.name") == "touch"}
    before, after = touches[f"{recorded['work']}/before"], touches[f"{recorded['work']}/after"]
    assert (before["user.name"], before["user.name_source"]) == (recorded["old"], "recorded")
    assert (after["user.name"], after["user.name_source"]) == (recorded["new"], "recorded")


def test_tree_and_sessions_show_the_old_name_then_the_new(recorded: dict[str, Any]) -> None:
    uid = recorded["uid"]
    text = _cli("tree", "--store", recorded["store"])
    lines = [x for x in text.splitlines() if f"({uid})" in x and "touch" in x]
    assert len(lines) == 2, text[-3000:]
    assert f"{recorded['old']}({uid})" in lines[0] and "before" in lines[0]
    assert f"{recorded['new']}({uid})" in lines[1] and "after" in lines[1]
    sessions = [json.loads(x) for x in _cli("sessions", "--store", recorded["store"], "--format", "json").splitlines()]
    names = [s["user.name"] for s in sorted(_ours(recorded, sessions), key=lambda s: s["process.start"])]
    assert names == [recorded["old"], recorded["new"]], names


def test_the_report_names_the_user_of_each_files_session(recorded: dict[str, Any]) -> None:
    for name, who in (("before", recorded["old"]), ("after", recorded["new"])):
        text = _cli("report", "--store", recorded["store"], str(recorded["work"] / name))
        user = next(x for x in text.splitlines() if "User" in x and str(recorded["uid"]) in x)
        assert f"{who}({recorded['uid']})" in user, user


def test_the_recording_holds_the_readings(recorded: dict[str, Any]) -> None:
    """No password field, and the old name, the new name and the deletion each with its time."""
    from forensix.store.embedded import open_reader

    rd = open_reader(recorded["store"])
    try:
        rows = rd.query("SELECT valid_from, name FROM accounts WHERE kind = 'user' AND uid = $u ORDER BY valid_from",
                        {"u": recorded["uid"]}).to_pylist()
    finally:
        rd.close()
    names = [r["name"] for r in rows]
    assert names[-3:] == [recorded["old"], recorded["new"], None], rows
    assert sys.platform == "linux"


def test_the_new_users_files_exist(recorded: dict[str, Any]) -> None:
    work: Path = recorded["work"]
    assert (work / "before").stat().st_uid == recorded["uid"] and (work / "after").stat().st_uid == recorded["uid"]
