"""The compiled rules a recorder keeps between starts (rules.rule_cache): the rules that
run are always those of the files given now, and an entry someone else could have
written is never loaded (issue 25, start-up cost)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest

from forensix.rules import precompile, rule_cache
from forensix.rules.loader import load_rules
from forensix.rules.precompile import load_rules_isolated

RULE = """title: {title}
id: 0d5a1c0e-7f7e-4d8e-9a51-3c2a0e7b5f{n:02d}
status: test
logsource: {{product: linux, category: process_creation}}
detection:
  sel:
    Image|endswith: /{image}
  condition: sel
level: high
"""


def _rule(path: Path, title: str, image: str, n: int = 1) -> None:
    path.write_text(RULE.format(title=title, image=image, n=n))


def _entries(d: Path) -> list[Path]:
    return sorted(d.glob("*.pickle"))


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    d = tmp_path / "rules"
    d.mkdir()
    _rule(d / "a.yml", "Runs nc", "nc")
    return d


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Compiles in this process (a child costs ~1-3 s each on a loaded machine), counting
    the compiles: the cache is what is tested here, the child in test_rules_precompile."""
    compiles: list[int] = []

    def compile_here(paths: list[Path], builtin: bool) -> object:
        compiles.append(1)
        return load_rules(paths, builtin=builtin)

    monkeypatch.setattr(precompile, "_compile_in_child", compile_here)
    return compiles


