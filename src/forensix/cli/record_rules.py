"""Live detection for `forensix record`, never in the way of recording starting.

With the compiled rules in the cache (rules/rule_cache.py) the engine is built at once
(~20 ms to read them). Without them (the first start after an install, or after the rules
or forensix changed) compiling took 1-4 s of wall time, in a child process, *before*
the sensor was attached: a first run spent 4.5 s starting, and commands run meanwhile were
not recorded. So a cold start records first: ``DeferredRules`` takes the batches in the
writer's order while a thread compiles (and caches) the rules, then hands every batch it
held to the engine, in order, and passes the later ones straight through. No batch goes
unruled: the engine sees the same batches in the same order as if it had been there from
the start, only later; alerts about the first seconds come a few seconds late.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa

from forensix.errors import ForensixError
from forensix.rules.engine import LiveEngine
from forensix.rules.guard import agent_warning
from forensix.rules.loader import RuleSet
from forensix.rules.precompile import cached_rules, load_rules_isolated

__all__ = ["HELD_BYTES", "DeferredRules", "rules_for_record"]

log = logging.getLogger("forensix.recorder")

# Decoded bytes held while the rules compile (~1 M events). Past it the writer waits for the
# rules: the drain then waits too and the kernel's rings hold the records (what they cannot
# hold is a counted gap), as when any sink falls behind (sensor/writer.py).
HELD_BYTES = 128 << 20


class DeferredRules:
    """A ``Sink`` in front of a live engine that is still being built (module doc).

    ``build`` runs on a thread of its own and returns the engine; a ``ForensixError`` from
    it (the rule compiler failed) is said to ``echo`` and in the record, and recording goes
    on without live detection, as with ``--no-rules``."""

    sink_name = "live detection"

    def __init__(self, build: Callable[[], LiveEngine], echo: Callable[[str], None] | None = None,
                 record: Any = None, held_bytes: int = HELD_BYTES) -> None:
        self.echo = echo
        self.record = record  # the store sink: where a failure to build is said
        self.held_bytes = held_bytes
        self.engine: LiveEngine | None = None
        self.failed: str | None = None
        self.held_peak = 0  # batches held at most (what the catch-up replayed, for tests)
        self._build = build
        self._held: list[tuple[str, pa.Table]] = []
        self._bytes = 0
        self._ready = False  # the engine has every held batch; writes go straight to it
        self._cond = threading.Condition()
        self._like: pa.Table | None = None  # an events batch: the host a failure is said of
        self._thread = threading.Thread(target=self._run, name="fx-rules-build", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            engine = self._build()
        except ForensixError as e:
            self._fail(f"live detection is off for this recording: the rules could not be compiled: "
                       f"{e.message} ({e.hint})")
            return
        except Exception as e:  # a bug in building the engine must not stop recording
            log.debug("traceback", exc_info=e)
            self._fail(f"live detection is off for this recording: {type(e).__name__}: {e}")
            return
        self.engine = engine
        while True:  # catch up, in order, until nothing is held (writes meanwhile join the queue)
            with self._cond:
                held, self._held, self._bytes = self._held, [], 0
                if not held:
                    self._ready = True
                    self._cond.notify_all()
                    return
                self._cond.notify_all()
            for table, data in held:
                engine.write(table, data)

    def _fail(self, message: str) -> None:
        log.error("%s", message)
        if self.echo is not None:
            self.echo(message)
        with self._cond:
            self.failed = message
            self._held, self._bytes = [], 0
            self._ready = True
            self._cond.notify_all()
            like = self._like
        if self.record is not None:
            self.record.write("events", agent_warning(message, like))

    def write(self, table: str, data: pa.Table) -> None:
        with self._cond:
            if table == "events" and self._like is None:
                self._like = data.slice(0, 1)
            if not self._ready:
                self._cond.wait_for(lambda: self._ready or self._bytes < self.held_bytes)
            if not self._ready:
                self._held.append((table, data))
                self._bytes += data.nbytes
                self.held_peak = max(self.held_peak, len(self._held))
                return
        if self.engine is not None:
            self.engine.write(table, data)

    def tick_end(self) -> None:
        """The recorder's end of a drain tick, for the engine once it is caught up (while it
        holds batches, the catch-up evaluates them anyway)."""
        if self._ready and self.engine is not None:
            self.engine.tick_end()

    def wait(self, timeout: float | None = None) -> bool:
        """Until the engine has caught up (or failed); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._ready, timeout)

    def flush(self) -> None:
        self.wait()
        if self.engine is not None:
            self.engine.flush()

    def close(self) -> None:
        self.wait()
        self._thread.join()
        if self.engine is not None:
            self.engine.close()


def rules_for_record(store_sink: Any, store: str, *, rule_paths: Sequence[str], echo: Callable[[str], None],
                     note: Callable[[str], None], engine: Callable[..., LiveEngine],
                     pids: Callable[[], Sequence[int]],
                     on_engine: Callable[[LiveEngine], None]) -> LiveEngine | DeferredRules:
    """The live detection sink of a recording: the engine, built now when the compiled
    rules are cached, else a ``DeferredRules`` building it while recording goes on.
    ``engine``: cli.rules.live_engine_for_record (called with the rule set); ``pids``:
    the recorder's and its keepers' pids when the engine is built; ``on_engine``: told
    the engine once built (the recorder guard learns later keepers' pids through it);
    ``echo``: alert lines and what cannot run; ``note``: a plain line for the user."""
    rs: RuleSet | None = cached_rules(list(rule_paths))  # a rule path that does not exist: said here

    def build(rules: RuleSet | None) -> LiveEngine:
        got = engine(store_sink, store, rule_paths=rule_paths, echo=echo, recorder_pids=tuple(pids()),
                     rules=rules if rules is not None else load_rules_isolated(list(rule_paths)))
        on_engine(got)
        return got

    if rs is not None:
        return build(rs)
    note("compiling the rules (not cached yet): recording starts meanwhile, and the rules catch up on what "
         "was recorded before they were ready")
    return DeferredRules(lambda: build(None), echo=echo, record=store_sink)
