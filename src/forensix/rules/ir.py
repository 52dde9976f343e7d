"""The compiled form of a rule: a predicate tree over view columns, and the pure
functions over it (simplify, the columns a tree reads, reordering and hoisting).

Plain frozen dataclasses, no pySigma: a recorder receives its rules compiled (by another
process, ``rules.precompile``) and evaluates them without importing the Sigma stack
(pySigma, pyparsing, jinja2, PyYAML: ~16 MB resident). ``compile`` builds these trees
from parsed Sigma rules and re-exports them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from forensix.rules import fields as F

__all__ = [
    "MERGE_AT",
    "RAW_COLUMNS",
    "And",
    "CompiledRule",
    "Const",
    "Node",
    "Not",
    "Or",
    "Pred",
    "columns_of",
    "hoist",
    "literal_alternatives",
    "necessary",
    "raw_first",
    "scope_of",
    "simplify",
]


# -- the IR ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Pred:
    """``column op value``. ``cased=False`` compares lower(column) with a lowered value;
    ``as_text`` compares the column's text form (a port matched with a wildcard)."""

    column: str
    op: str  # eq in prefix suffix contains regex null notnull lt le gt ge ne bits colref
    value: Any = None
    cased: bool = True
    as_text: bool = False


@dataclass(frozen=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    item: Node


@dataclass(frozen=True)
class Const:
    value: bool


Node = Pred | And | Or | Not | Const


@dataclass
class CompiledRule:
    """A rule ready to run, or the reason it cannot."""

    rule_id: str
    title: str
    level: str
    tags: list[str]
    source: str  # file path (and document index)
    logsource: str  # key of fields.LOGSOURCES, or the raw log source when unsupported
    status: str  # ok | unsupported | error
    reason: str = ""
    scope: Node = field(default_factory=lambda: Const(True))  # the log source predicate
    body: Node = field(default_factory=lambda: Const(False))  # the detection
    description: str = ""
    name: str = ""  # Sigma's optional rule name (the curated rules have one)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def where(self) -> Node:
        return simplify(And((self.scope, self.body)))


# -- log sources ----------------------------------------------------------------------


def scope_of(key: str) -> Node:
    """The predicate selecting a log source's events."""
    ls = F.LOGSOURCES[key]
    parts: list[Node] = []
    if ls.module is not None:
        parts.append(Pred("event_module", "eq", ls.module))
    if ls.programs is not None:
        parts.append(Pred("process_name", "in", tuple(sorted(ls.programs))))
    if ls.category is not None:
        parts.append(Pred("event_category", "eq", ls.category))
    if ls.actions is not None:
        acts: Node = Pred("event_action", "in", tuple(sorted(ls.actions)))
        if ls.write_opens:
            opens = And((Pred("event_action", "eq", "open"), Pred("file_flags", "bits", F.WRITE_OPEN_MASK)))
            acts = Or((acts, opens))
        parts.append(acts)
    if ls.ip_only:  # a bash looking up a user name connects to nscd's Unix socket: no network connection
        parts.append(Pred("network_type", "in", ("ipv4", "ipv6")))
    return simplify(And(tuple(parts))) if parts else Const(True)


# -- values -----------------------------------------------------------------------------

_RE_SPECIAL = set("\\.^$|?*+()[]{}")


def _re_escape(s: str) -> str:
    return "".join("\\" + c if c in _RE_SPECIAL else c for c in s)


# -- simplification ---------------------------------------------------------------------


def simplify(node: Node) -> Node:
    """Flatten, fold constants, and merge equality alternatives into ``in``."""
    if isinstance(node, (And, Or)):
        kind = type(node)
        unit, zero = (True, False) if kind is And else (False, True)
        items: list[Node] = []
        for it in (simplify(i) for i in node.items):
            if isinstance(it, Const):
                if it.value == zero:
                    return Const(zero)
                continue
            items.extend(it.items if isinstance(it, kind) else [it])
        if kind is Or:
            items = _merge_patterns(_merge_in(items))
        items = list(dict.fromkeys(items))
        if not items:
            return Const(unit)
        return items[0] if len(items) == 1 else kind(tuple(items))
    if isinstance(node, Not):
        inner = simplify(node.item)
        if isinstance(inner, Const):
            return Const(not inner.value)
        return Not(inner)
    return node


def _merge_in(items: list[Node]) -> list[Node]:
    groups: dict[tuple[str, bool, bool], list[Any]] = {}
    rest: list[Node] = []
    for it in items:
        if isinstance(it, Pred) and it.op in ("eq", "in"):
            vals = list(it.value) if it.op == "in" else [it.value]
            groups.setdefault((it.column, it.cased, it.as_text), []).extend(vals)
        else:
            rest.append(it)
    merged: list[Node] = []
    for (col, cased, as_text), vals in groups.items():
        uniq = tuple(dict.fromkeys(vals))
        if len(uniq) == 1:
            merged.append(Pred(col, "eq", uniq[0], cased, as_text))
        else:
            merged.append(Pred(col, "in", uniq, cased, as_text))
    return merged + rest


_ALTERNATION = {"prefix": "^(?:{})", "suffix": "(?:{})$", "contains": "(?:{})"}
MERGE_AT = 3  # this many alternatives on one column become one RE2 pass


def _merge_patterns(items: list[Node]) -> list[Node]:
    """``a|endswith: [x, y, z]`` as one regex ``(?:x|y|z)$`` instead of three scans.

    Literals are escaped and, for case-insensitive matching, already lowered: the regex
    runs on lower(column) like the predicates it replaces, in both engines.
    """
    groups: dict[tuple[str, str, bool, bool], list[Pred]] = {}
    rest: list[Node] = []
    for it in items:
        if isinstance(it, Pred) and it.op in _ALTERNATION:
            groups.setdefault((it.column, it.op, it.cased, it.as_text), []).append(it)
        else:
            rest.append(it)
    out: list[Node] = []
    for (col, op, cased, as_text), preds in groups.items():
        if len(preds) < MERGE_AT:
            out.extend(preds)
            continue
        alts = "|".join(_re_escape(str(p.value)) for p in dict.fromkeys(preds))
        out.append(Pred(col, "regex", "(?s)" + _ALTERNATION[op].format(alts), cased, as_text))
    return out + rest


@functools.lru_cache(maxsize=4096)
def literal_alternatives(pattern: str) -> tuple[str, tuple[str, ...]] | None:
    """``(op, literals)`` when ``pattern`` only says "starts with / ends with / contains
    one of these strings" (op ``prefix``, ``suffix``, ``contains``): the shape
    ``_merge_patterns`` writes, ``(?s)^(?:a|b)``, ``(?s)(?:a|b)$``, ``(?s)(?:a|b)``, with
    nothing but escaped or plain characters in the alternatives. Else None."""
    for op, shape in _ALTERNATION.items():
        head, _, tail = ("(?s)" + shape).partition("{}")
        if not (pattern.startswith(head) and pattern.endswith(tail)) or len(pattern) < len(head) + len(tail):
            continue
        body = pattern[len(head): len(pattern) - len(tail)]
        alts, cur, i = [], [], 0
        while i < len(body):
            c = body[i]
            if c == "\\":
                if i + 1 >= len(body) or body[i + 1] not in _RE_SPECIAL:
                    return None
                cur.append(body[i + 1])
                i += 2
                continue
            if c == "|":
                alts.append("".join(cur))
                cur = []
            elif c in _RE_SPECIAL:
                return None
            else:
                cur.append(c)
            i += 1
        alts.append("".join(cur))
        return op, tuple(alts)
    return None


def columns_of(node: Node) -> set[str]:
    """Every view column a predicate tree reads."""
    if isinstance(node, Pred):
        cols = {node.column}
        if node.op == "colref":
            cols.add(str(node.value))
        return cols
    if isinstance(node, (And, Or)):
        out: set[str] = set()
        for it in node.items:
            out |= columns_of(it)
        return out
    if isinstance(node, Not):
        return columns_of(node.item)
    return set()


RAW_COLUMNS = _RAW = frozenset(F.EVENTS_COLUMNS)


def raw_first(node: Node) -> Node:
    """The same tree with each conjunction's raw-column tests ahead of those that need
    derived columns: a conjunction is false where any item is, so order does not change
    its value, and an evaluator that stops when no row is left skips the costly part."""
    if isinstance(node, And):
        items = [raw_first(i) for i in node.items]
        return And(tuple(sorted(items, key=lambda i: not columns_of(i) <= _RAW)))
    if isinstance(node, Or):
        return Or(tuple(raw_first(i) for i in node.items))
    if isinstance(node, Not):
        return Not(raw_first(node.item))
    return node


def hoist(scope: Node, body: Node) -> tuple[Node, Node]:
    """Move the body's conjuncts over raw event columns into the scope (same rule).

    Both evaluators use it: the live engine then enriches only the rows a rule's cheap
    tests let through, the retro-hunt filters events before joining process images.
    """
    items = body.items if isinstance(body, And) else (body,)
    raw = tuple(i for i in items if columns_of(i) <= _RAW)
    if not raw:
        return scope, body
    rest = tuple(i for i in items if not columns_of(i) <= _RAW)
    return simplify(And((scope, *raw))), simplify(And(rest))


def necessary(node: Node, columns: frozenset[str]) -> Node:
    """A condition over ``columns`` alone that every event matching ``node`` meets.

    Tests on other columns become TRUE (a negation is kept only when all it reads is in
    ``columns``), so the result may let through more than ``node``, never less: events
    failing it can be dropped before ``node`` itself is evaluated on the rest.
    """
    if isinstance(node, Pred):
        return node if columns_of(node) <= columns else Const(True)
    if isinstance(node, (And, Or)):
        return simplify(type(node)(tuple(necessary(i, columns) for i in node.items)))
    if isinstance(node, Not):
        return node if columns_of(node.item) <= columns else Const(True)
    return node