def _no_child(monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on, compiling in a child fails loudly: a result must come from the cache."""
    monkeypatch.setattr(sys, "executable", "/bin/false")


def test_second_load_comes_from_the_cache_and_equals_a_fresh_compile(
        cache: Path, rules: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_rules_isolated([rules], cache=cache)
    assert len(_entries(cache)) == 1
    assert (cache.stat().st_mode & 0o777) == 0o700 and (_entries(cache)[0].stat().st_mode & 0o777) == 0o600
    _no_child(monkeypatch)
    again = load_rules_isolated([rules], cache=cache)
    assert again.rules == first.rules == load_rules([rules]).rules
    assert "Runs nc" in {r.title for r in again.ok}


def test_a_changed_rule_file_is_the_rule_that_runs(cache: Path, rules: Path, in_process: list[int]) -> None:
    load_rules_isolated([rules], cache=cache)
    assert load_rules_isolated([rules], cache=cache) and len(in_process) == 1
    _rule(rules / "a.yml", "Runs socat", "socat")  # same id and size class, other detection
    rs = load_rules_isolated([rules], cache=cache)
    assert [r.title for r in rs.ok if r.source == str(rules / "a.yml")] == ["Runs socat"]
    assert rs.rules == load_rules([rules]).rules
    _rule(rules / "b.yml", "Runs curl", "curl", n=2)  # an added file
    assert "Runs curl" in {r.title for r in load_rules_isolated([rules], cache=cache).ok}
    (rules / "b.yml").unlink()  # and removed again: the earlier entry is the right one
    assert "Runs curl" not in {r.title for r in load_rules_isolated([rules], cache=cache).ok}
    assert len(in_process) == 3


def test_key_covers_the_compiler_and_the_ir_format(rules: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = rule_cache.rules_key([rules], True)
    assert rule_cache.rules_key([rules], True) == key
    assert rule_cache.rules_key([rules], False) != key
    monkeypatch.setattr(rule_cache, "IR_FORMAT", rule_cache.IR_FORMAT + 1)
    assert rule_cache.rules_key([rules], True) != key
    monkeypatch.undo()
    monkeypatch.setattr(rule_cache, "_compiler_digest", lambda: b"other compiler")
    assert rule_cache.rules_key([rules], True) != key
    monkeypatch.undo()
    monkeypatch.setattr(rule_cache, "__version__", "9.9.9")
    assert rule_cache.rules_key([rules], True) != key


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other key", "empty"])
def test_a_corrupt_entry_is_rebuilt_not_trusted(cache: Path, rules: Path, damage: str, in_process: list[int]) -> None:
    good = load_rules_isolated([rules], cache=cache)
    (entry,) = _entries(cache)
    data = entry.read_bytes()
    if damage == "garbage":
        entry.write_bytes(os.urandom(len(data)))
    elif damage == "truncated":
        entry.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        entry.write_bytes(b"")
    else:  # a valid entry of other rules, copied under this key
        other = cache.parent / "other"
        other.mkdir()
        _rule(other / "x.yml", "Planted", "sh")
        load_rules_isolated([other], cache=cache)
        planted = next(p for p in _entries(cache) if p != entry)
        entry.write_bytes(planted.read_bytes())
    assert load_rules_isolated([rules], cache=cache).rules == good.rules
    assert len(in_process) == (3 if damage == "other key" else 2)  # compiled again, not loaded
    assert rule_cache.get(cache, rule_cache.rules_key([rules], True)) is not None  # rewritten


def test_an_entry_owned_by_someone_else_is_never_loaded(
        cache: Path, rules: Path, in_process: list[int], caplog: pytest.LogCaptureFixture) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file to another user")
    load_rules_isolated([rules], cache=cache)
    (entry,) = _entries(cache)
    os.chown(entry, 65534, 65534)  # nobody
    with pytest.raises(rule_cache.UnsafeCache, match="owned by uid 65534"):
        rule_cache.get(cache, rule_cache.rules_key([rules], True))
    with caplog.at_level(logging.WARNING, logger="forensix.recorder"):
        assert load_rules_isolated([rules], cache=cache).rules == load_rules([rules]).rules
    assert len(in_process) == 2  # compiled again instead of loading it
    assert os.stat(entry).st_uid == 65534  # and not written over either
    assert "compiled rules not cached" in caplog.text and "owned by uid 65534" in caplog.text


@pytest.mark.parametrize("where", ["directory", "entry", "parent"])
def test_a_cache_others_can_write_is_never_loaded(cache: Path, rules: Path, where: str, in_process: list[int]) -> None:
    load_rules_isolated([rules], cache=cache)
    (entry,) = _entries(cache)
    target = {"directory": cache, "entry": entry, "parent": cache.parent}[where]
    target.chmod(target.stat().st_mode | 0o002)
    with pytest.raises(rule_cache.UnsafeCache, match="writable by others"):
        rule_cache.get(cache, rule_cache.rules_key([rules], True))
    # and the rules still load, compiled afresh, without writing there
    before = entry.read_bytes()
    assert load_rules_isolated([rules], cache=cache).rules == load_rules([rules]).rules
    assert len(in_process) == 2
    assert entry.read_bytes() == before


def test_a_symlinked_entry_is_not_followed(cache: Path, rules: Path, tmp_path: Path, in_process: list[int]) -> None:
    good = load_rules_isolated([rules], cache=cache)
    (entry,) = _entries(cache)
    decoy = tmp_path / "decoy.pickle"
    decoy.write_bytes(entry.read_bytes())
    entry.unlink()
    entry.symlink_to(decoy)
    assert rule_cache.get(cache, rule_cache.rules_key([rules], True)) is None
    assert load_rules_isolated([rules], cache=cache).rules == good.rules
    assert not entry.is_symlink()  # replaced by a real entry


def test_the_cache_can_be_turned_off_and_defaults_to_root_only_place(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(rule_cache.CACHE_ENV, "off")
    assert rule_cache.cache_dir() is None
    monkeypatch.setenv(rule_cache.CACHE_ENV, "/somewhere/else")
    assert rule_cache.cache_dir() == Path("/somewhere/else")
    monkeypatch.delenv(rule_cache.CACHE_ENV)
    assert rule_cache.cache_dir() == (rule_cache.DEFAULT_CACHE_DIR if os.geteuid() == 0 else None)


def test_old_entries_are_dropped(cache: Path, tmp_path: Path, in_process: list[int]) -> None:
    for i in range(rule_cache._KEEP + 3):
        d = tmp_path / f"set{i}"
        d.mkdir()
        _rule(d / "r.yml", f"Set {i}", f"bin{i}")
        load_rules_isolated([d], builtin=False, cache=cache)
    assert len(_entries(cache)) == rule_cache._KEEP


def test_the_recorder_engine_reads_its_rules_from_the_cache(
        tmp_path: Path, rules: Path, in_process: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    """`forensix record` builds its engine with live_engine_for_record: its second start
    compiles nothing, and runs the rules of the files as they are now."""
    from forensix.agent.sink import StoreSink
    from forensix.cli.rules import live_engine_for_record
    from forensix.store.embedded import open_writer

    monkeypatch.setenv(rule_cache.CACHE_ENV, str(tmp_path / "cache"))

    def titles() -> set[str]:
        writer = open_writer(tmp_path / "rec.duckdb")
        try:
            engine = live_engine_for_record(StoreSink(writer), str(tmp_path / "rec.duckdb"), rule_paths=[str(rules)])
            try:
                return {r.title for r in engine.rules}
            finally:
                engine.close()
        finally:
            writer.close()

    assert "Runs nc" in titles() and len(in_process) == 1
    assert "Runs nc" in titles() and len(in_process) == 1  # from the cache
    _rule(rules / "a.yml", "Runs socat", "socat")
    now = titles()
    assert "Runs socat" in now and "Runs nc" not in now and len(in_process) == 2
