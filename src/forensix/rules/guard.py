"""What the live engine cannot run, found before it runs, and what it says about it.

A rule that loads may still be one the live evaluator cannot say in Arrow: a string test
on the list column ``process.args`` has no Arrow kernel (``utf8_lower(list<string>)``),
as DuckDB has no ``lower(VARCHAR[])`` (the hunt names such a rule the same way,
``hunt._why``). Every test of a rule is tried once, alone, on one event row at load: what
raises is named with Arrow's reason, and the other rules run. A rule that raises on a
batch later is disabled by the engine (``LiveEngine``) with its reason. Either way the
record says so (an agent ``warning`` event), so that the investigator knows which rules
were not watching.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pyarrow as pa

from forensix.rules.compile import And, CompiledRule, Node, Not, Or, Pred, columns_of
from forensix.rules.live import Evaluator, ProcessContext
from forensix.store.schema import EVENTS, ecs_name

__all__ = ["LISTS", "agent_warning", "error_text", "live_problem", "trial", "why"]

LISTS = frozenset(f.name for f in EVENTS if pa.types.is_list(f.type) or pa.types.is_binary(f.type))


def _preds(node: Node) -> Iterator[Pred]:
    if isinstance(node, Pred):
        yield node
    elif isinstance(node, (And, Or)):
        for it in node.items:
            yield from _preds(it)
    elif isinstance(node, Not):
        yield from _preds(node.item)


def _trial_row() -> pa.Table:
    """One event with every column NULL but its time (Arrow picks kernels by type, not value)."""
    cols = {f.name: pa.nulls(1, f.type) for f in EVENTS}
    cols["ts"] = pa.array([0], EVENTS.field("ts").type)
    return pa.table(cols, schema=EVENTS)


def error_text(err: BaseException) -> str:
    """An exception's first line, with its type when the message alone says little."""
    first = (str(err).splitlines() or [""])[0].strip()
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def trial() -> Evaluator:
    """An evaluator of one event row, for ``live_problem``: one for many rules shares the
    derived columns (alone 8 ms a rule: SigmaHQ's 244 Linux rules took 2 s, shared 0.4 s)."""
    return Evaluator(_trial_row(), ProcessContext(max_entities=1))


def live_problem(rule: CompiledRule, ev: Evaluator | None = None) -> str | None:
    """Why the live engine cannot run ``rule`` (None: it can): each of its tests is
    evaluated alone on one event row (``ev``, from ``trial``), as the engine would on a
    batch. A conjunction stops at its first false item: the tree as a whole would not
    reach them all."""
    ev = ev or trial()
    for p in dict.fromkeys(_preds(rule.where)):
        try:
            ev.mask(p)
        except Exception as e:  # noqa: BLE001 - any failure is the rule's, named and skipped
            return why(rule, e)
    return None


def why(rule: CompiledRule, err: BaseException) -> str:
    """Arrow's reason, and the likely cause in the rule's own terms (the hunt's words)."""
    first = error_text(err)
    lists = sorted(ecs_name(c) for c in columns_of(rule.where) & LISTS)
    if lists:
        return (f"it tests the list column {', '.join(lists)}, which the live engine cannot compare as text "
                f"(test CommandLine instead) ({first})")
    return first


def agent_warning(message: str, like: pa.Table | None = None) -> pa.Table:
    """An agent ``warning`` event saying ``message``, of the host of the batch ``like``
    (its first row) when given: the engine has no host of its own."""
    row: dict[str, object] = {"ts": time.time_ns(), "event_kind": "event", "event_category": "agent",
                              "event_action": "warning", "message": message}
    if like is not None and like.num_rows:
        for c in ("host_id", "host_name", "boot_id"):
            if c in like.column_names:
                row[c] = like.column(c)[0].as_py()
    return pa.Table.from_pylist([row], schema=EVENTS)
