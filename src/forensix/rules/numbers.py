"""Integers a rule names exactly, whatever their size (an inode, a 64-bit id, a capability mask).

pySigma keeps a number as a float when the float is not exactly the integer
(``SigmaNumber``: 2**53 + 1 becomes 9007199254740992.0), so a rule comparing ``file.inode``
with 2**60 + 1 would also match 2**60 and 2**60 + 2. Before pySigma reads a rule file, the
loader swaps each such integer in the detections for a stand-in a float holds exactly and
that no rule of the file uses (``stand_ins``); ``compile_rule`` puts the integer back
(``exact``) as it builds each predicate, so both engines compare with the integer itself.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

__all__ = ["exact", "exact_integers", "stand_ins"]

_FLOAT_EXACT = 2**53  # every integer up to this is a float exactly
_CURRENT: contextvars.ContextVar[Mapping[int, int] | None] = contextvars.ContextVar("forensix_exact_ints",
                                                                                      default=None)


def _walk(node: Any) -> Iterator[int]:
    if isinstance(node, bool):
        return
    if isinstance(node, int):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def _swap(node: Any, table: Mapping[int, int]) -> Any:
    if isinstance(node, bool):
        return node
    if isinstance(node, int):
        return table.get(node, node)
    if isinstance(node, dict):
        return {k: _swap(v, table) for k, v in node.items()}
    if isinstance(node, list):
        return [_swap(v, table) for v in node]
    return node


def stand_ins(docs: Iterable[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[int, int]]:
    """The rule documents with each integer beyond a float's exact range in their detections
    replaced by a stand-in, and the stand-in -> integer table for ``exact_integers``."""
    docs = list(docs)
    used = {v for d in docs for v in _walk(d.get("detection"))}
    big = sorted(v for v in used if abs(v) > _FLOAT_EXACT)
    if not big:
        return docs, {}
    free = (c for c in range(_FLOAT_EXACT - 1, 0, -1) if c not in used)
    swap = {v: next(free) for v in big}
    out = [dict(d, detection=_swap(d["detection"], swap)) if "detection" in d else d for d in docs]
    return out, {s: v for v, s in swap.items()}


@contextlib.contextmanager
def exact_integers(table: Mapping[int, int]) -> Iterator[None]:
    """While compiling: the stand-in table of the rule's file (``stand_ins``)."""
    token = _CURRENT.set(table)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def exact(number: float) -> float:
    """The integer a rule named, for a pySigma number (a stand-in put back; others as they are)."""
    table = _CURRENT.get()
    if table and isinstance(number, int) and not isinstance(number, bool):
        return table.get(number, number)
    return number
