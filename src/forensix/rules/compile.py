"""From a parsed Sigma rule to one predicate tree that both engines evaluate.

pySigma parses the rule and its processing pipeline (``forensix_pipeline``) maps
Sigma's Linux taxonomy to forensix view columns, per log source. The condition tree
that results is compiled once more into a small predicate IR (``Pred``/``And``/``Or``/
``Not``/``Const``) over view columns. The retro-hunt turns the IR into DuckDB SQL, the
live engine into pyarrow.compute calls: one IR, two evaluators, the same semantics.

Semantics fixed here (both evaluators follow them): a predicate on a missing (NULL)
value is false; strings compare case-insensitively unless ``|cased``; wildcards are
anchored globs; ``|re`` is an unanchored RE2 search; keywords are substring searches
in ``fields.KEYWORD_COLUMNS``.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionNOT,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.exceptions import SigmaError
from sigma.processing.conditions import LogsourceCondition
from sigma.processing.pipeline import ProcessingItem, ProcessingPipeline
from sigma.processing.transformations import FieldMappingTransformation
from sigma.rule import SigmaRule
from sigma.types import (
    Placeholder,
    SigmaBool,
    SigmaCasedString,
    SigmaCIDRExpression,
    SigmaCompareExpression,
    SigmaExists,
    SigmaExpansion,
    SigmaFieldReference,
    SigmaNull,
    SigmaNumber,
    SigmaRegularExpression,
    SigmaRegularExpressionFlag,
    SigmaString,
    SpecialChars,
)

from forensix.rules import fields as F
from forensix.rules.auditd import AuditWatch, audit_watch, path_predicate_parts
from forensix.rules.numbers import exact, exact_integers

__all__ = [
    "RAW_COLUMNS",
    "And",
    "CompiledRule",
    "Const",
    "Node",
    "Not",
    "Or",
    "Pred",
    "Unsupported",
    "columns_of",
    "compile_rule",
    "forensix_pipeline",
    "literal_alternatives",
    "logsource_key",
    "necessary",
    "raw_first",
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


class Unsupported(SigmaError):
    """The rule is valid Sigma but cannot run on forensix events; the message says why."""


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


# -- log sources and the pySigma pipeline ------------------------------------------------

_OTHER_PRODUCTS = "only Linux rules run on forensix events"


def logsource_key(rule: SigmaRule) -> str:
    """The forensix log source a rule reads, or raise Unsupported with the reason."""
    ls = rule.logsource
    product, category, service = ls.product, ls.category, ls.service
    if service == "forensix" or product == "forensix":
        return "forensix"
    if product not in (None, "linux"):
        raise Unsupported(f"product {product!r}: {_OTHER_PRODUCTS}")
    if service in F.SERVICES:
        return F.SERVICES[service]
    if service is not None:
        raise Unsupported(
            f"service {service!r} is a log file forensix does not record"
            f" (supported: {', '.join(F.SERVICES)}, or a category)"
        )
    if category is None:
        if product == "linux":  # keyword rules over the system's log text
            return "linux"
        raise Unsupported("a rule without product, category or service reads no event forensix records")
    if category not in F.LOGSOURCES or category in F.SERVICES or category == "linux":
        supported = ", ".join(k for k in F.LOGSOURCES if k not in F.SERVICES and k != "linux")
        raise Unsupported(f"category {category!r} is not recorded (supported: {supported})")
    return category


def forensix_pipeline() -> ProcessingPipeline:
    """Sigma's Linux taxonomy -> forensix view columns, one mapping per log source."""
    items: list[ProcessingItem] = []
    for key, mapping in F.SIGMA_FIELDS.items():
        if not mapping:
            continue
        if key in F.SERVICES:
            cond = LogsourceCondition(product="linux", service=key)
        else:
            cond = LogsourceCondition(product="linux", category=key)
        items.append(
            ProcessingItem(
                FieldMappingTransformation(dict(mapping)),  # type: ignore[arg-type]
                rule_conditions=[cond],
                identifier=f"forensix-{key}",
            )
        )
    return ProcessingPipeline(name="forensix linux taxonomy", items=items)


_PIPELINE = forensix_pipeline()


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


def check_regex(pattern: str) -> None:
    """RE2 (DuckDB's and Arrow's engine) must accept the pattern."""
    try:
        pc.match_substring_regex(pa.array([""], pa.string()), pattern)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise Unsupported(f"regular expression {pattern!r} is not RE2 syntax: {e}") from None


def _numeric(col: str) -> bool:
    t = F.VIEW_TYPES[col]
    return bool(pa.types.is_integer(t))


