"""The live engine's shortcuts change nothing it finds.

The engine skips rule groups by the batch's distinct actions, evaluates what is left of
a conjunction on its few remaining rows, matches literal alternations of a few rows in
Python, and the copied-binary detector drops rows it would ignore before stepping
through them. Each is checked here against the plain way:
every rule on every row, every watched row through the detector.
"""

from __future__ import annotations

import functools
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from forensix.rules import load_rules
from forensix.rules.alerts import ALERT_FIELDS, RuleMeta, build_alerts, empty_alerts
from forensix.rules.compile import And, Const, Not, Or, Pred, literal_alternatives, necessary
from forensix.rules.detectors import COPIED_EXEC, SYSTEM_BIN_DIRS, TEMP_DIRS, CopiedBinaryExec
from forensix.rules.engine import LiveEngine, meta_of
from forensix.rules.live import Codes, Evaluator, ProcessContext, _match_literals, null_false
from forensix.store.embedded import open_reader, open_writer
from forensix.testing.generator import O_CREAT, O_TRUNC, O_WRONLY, StoreBuilder, generate

OPS = Path(__file__).parent / "fixtures" / "ops"


class _Plain(Evaluator):
    """Every predicate on every row of the batch: no narrowing, no per-action codes."""

    SPARSE = 0


def _pairs(alerts: pa.Table) -> set[tuple[str, str]]:
    return set(zip(alerts.column("rule_id").to_pylist(), alerts.column("alert_id").to_pylist()))


def test_grouped_narrowed_evaluation_equals_every_rule_on_every_row(tmp_path: Path) -> None:
    path = tmp_path / "gen.duckdb"
    with open_writer(path) as w:
        generate(w, events=20_000, seed=5)
    rd = open_reader(path)
    try:
        events = rd.query("SELECT * FROM events ORDER BY ts")
        processes = rd.query("SELECT * FROM processes ORDER BY image_ts")
    finally:
        rd.close()
    rules = load_rules([OPS]).ok
    ctx = ProcessContext()
    ctx.add_processes(processes)
    ctx.add_events(events)
    engine = LiveEngine(rules, context=ctx)
    fast, plain = [], []
    for start in range(0, events.num_rows, 2500):
        batch = events.slice(start, 2500)
        fast.append(engine.evaluate(batch))
        for rule in engine.rules:
            ev = _Plain(batch, ctx)
            m = ev.mask(rule.where)
            hits = batch.filter(m)
            for name in ("fx_image", "fx_command_line"):
                hits = hits.append_column(name, pc.filter(ev.column(name), m))
            plain.append(build_alerts(meta_of(rule), hits, "live"))
    got, want = pa.concat_tables(fast), pa.concat_tables(plain)
    assert want.num_rows > 100
    assert _pairs(got) == _pairs(want)
    key = [("alert_id", "ascending")]
    cols = ["alert_id", "summary", "entity_ids", "event_keys"]
    assert got.select(cols).sort_by(key).to_pylist() == want.select(cols).sort_by(key).to_pylist()


def test_necessary_keeps_only_what_every_match_needs() -> None:
    act = frozenset({"event_action"})
    is_open, is_exec = Pred("event_action", "eq", "open"), Pred("event_action", "eq", "exec")
    tmp = Pred("file_path", "prefix", "/tmp/")
    assert necessary(And((is_open, tmp)), act) == is_open
    assert necessary(Or((And((is_open, tmp)), is_exec)), act) == Pred("event_action", "in", ("open", "exec"))
    assert necessary(Or((tmp, is_exec)), act) == Const(True)  # a /tmp/ path of any action matches
    assert necessary(Not(And((is_open, tmp))), act) == Const(True)
    assert necessary(Not(is_open), act) == Not(is_open)


def test_conditions_on_actions_hold_for_null_and_unseen_values() -> None:
    """Decided per distinct value: NULL and values first seen in a later batch too."""
    engine = LiveEngine(load_rules().ok)
    node = Or((Pred("event_action", "null"), Pred("event_action", "in", ("open", "exec"), cased=False)))
    for values in (["open", None, "mmap"], ["EXEC", "flow", None, "open"], ["unlink"]):
        batch = pa.table({"event_action": pa.array(values, pa.string())})
        got = Evaluator(batch, None, Codes(batch, engine._decided)).mask(node).to_pylist()
        assert got == _Plain(batch).mask(node).to_pylist()


def test_literal_alternations_match_as_re2_does() -> None:
    """On a few rows, a regex that only lists literals is matched in Python: same answers."""
    pats = ["(?s)(?:/\\.bash_history|/fish_history)$", "(?s)^(?:/etc/cron\\.d/|/tmp/)",
            "(?s)(?:base64 -d|a\\|b|\\(x\\)\\$)", "(?s)^(?:)", "(?s)(?:é|ß)$"]
    rng = random.Random(1)
    pieces = ["/", ".", "bash_history", "fish_history", "etc", "cron.d", "tmp", "base64 -d", "a|b",
              "(x)$", "é", "ß", "\n", "x", ""]
    strings = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 5))) for _ in range(200)]
    col = pa.array([*strings, None], pa.string())
    for p in pats:
        lits = literal_alternatives(p)
        assert lits is not None, p
        assert _match_literals(col, *lits).to_pylist() == pc.match_substring_regex(col, p).to_pylist(), p
    for p in ["^[2-7]", "(?s)^(?:a.b)", "(?s)(?:a\\d)", "(?s)(?:a|b)$x", "(?i)(?:a|b)", "(?s)(?:(?:a))"]:
        assert literal_alternatives(p) is None, p


