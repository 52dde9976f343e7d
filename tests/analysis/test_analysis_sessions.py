"""An ssh session's source address is the connection its leader holds, or unknown.

The host history is hand-built (forensix.testing.StoreBuilder): one sshd listener whose
accepts are recorded for some connections and missed for others, and sshd's own log lines
imported the way `forensix import journal` stores them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from forensix.analysis.sessions import sessions
from forensix.imports import FORMATS, Host, Importer
from forensix.store.embedded import open_reader, open_writer
from forensix.testing.generator import StoreBuilder


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="microseconds")


def _history() -> StoreBuilder:
    b = StoreBuilder()
    init = b.spawn(None, 1, 0, "/usr/lib/systemd/systemd", ["/sbin/init"])
    sshd = b.spawn(init, 500, 0.5, "/usr/sbin/sshd", ["/usr/sbin/sshd", "-D"])
    # 600: its accept recorded, the fork right after it
    b.accept(sshd, 9.99, ("10.0.0.5", 22), ("198.51.100.1", 40001))
    b.spawn(sshd, 600, 10, "/usr/sbin/sshd", ["sshd: root [priv]"])
    # 700: no accept recorded; the listener's last accept (600's) is minutes older
    b.spawn(sshd, 700, 300, "/usr/sbin/sshd", ["sshd: bob [priv]"])
    # 800: an accept recorded half a second before, but 750 was forked in between and took it
    b.accept(sshd, 399.5, ("10.0.0.5", 22), ("198.51.100.2", 40002))
    b.spawn(sshd, 750, 399.51, "/usr/sbin/sshd", ["sshd: carol [priv]"])
    b.spawn(sshd, 800, 400, "/usr/sbin/sshd", ["sshd: dave [priv]"])
    # 900: the accept recorded 5 s before the fork: not the connection the fork carried
    b.accept(sshd, 495, ("10.0.0.5", 22), ("198.51.100.3", 40003))
    b.spawn(sshd, 900, 500, "/usr/sbin/sshd", ["sshd: erin [priv]"])
    return b


def _sources(path: Path) -> dict[int, tuple[str | None, int | None, str]]:
    rows = sessions(open_reader(path), names=lambda u: {}).to_pylist()
    return {r["leader_pid"]: (r["source_ip"], r["source_port"], r["description"]) for r in rows if r["kind"] == "sshd"}


def test_a_session_gets_only_the_accept_its_leader_holds(tmp_path: Path) -> None:
    b = _history()
    store = tmp_path / "s.duckdb"
    with open_writer(store) as w:
        b.write(w)
    assert _sources(store) == {
        600: ("198.51.100.1", 40001, "ssh from 198.51.100.1:40001"),
        700: (None, None, "ssh connection"),  # was 198.51.100.1: another connection's address
        750: ("198.51.100.2", 40002, "ssh from 198.51.100.2:40002"),
        800: (None, None, "ssh connection"),
        900: (None, None, "ssh connection"),
    }


def test_sshd_log_fills_in_an_unknown_source_and_corrects_its_own(tmp_path: Path) -> None:
    b = _history()
    store = tmp_path / "s.duckdb"
    w = open_writer(store)
    b.write(w)
    log = tmp_path / "auth.log"
    log.write_text(
        f"{_iso(b.t(300.2))} testhost sshd[700]: Accepted password for bob from 2001:db8::7 port 6000 ssh2\n"
        # sshd's own line about its connection beats the recorded accept when they differ
        f"{_iso(b.t(10.3))} testhost sshd[600]: Accepted password for root from 192.0.2.1 port 5000 ssh2\n")
    Importer(w, "journal", FORMATS["journal"].make, Host(b.host_id, b.host_name)).import_file(log)
    w.close()
    got = _sources(store)
    assert got[700] == ("2001:db8::7", 6000, "ssh from 2001:db8::7:6000")
    assert got[600] == ("192.0.2.1", 5000, "ssh from 192.0.2.1:5000")
    assert got[800] == (None, None, "ssh connection")
