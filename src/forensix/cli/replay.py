"""``forensix replay``: a session's terminal, played back, as asciicast v2, or as text."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from forensix.analysis.replay import Recording, load_recording, transcript
from forensix.cli.options import reader, store_option
from forensix.model.identity import format_entity, parse_entity
from forensix.model.timefmt import format_ns
from forensix.render.asciicast import asciicast_lines, timeline
from forensix.store.private import write_private

__all__ = ["COMMANDS"]


@click.command("replay", epilog="""\b
Examples:
  forensix replay 4f3a9c0d12e4b7a1                   # play it here, at the speed it was typed
  forensix replay 4f3a9c0d12e4b7a1 --speed 4 --idle-limit 1
  forensix replay 4f3a9c0d12e4b7a1 --format text     # the commands typed, each with its output
  forensix replay 4f3a9c0d12e4b7a1 --format asciicast -o s.cast   # asciinema play s.cast

ENTITY_ID is a session leader's or any process's of the session (`forensix sessions` marks
the sessions that have a recording). Input typed with the terminal's echo off (a password
at a prompt) was never recorded: it shows as masked.""")
@store_option
@click.argument("entity_id")
@click.option("--format", "fmt", type=click.Choice(["play", "asciicast", "text"]), default="play", show_default=True)
@click.option("--speed", type=click.FloatRange(min=0.01), default=1.0, show_default=True,
              help="Play this many times faster than it happened.")
@click.option("--idle-limit", type=click.FloatRange(min=0.0), default=None,
              help="Shorten every pause to at most this many seconds.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the asciicast or text here (mode 0600) instead of standard output.")
def replay_cmd(store: str, entity_id: str, fmt: str, speed: float, idle_limit: float | None,
               output: Path | None) -> None:
    """Replay what a session's terminal showed and what was typed on it."""
    rec = load_recording(reader(store), parse_entity(entity_id))
    if fmt == "play":
        _play(rec, speed, idle_limit)
        return
    if fmt == "asciicast":
        lines = asciicast_lines(rec, speed=speed, idle_limit=idle_limit,
                                title=f"forensix replay {format_entity(rec.leader)} ({rec.tty})")
        text = "\n".join(lines) + "\n"
    else:
        out = [f"# session {format_entity(rec.leader)} on {rec.tty}"]
        if rec.cut_bytes:
            out.append(f"# {rec.cut_bytes} bytes were not recorded (rate limit); the cuts are marked")
        for s in transcript(rec):
            if s.kind == "masked":
                out.append(f"{format_ns(s.ts, precision=3)}   {s.text}  (input typed with echo off: not recorded)")
                continue
            out.append(f"{format_ns(s.ts, precision=3)} $ {s.text}")
            if s.output:
                out.append(s.output)
        text = "\n".join(out) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        write_private(output, text.encode())


def _play(rec: Recording, speed: float, idle_limit: float | None) -> None:
    start = time.monotonic()
    for at, code, text in timeline(rec, speed, idle_limit):
        if code != "o":
            continue
        wait = at - (time.monotonic() - start)
        if wait > 0:
            time.sleep(wait)
        sys.stdout.write(text)
        sys.stdout.flush()


COMMANDS = [replay_cmd]
