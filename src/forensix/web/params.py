"""Query parameters of the JSON API, declared once as data, with their bounds.

Every value a browser (or a hostile script) sends is read here: too long, too large, of
the wrong form or unknown, it becomes an ``ApiError`` with a 4xx status, a message that
names the parameter and a hint, never a traceback and never a query that scans without
bound. Bounds are deliberately small: the browser pages, it never asks for everything.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from forensix.errors import ForensixError, UsageError
from forensix.model.identity import parse_entity
from forensix.model.timefmt import parse_time

__all__ = ["MAX_TEXT", "ApiError", "NotFound", "Param", "read_params"]

MAX_TEXT = 512  # longest text parameter: a path, a command substring
MAX_LIST = 32  # most values of a repeated parameter (actions, categories)
MAX_PARAMS = 64  # most parameters in one request


class ApiError(ForensixError, ValueError):
    """A request the API refuses: ``status`` is its HTTP status (4xx)."""

    status = 400


class NotFound(ApiError):
    status = 404


@dataclass(frozen=True)
class Param:
    """One query parameter: ``kind`` is int | text | time | entity | ip | choice | flag."""

    name: str
    kind: str
    default: Any = None
    lo: int = 0
    hi: int = 1 << 62
    choices: tuple[str, ...] = ()
    many: bool = False
    help: str = ""

    def read(self, raw: str) -> Any:
        if len(raw) > MAX_TEXT:
            raise ApiError(f"parameter {self.name} is {len(raw)} characters long",
                           f"at most {MAX_TEXT}")
        try:
            return _READERS[self.kind](self, raw)
        except ApiError:
            raise
        except (UsageError, ValueError) as e:
            msg = e.message if isinstance(e, ForensixError) else str(e)
            raise ApiError(f"parameter {self.name}={raw[:80]!r}: {msg}", self.help or None) from None


def _int(p: Param, raw: str) -> int:
    s = raw.strip()
    if not s.lstrip("-").isdigit() or len(s) > 20:
        raise ApiError(f"parameter {p.name} must be a whole number, not {raw[:40]!r}", p.help or None)
    v = int(s)
    if not p.lo <= v <= p.hi:
        raise ApiError(f"parameter {p.name}={v} is out of range", f"between {p.lo} and {p.hi}")
    return v


def _text(p: Param, raw: str) -> str:
    if "\x00" in raw:
        raise ApiError(f"parameter {p.name} holds a NUL character", "send plain text")
    return raw


def _time(p: Param, raw: str) -> int:
    v = parse_time(raw)
    if not 0 <= v < 1 << 62:  # UTC ns from 1970 to 2116: what a BIGINT column of the store holds
        raise ApiError(f"parameter {p.name}={raw[:40]!r} is out of range", "a time between 1970 and 2116")
    return v


def _entity(p: Param, raw: str) -> int:
    return parse_entity(raw)


def _ip(p: Param, raw: str) -> str:
    return str(ipaddress.ip_address(raw.strip()))


def _choice(p: Param, raw: str) -> str:
    if raw not in p.choices:
        raise ApiError(f"parameter {p.name}={raw[:40]!r} is not one of the choices",
                       "one of: " + ", ".join(p.choices))
    return raw


def _flag(p: Param, raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on", ""):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ApiError(f"parameter {p.name} must be 1 or 0", None)


_READERS = {"int": _int, "text": _text, "time": _time, "entity": _entity, "ip": _ip, "choice": _choice,
            "flag": _flag}

# parameters every view takes: the page
PAGE = (Param("limit", "int", 100, 1, 1000, help="rows per page, 1 to 1000"),
        Param("offset", "int", 0, 0, 100_000, help="rows to skip, at most 100000: narrow the filters instead"))


def read_params(query: list[tuple[str, str]], params: tuple[Param, ...],
                allowed_extra: tuple[str, ...] = ("token", "_")) -> dict[str, Any]:
    """The typed values of ``query`` (the request's pairs, in order) for ``params``.

    An unknown parameter is refused rather than ignored: a typo in a pasted URL must not
    silently show everything."""
    if len(query) > MAX_PARAMS:
        raise ApiError(f"{len(query)} query parameters", f"at most {MAX_PARAMS}")
    by_name: Mapping[str, Param] = {p.name: p for p in params}
    out: dict[str, Any] = {p.name: ([] if p.many else p.default) for p in params}
    for name, raw in query:
        p = by_name.get(name)
        if p is None:
            if name in allowed_extra:
                continue
            known = ", ".join(sorted(by_name)) or "none"
            raise ApiError(f"unknown parameter {name[:40]!r}", f"this view takes: {known}")
        if raw == "" and p.kind != "flag":
            continue  # an empty form field means "not given"
        if p.many:
            if len(out[p.name]) >= MAX_LIST:
                raise ApiError(f"parameter {p.name} given more than {MAX_LIST} times", None)
            out[p.name].append(p.read(raw))
        else:
            out[p.name] = p.read(raw)
    return out
