"""The live rule engine, a ``Sink``: the recorder hands it every batch, it raises alerts.

Rules are grouped by log source; a batch is first cut down to the rows of each log
source (one vectorised predicate), only those rows get the derived columns, and each
rule's detection is evaluated on them. Alerts go to every output (the store sink, a
print callback, JSON lines, a webhook) as soon as the batch is evaluated.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from forensix.agent.sink import Sink
from forensix.rules.alerts import AlertOutput, RuleMeta, build_alerts, empty_alerts
from forensix.rules.detectors import Detector
from forensix.rules.evidence import Grouper, SessionContext, add_evidence, object_free
from forensix.rules.guard import agent_warning, error_text, live_problem, trial
from forensix.rules.ir import (
    RAW_COLUMNS,
    And,
    CompiledRule,
    Const,
    Node,
    Not,
    Or,
    columns_of,
    hoist,
    necessary,
    raw_first,
    simplify,
)
from forensix.rules.live import Codes, Evaluator, ProcessContext
from forensix.rules.sieve import Sieve, hooks
from forensix.rules.sql import SUMMARY_DERIVED
from forensix.store.schema import ALERTS
from forensix.threadname import name_native_thread

__all__ = ["EngineStats", "LiveEngine", "latest_per_alert", "meta_of"]


def meta_of(rule: CompiledRule) -> RuleMeta:
    return RuleMeta(rule.rule_id, rule.title, rule.level, tuple(rule.tags))


@dataclass
class EngineStats:
    batches: int = 0
    events: int = 0
    alerts: int = 0
    cpu_s: float = 0.0  # CPU of the evaluating thread (the process clock also counts the others)
    rounds: int = 0  # evaluations of what was pending (``write``'s gathering; a drain tick's tables)
    evaluations: int = 0  # events tables the Sigma rules were evaluated on (one a round at most, live)
    ignored: int = 0  # tables handed to ``write`` that no rule or detector reads (no round for them)




@dataclass
class _Group:
    scope: Node
    rules: list[CompiledRule]
    bodies: list[Node]
    kinds: Node  # what the group's events need of their action (see ``necessary``)


def _concat(tables: list[pa.Table]) -> pa.Table:
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="permissive")


# What the engine itself reads: the events it evaluates, and what the process context learns.
_OWN_TABLES = frozenset({"events", "processes", "accounts"})


def _tables_read(detectors: Sequence[Detector]) -> frozenset[str] | None:
    """The tables the rules and ``detectors`` read (a detector's ``hunt_filter`` and
    ``hunt_prelude`` name the tables it replays through ``observe``); None when a detector
    does not say (it is given every table)."""
    out = set(_OWN_TABLES)
    for d in detectors:
        named = [getattr(d, n, None) for n in ("hunt_filter", "hunt_prelude")]
        if named[0] is None:
            return None
        try:
            for fn in named:
                if fn is not None:
                    out |= set(fn())
        except Exception:  # noqa: BLE001 - it says nothing usable: every table, as before
            return None
    return frozenset(out)


def _intern(node: Node, canon: dict[Node, Node]) -> Node:
    """One object per distinct sub-tree, so evaluators can memoise by identity."""
    if isinstance(node, (And, Or)):
        node = type(node)(tuple(_intern(i, canon) for i in node.items))
    elif isinstance(node, Not):
        node = Not(_intern(node.item, canon))
    return canon.setdefault(node, node)


def _order(item: Node) -> tuple[bool, int]:
    """Raw-column tests before derived ones (``raw_first``); among them, tests on the
    action alone (an array lookup, ``Codes``), then those involving the action (an event
    type is what most rows fail), then the rest."""
    cols = columns_of(item)
    return not cols <= RAW_COLUMNS, 0 if cols == {Codes.COLUMN} else 1 if Codes.COLUMN in cols else 2


def _action_first(node: Node) -> Node:
    """The same tree with each conjunction's items in ``_order``: a conjunction is false
    where any item is, and an evaluator that has few rows left goes on with those only."""
    if isinstance(node, And):
        items = [_action_first(i) for i in node.items]
        return And(tuple(sorted(items, key=_order)))
    if isinstance(node, Or):
        return Or(tuple(_action_first(i) for i in node.items))
    if isinstance(node, Not):
        return Not(_action_first(node.item))
    return node


class LiveEngine:
    """Evaluates rules and detectors on every batch it is given (implements ``Sink``).

    A rule the engine cannot evaluate is named at construction (``skipped``: rule id and
    why) and the others run; a rule or detector that raises on a batch later is disabled
    (``disabled``), the others go on: whoever reads the recorder's batches must never
    stop it. Each is said once to ``notify`` (the recorder's log) and, as an agent warning
    event, to ``record`` (the store sink: the investigator sees which rules were not
    watching).

    ``write`` gathers the recorder's batches for at most ``max_delay`` seconds or
    ``max_rows`` events and evaluates them together: the cost of a batch is mostly
    per-predicate overhead, so larger batches cost less per event, and a quarter of a
    second stays well inside the two seconds an alert may take. A timer thread
    evaluates what waits when no further batch arrives. ``observe`` evaluates at once.
    """

    def __init__(
        self,
        rules: Sequence[CompiledRule],
        *,
        detectors: Sequence[Detector] = (),
        outputs: Sequence[AlertOutput] = (),
        source: str = "live",
        context: ProcessContext | None = None,
        max_delay: float = 0.25,
        max_rows: int = 16384,
        notify: Callable[[str], None] | None = None,
        record: Sink | None = None,
        sieve: bool = True,
    ) -> None:
        self.notify = notify
        self.record = record
        self.skipped: list[tuple[str, str]] = []  # (rule id, why): found at load, never run
        self.disabled: list[tuple[str, str]] = []  # (rule or detector id, why): failed on a batch
        self._said: list[str] = []  # messages for the record, written with the next events batch
        self.rules = []
        check = trial()
        for r in rules:
            if not r.ok:
                continue
            problem = live_problem(r, check)
            if problem is None:
                self.rules.append(r)
            else:
                self.skipped.append((r.rule_id, problem))
                self._say(f"skipped {r.rule_id} ({r.title}): the live engine cannot run it: {problem}")
        self.detectors = list(detectors)
        # tables nobody here reads (an executable's bytes, terminal bytes, the host row) are
        # not gathered: a round evaluated for them alone had nothing to look at
        self._reads = _tables_read(self.detectors)
        self.outputs = list(outputs)
        self.source = source
        self.context = context or ProcessContext()
        self.stats = EngineStats()
        self.max_delay = max_delay
        self.max_rows = max_rows
        self._groups = self._group(self.rules)
        # (``sieve=False``: every row of a batch is evaluated; the tests compare both)
        self._sieve = Sieve([hooks(And((g.scope, Or(tuple(g.bodies))))) if sieve else None for g in self._groups])
        self._dead: set[str] = set()  # ids of rules disabled after failing on a batch
        self._failures: set[str] = set()  # reasons of failed rounds, said once each
        self._decided: dict[int, tuple[Node, dict[Any, Any]]] = {}  # conditions on the action (Codes)
        self._pending: list[tuple[str, pa.Table]] = []
        self._pending_rows = 0
        self._pending_since = 0.0
        self._lock = threading.RLock()
        self._timer: threading.Thread | None = None
        self._carry: pa.Table | None = None  # rows held back one round (see _split)
        self._carry_since = 0.0
        self._closed = threading.Event()
        self._waiting = threading.Condition(self._lock)  # rows to evaluate, or closing
        self._tick_ended = False  # the recorder handed over a whole drain tick: evaluate without waiting
        self.sessions = SessionContext()
        self.grouper = Grouper(object_free=object_free(self.rules))

    @staticmethod
    def _group(rules: Sequence[CompiledRule]) -> list[_Group]:
        """Rules by scope, after hoisting each rule's raw-column conjuncts into its scope:
        an auditd EXECVE rule then only sees exec events, and a batch is enriched only
        for the rows some rule's cheap tests let through."""
        canon: dict[Node, Node] = {}
        groups: dict[Node, list[tuple[CompiledRule, Node]]] = {}
        for r in rules:
            scope, body = hoist(r.scope, r.body)
            scope, body = (_intern(_action_first(raw_first(n)), canon) for n in (scope, body))
            groups.setdefault(scope, []).append((r, body))
        out = []
        for scope, rs in groups.items():
            bodies = [b for _, b in rs]
            kinds = necessary(And((scope, Or(tuple(bodies)))), frozenset({Codes.COLUMN}))
            # rows outside ``kinds`` match no rule of the group: the scope may drop them too
            narrowed = _action_first(simplify(And((kinds, scope))))
            out.append(_Group(_intern(narrowed, canon), [r for r, _ in rs], bodies, _intern(kinds, canon)))
        return out

    # -- what could not run -------------------------------------------------------------
    def _say(self, message: str, batch: pa.Table | None = None) -> None:
        """Tell the log now, and the record with ``batch``'s host (or the next events batch's)."""
        if self.notify is not None:
            self.notify(message)
        self._said.append(message)
        if batch is not None:
            self._tell_record(batch)

    def _tell_record(self, batch: pa.Table) -> None:
        said, self._said = self._said, []
        if self.record is None or not said:
            return
        for message in said:
            try:
                self.record.write("events", agent_warning(message, batch))
            except Exception:  # noqa: BLE001 - the store's own failure is the recorder's to report
                return

    def _disable(self, ident: str, label: str, err: BaseException, batch: pa.Table | None) -> None:
        self.disabled.append((ident, error_text(err)))
        self._say(f"disabled {label}: it failed on a batch of events, the other rules run on: {error_text(err)}",
                  batch)

    def _disable_rule(self, rule: CompiledRule, err: BaseException, batch: pa.Table) -> None:
        self._dead.add(rule.rule_id)
        self._disable(rule.rule_id, f"{rule.rule_id} ({rule.title})", err, batch)

    def _disable_detector(self, d: Detector, err: BaseException, batch: pa.Table | None) -> None:
        self._disable(_name(d), f"the built-in detector {_name(d)}", err, batch)

    def _safe_drain(self, final: bool = False) -> None:
        """``_drain``, whose failure outside any one rule (evidence, outputs) loses that
        round's alerts, said (once per reason: it may recur every round), and never the
        recorder (the writer thread stops on a raise)."""
        try:
            self._drain(final)
        except Exception as e:  # noqa: BLE001 - said in the log and the record
            why = error_text(e)
            if why not in self._failures:
                self._failures.add(why)
                self._say(f"live detection failed on a batch, its alerts are lost, it goes on: {why}")

    # -- Sink -------------------------------------------------------------------------
    def write(self, table: str, data: pa.Table) -> None:
        with self._lock:
            if table == "events" and self._said:
                self._tell_record(data)
            if self._reads is not None and table not in self._reads:
                self.stats.ignored += 1
                return
            # the timer waits without a timeout only while nothing waits: only then must a write
            # wake it (a timed wait re-checks on its own; woken for every table of a tick, the
            # thread ran ~10 times a second on a recorder that evaluated one tick in 1.5 s)
            untimed = not self._pending and self._carry is None
            if not self._pending:
                self._pending_since = time.monotonic()
            self._pending.append((table, data))
            self._pending_rows += data.num_rows
            due = self._pending_rows >= self.max_rows or time.monotonic() - self._pending_since >= self.max_delay
            if due:
                self._safe_drain()
            elif self._timer is None and self.max_delay > 0:
                self._timer = threading.Thread(target=self._tick, name="fx-rules-timer", daemon=True)
                self._timer.start()
            elif untimed:
                self._waiting.notify()

    def tick_end(self) -> None:
        """The recorder handed over every batch of a drain tick (sensor/recorder.py
        ``_tick_written``): the timer evaluates them now instead of ``max_delay`` after the
        first, which only gathered a tick's tables. ``max_delay`` still bounds what comes
        without one (the system-log follower's lines, agent events)."""
        with self._lock:
            if self._pending:
                self._tick_ended = True
                self._waiting.notify()

    def _tick(self) -> None:
        """Evaluates rows that wait longer than ``max_delay`` for a next batch. With none
        waiting it sleeps until ``write`` brings some: an idle recorder's rules thread woke
        8 times a second for nothing."""
        name_native_thread()
        with self._lock:
            while not self._closed.is_set():
                # checked before waiting too: a tick_end that came while the thread was starting
                # (no one waited for its notify) would otherwise wait a whole max_delay / 2
                now = time.monotonic()
                late = self._pending and (self._tick_ended or now - self._pending_since >= self.max_delay)
                if late or (self._carry is not None and now - self._carry_since >= self.max_delay):
                    self._safe_drain()
                    continue
                waiting = bool(self._pending) or self._carry is not None
                self._waiting.wait(self.max_delay / 2 if waiting else None)

    def _split(self, new: pa.Table, final: bool) -> tuple[pa.Table, pa.Table | None]:
        """Rows of processes the context does not know yet are held back once.

        The recorder drains the process ring and the file ring separately, so a new
        process's first file events can arrive before its fork and exec records; held
        back one round, they are evaluated with the process's image, as the hunt does.
        """
        if final or new.num_rows == 0:
            return new, None
        column = new.column("process_entity_id")
        images = self.context.images
        unknown = [u for u in pc.unique(column).to_pylist() if u and u not in images]
        if not unknown:
            return new, None
        eids = column.fill_null(0).to_numpy()
        late = np.isin(eids, np.array(unknown, dtype=eids.dtype))
        return new.filter(pa.array(~late)), new.filter(pa.array(late))

    def _drain(self, final: bool = False) -> None:
        """Evaluate what is pending, in order, joining consecutive event batches."""
        items, self._pending, self._pending_rows = self._pending, [], 0
        self._tick_ended = False
        carry, self._carry = self._carry, None
        t0 = time.thread_time()
        for table, data in items:  # learn every image first: the rings arrive out of order
            if table == "processes":
                self.context.add_processes(data)
            elif table == "accounts":
                self.context.accounts.add(data)
            elif table == "events":
                self.context.add_events(data)
                self.sessions.add_events(data, self.context)  # after it: the images are known
                if data.num_rows:
                    self.grouper.latest = max(self.grouper.latest, pc.max(data.column("ts")).as_py() or 0)
        # All the events of the round at once (a drain tick's decoded batch, its re-open rows,
        # agent events): the Sigma rules and each detector cost ~0.2-1 ms a table whatever its
        # length, and a tick brought two or three. Every row is judged on its own or in time
        # order (the detectors sort what they keep by ts), so joining changes no alert.
        events = [d if isinstance(d, pa.Table) else pa.Table.from_batches([d]) for t, d in items if t == "events"]
        found: list[pa.Table] = []
        if events or carry is not None:
            now, held = self._split(_concat(events), final) if events else (None, None)
            parts = [p for p in (carry, now) if p is not None and p.num_rows]
            if held is not None:
                self._carry = held if self._carry is None else _concat([self._carry, held])
                self._carry_since = time.monotonic()
            if parts:
                found.append(self._observe("events", _concat(parts), learn=False))
        for table, data in items:
            if table != "events":
                found.append(self._observe(table, data, learn=False))
        if final:  # detectors that hold an event until a later one decides it (HistoryWalk)
            for d in self.detectors:
                flush = getattr(d, "flush", None)
                if flush is not None:
                    try:
                        found.append(flush(self.source))
                    except Exception as e:  # noqa: BLE001 - one detector, said; the others' alerts go out
                        self._disable_detector(d, e, None)
        found = [f for f in found if f.num_rows]
        self.stats.rounds += 1
        self.stats.cpu_s += time.thread_time() - t0
        new, ended = self.findings(pa.concat_tables(found) if found else empty_alerts(), final)
        if new.num_rows:
            self._emit(new)
        if ended.num_rows:
            self._emit_updates(ended)

    def drain(self) -> None:
        """Evaluate what is pending now, as the timer does (rows of processes not known
        yet are still held back one round); a replay that plays the timer calls it."""
        with self._lock:
            if self._pending or self._carry is not None:
                self._safe_drain()

    def flush(self) -> None:
        """Evaluate everything pending and let the outputs deliver (the recorder calls
        this when it stops)."""
        with self._lock:
            if self._pending or self._carry is not None or self.grouper.open:
                self._safe_drain(final=True)
        for o in self.outputs:
            deliver = getattr(o, "flush", None)
            if deliver is not None:
                deliver()

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            self._waiting.notify_all()
        if self._timer is not None:
            self._timer.join(timeout=5)
        self.flush()
        for o in self.outputs:
            o.close()

    # -- evaluation -------------------------------------------------------------------
    def observe(self, table: str, data: pa.Table) -> pa.Table:
        """Alerts raised by one batch (without emitting them)."""
        return self._observe(table, data, learn=True)

    def _observe(self, table: str, data: pa.Table, learn: bool) -> pa.Table:
        """``observe``; ``_drain`` has the context learn each batch as it arrives, so
        what it hands here is known already (``learn=False``)."""
        if isinstance(data, pa.RecordBatch):
            data = pa.Table.from_batches([data])
        parts = []
        if table == "processes" and learn:
            self.context.add_processes(data)
        elif table == "accounts" and learn:
            self.context.accounts.add(data)
        elif table == "events":
            self.stats.batches += 1
            self.stats.events += data.num_rows
            if learn:
                self.context.add_events(data)
            parts.append(self.evaluate(data))
        for d in list(self.detectors):
            try:
                parts.append(d.observe(table, data, self.source))
            except Exception as e:  # noqa: BLE001 - one detector disabled, said; the others go on
                self.detectors.remove(d)
                self._disable_detector(d, e, data if table == "events" else None)
        parts = [p for p in parts if p.num_rows]
        return pa.concat_tables(parts) if parts else empty_alerts()

    def evaluate(self, events: pa.Table) -> pa.Table:
        """Alerts of the Sigma rules for one events batch.

        A group is skipped when no action of the batch allows it (decided per distinct
        action). The groups whose rules name literal paths or texts (``sieve.hooks``) are
        evaluated only on the rows one scan of those literals lets through, the others on
        the whole batch; sub-results are shared between groups, and each rule's body is
        evaluated only on the rows in its group's scope."""
        if events.num_rows == 0 or not self._groups:
            return empty_alerts()
        self.stats.evaluations += 1
        codes = Codes(events, self._decided)
        top = Evaluator(events, self.context, codes)
        work: list[tuple[int, _Group, list[tuple[CompiledRule, Node]], bool]] = []
        for i, g in enumerate(self._groups):
            live = [(r, b) for r, b in zip(g.rules, g.bodies) if r.rule_id not in self._dead]
            if not live:
                continue
            try:
                if not isinstance(g.kinds, Const) and not codes.possible(g.kinds):
                    continue
            except Exception as e:  # noqa: BLE001 - the scope is theirs alone (hoisted tests of theirs)
                for rule, _ in live:
                    self._disable_rule(rule, e, events)
                continue
            work.append((i, g, live, self._sieve.hooked[i]))
        # (by position: ``list.index`` compared the groups' trees field by field, ~0.25 ms a batch)
        sieved = self._sieved(events, top, codes, [(i, g.kinds) for i, g, _, hooked in work if hooked])
        found = []
        for _, g, live, hooked in work:
            first = sieved if hooked and sieved is not None else top
            if first.n == 0:
                continue
            try:
                scope = first.bits(g.scope)
            except Exception as e:  # noqa: BLE001 - the scope is theirs alone (hoisted tests of theirs)
                for rule, _ in live:
                    self._disable_rule(rule, e, events)
                continue
            left = int(np.count_nonzero(scope))
            if left == 0:
                continue
            ev = first if left == first.n else first.narrow(np.flatnonzero(scope))
            for rule, body in live:
                try:
                    bits = ev.bits(body)
                    if not bits.any():
                        continue
                    m = pa.array(bits)
                    hits = ev.table.filter(m)
                    for name in SUMMARY_DERIVED:
                        hits = hits.append_column(name, pc.filter(ev.column(name), m))
                    found.append(build_alerts(meta_of(rule), hits, self.source))
                except Exception as e:  # noqa: BLE001 - this rule disabled, said; the others run on
                    self._disable_rule(rule, e, events)
        return pa.concat_tables(found) if found else empty_alerts()

    def _sieved(self, events: pa.Table, top: Evaluator, codes: Codes,
                groups: list[tuple[int, Node]]) -> Evaluator | None:
        """An evaluator of the rows the sieve lets through for ``groups``, or None (no
        group to sieve, or the sieve could not read the batch: the whole batch then)."""
        if not groups:
            return None
        try:
            rows = self._sieve.rows(events, codes, groups)
        except Exception as e:  # noqa: BLE001 - the sieve only saves work: without it, every row is evaluated
            why = f"live rules evaluated without their first pass: {error_text(e)}"
            if why not in self._failures:
                self._failures.add(why)
                self._say(why)
            return None
        if rows is None or len(rows) == events.num_rows:
            return None if rows is None else top
        return top.narrow(rows)

    def findings(self, alerts: pa.Table, final: bool = False) -> tuple[pa.Table, pa.Table]:
        """Alerts (one per match) as findings: with their evidence, grouped. Returns the
        alerts that open a finding (to emit now) and the findings that ended with more
        than one match (the same alert ids with their final count and last time)."""
        rows = alerts.to_pylist() if alerts.num_rows else []
        add_evidence(rows, self.context, self.sessions)
        new, ended = self.grouper.add(rows)
        ended += self.grouper.close() if final else self.grouper.expire()
        return _table(new), _table(ended)

    def settle(self, alerts: pa.Table) -> pa.Table:
        """``findings`` of everything at once (a replay): one row per finding, final counts."""
        new, ended = self.findings(alerts, final=True)
        return latest_per_alert(pa.concat_tables([new, ended]))

    def _emit(self, alerts: pa.Table) -> None:
        self.stats.alerts += alerts.num_rows
        for o in self.outputs:
            o.emit(alerts)

    def _emit_updates(self, alerts: pa.Table) -> None:
        """A finding's final count goes where alerts are kept (the store), not again to
        the screen or a webhook: one alert per finding there."""
        for o in self.outputs:
            if getattr(o, "keeps_updates", False):
                o.emit(alerts)


def _name(d: Detector) -> str:
    return str(getattr(d, "rule_id", None) or getattr(d, "name", None) or type(d).__name__)


def latest_per_alert(alerts: pa.Table) -> pa.Table:
    """The row with the highest count of each alert id (a finding's final state)."""
    best: dict[str, dict[str, Any]] = {}
    for r in alerts.to_pylist():
        old = best.get(r["alert_id"])
        if old is None or (r.get("alert_count") or 1) > (old.get("alert_count") or 1):
            best[r["alert_id"]] = r
    return _table(sorted(best.values(), key=lambda r: (r["ts"], r["rule_id"])))


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=ALERTS) if rows else empty_alerts()
