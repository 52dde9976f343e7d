"""Loading rule files and trees: each bad or unsupported rule is reported, the rest load.

A tree such as SigmaHQ's ``rules/`` directory is walked for ``*.yml`` / ``*.yaml``; every
file is parsed on its own (broken YAML spoils only that file), every document of a file
is one rule, and each rule comes back as a ``CompiledRule`` whose ``status`` is ``ok``,
``unsupported`` (valid Sigma that forensix cannot evaluate, with the reason) or ``error``
(invalid Sigma, with pySigma's message).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml
from sigma.collection import SigmaCollection
from sigma.exceptions import SigmaError
from sigma.rule import SigmaRule

from forensix.errors import UsageError
from forensix.rules.compile import CompiledRule, compile_rule
from forensix.rules.numbers import stand_ins

__all__ = [
    "Coverage", "RuleSet", "builtin_rules_dir", "coverage", "load_paths", "load_rules", "load_text",
    "start_summary",
]

_SUFFIXES = (".yml", ".yaml")


@dataclass
class RuleSet:
    """Every rule looked at: those that run, and those that do not (with why)."""

    rules: list[CompiledRule] = field(default_factory=list)

    @property
    def ok(self) -> list[CompiledRule]:
        return [r for r in self.rules if r.ok]

    @property
    def problems(self) -> list[CompiledRule]:
        return [r for r in self.rules if not r.ok]

    def extend(self, other: RuleSet) -> None:
        seen = {r.rule_id for r in self.ok}
        for r in other.rules:
            if r.ok and r.rule_id in seen:
                r.status, r.reason = "error", f"duplicate rule id {r.rule_id} (already loaded)"
            elif r.ok:
                seen.add(r.rule_id)
            self.rules.append(r)


def builtin_rules_dir() -> Path:
    """The curated default rule set shipped with forensix."""
    return Path(str(resources.files("forensix.rules").joinpath("builtin")))


def _error(source: str, message: str) -> CompiledRule:
    return CompiledRule(
        rule_id=source, title="(not parsed)", level="", tags=[], source=source,
        logsource="-", status="error", reason=message,
    )


def load_text(text: str, source: str = "<text>") -> RuleSet:
    """Rules from the text of one YAML file (one rule per document)."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        first = str(e).replace("\n", " ")
        return RuleSet([_error(source, f"broken YAML: {first}")])
    out = RuleSet()
    bad = [i for i, d in enumerate(docs) if not isinstance(d, dict)]
    for i in bad:
        out.rules.append(_error(f"{source}#{i + 1}", "a rule must be a YAML mapping"))
    docs = [d for d in docs if isinstance(d, dict)]
    for d in [d for d in docs if "correlation" in d]:
        cr = _error(source, "correlation rules are not supported (forensix evaluates single events)")
        cr.title, cr.status = str(d.get("title") or ""), "unsupported"
        cr.rule_id = str(d.get("id") or source)
        out.rules.append(cr)
    docs = [d for d in docs if "correlation" not in d]
    if not docs:
        return out
    docs, integers = stand_ins(docs)  # integers a float cannot hold, kept exact (rules.numbers)
    try:
        coll = SigmaCollection.from_dicts(docs, collect_errors=True, resolve_references=True)
    except SigmaError as e:
        return RuleSet(out.rules + [_error(source, str(e).split("\n")[0])])
    rules = [r for r in coll.rules if isinstance(r, SigmaRule)]
    others = [r for r in coll.rules if not isinstance(r, SigmaRule)]
    multi = len(rules) > 1
    for i, r in enumerate(rules):
        out.rules.append(compile_rule(r, f"{source}#{i + 1}" if multi else source, integers))
    for o in others:
        title = getattr(o, "title", "") or ""
        cr = _error(source, f"{type(o).__name__.replace('Sigma', '').lower()} rules are not supported")
        cr.title = title
        cr.status = "unsupported"
        out.rules.append(cr)
    for err in coll.errors:
        if not any(err in getattr(r, "errors", []) for r in rules):
            out.rules.append(_error(source, str(err).split("\n")[0]))
    return out


