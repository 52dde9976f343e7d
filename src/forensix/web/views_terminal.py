"""A session's terminal in the UI: the commands typed with their output, and the asciicast
the embedded player (asciinema-player) plays.

Both come from ``analysis.replay`` as ``forensix replay`` shows them: input typed with echo
off was never stored (a ``masked`` row without bytes), so it leaves here as ``********``
in the text and as a marker in the asciicast, never as its bytes or its length.
"""

from __future__ import annotations

from typing import Any

from forensix.analysis.replay import Recording, load_recording, transcript
from forensix.errors import StoreError, UsageError
from forensix.model.identity import format_entity
from forensix.render.asciicast import asciicast_lines
from forensix.web.context import Context
from forensix.web.jsonrows import jsonable
from forensix.web.params import NotFound

__all__ = ["has_terminal", "recording", "terminal_cast", "terminal_text"]

MAX_STEPS = 2000  # commands shown at most (the asciicast has them all)


def has_terminal(ctx: Context, entity: int) -> bool:
    """Did ``entity`` itself read or write a terminal (a store without the table: no)?"""
    try:
        return bool(ctx.query("SELECT 1 FROM tty WHERE process_entity_id = $e LIMIT 1", {"e": entity}).num_rows)
    except StoreError:
        return False


def recording(ctx: Context, entity: int) -> Recording:
    """The terminal recording of ``entity``'s session (its terminal, else the session's)."""
    try:
        return load_recording(ctx.reader, entity, ctx.attribution())
    except UsageError as e:
        raise NotFound(e.message, e.hint) from None


def terminal_text(rec: Recording, cast_url: str) -> dict[str, Any]:
    steps = transcript(rec)
    return {
        "tty": rec.tty, "leader_entity_id": format_entity(rec.leader), "start_ts": jsonable("ts", rec.start_ts),
        "cut_bytes": rec.cut_bytes, "cast": cast_url, "steps_total": len(steps),
        "steps": [{"ts": jsonable("ts", s.ts), "kind": s.kind, "text": s.text, "output": s.output}
                  for s in steps[:MAX_STEPS]],
    }


def terminal_cast(rec: Recording) -> str:
    """asciicast v2 (a JSON header line, then one JSON array per event), as `replay --format asciicast`."""
    title = f"forensix replay {format_entity(rec.leader)} ({rec.tty})"
    return "\n".join(asciicast_lines(rec, title=title)) + "\n"
