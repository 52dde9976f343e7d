"""Recorded text as a terminal or a text report may show it: control characters escaped.

What forensix prints comes from the recorded host: command lines, file names, socket paths,
log lines. An intruder chooses them. A newline in an argument would forge a line of the
text tree (the process ancestry of a CI job, a multi-line ``sh -c`` script, did so to our
own test); an ANSI escape in a file name would move the cursor or recolour the investigator's
terminal; a right-to-left override would show ``gpj.exe`` as ``exe.jpg``. So every text view
shows such a character as its escape (``\\n``, ``\\x1b``, ``\\u202e``), and a backslash as
``\\\\``, so an escape read back is never ambiguous with a name that holds those characters
literally. JSON, CSV and HTML have their own quoting and keep the bytes as recorded."""

from __future__ import annotations

import re

__all__ = ["UNPRINTABLE", "printable"]

_NAMED = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r", 0x5C: "\\\\"}
# C0 and C1 controls, DEL; the bidirectional controls (Trojan Source, CVE-2021-42574); line and
# paragraph separators (a new line to some terminals and editors); zero-width and BOM characters
# that hide a difference between two names that read the same.
_CODES = [*range(0x20), 0x5C, *range(0x7F, 0xA0), 0x061C, 0x200B, 0x200C, 0x200D, 0x200E, 0x200F,
          *range(0x202A, 0x202F), 0x2028, 0x2029, *range(0x2066, 0x206A), 0xFEFF]
_TABLE = {c: _NAMED.get(c) or (f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}") for c in _CODES}

# the same set in RE2's syntax, for Arrow's vectorised screen of a whole column
UNPRINTABLE = "[" + "".join(f"\\x{{{c:x}}}" for c in _CODES) + "]"
_SCREEN = re.compile("[" + "".join(re.escape(chr(c)) for c in _CODES) + "]")


def printable(text: str) -> str:
    """``text`` with every control, bidirectional and invisible character escaped (see the module)."""
    return text.translate(_TABLE) if _SCREEN.search(text) else text