def _files(path: Path) -> Iterable[Path]:
    if path.is_dir():
        yield from sorted(p for p in path.rglob("*") if p.suffix in _SUFFIXES and p.is_file())
    elif path.is_file():
        yield path
    else:
        raise UsageError(f"no rule file or directory at {path}", "give a .yml file or a directory of them")


def load_paths(paths: Sequence[str | Path]) -> RuleSet:
    """Rules from files and directories (recursively)."""
    out = RuleSet()
    for p in paths:
        for f in _files(Path(p)):
            try:
                text = f.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                out.rules.append(_error(str(f), f"cannot read: {e}"))
                continue
            out.extend(load_text(text, str(f)))
    return out


def load_rules(paths: Sequence[str | Path] = (), *, builtin: bool = True) -> RuleSet:
    """The curated set (unless ``builtin`` is False) plus the rules under ``paths``."""
    out = RuleSet()
    if builtin:
        out.extend(load_paths([builtin_rules_dir()]))
    if paths:
        out.extend(load_paths(paths))
    return out


@dataclass(frozen=True)
class Coverage:
    """What a rule tree gives forensix: how many rules load, how many run (live and in a
    hunt, the same rules both ways), by log source, and the rest by the reason they do not."""

    loaded: int
    runnable: int
    by_logsource: dict[str, int]
    rejected: dict[str, int]  # reason -> rules

    def lines(self) -> list[str]:
        head = f"{self.loaded} rules loaded: {self.runnable} runnable (live and in hunts), {self.loaded - self.runnable} not"
        out = [head]
        out += [f"  runnable  {n:>5}  {src}" for src, n in self.by_logsource.items()]
        out += [f"  rejected  {n:>5}  {why}" for why, n in self.rejected.items()]
        return out


def coverage(rs: RuleSet) -> Coverage:
    by_src: dict[str, int] = {}
    for r in rs.ok:
        by_src[r.logsource] = by_src.get(r.logsource, 0) + 1
    why: dict[str, int] = {}
    for r in rs.problems:
        reason = f"{r.status}: {r.reason}"
        why[reason] = why.get(reason, 0) + 1
    return Coverage(
        loaded=len(rs.rules), runnable=len(rs.ok),
        by_logsource=dict(sorted(by_src.items(), key=lambda kv: (-kv[1], kv[0]))),
        rejected=dict(sorted(why.items(), key=lambda kv: (-kv[1], kv[0]))),
    )


def _short_reason(r: CompiledRule) -> str:
    """A reason without the rule-specific tail: `product 'windows'`, `category 'proxy' is not
    recorded`, so that rules rejected for the same cause count together."""
    if r.status == "error":
        return "broken (each named below)"
    reason = r.reason or r.status
    if reason.startswith("product "):
        return reason.split(":", 1)[0]
    return reason.split(" (", 1)[0]


def _linux(r: CompiledRule) -> bool:
    """A rule meant for a Linux host (its rejection is worth a line of its own), or a
    broken rule (whose author wants to know)."""
    return r.status == "error" or r.logsource == "linux" or r.logsource.startswith("linux/")


def start_summary(rs: RuleSet, paths: Sequence[str | Path], max_reasons: int = 8) -> list[str]:
    """What a recorder says at start about its rules: one coverage line, the rejected
    rules counted by reason (a SigmaHQ checkout has hundreds of Windows rules), each
    rejected Linux rule by name, and the command that lists them all."""
    out = [coverage(rs).lines()[0].replace("rules loaded", "rules loaded (curated set and --rules)")]
    problems = rs.problems
    if not problems:
        return out
    why: dict[str, int] = {}
    for r in problems:
        why[_short_reason(r)] = why.get(_short_reason(r), 0) + 1
    ranked = sorted(why.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = ", ".join(f"{n} {reason}" for reason, n in ranked[:max_reasons])
    rest = sum(n for _, n in ranked[max_reasons:])
    more = f", {rest} for {len(ranked) - max_reasons} other reasons" if rest else ""
    out.append(f"rules not run: {shown}{more}")
    out += [f"rule not run: {r.source}: {r.status}: {r.reason}" for r in problems if _linux(r)]
    out.append("every rule not run, with why: forensix rules check " + " ".join(str(p) for p in paths) + " --list")
    return out