def _string_pred(col: str, value: SigmaString) -> Node:
    if value.contains_placeholder():
        raise Unsupported(f"placeholder in {value.original!r} (%name% values need expansion first)")
    cased = isinstance(value, SigmaCasedString)
    parts = list(value.s)
    if any(isinstance(p, Placeholder) for p in parts):
        raise Unsupported(f"placeholder in {value.original!r}")
    plain = [p for p in parts if isinstance(p, str)]
    text = "".join(plain)
    as_text = _numeric(col)
    if as_text and all(isinstance(p, str) for p in parts) and text.strip().lstrip("-").isdigit():
        return Pred(col, "eq", int(text))
    norm = text if cased else text.lower()
    fold = (lambda s: s) if cased else str.lower
    star = SpecialChars.WILDCARD_MULTI
    if not any(isinstance(p, SpecialChars) for p in parts):
        return Pred(col, "eq", norm, cased, as_text)
    if parts == [star]:
        return Pred(col, "notnull", None, True, as_text)
    inner = parts[1:-1] if len(parts) >= 2 else []
    if len(parts) == 2 and parts[0] == star and isinstance(parts[1], str):
        return Pred(col, "suffix", fold(parts[1]), cased, as_text)
    if len(parts) == 2 and parts[1] == star and isinstance(parts[0], str):
        return Pred(col, "prefix", fold(parts[0]), cased, as_text)
    if len(parts) == 3 and parts[0] == star and parts[2] == star and isinstance(parts[1], str):
        return Pred(col, "contains", fold(parts[1]), cased, as_text)
    del inner
    pieces = []
    for p in parts:
        if p == star:
            pieces.append(".*")
        elif p == SpecialChars.WILDCARD_SINGLE:
            pieces.append(".")
        else:
            pieces.append(_re_escape(fold(str(p))))
    return Pred(col, "regex", "(?s)^" + "".join(pieces) + "$", cased, as_text)


def _regex_pred(col: str, value: SigmaRegularExpression) -> Node:
    flags = ""
    if SigmaRegularExpressionFlag.IGNORECASE in value.flags:
        flags += "i"
    if SigmaRegularExpressionFlag.MULTILINE in value.flags:
        flags += "m"
    if SigmaRegularExpressionFlag.DOTALL in value.flags:
        flags += "s"
    pattern = value.regexp.to_plain() if isinstance(value.regexp, SigmaString) else str(value.regexp)
    if flags:
        pattern = f"(?{flags})" + pattern
    check_regex(pattern)
    return Pred(col, "regex", pattern, True, _numeric(col))


_CMP = {"LT": "lt", "LTE": "le", "GT": "gt", "GTE": "ge", "NEQ": "ne"}


def _value_pred(col: str, value: Any) -> Node:
    if isinstance(value, SigmaExpansion):
        return Or(tuple(_value_pred(col, v) for v in value.values))
    if isinstance(value, SigmaNull):
        return Pred(col, "null")
    if isinstance(value, SigmaExists):
        return Pred(col, "notnull" if value.exists else "null")
    if isinstance(value, SigmaRegularExpression):
        return _regex_pred(col, value)
    if isinstance(value, SigmaCIDRExpression):
        if _numeric(col):
            raise Unsupported(f"|cidr on the numeric field {col}")
        pats = [SigmaString(p) for p in value.expand(wildcard="*")]
        return Or(tuple(_string_pred(col, p) for p in pats))
    if isinstance(value, SigmaCompareExpression):
        if not _numeric(col):
            raise Unsupported(f"numeric comparison on the text field {col}")
        return Pred(col, _CMP[value.op.name], exact(value.number.number))
    if isinstance(value, SigmaFieldReference):
        if value.starts_with or value.ends_with:
            raise Unsupported("|fieldref with startswith/endswith is not supported")
        other = _column(value.field, None)
        return Pred(col, "colref", other)
    if isinstance(value, SigmaBool):
        if pa.types.is_boolean(F.VIEW_TYPES[col]):  # a flag the kernel set (file.deleted)
            return Pred(col, "eq", value.boolean)
        return Pred(col, "eq", "true" if value.boolean else "false", False)
    if isinstance(value, SigmaNumber):
        if _numeric(col):
            return Pred(col, "eq", exact(value.number))
        return Pred(col, "eq", str(exact(value.number)), True)
    if isinstance(value, SigmaString):
        return _string_pred(col, value)
    raise Unsupported(f"value type {type(value).__name__} ({value!r}) is not supported")


# -- fields -----------------------------------------------------------------------------


def _column(name: str | None, logsource: str | None) -> str:
    if name is None:
        raise Unsupported("a field-less value where a field is needed")
    col = F.native_column(name)
    if col is not None:
        return col
    reason = F.UNSUPPORTED_FIELDS.get(name)
    if reason:
        raise Unsupported(f"field {name!r}: {reason}")
    where = f" for log source {logsource}" if logsource else ""
    raise Unsupported(f"field {name!r} has no forensix equivalent{where}")


