"""A session's terminal, as recorded: the bytes in order, and the commands typed with their output.

The sensor keeps what was written to and read from a terminal (the ``tty`` table, one row
per read or write on a pty slave or console). A session's recording is the rows of the
session's processes (``analysis.sessions``) on one terminal: the one the given process
used, or the one its session used most. Input read at a prompt with the terminal's ECHO
off in canonical mode (a password) was never copied by the kernel: it is a ``masked`` row
with no bytes, and every view here shows it as masked.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa

from forensix.errors import StoreError, UsageError
from forensix.model.identity import format_entity
from forensix.store.base import Reader

if TYPE_CHECKING:
    from forensix.analysis.sessions import Attribution

__all__ = ["MASK", "Chunk", "Recording", "Step", "load_recording", "recorded_entities", "transcript"]

MASK = "********"  # what a masked input shows as: never its length
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")


@dataclass
class Chunk:
    ts: int  # UTC ns
    direction: str  # output | input | unknown (a row that only counts cut bytes)
    data: bytes
    masked: bool
    cut_bytes: int  # bytes of the terminal not kept since the previous row
    pid: int | None
    name: str | None


@dataclass
class Recording:
    leader: int
    tty: str | None
    tty_device: int | None
    chunks: list[Chunk] = field(default_factory=list)

    @property
    def start_ts(self) -> int:
        return self.chunks[0].ts if self.chunks else 0

    @property
    def cut_bytes(self) -> int:
        return sum(c.cut_bytes for c in self.chunks)


def recorded_entities(reader: Reader) -> set[int]:
    """Processes with terminal bytes recorded (an older store, without the table: none)."""
    try:
        t = reader.query("SELECT DISTINCT process_entity_id FROM tty WHERE process_entity_id IS NOT NULL")
    except StoreError:
        return set()
    return set(t.column(0).to_pylist())


_CHUNKS_SQL = """
SELECT ts, direction, data, masked, cut_bytes, process_pid, process_name, tty, tty_device, process_entity_id
FROM tty WHERE process_entity_id IN (SELECT unnest($ents)) ORDER BY ts, cpu, seq
"""


def load_recording(reader: Reader, entity: int, att: Attribution | None = None) -> Recording:
    """The terminal recording of the session that ``entity`` (leader or member) belongs to
    (``att``: the store's session attribution, when the caller keeps one)."""
    from forensix.analysis.sessions import find_session

    leader, att = find_session(reader, format_entity(entity), att)
    members = sorted(set(att.members(leader)) | {entity})
    try:
        t = reader.query(_CHUNKS_SQL, {"ents": members})
    except StoreError as e:
        raise StoreError(f"this store has no terminal recordings ({e.message.splitlines()[0]})",
                         "record with a forensix that captures terminals (on unless --no-tty)") from e
    if t.num_rows == 0:
        raise UsageError(
            f"no terminal bytes recorded for the session of {format_entity(entity)}",
            "`forensix sessions` marks the sessions that have a recording (column recording)",
        )
    dev = _pick_terminal(t, entity)
    rows = [r for r in t.to_pylist() if r["tty_device"] == dev]
    rec = Recording(leader, rows[0]["tty"], dev)
    rec.chunks = [Chunk(r["ts"], r["direction"], r["data"] or b"", bool(r["masked"]), int(r["cut_bytes"] or 0),
                        r["process_pid"], r["process_name"]) for r in rows]
    return rec


def _pick_terminal(t: pa.Table, entity: int) -> int | None:
    """The terminal ``entity`` used most, else the one its session used most."""
    counts: dict[int | None, tuple[int, int]] = {}
    for e, dev in zip(t.column("process_entity_id").to_pylist(), t.column("tty_device").to_pylist()):
        own, all_ = counts.get(dev, (0, 0))
        counts[dev] = (own + (e == entity), all_ + 1)
    return max(counts, key=lambda d: counts[d])


@dataclass
class Step:
    """One command typed (or one masked answer to a prompt) and the output that followed."""

    ts: int
    kind: str  # command | masked
    text: str
    output: str


def _clean(text: str) -> str:
    return _ANSI.sub("", text).replace("\r\n", "\n").replace("\r", "")


def _edit(line: str, ch: str) -> str:
    """What a typed character does to the line being typed (a line editor's basics)."""
    if ch in ("\x7f", "\x08"):
        return line[:-1]
    if ch == "\x15":  # ^U: kill the line
        return ""
    if ch == "\x17":  # ^W: kill a word
        return line.rstrip().rsplit(" ", 1)[0] + " " if " " in line.rstrip() else ""
    if ch == "\x03":
        return line + "^C"
    if ch < " " and ch != "\t":
        return line
    return line + ch


def transcript(rec: Recording) -> list[Step]:
    """The commands typed on the terminal, each with the output that followed it.

    Output is attributed to the command after whose Enter it came; what a program printed
    while a line was being typed (its echo) is left out. The echoed command at the start
    of its output and the prompt at its end are removed."""
    steps: list[Step] = []
    line, line_ts = "", 0
    out: list[str] = []
    dec_in = codecs.getincrementaldecoder("utf-8")("replace")
    dec_out = codecs.getincrementaldecoder("utf-8")("replace")
    typing = False

    def close() -> None:
        if steps:
            steps[-1].output = _tidy(steps[-1], "".join(out))
        out.clear()

    for c in rec.chunks:
        if c.direction == "input" and c.masked:
            close()
            steps.append(Step(c.ts, "masked", MASK, ""))
            continue
        if c.direction == "input":
            for ch in dec_in.decode(c.data):
                if not typing:
                    close()
                    typing, line_ts = True, c.ts
                if ch in ("\r", "\n"):
                    steps.append(Step(line_ts, "command", line, ""))
                    line, typing = "", False
                else:
                    line = _edit(line, ch)
            continue
        if c.cut_bytes:
            out.append(f"\n[{c.cut_bytes} bytes not recorded: rate limit]\n")
        if not typing:
            out.append(dec_out.decode(c.data))
    close()
    return steps


def _tidy(step: Step, raw: str) -> str:
    text = _clean(raw)
    if step.kind == "command" and text.lstrip("\n").startswith(step.text) and step.text:
        text = text.lstrip("\n")[len(step.text):]
    text = text.strip("\n")
    if "\n" in text:  # the prompt for the next command ends the output
        head, _, last = text.rpartition("\n")
        if not last.endswith("\n") and _looks_like_prompt(last):
            text = head
    elif _looks_like_prompt(text):
        text = ""
    return text.strip("\n")


def _looks_like_prompt(s: str) -> bool:
    return bool(s) and s.rstrip().endswith(("$", "#", "%", ">")) and len(s) < 200
