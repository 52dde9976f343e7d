"""One real recording, delivered both ways: decoded by the agent, and raw for the log host.

``TeeRecorder`` is the raw-record agent (agent/raw.py) that also decodes every drain tick
and map flush as the decoding agent does, with a decoder of its own (a copy of the agent's
after the ``/proc`` snapshot, independent of the seed's export), into tables named
``dec:NAME``. ``Routed`` sinks send those to one store and the raw rows to another (a log
host), the agent's own rows to both: the two stores of the same records can then be
compared row for row (tests/transport/test_raw_agent_bpf.py). Two recorders side by side
would not do: each sensor stamps its own times.
"""

from __future__ import annotations

import copy
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from forensix.agent.frame import RAW_TABLE
from forensix.agent.raw import RawRecorder
from forensix.agent.sink import Sink, sink_name
from forensix.sensor.abi import struct_dtype
from forensix.sensor.decode import Decoder
from forensix.sensor.maprows import flow_rows, reopen_rows
from forensix.sensor.ringbuf import Drained
from forensix.sensor.tty import budget_cuts

__all__ = ["DECODED", "TABLES", "Routed", "TeeRecorder", "assert_same_store"]

DECODED = "dec:"
TABLES = ("events", "processes", "flows", "tty")  # what the two sides must hold alike


class TeeRecorder(RawRecorder):
    twin: Decoder

    def _snapshot(self) -> None:
        super()._snapshot()
        self.twin = copy.deepcopy(self.decoder)

    def _resync_clock(self) -> None:
        super()._resync_clock()
        self.twin.offset_ns = self.clock.offset_ns  # as the decoding agent's decoder follows the clock

    def _handle_drains(self, named: list[tuple[int, Drained]], bulk: bool) -> None:
        for name, t in self.twin.decode(Drained.join([d for _, d in named])).items():
            self._emit(DECODED + name, t)
        super()._handle_drains(named, bulk)

    def _emit_flows(self, k: np.ndarray, v: np.ndarray) -> None:
        self._emit(DECODED + "flows", flow_rows(self.twin, self.host, self.clock.offset_ns, k, v))
        super()._emit_flows(k, v)

    def _emit_reopens(self, k: np.ndarray, v: np.ndarray) -> None:
        rows = reopen_rows(self.twin, self.host, self.clock.offset_ns, k, v)
        if rows is not None:
            self._emit(DECODED + "events", rows)
        super()._emit_reopens(k, v)

    def _take_tty_cuts(self) -> None:
        if "fx_tty_budget" not in self.abi["structs"]:
            return
        keys, vals = self._take_map("tty_budget", np.dtype(np.uint32), struct_dtype(self.abi, "fx_tty_budget"))
        cuts = budget_cuts(self.twin, keys, vals, self.twin.tty_names)
        if cuts is not None:
            self._emit(DECODED + "tty", cuts)
        if len(vals):
            self._emit_map("tty_budget", keys, vals)


class Routed:
    """An evidence sink that takes the decoded side (``decoded``) or the raw side of a tee."""

    evidence = True

    def __init__(self, sink: Sink, decoded: bool) -> None:
        self.sink = sink
        self.decoded = decoded
        self.sink_name = f"{sink_name(sink)} ({'decoded' if decoded else 'raw'} side)"

    def write(self, table: str, data: pa.Table) -> None:
        if table.startswith(DECODED):
            if self.decoded:
                self.sink.write(table[len(DECODED):], data)
        elif table == RAW_TABLE:
            if not self.decoded:
                self.sink.write(table, data)
        else:  # the agent's own rows (hosts, agent events, gaps, snapshot, accounts): both
            self.sink.write(table, data)

    def flush(self) -> None:
        self.sink.flush()

    def close(self) -> None:
        self.sink.close()


def _rows(store: Any, table: str) -> pa.Table:
    t = store.query(f"SELECT * FROM {table}")
    if table == "events":
        # the log host's own rows (an agent connected, went silent) are not the agent's
        own = pc.and_(pc.equal(pc.fill_null(t["event_kind"], ""), "state"),
                      pc.equal(pc.fill_null(t["event_category"], ""), "agent"))
        t = t.filter(pc.invert(own))
        # a decode warning says when it was written: its time is not the record's
        t = t.set_column(t.schema.get_field_index("ts"), "ts", pc.if_else(
            pc.equal(pc.fill_null(t["event_action"], ""), "decode-warning"), pa.scalar(0, pa.int64()), t["ts"]))
    return t


def assert_same_store(a: Any, b: Any) -> dict[str, int]:
    """Every table of ``TABLES`` holds the same rows in stores ``a`` and ``b`` (as multisets,
    the log host's own agent rows left out); returns the row counts."""
    counts = {}
    for table in TABLES:
        ta, tb = _rows(a, table), _rows(b, table)
        con = duckdb.connect()
        con.register("ta", ta)
        con.register("tb", tb)
        only_a = con.execute("SELECT * FROM (SELECT * FROM ta EXCEPT ALL SELECT * FROM tb) LIMIT 3").fetchall()
        only_b = con.execute("SELECT * FROM (SELECT * FROM tb EXCEPT ALL SELECT * FROM ta) LIMIT 3").fetchall()
        con.close()
        assert not only_a and not only_b, f"{table}: decoded-only {only_a}; raw-only {only_b}"
        assert ta.num_rows == tb.num_rows, table
        counts[table] = ta.num_rows
    return counts
