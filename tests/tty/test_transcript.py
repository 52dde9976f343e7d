"""Text and asciicast views of a recording, from rows as the sensor writes them (no kernel needed)."""

from __future__ import annotations

import json

from forensix.analysis.replay import MASK, Chunk, Recording, transcript
from forensix.render.asciicast import asciicast_lines


def _rec(*chunks: tuple[int, str, bytes, bool, int]) -> Recording:
    r = Recording(1, "pts0", 136 << 20)
    r.chunks = [Chunk(ts * 10**9, d, data, masked, cut, 1, "bash") for ts, d, data, masked, cut in chunks]
    return r


def test_line_editing_masking_and_cuts() -> None:
    rec = _rec(
        (0, "output", b"\x1b[?2004hfx$ ", False, 0),
        *[(1, "input", bytes([c]), False, 0) for c in b"lsx\x7f -l\r"],  # a typo, backspaced
        (2, "output", b"ls -l\r\ntotal 0\r\n\x1b[1mfx$ \x1b[0m", False, 0),
        (3, "input", b"sudo id\r", False, 0),
        (3, "output", b"[sudo] password for x: ", False, 0),
        (4, "input", b"", True, 0),
        (5, "output", b"uid=0(root)\r\nfx$ ", False, 4096),
    )
    steps = transcript(rec)
    assert [(s.kind, s.text) for s in steps] == [("command", "ls -l"), ("command", "sudo id"), ("masked", MASK)]
    assert steps[0].output == "total 0"
    assert steps[1].output == "[sudo] password for x: "
    assert "4096 bytes not recorded" in steps[2].output and "uid=0(root)" in steps[2].output


def test_asciicast_speed_idle_and_markers() -> None:
    rec = _rec((0, "output", b"a", False, 0), (10, "output", b"\xc3", False, 0), (10, "output", b"\xa9", False, 0),
               (11, "input", b"", True, 0), (30, "output", b"z", False, 7))
    lines = list(asciicast_lines(rec, speed=2.0, idle_limit=3.0))
    head = json.loads(lines[0])
    assert head["version"] == 2 and head["idle_time_limit"] == 3.0
    evs = [json.loads(x) for x in lines[1:]]
    assert [e[1] for e in evs] == ["o", "o", "m", "m", "o"]
    assert evs[1] == [3.0, "o", "é"]  # 10 s at speed 2 is 5 s, cut to the 3 s idle limit; UTF-8 joined across writes
    assert evs[2][0] == 3.5 and "masked" in evs[2][2]
    assert "7 bytes" in evs[3][2]


def test_asciicast_shows_newlines_as_the_terminal_did() -> None:
    # programs write "\n"; the line discipline (ONLCR) displayed "\r\n": without the "\r" a
    # player draws a staircase. Output already written as "\r\n" (raw mode) is left alone.
    rec = _rec((0, "output", b"one\ntwo\r\nthree\n", False, 0), (1, "input", b"x\n", False, 0))
    evs = [json.loads(x) for x in list(asciicast_lines(rec))[1:]]
    assert evs[0][2] == "one\r\ntwo\r\nthree\r\n"
    assert evs[1] == [1.0, "i", "x\n"]  # input is what was typed, unchanged
