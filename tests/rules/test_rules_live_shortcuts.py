"""The live engine's shortcuts change nothing it finds.

The engine skips rule groups by the batch's distinct actions and evaluates what is left
of a conjunction on its few remaining rows. Each is checked here against the plain way:
every rule on every row.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from forensix.rules import load_rules
from forensix.rules.alerts import build_alerts
from forensix.rules.compile import And, Const, Not, Or, Pred, necessary
from forensix.rules.engine import LiveEngine, meta_of
from forensix.rules.live import Codes, Evaluator, ProcessContext
from forensix.store.embedded import open_reader, open_writer
from forensix.testing.generator import generate

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
