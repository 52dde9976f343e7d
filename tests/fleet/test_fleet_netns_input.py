"""Recording a network namespace as a host: what is refused, and the identity it gets.

A path that does not exist or is not a network namespace, an inode no live namespace has,
a --host-name without a namespace: each is a ForensixError with a hint, said before any
store file is made. The recorded host's id is its own, never the machine's."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from forensix.cli.main import cli
from forensix.errors import UsageError
from forensix.model.host import local_host, namespace_host
from forensix.sensor.loader import pin_dir_for
from forensix.sensor.netns import recorded_host, resolve_netns


@pytest.mark.parametrize("make, said", [
    (lambda d: d / "absent", "the path does not exist"),
    (lambda d: (d / "f").write_text("x") and d / "f", "not a namespace file"),
    (lambda d: d, "is a directory"),
    (lambda d: Path("/proc/self/ns/mnt"), "is a mount namespace, not a network namespace"),
])
def test_a_path_that_is_no_network_namespace_is_refused(tmp_path: Path, make: object, said: str) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(UsageError) as e:
        resolve_netns(str(path))
    assert said in e.value.message and "ip netns list" in (e.value.hint or "")


def test_a_namespace_by_path_or_inode() -> None:
    own = os.stat("/proc/self/ns/net").st_ino
    assert resolve_netns("/proc/self/ns/net").inode == own
    assert resolve_netns(inode=own).inode == own
    with pytest.raises(UsageError, match="no network namespace has inode 1"):
        resolve_netns(inode=1)
    with pytest.raises(UsageError, match="not 7"):
        resolve_netns("/proc/self/ns/net", 7)


def test_host_name_needs_a_namespace_and_a_usable_name() -> None:
    with pytest.raises(UsageError, match="--host-name names a network namespace"):
        recorded_host(None, None, "web01")
    with pytest.raises(UsageError, match="not a host name"):
        recorded_host("/proc/self/ns/net", None, "web 01")
    assert recorded_host(None, None, None) == (0, None)


def test_each_namespace_is_a_host_of_its_own() -> None:
    machine = local_host()
    a, b = namespace_host(machine, 4026532001, "a"), namespace_host(machine, 4026532002, "a")
    assert len({machine.host_id, a.host_id, b.host_id, namespace_host(machine, 4026532001, "b").host_id}) == 4
    assert a == namespace_host(machine, 4026532001, "a")  # a recorder restarted on it: the same host
    assert (a.boot_id, a.kernel, a.host_name) == (machine.boot_id, machine.kernel, "a")
    other = replace(machine, host_id="another-machine")
    assert namespace_host(other, 4026532001, "a").host_id != a.host_id
    # never the pin directory of the machine's recorder on the same store, nor another namespace's
    assert len({pin_dir_for("/s.duckdb"), pin_dir_for("/s.duckdb", 1), pin_dir_for("/s.duckdb", 2)}) == 3


def test_record_says_so_in_two_lines_and_makes_no_store(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("recording needs root (CI runs the tests as root)")
    store = tmp_path / "ns.duckdb"
    for args in (["--netns", str(tmp_path / "nope")], ["--netns", "/proc/self/ns/pid"],
                 ["--netns-inode", "1"], ["--host-name", "web01"]):
        res = CliRunner().invoke(cli, ["record", "-q", "--store", str(store), *args, "--", "true"])
        lines = res.stderr.strip().splitlines()
        assert res.exit_code == 2 and len(lines) == 2, res.output
        assert lines[0].startswith("forensix: ") and lines[1].startswith("  hint: "), res.stderr
        assert not store.exists()
    # a namespace that is gone still names the sensor a killed recorder of it left pinned
    res = CliRunner().invoke(cli, ["record", "--stop", "--netns-inode", "1", "--store", str(store)])
    assert res.exit_code == 0 and "nothing to stop" in res.stderr, res.output
