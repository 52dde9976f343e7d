"""ATT&CK evaluation: pinned Atomic Red Team Linux tests under `forensix record`.

    python -m bench.attack [--art GIT_DIR] [--sigma DIR] [--out docs/detection.md]

Atomic Red Team (https://github.com/redcanaryco/atomic-red-team, MIT licence) is read from
a git directory at the pinned commit ``ART_COMMIT`` (``--art``; a bare clone or a mirror:
``git clone --mirror https://github.com/redcanaryco/atomic-red-team``). The tests in
``PINNED`` were chosen as offline-safe Linux tests with an sh/bash executor: no download,
no kernel module, nothing that changes what other processes on the host load
(/etc/ld.so.preload), no whole-disk scan. For each: its prerequisites are checked (and
made, when making them downloads nothing), then all tests run one after another under one
`forensix record --rules` (the curated set plus SigmaHQ's Linux rules when ``--sigma``
points at a checkout's ``rules/linux``), each in its own process subtree marked by its
number; every cleanup command runs after the recording.

Per test, from the store: the evidence recorded (events of the test's subtree), the live
alerts (the store's alerts of that subtree, curated set and SigmaHQ apart, with levels),
the hunt hits (`forensix hunt` with the same rules over the store), whether a backtrack
from the first alert's process reaches the test's own shell (the origin), and alerts per
finding (alerts sharing rule, process and object). Then the benign workloads
(tests/rules/benign.sh: a make build, a Debian package built, installed and removed with
dpkg, pip, pytest, cron's run-parts, an interactive admin shell) are recorded with the same
rules and their high or critical alerts counted. Results go to docs/detection.md.
It is a benchmark: run by hand, not in CI (it changes the host briefly, as root).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from forensix.analysis.graph import TrackOptions, backtrack
from forensix.analysis.targets import parse_target
from forensix.model.identity import format_entity
from forensix.rules import default_detectors, hunt, load_rules
from forensix.store.embedded import DuckDBStore

ROOT = Path(__file__).resolve().parent.parent
ART_COMMIT = "9f85cf3e54b0cbdd6c702375c555273913eff442"  # 2026-08-17
DEFAULT_ART = Path("/work/.mirror/redcanaryco+atomic-red-team/repo")

# (technique, test GUID): offline-safe Linux tests (see the module docstring).
PINNED: list[tuple[str, str]] = [
    ("T1070.003", "a934276e-2be5-4a36-93fd-98adbb5bd4fc"),  # Clear Bash history (rm)
    ("T1070.003", "47966a1d-df4f-4078-af65-db6d9aa20739"),  # Clear Bash history (truncate)
    ("T1070.003", "23d348f3-cc5c-4ba9-bd0a-ae09069f0914"),  # Clear Bash history (ln dev/null)
    ("T1140", "b4f6a567-a27a-41e5-b8ef-ac4b4008bb7e"),  # Base64 decoding with shell utilities
    ("T1140", "005943f9-8dd5-4349-8b46-0313c0a9f973"),  # Hex decoding with shell utilities
    ("T1140", "356dc0e8-684f-4428-bb94-9313998ad608"),  # Base64 decoding with Python
    ("T1070.006", "5f9113d5-ed75-47ed-ba23-ea3573d05810"),  # Set a file's access timestamp
    ("T1070.006", "20ef1523-8758-4898-b5a2-d026cc3d2c52"),  # Set a file's modification timestamp
    ("T1070.006", "631ea661-d661-44b0-abdb-7a7f3fc08e50"),  # Modify file timestamps using reference file
    ("T1027.001", "ffe2346c-abd5-4b45-a713-bf5f1ebd573a"),  # Pad Binary to Change Hash - Linux/macOS dd
    ("T1027", "f45df6be-2e1e-4136-a384-8f18ab3826fb"),  # Decode base64 Data into Script
    ("T1036.003", "a315bfff-7a98-403b-b442-2ea1b255e556"),  # Masquerading as FreeBSD or Linux crond process.
    ("T1070.004", "562d737f-2fc6-4b09-8c2a-7f8ff0828480"),  # Delete a single file - FreeBSD/Linux/macOS
    ("T1564.001", "61a782e5-9a19-40b5-8ba4-69a4b9f3d7be"),  # Create a hidden file in a hidden directory
    ("T1136.001", "40d8eabd-e394-46f6-8785-b9bfa1d011d2"),  # Create a user account on a Linux system
    ("T1136.001", "a1040a30-d28b-4eda-bd99-bb2861a4616c"),  # Create a new user in Linux with `root` UID and GID.
    ("T1078.003", "02a91c34-8a5b-4bed-87af-501103eb5357"),  # Create local account (Linux)
    ("T1098.004", "342cc723-127c-4d3a-8292-9c0c6b4ecadc"),  # Modify SSH Authorized Keys
    ("T1053.006", "f4983098-bb13-44fb-9b2c-46149961807b"),  # Create Systemd Service and Timer
    ("T1543.002", "d9e4f24f-aa67-4c6e-bcbf-85622b697a7c"),  # Create Systemd Service
    ("T1053.003", "078e69eb-d9fb-450e-b9d0-2e118217c846"),  # Cron - Add script to /etc/cron.d folder
    ("T1053.003", "b7d42afa-9086-4c8a-b7b0-8ea3faa6ebb0"),  # Cron - Add script to all cron subfolders
    ("T1546.004", "94500ae1-7e31-47e3-886b-c328da46872f"),  # Add command to .bash_profile
    ("T1546.004", "0a898315-4cfa-4007-bafe-33a4646d115f"),  # Add command to .bashrc
    ("T1548.001", "759055b3-3885-4582-a8ec-c00c9d64dd79"),  # Set a SetUID flag on file
    ("T1548.001", "db55f666-7cba-46c6-9fe6-205a05c3242c"),  # Set a SetGID flag on file
    ("T1003.008", "3723ab77-c546-403c-8fb4-bb577033b235"),  # Access /etc/shadow (Local)
    ("T1552.003", "3cfde62b-7c33-4b26-a61e-755d6131c8ce"),  # Search Through Bash History
    ("T1569.003", "a1fa406e-2354-4a24-b6d6-94157e7564d4"),  # Create systemd Service Unit from /tmp
    ("T1027.004", "da97bb11-d6d0-4fc1-b445-e443d1346efe"),  # CC compile
    ("T1036.005", "812c3ab8-94b0-4698-a9bf-9420af23ce24"),  # Execute a process from a directory masquerading as ..
    ("T1222.002", "34ca1464-de9d-40c6-8c77-690adf36a135"),  # chmod - Change file or folder mode (numeric mode)
]
# Prerequisite commands that would fetch something are not run: the test is skipped.
_ONLINE = re.compile(r"\b(curl|wget|apt|apt-get|yum|dnf|pip|git clone|Invoke-WebRequest)\b|https?://")
HIGH = ("high", "critical")


def _git(art: Path, *args: str) -> bytes:
    return subprocess.run(["git", "--git-dir", str(art), *args], check=True, capture_output=True).stdout


def _test(art: Path, technique: str, guid: str) -> dict[str, Any]:
    doc = yaml.safe_load(_git(art, "show", f"{ART_COMMIT}:atomics/{technique}/{technique}.yaml"))
    for t in doc["atomic_tests"]:
        if t.get("auto_generated_guid") == guid:
            return {"technique": technique, "technique_name": doc.get("display_name", ""), **t}
    raise SystemExit(f"test {guid} not in {technique} at {ART_COMMIT}")


def _fill(text: str, test: dict[str, Any], atomics: Path) -> str:
    for name, arg in (test.get("input_arguments") or {}).items():
        text = text.replace(f"#{{{name}}}", str(arg.get("default", "")))
    return text.replace("PathToAtomicsFolder", str(atomics)).replace("$PathToAtomicsFolder", str(atomics))


def _shell(executor: str) -> str:
    return "bash" if executor == "bash" else "sh"


_ENV: dict[str, str] = dict(os.environ)


def _run(cmd: str, shell: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([shell, "-c", cmd], capture_output=True, text=True, timeout=timeout, check=False, env=_ENV)


def _sudo_shim(work: Path) -> Path:
    """Many tests say `sudo CMD`; this host has no sudo and the bench runs as root, where
    sudo would run CMD as it is: a shim on PATH does just that."""
    bin_ = work / "bin"
    bin_.mkdir()
    (bin_ / "sudo").write_text('#!/bin/sh\nwhile [ "${1#-}" != "$1" ]; do shift; done\nexec "$@"\n')
    os.chmod(bin_ / "sudo", 0o755)
    return bin_


_HISTORY_LINES = r"ls -la\nssh admin@10.0.0.5\nmysql -u root -p hunter2\n"  # printf expands the \n


def _history() -> tuple[Path, bytes | str | None]:
    """Root's ~/.bash_history as it is (contents, a symlink's target, or absent): the
    history tests remove, truncate and replace it by a /dev/null link, and ART's cleanups
    do not put it back; the caller restores it after the run."""
    p = Path.home() / ".bash_history"
    if p.is_symlink():
        return p, os.readlink(p)
    return p, (p.read_bytes() if p.exists() else None)


def _restore_history(p: Path, was: bytes | str | None) -> None:
    if p.is_symlink() or p.exists():
        p.unlink()
    if isinstance(was, str):
        p.symlink_to(was)
    elif was is not None:
        p.write_bytes(was)


def _authorized_keys() -> list[Path]:
    """T1098.004 rewrites root's authorized_keys only if it exists: give root an empty one
    for the run when it has none; what was made, for the caller to remove after."""
    p = Path.home() / ".ssh" / "authorized_keys"
    if p.exists():
        return []
    made = [] if p.parent.exists() else [p.parent]
    p.parent.mkdir(mode=0o700, exist_ok=True)
    p.write_text("")
    return [p, *made]


def _prepare(test: dict[str, Any], atomics: Path) -> str | None:
    """Make the prerequisites; why the test cannot run, or None."""
    shell = _shell(test.get("dependency_executor_name") or test["executor"]["name"])
    for dep in test.get("dependencies") or []:
        if _run(_fill(dep.get("prereq_command", "true"), test, atomics), shell).returncode == 0:
            continue
        get = _fill(dep.get("get_prereq_command", ""), test, atomics)
        if not get or _ONLINE.search(get):
            return f"prerequisite needs a download: {dep.get('description', '').strip()[:80]}"
        _run(get, shell)
        if _run(_fill(dep.get("prereq_command", "true"), test, atomics), shell).returncode != 0:
            return f"prerequisite not met: {dep.get('description', '').strip()[:80]}"
    return None


def _export_atomics(art: Path, techniques: set[str], into: Path) -> Path:
    data = _git(art, "archive", ART_COMMIT, *(f"atomics/{t}" for t in sorted(techniques)))
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        tf.extractall(into, filter="data")
    return into / "atomics"


def _record(store: Path, jsonl: Path, script: Path, rules: list[str], args: list[str]) -> str:
    cmd = [sys.executable, "-m", "forensix", "record", "-q", "--store", str(store), "--alerts-jsonl", str(jsonl)]
    for r in rules:
        cmd += ["--rules", r]
    res = subprocess.run([*cmd, "--", "bash", str(script), *args], capture_output=True, text=True, timeout=1800,
                         check=False, env=os.environ | {"PYTHON": sys.executable})
    return res.stdout + res.stderr


def _subtree(st: DuckDBStore, marker: str) -> tuple[int | None, set[int]]:
    root = st.query("SELECT entity_id FROM processes WHERE list_contains(args, $m) ORDER BY image_ts LIMIT 1",
                    {"m": marker}).column(0).to_pylist()
    if not root:
        return None, set()
    ids = st.query(
        "WITH RECURSIVE t(e) AS (SELECT $r::UBIGINT UNION SELECT p.entity_id FROM processes p JOIN t"
        " ON p.parent_entity_id = t.e) SELECT DISTINCT e FROM t", {"r": root[0]},
    ).column(0).to_pylist()
    return root[0], set(ids)


_LATEST = ("SELECT * FROM alerts QUALIFY row_number() OVER (PARTITION BY alert_id ORDER BY alert_count DESC"
           " NULLS LAST) = 1 ORDER BY ts")


def _reaches(st: DuckDBStore, alert: dict[str, Any], root: int) -> bool:
    eid = alert.get("process_entity_id")
    if not eid:
        return False
    if eid == root:
        return True
    g = backtrack(st, parse_target(format_entity(eid)), TrackOptions(depth=12, max_nodes=2000))
    mark = format_entity(root)
    return any(mark in n.key or n.attrs.get("entity_id") in (root, mark) for n in g.nodes.values())


def evaluate(st: DuckDBStore, store: Path, tests: list[dict[str, Any]], sigma_ids: set[str],
             rules: list[Any]) -> list[dict[str, Any]]:
    alerts = st.query(_LATEST).to_pylist()
    found = hunt(st, rules, default_detectors(protected=(str(store),))).to_pylist()
    out = []
    for i, t in enumerate(tests):
        row = {"i": i, **{k: t[k] for k in ("technique", "name", "auto_generated_guid")}, "skipped": t.get("skip")}
        if t.get("skip"):
            out.append(row)
            continue
        root, ids = _subtree(st, f"fx-art-{i}")
        mine = [a for a in alerts if a["process_entity_id"] in ids]
        hits = [a for a in found if a["process_entity_id"] in ids]
        n = st.query("SELECT count(*) FROM events WHERE process_entity_id IN (SELECT unnest($ids))",
                     {"ids": sorted(ids)}).column(0)[0].as_py() if ids else 0
        keys = Counter((a["rule_id"], a["process_entity_id"], a["object_name"]) for a in mine)
        curated = [a for a in mine if a["rule_id"] not in sigma_ids]
        row.update(
            events=n, processes=len(ids),
            curated=sorted({f"{a['rule_title']} ({a['rule_level']})" for a in curated}),
            sigma=sorted({a["rule_title"] for a in mine if a["rule_id"] in sigma_ids}),
            live=bool(mine), live_curated=bool(curated), hunt=bool(hits),
            same=({a["alert_id"] for a in mine} == {a["alert_id"] for a in hits}),
            alerts=len(mine), dup=sum(c - 1 for c in keys.values()),
            origin=bool(mine) and root is not None and _reaches(st, (curated or mine)[0], root),
        )
        out.append(row)
    return out


def benign(work: Path, rules: list[str], sigma_ids: set[str]) -> dict[str, Any]:
    store, jsonl = work / "benign.duckdb", work / "benign.jsonl"
    w = work / "benign"
    w.mkdir()
    os.chmod(work, 0o755)
    marker = "fxbenign" + str(os.getpid())
    t0 = time.monotonic()
    out = _record(store, jsonl, ROOT / "tests" / "rules" / "benign.sh", rules, [str(w), marker])
    subprocess.run(["dpkg", "--purge", f"fx-hello-{marker}"], capture_output=True, check=False)
    st = DuckDBStore(store, read_only=True)
    try:
        _, ids = _subtree(st, marker)
        mine = [a for a in st.query(_LATEST).to_pylist() if a["process_entity_id"] in ids]
    finally:
        st.close()
    cur = [a for a in mine if a["rule_id"] not in sigma_ids]
    sig = [a for a in mine if a["rule_id"] in sigma_ids]
    return {
        "ok": "benign done" in out, "seconds": time.monotonic() - t0, "processes": len(ids),
        "curated_high": sorted(f"{a['rule_title']}: {a['summary'][:100]}" for a in cur if a["rule_level"] in HIGH),
        "curated_other": sorted({f"{a['rule_title']} ({a['rule_level']})" for a in cur if a["rule_level"] not in HIGH}),
        "sigma_high": sorted({a["rule_title"] for a in sig if a["rule_level"] in HIGH}),
        "sigma_other": sorted({f"{a['rule_title']} ({a['rule_level']})" for a in sig if a["rule_level"] not in HIGH}),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--art", type=Path, default=DEFAULT_ART, help="Atomic Red Team git directory")
    ap.add_argument("--sigma", action="append", default=[], help="SigmaHQ rule directory (rules/linux); repeatable")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "detection.md")
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the recorder needs it, and the tests change the host")
    tests = [_test(a.art, t, g) for t, g in PINNED]
    work = Path(tempfile.mkdtemp(prefix="detect-attack-"))
    os.chmod(work, 0o755)
    atomics = _export_atomics(a.art, {t for t, _ in PINNED}, work / "art")
    shim = _sudo_shim(work)
    _ENV["PATH"] = f"{shim}:{_ENV.get('PATH', '')}"
    made_keys = _authorized_keys()
    history = _history()
    lines = ["#!/bin/bash", f"export PATH={shim}:$PATH", "sleep 0.5"]
    for i, t in enumerate(tests):
        t["skip"] = None if t["executor"]["name"] in ("sh", "bash") else f"executor {t['executor']['name']}"
        t["skip"] = t["skip"] or _prepare(t, atomics)
        if t["skip"]:
            continue
        f = work / f"test-{i}.sh"
        f.write_text(_fill(t["executor"]["command"], t, atomics) + "\n")
        if "bash_history" in f.read_text():  # each history test finds a used history
            lines.append(f"rm -f {history[0]}; printf '{_HISTORY_LINES}' > {history[0]}")
        lines += [f"(cd /tmp && {_shell(t['executor']['name'])} {f} fx-art-{i}) >/dev/null 2>&1", "sleep 0.3"]
    lines.append("sleep 1")
    driver = work / "driver.sh"
    driver.write_text("\n".join(lines) + "\n")
    store, jsonl = work / "attack.duckdb", work / "attack.jsonl"
    t0 = time.monotonic()
    _record(store, jsonl, driver, a.sigma, [])
    recorded_s = time.monotonic() - t0
    for t in tests:  # every cleanup, after the recording
        if not t.get("skip") and t["executor"].get("cleanup_command"):
            _run(_fill(t["executor"]["cleanup_command"], t, atomics), _shell(t["executor"]["name"]))
    for made in made_keys:
        made.rmdir() if made.is_dir() else made.unlink(missing_ok=True)
    _restore_history(*history)
    rs = load_rules(a.sigma)
    sigma_ids = {r.rule_id for r in load_rules(a.sigma, builtin=False).ok}
    st = DuckDBStore(store, read_only=True)
    try:
        rows = evaluate(st, store, tests, sigma_ids, rs.ok)
    finally:
        st.close()
    b = benign(work, a.sigma, sigma_ids)
    a.out.write_text(render(rows, b, recorded_s, a.sigma, len(rs.ok), len(sigma_ids)))
    ran = [r for r in rows if not r["skipped"]]
    print(f"{sum(r['live'] for r in ran)}/{len(ran)} tests with a live alert "
          f"({sum(r['live_curated'] for r in ran)} by the curated set); benign high alerts: "
          f"{len(b['curated_high'])} curated, {len(b['sigma_high'])} SigmaHQ; wrote {a.out}")
    return 0


def _yes(v: bool) -> str:
    return "yes" if v else "**no**"


def _pct(n: int, d: int) -> str:
    return f"{n}/{d} ({100 * n / d:.0f}%)" if d else "0/0"


def render(rows: list[dict[str, Any]], b: dict[str, Any], recorded_s: float, sigma: list[str],
           n_rules: int, n_sigma: int) -> str:
    ran = [r for r in rows if not r["skipped"]]
    d = len(ran)
    out = [
        "# Detection measured on ATT&CK: Atomic Red Team Linux tests under `forensix record`",
        "",
        (f"Generated by `python -m bench.attack{''.join(' --sigma ' + s for s in sigma)}` on "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC (a 2-core VM, kernel {os.uname().release})."),
        (f"Atomic Red Team at commit `{ART_COMMIT}` (MIT licence); {len(rows)} pinned offline-safe Linux tests, "
        f"{d} run ({len(rows) - d} skipped, with why). Live rules: the curated set ({n_rules - n_sigma} rules) "
        f"and the built-in detectors, plus {n_sigma} runnable SigmaHQ rules; "
        f"one recording of {recorded_s:.0f} s."),
        "",
        "## Summary",
        "",
        (f"- live alert (any rule): {_pct(sum(r['live'] for r in ran), d)}; by the curated set alone: "
        f"{_pct(sum(r['live_curated'] for r in ran), d)}"),
        (f"- hunt hit: {_pct(sum(r['hunt'] for r in ran), d)}; live and hunt the same alerts: "
        f"{_pct(sum(r['same'] for r in ran), d)}"),
        f"- backtrack from the first alert reaches the test's shell: {_pct(sum(r['origin'] for r in ran), d)}",
        (f"- alerts: {sum(r['alerts'] for r in ran)}, of which repeats of a finding (same rule, process, object): "
        f"{sum(r['dup'] for r in ran)}"),
        (f"- benign workloads ({'completed' if b['ok'] else 'FAILED'}, {b['processes']} processes): high/critical "
        f"alerts from the curated set: {len(b['curated_high'])}; from SigmaHQ's rules: {len(b['sigma_high'])}"),
        "",
        "## Per test",
        "",
        "| # | technique | test | events | live (curated) | live (SigmaHQ) | hunt | = | origin | alerts |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        name = r["name"].replace("|", "/")
        if r["skipped"]:
            out.append(f"| {r['i']} | {r['technique']} | {name} | skipped: {r['skipped']} | | | | | | |")
            continue
        rep = f" ({r['dup']} repeats)" if r["dup"] else ""
        out.append(
            f"| {r['i']} | {r['technique']} | {name} | {r['events']} | {'; '.join(r['curated']) or '-'} | "
            f"{'; '.join(r['sigma']) or '-'} | {_yes(r['hunt'])} | {_yes(r['same'])} | {_yes(r['origin'])} | "
            f"{r['alerts']}{rep} |"
        )
    out += ["", "## Benign workloads", "",
            ("tests/rules/benign.sh under the same live rules: a make build and its run, a Debian package built, "
            "installed, run and removed with dpkg, a pip install of a wheel, a pytest run, cron's run-parts, "
            "and an interactive root shell (`script`, `bash -i`)."), ""]
    for k, title in (("curated_high", "curated set, high/critical"), ("curated_other", "curated set, lower levels"),
                     ("sigma_high", "SigmaHQ, high/critical"), ("sigma_other", "SigmaHQ, lower levels")):
        out.append(f"- {title}: {'; '.join(b[k]) if b[k] else 'none'}")
    out += ["", "Test GUIDs: " + ", ".join(f"{r['technique']} `{r['auto_generated_guid']}`" for r in rows), ""]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
