"""Loading a rule tree: every bad or unsupported rule reported with why, the rest loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from forensix.cli.main import cli
from forensix.rules import load_paths, load_text
from forensix.rules.compile import Const, Pred
from forensix.rules.sql import rule_sql

TREE = Path(__file__).parent / "fixtures" / "sigma_tree"


def _by_file(paths: list[Path]) -> dict[str, tuple[str, str]]:
    return {Path(r.source).name: (r.status, r.reason) for r in load_paths(paths).rules}


def test_tree_reports_each_problem_and_loads_the_rest() -> None:
    got = _by_file([TREE])
    ok = {f for f, (st, _) in got.items() if st == "ok"}
    # lnx_auditd_key.yml loads since imported auditd rows carry the rule key (rule_name, forensix.imports);
    # lnx_syslog.yml since the host's own log lines are events (event_module system, imports.journal);
    # Hashes: process.hash.sha256 of what an exec ran (forensix.artifacts)
    assert ok == {"lnx_auditd_execve_args.yml", "lnx_auditd_hidden_file.yml", "lnx_auditd_key.yml",
                  "lnx_syslog.yml", "proc_creation_lnx_ok.yml", "proc_creation_lnx_hash.yml"}
    expect = {
        "proc_creation_lnx_broken.yml": ("error", "broken YAML"),
        "proc_creation_lnx_bad_modifier.yml": ("error", "Unknown modifier 'sometimes'"),
        "proc_creation_lnx_lookahead.yml": ("error", "is invalid"),
        "lnx_missing_detection.yml": ("error", "detection"),
        "win_rule.yml": ("unsupported", "product 'windows'"),
        "lnx_service_unknown.yml": ("unsupported", "service 'named'"),
        "lnx_correlation.yml": ("unsupported", "correlation rules"),
        "lnx_auditd_user_cmd.yml": ("unsupported", "field 'cmd'"),
    }
    for f, (status, words) in expect.items():
        assert got[f][0] == status, (f, got[f])
        assert words in got[f][1], (f, got[f])


def test_unsupported_audit_record_type_is_reported() -> None:
    rs = load_text(
        "title: t\nlogsource: {product: linux, service: auditd}\n"
        "detection:\n  sel:\n    type: MAC_POLICY_LOAD\n  condition: sel\n"
    )
    assert rs.rules[0].status == "unsupported"
    assert "MAC_POLICY_LOAD" in rs.rules[0].reason


def test_placeholders_are_unsupported_with_reason() -> None:
    rs = load_text(
        "title: t\nlogsource: {product: linux, category: process_creation}\n"
        "detection:\n  sel:\n    Image|expand: '%admin_tools%'\n  condition: sel\n"
    )
    assert rs.rules[0].status == "unsupported"
    assert "placeholder" in rs.rules[0].reason


def test_auditd_fields_map_to_forensix_columns() -> None:
    rs = load_paths([TREE / "linux" / "auditd" / "lnx_auditd_execve_args.yml"])
    sql = rule_sql(rs.ok[0])
    assert "process_args[1]" in sql and "process_args[2]" in sql
    assert "'exec'" in sql


@pytest.mark.parametrize(
    "value, op",
    [("'/x'", "eq"), ("'*/x'", "suffix"), ("'/x*'", "prefix"), ("'*x*'", "contains"), ("'/a*b'", "regex")],
)
def test_wildcards_become_the_cheapest_operator(value: str, op: str) -> None:
    rs = load_text(
        "title: t\nlogsource: {product: linux, category: process_creation}\n"
        f"detection:\n  sel:\n    Image: {value}\n  condition: sel\n"
    )
    body = rs.rules[0].body
    assert isinstance(body, Pred) and body.op == op and body.column == "fx_image"
    assert not body.cased


def test_scope_of_a_category() -> None:
    rs = load_text(
        "title: t\nlogsource: {product: linux, category: file_delete}\n"
        "detection:\n  sel:\n    TargetFilename: /x\n  condition: sel\n"
    )
    assert "unlink" in str(rs.rules[0].scope)
    assert rs.rules[0].where != Const(False)


def test_duplicate_ids_are_reported(tmp_path: Path) -> None:
    rule = (TREE / "linux" / "process_creation" / "proc_creation_lnx_ok.yml").read_text()
    (tmp_path / "a.yml").write_text(rule)
    (tmp_path / "b.yml").write_text(rule)
    rs = load_paths([tmp_path])
    assert len(rs.ok) == 1
    assert "duplicate rule id" in rs.problems[0].reason


def test_cli_validate_lists_problems_and_summary() -> None:
    res = CliRunner().invoke(cli, ["rules", "validate", str(TREE), "--format", "csv"])
    assert res.exit_code == 0, res.output
    assert "proc_creation_lnx_broken.yml" in res.stdout
    assert "Unknown modifier" in res.stdout
    assert "14 rules: 6 load, 4 unsupported, 4 errors" in res.stderr
    strict = CliRunner().invoke(cli, ["rules", "validate", str(TREE), "--strict"])
    assert strict.exit_code == 1


def test_cli_list_shows_the_curated_set_with_sql() -> None:
    res = CliRunner().invoke(cli, ["rules", "list", "--sql", "--format", "json"])
    assert res.exit_code == 0, res.output
    assert "fx_image" in res.stdout and "ASOF" in res.stdout
    assert res.stdout.count('"status": "ok"') >= 15


def test_start_summary_counts_rejections_by_reason_and_names_only_linux_ones() -> None:
    """`forensix record --rules` on a SigmaHQ checkout: the Windows rules are one count,
    each Linux rule that cannot run is named, and `rules check --list` has them all."""
    from forensix.rules.loader import load_rules, start_summary

    lines = start_summary(load_rules([TREE]), [TREE])
    assert "rules loaded (curated set and --rules)" in lines[0]
    counts = lines[1]
    assert counts.startswith("rules not run: ") and "1 product 'windows'" in counts
    named = [ln for ln in lines if ln.startswith("rule not run: ")]
    assert not [ln for ln in named if "win_rule.yml" in ln]
    assert any("lnx_syslog.yml: unsupported: service 'syslog'" in ln for ln in named)
    assert any("proc_creation_lnx_broken.yml: error" in ln for ln in named)  # broken rules are named too
    assert lines[-1] == f"every rule not run, with why: forensix rules check {TREE} --list"


def test_auditd_path_rules_are_scoped_to_their_watch() -> None:
    """A PATH rule logs what its watch says: `-p x` only execs, `-p r` only read-only
    opens; without a definition, a rule whose title says modification is `-p wa`."""
    from forensix.rules.auditd import audit_watch

    assert audit_watch("-w /etc/ld.so.preload -p wa -k preload", "x").perms == frozenset("wa")
    assert audit_watch("Required:\n-w /usr/bin/wget -p x -k s\n-w /bin/nc -p x", "x").perms == frozenset("x")
    assert audit_watch("-w /etc/issue", "x").perms == frozenset("rwxa")  # auditctl's default
    assert audit_watch(None, "Modification of ld.so.preload").perms == frozenset("wa")
    assert audit_watch(None, "System Information Discovery - Auditd").perms is None
    assert audit_watch("-a always,exit -F arch=b64 -S sysinfo -k d", "x").syscalls == ("sysinfo",)

    def where(definition: str, title: str = "Preload list") -> str:
        head = f"title: {title}\nlogsource: {{product: linux, service: auditd"
        head += f", definition: '{definition}'}}\n" if definition else "}\n"
        rs = load_text(head + "detection:\n  sel: {type: PATH, name: /etc/ld.so.preload}\n  condition: sel\n")
        assert rs.ok, rs.rules[0].reason
        return str(rs.ok[0].where)

    assert "'file_flags', op='bits'" in where("-w /etc/ld.so.preload -p wa")
    assert "value='exec'" in where("-w /etc/ld.so.preload -p x") and "file_flags" not in where("-w /x -p x")
    assert "Not(item=Pred(column='file_flags'" in where("-w /etc/ld.so.preload -p r")
    assert "event_action" not in where("")  # any access: discovery by reading a file
    assert "'file_flags', op='bits'" in where("", "Modification of ld.so.preload")
