"""A terminal recording as asciicast v2 (the format asciinema's player plays).

A header line (JSON object), then one JSON array per event: ``[seconds, code, text]``;
``o`` output, ``i`` input, ``m`` a marker (here: masked input and bytes the rate limit
cut, so the player shows where the recording is silent on purpose). Masked input is
never written, not even its length.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator

from forensix.analysis.replay import Recording

__all__ = ["asciicast_lines", "timeline"]

# A program writes "\n"; the terminal's line discipline (ONLCR, on unless a program set raw
# output) turns it into "\r\n" after the sensor saw the write. A player shows the screen,
# so the asciicast gets the "\r" back; a line already ending "\r\n" (raw mode) is kept.
_BARE_LF = re.compile(r"(?<!\r)\n")


def timeline(rec: Recording, speed: float = 1.0, idle_limit: float | None = None) -> Iterator[tuple[float, str, str]]:
    """(seconds since the start, code, text) per event, at ``speed``, pauses cut to ``idle_limit``."""
    t0 = rec.start_ts
    last_real = t0
    at = 0.0
    dec = {"o": codecs.getincrementaldecoder("utf-8")("replace"), "i": codecs.getincrementaldecoder("utf-8")("replace")}
    for c in rec.chunks:
        gap = max(0, c.ts - last_real) / 1e9 / speed
        if idle_limit is not None:
            gap = min(gap, idle_limit)
        at += gap
        last_real = max(last_real, c.ts)
        if c.cut_bytes:
            yield at, "m", f"{c.cut_bytes} bytes not recorded (rate limit)"
        if c.masked:
            yield at, "m", "masked input (typed with echo off)"
            continue
        if c.direction not in ("output", "input") or not c.data:
            continue
        code = "o" if c.direction == "output" else "i"
        text = dec[code].decode(c.data)
        if text:
            yield at, code, text


def asciicast_lines(rec: Recording, *, width: int = 80, height: int = 24, speed: float = 1.0,
                    idle_limit: float | None = None, title: str | None = None) -> Iterator[str]:
    header: dict[str, object] = {
        "version": 2, "width": width, "height": height, "timestamp": rec.start_ts // 10**9,
        "env": {"TERM": "xterm-256color"},
    }
    if idle_limit is not None:
        header["idle_time_limit"] = idle_limit
    if title:
        header["title"] = title
    yield json.dumps(header)
    for at, code, text in timeline(rec, speed, idle_limit):
        yield json.dumps([round(at, 6), code, _BARE_LF.sub("\r\n", text) if code == "o" else text])