def test_null_false_is_fill_null_false() -> None:
    """The bitmap AND gives what pc.fill_null(mask, False) gives, slices and chunks too."""
    rng = random.Random(4)
    for n in (1, 7, 8, 9, 63, 64, 65, 1000):
        values = [rng.choice([True, False, None]) for _ in range(n)]
        arr = pa.array(values, pa.bool_())
        for off in {0, 1, min(5, n - 1), n // 2}:
            part = arr.slice(off)
            assert null_false(part).to_pylist() == pc.fill_null(part, False).to_pylist(), (n, off)
        chunked = pa.chunked_array([arr, arr.slice(n // 3)])
        assert null_false(chunked).to_pylist() == pc.fill_null(chunked, False).to_pylist()


class _EveryRow(CopiedBinaryExec):
    """The detector stepping through every watched row, whole: the reference."""

    def observe(self, table: str, data: pa.Table, source: str) -> pa.Table:
        if table != "events" or data.num_rows == 0:
            return empty_alerts()
        path = pc.fill_null(data.column("file_path"), "")
        target = pc.fill_null(data.column("file_target_path"), "")
        tests = [pc.starts_with(path, d) for d in SYSTEM_BIN_DIRS + TEMP_DIRS]
        tests += [pc.starts_with(target, d) for d in TEMP_DIRS]
        mask = pc.and_(pc.is_in(data.column("event_action"), pa.array(["open", "exec", "rename"])),
                       functools.reduce(pc.or_, tests))
        rows = sorted(data.filter(mask).to_pylist(), key=lambda r: r["ts"])
        hits = [h for r in rows for h in self._step(r)]
        if rows:
            self._trim(rows[-1]["ts"])
        return build_alerts(COPIED_EXEC, hits, source) if hits else empty_alerts()


def _copy_history(seed: int) -> pa.Table:
    """Processes reading, copying, renaming and running binaries among a few paths, so
    that copies, renames of copies and execs of them (before and after) collide."""
    rng = random.Random(seed)
    b = StoreBuilder()
    init = b.spawn(None, 1, 0, "/usr/lib/systemd/systemd", ["/sbin/init"])
    bins = ["/usr/bin/id", "/bin/ls", "/usr/sbin/ip", "/usr/local/bin/tool"]
    spots = ["/tmp/a", "/tmp/.k", "/var/tmp/b", "/dev/shm/c", "/home/u/x", "/opt/y"]
    t = 1.0
    procs = [init]
    for pid in range(100, 400):
        t += rng.uniform(0.001, 3.0)
        p = b.spawn(rng.choice(procs), pid, t, rng.choice(bins + spots), ["x"])
        procs.append(p)
        for _ in range(rng.randint(0, 4)):
            t += rng.uniform(0.001, 2.0)
            kind = rng.random()
            if kind < 0.3:
                b.read_file(p, t, rng.choice(bins + spots))
            elif kind < 0.6:
                b.open(p, t, rng.choice(spots + bins), O_WRONLY | O_CREAT | O_TRUNC, 0o755)
            elif kind < 0.8:
                b.rename(p, t, rng.choice(spots), rng.choice(spots + ["/usr/local/bin/z"]))
            else:
                b.exec(p, t, rng.choice(spots + bins + ["/usr/local/bin/z"]))
    ev = b.tables()["events"]
    # the recorder's rings arrive out of order: shuffle within a few seconds
    jitter = pa.array([rng.randint(0, 3) for _ in range(ev.num_rows)], pa.int64())
    return ev.take(pc.sort_indices(pa.table({"k": pc.add(pc.divide(ev.column("ts"), 10**9), jitter)}), [("k", "ascending")]))


def test_copied_binary_detector_skips_only_rows_it_would_ignore() -> None:
    for seed in range(12):
        ev = _copy_history(seed)
        rng = random.Random(seed)
        fast = CopiedBinaryExec(max_tracked=rng.choice([5, 10_000]))
        ref = _EveryRow(max_tracked=fast.max_tracked)
        got, want = [], []
        start = 0
        while start < ev.num_rows:
            n = rng.randint(1, 120)
            batch = ev.slice(start, n)
            if rng.random() < 0.3:  # the engine joins batches: several chunks
                batch = pa.concat_tables([ev.slice(start, n // 2), ev.slice(start + n // 2, n - n // 2)])
            got.append(fast.observe("events", batch, "live"))
            want.append(ref.observe("events", batch, "live"))
            start += n
        g, w = pa.concat_tables(got), pa.concat_tables(want)
        cols = [c for c in w.column_names if c != "detected_ts"]
        assert g.select(cols).to_pylist() == w.select(cols).to_pylist(), seed
        assert fast.copies == ref.copies and fast.reads == ref.reads, seed
    assert w.num_rows > 0  # the histories do copy and run binaries


def test_an_alert_reads_no_more_than_its_alert_fields() -> None:
    """Detectors hold only ALERT_FIELDS of a row: the alert must come out the same."""
    b = StoreBuilder()
    p = b.spawn(None, 7, 1, "/usr/bin/cp", ["cp", "/usr/bin/id", "/tmp/x"])
    b.rename(p, 2, "/tmp/x", "/tmp/y")
    b.connect(p, 3, ("10.0.0.1", 5000), ("10.0.0.2", 443))
    b._ev(p, b.t(4), "network", "listen", network_transport="tcp", source_ip="0.0.0.0", source_port=4444)
    rows: list[dict[str, Any]] = b.tables()["events"].to_pylist()
    for r in rows:
        r |= {"fx_image": "/usr/bin/cp", "fx_command_line": "cp a b", "fx_detail": "why"}
    meta = RuleMeta("r", "Rule", "high")
    narrow = [{k: r[k] for k in ALERT_FIELDS if k in r} for r in rows]
    whole, part = build_alerts(meta, rows, "live", 1), build_alerts(meta, narrow, "live", 1)
    assert whole.to_pylist() == part.to_pylist()
