"""Detection: Sigma rules on the live stream and over history, plus built-in detectors.

Data path: rule files -> ``loader`` (pySigma parse, per-rule problems) -> ``compile``
(the forensix pipeline for Sigma's Linux taxonomy, then one predicate IR) -> two
evaluators of that IR: ``sql`` for the retro-hunt over a store (``hunt``), ``live`` for
Arrow batches (``engine.LiveEngine``, a recorder ``Sink``). ``alerts`` builds alert rows
and sends them to outputs; ``detectors`` watch the recorder itself.
"""

from typing import TYPE_CHECKING, Any

from forensix.rules.alerts import (
    CallbackOutput,
    JsonlOutput,
    SinkOutput,
    WebhookOutput,
    alert_records,
    report_command,
)
from forensix.rules.detectors import default_detectors
from forensix.rules.engine import LiveEngine
from forensix.rules.hunt import hunt
from forensix.rules.ir import CompiledRule
from forensix.rules.loader import RuleSet, builtin_rules_dir, load_paths, load_rules, load_text

if TYPE_CHECKING:
    from forensix.rules.compile import compile_rule

__all__ = [
    "CallbackOutput",
    "CompiledRule",
    "JsonlOutput",
    "LiveEngine",
    "RuleSet",
    "SinkOutput",
    "WebhookOutput",
    "alert_records",
    "builtin_rules_dir",
    "compile_rule",
    "default_detectors",
    "hunt",
    "load_paths",
    "load_rules",
    "load_text",
    "report_command",
    "rules_engine",
]


def __getattr__(name: str) -> Any:
    """``compile_rule`` on first use: importing it loads pySigma (~16 MB resident), which a
    recorder, evaluating rules compiled in another process, never needs."""
    if name == "compile_rule":
        from forensix.rules.compile import compile_rule

        return compile_rule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def rules_engine(
    paths: "list[str] | tuple[str, ...]" = (),
    *,
    builtin: bool = True,
    outputs: "list[object] | tuple[object, ...]" = (),
    self_pids: "tuple[int, ...]" = (),
    protected: "tuple[str, ...]" = (),
) -> LiveEngine:
    """A live engine with the curated rules (and ``paths``) and the built-in detectors:
    what `forensix record` plugs in as a sink."""
    rs = load_rules(list(paths), builtin=builtin)
    return LiveEngine(
        rs.ok,
        detectors=default_detectors(self_pids, protected),
        outputs=list(outputs),  # type: ignore[arg-type]
    )
