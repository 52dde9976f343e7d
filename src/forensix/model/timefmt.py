"""Times: parsed from what a user types, shown in UTC ("Timestamp in GMT").

Internally every time is an int of UTC nanoseconds since the epoch.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from forensix.errors import UsageError

__all__ = ["format_ns", "now_ns", "parse_time"]

_REL = re.compile(r"^-(\d+(?:\.\d+)?)(ns|us|ms|s|m|h|d)$")
_UNIT_NS = {"ns": 1, "us": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9}
_HINT = (
    "use ISO 8601 (2026-11-26T04:41:12Z, or with +hh:mm; no zone means UTC), "
    "epoch seconds or ns, 'now', or a relative time such as -5m, -2h"
)


def now_ns() -> int:
    return time.time_ns()


def parse_time(text: str, *, now: int | None = None) -> int:
    """UTC ns from ISO 8601, epoch seconds/ns, 'now' or '-5m'-style relative times."""
    s = text.strip()
    ref = now_ns() if now is None else now
    if s == "now":
        return ref
    m = _REL.match(s)
    if m:
        return ref - int(float(m.group(1)) * _UNIT_NS[m.group(2)])
    if re.fullmatch(r"\d+(\.\d+)?", s):
        v = float(s) if "." in s else int(s)
        # Epoch seconds up to year 5138; larger numbers are nanoseconds.
        return int(v * 10**9) if v < 10**11 else int(v)
    try:
        dt = datetime.fromisoformat(s.replace("Z", "+00:00").replace(" ", "T", 1))
    except ValueError:
        raise UsageError(f"cannot read {text!r} as a time", _HINT) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    frac_ns = 0
    fm = re.search(r"\.(\d+)", s)
    if fm:  # keep digits past microseconds that datetime drops
        digits = (fm.group(1) + "000000000")[:9]
        frac_ns = int(digits) - dt.microsecond * 1000
    return int(dt.timestamp()) * 10**9 + dt.microsecond * 1000 + frac_ns


def format_ns(ns: int | None, *, precision: int = 6) -> str:
    """ISO 8601 in UTC with a Z, to ``precision`` fractional digits (0..9)."""
    if ns is None:
        return ""
    sec, frac = divmod(int(ns), 10**9)
    base = datetime.fromtimestamp(sec, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if precision <= 0:
        return base + "Z"
    return f"{base}.{frac:09d}"[: len(base) + 1 + precision] + "Z"