def _audit_type(value: Any, watch: AuditWatch | None = None) -> Node:
    if not isinstance(value, SigmaString) or value.contains_special():
        raise Unsupported(f"auditd type must be a plain value, not {value!r}")
    t = value.to_plain().upper()
    spec = F.AUDIT_TYPES.get(t)
    if spec is None:
        return Const(False)  # a record type forensix never produces
    category, actions, present = spec
    parts: list[Node] = []
    if watch is not None and t == "PATH" and watch.perms is not None:
        parts.append(_perm_scope(watch.perms))
    if watch is not None and t == "SYSCALL" and watch.syscalls:
        parts.append(Pred("syscall", "in", watch.syscalls))
    if category:
        parts.append(Pred("event_category", "eq", category))
    if actions:
        parts.append(Pred("event_action", "in", tuple(actions)))
    if present:
        parts.append(Pred(present, "notnull"))
    return And(tuple(parts))


def _perm_scope(perms: frozenset[str]) -> Node:
    """The events whose auditd PATH record a watch with these permission classes logs."""
    actions, write_opens, read_opens = path_predicate_parts(perms)
    alts: list[Node] = []
    if actions:
        alts.append(Pred("event_action", "in", actions))
    is_open = Pred("event_action", "eq", "open")
    writes = Pred("file_flags", "bits", F.WRITE_OPEN_MASK)
    if write_opens and read_opens:
        alts.append(is_open)
    elif write_opens:
        alts.append(And((is_open, writes)))
    elif read_opens:
        alts.append(And((is_open, Not(writes))))
    return Or(tuple(alts)) if alts else Const(False)


def _keyword(value: Any) -> Node:
    if isinstance(value, SigmaString) and not value.contains_special():
        value = SigmaString("*" + value.to_plain().replace("*", "\\*").replace("?", "\\?") + "*")
    return Or(tuple(_value_pred(c, value) for c in F.KEYWORD_COLUMNS))


def _tree(node: Any, logsource: str, notes: list[str], watch: AuditWatch | None = None) -> Node:
    if isinstance(node, ConditionAND):
        return And(tuple(_tree(a, logsource, notes, watch) for a in node.args))
    if isinstance(node, ConditionOR):
        return Or(tuple(_tree(a, logsource, notes, watch) for a in node.args))
    if isinstance(node, ConditionNOT):
        return Not(_tree(node.args[0], logsource, notes, watch))
    if isinstance(node, ConditionFieldEqualsValueExpression):
        if logsource == "auditd" and node.field == "type":
            n = _audit_type(node.value, watch)
            if n == Const(False):
                notes.append(f"auditd record type {node.value} is never produced by forensix")
            return n
        return _value_pred(_column(node.field, logsource), node.value)
    if isinstance(node, ConditionValueExpression):
        return _keyword(node.value)
    raise Unsupported(f"condition element {type(node).__name__} is not supported")


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


# -- whole rules ------------------------------------------------------------------------


def _meta(rule: SigmaRule, source: str) -> dict[str, Any]:
    title = rule.title or "(untitled)"
    rid = str(rule.id) if rule.id else (rule.name or title.lower().replace(" ", "_"))
    level = rule.level.name.lower() if rule.level else "medium"
    tags = [f"{t.namespace}.{t.name}" for t in (rule.tags or [])]
    return {
        "rule_id": rid,
        "title": title,
        "level": level,
        "tags": tags,
        "source": source,
        "description": (rule.description or "").strip(),
        "name": rule.name or "",
    }


def _logsource_text(rule: SigmaRule) -> str:
    ls = rule.logsource
    return "/".join(x for x in (ls.product, ls.category, ls.service) if x) or "-"


def compile_rule(rule: SigmaRule, source: str = "", integers: Mapping[int, int] | None = None) -> CompiledRule:
    """Compile one parsed Sigma rule; never raises for a bad rule, reports it instead.

    ``integers``: the stand-ins its loader put in place of integers a float cannot hold
    (``numbers.stand_ins``): they are compiled as those integers."""
    with exact_integers(integers or {}):
        return _compile_rule(rule, source)


def _compile_rule(rule: SigmaRule, source: str) -> CompiledRule:
    meta = _meta(rule, source)
    if rule.errors:
        reason = "; ".join(str(e).split("\n")[0] for e in rule.errors)
        return CompiledRule(logsource=_logsource_text(rule), status="error", reason=reason, **meta)
    try:
        key = logsource_key(rule)
        processed = copy.deepcopy(rule)
        _PIPELINE.apply(processed)
        notes: list[str] = []
        watch = audit_watch(rule.logsource.definition, rule.title or "") if key == "auditd" else None
        bodies = [_tree(c.parsed, key, notes, watch) for c in processed.detection.parsed_condition]
        body = simplify(Or(tuple(bodies)))
    except Unsupported as e:
        return CompiledRule(
            logsource=_logsource_text(rule), status="unsupported", reason=str(e).split("\n")[0], **meta
        )
    except SigmaError as e:
        return CompiledRule(
            logsource=_logsource_text(rule), status="error", reason=str(e).split("\n")[0], **meta
        )
    scope = scope_of(key)
    compiled = CompiledRule(logsource=key, status="ok", scope=scope, body=body, **meta)
    if compiled.where == Const(False):
        compiled.status = "unsupported"
        compiled.reason = "; ".join(notes) or "the detection can never match a forensix event"
    return compiled
