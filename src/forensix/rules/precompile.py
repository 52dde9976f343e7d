"""Rules compiled in a short-lived child process, so that a recorder never loads pySigma.

Parsing Sigma needs pySigma and what it pulls in (pyparsing, jinja2, PyYAML): ~16 MB
resident that a recorder would keep for its whole life, though evaluating the compiled
rules needs none of it (``rules.ir`` is plain dataclasses). ``load_rules_isolated`` runs
``python -m forensix.rules.precompile``, which loads and compiles the rules exactly as
``loader.load_rules`` does and sends back the whole ``RuleSet`` (the rules that run and
those that do not, with why) pickled over its stdout. The data is ours both ways.

What it compiled is kept on disk (``rules.rule_cache``): the next start with the same
rule files, compiler and versions loads it in ~20 ms instead of starting the child.

A ``ForensixError`` in the child (a rule path that does not exist) comes back as the same
error class with the same message and hint; a child that dies says so with its last
line of stderr.
"""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import forensix
from forensix import errors
from forensix.errors import ForensixError
from forensix.rules import rule_cache
from forensix.rules.loader import RuleSet, load_rules

__all__ = ["cached_rules", "load_rules_isolated"]

log = logging.getLogger("forensix.recorder")
_DEFAULT: Path = Path("-")  # stands for rule_cache.cache_dir(), read when called

_TIMEOUT_S = 600.0  # SigmaHQ's whole tree (3000+ files) compiles in well under a minute


def _error_class(name: str) -> type[ForensixError]:
    cls = getattr(errors, name, None)
    return cls if isinstance(cls, type) and issubclass(cls, ForensixError) else ForensixError


def load_rules_isolated(paths: Sequence[str | Path] = (), *, builtin: bool = True,
                        cache: Path | None = _DEFAULT) -> RuleSet:
    """``loader.load_rules(paths, builtin=builtin)``, computed in a child process, or
    read from ``cache`` (a directory; default ``rule_cache.cache_dir()``, None: none)
    when the same rule files were compiled by the same compiler before."""
    where = rule_cache.cache_dir() if cache is _DEFAULT else cache
    if where is None:
        return _compile_in_child(paths, builtin)
    key = rule_cache.rules_key(paths, builtin)  # a missing rule path raises the loader's error here
    try:
        kept = rule_cache.get(where, key)
    except (rule_cache.UnsafeCache, OSError) as e:
        log.warning("compiled rules not cached: %s (only root may write %s; remove it, or set %s=off)",
                    e, where, rule_cache.CACHE_ENV)
        return _compile_in_child(paths, builtin)
    if kept is not None:
        return kept
    rs = _compile_in_child(paths, builtin)
    try:
        if rule_cache.rules_key(paths, builtin) == key:  # a file changed while compiling: keep nothing
            rule_cache.put(where, key, rs)
    except (rule_cache.UnsafeCache, ForensixError, OSError) as e:  # the rules are right; the next start compiles again
        log.warning("cannot keep the compiled rules in %s: %s (the next start compiles them again; "
                    "%s=DIR keeps them elsewhere, =off stops trying)", where, e, rule_cache.CACHE_ENV)
    return rs


def cached_rules(paths: Sequence[str | Path] = (), *, builtin: bool = True,
                 cache: Path | None = _DEFAULT) -> RuleSet | None:
    """What ``load_rules_isolated`` would give, if the cache holds it (~20 ms); None when the
    rules must be compiled (a miss, an unsafe or absent cache). A rule path that does not
    exist raises the loader's error, as compiling would: said before recording starts."""
    where = rule_cache.cache_dir() if cache is _DEFAULT else cache
    if where is None:
        for p in paths:  # the key's walk is what names a missing path
            rule_cache.rules_key([p], builtin=False)
        return None
    key = rule_cache.rules_key(paths, builtin)
    try:
        return rule_cache.get(where, key)
    except (rule_cache.UnsafeCache, OSError):  # load_rules_isolated says why when it compiles
        return None


def _compile_in_child(paths: Sequence[str | Path], builtin: bool) -> RuleSet:
    request = pickle.dumps(([str(p) for p in paths], builtin))
    # the child imports the forensix this process runs (a source tree given by PYTHONPATH,
    # or the one a script put on sys.path), whatever else is installed
    root = str(Path(forensix.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "forensix.rules.precompile"], input=request, capture_output=True,
            env=env, timeout=_TIMEOUT_S, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ForensixError(f"cannot compile the rules in a child process: {e}",
                            "check the rule paths with: forensix rules check PATH") from None
    reply: Any = None
    if done.returncode == 0:
        try:
            reply = pickle.loads(done.stdout)  # our own child's reply
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as e:
            reply = ("crash", f"unreadable reply ({e})")
    if reply is None:
        last = (done.stderr.decode(errors="replace").strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        reply = ("crash", last)
    kind = reply[0]
    if kind == "ok" and isinstance(reply[1], RuleSet):
        return reply[1]
    if kind == "error":
        _, name, message, hint = reply
        raise _error_class(name)(message, hint)
    raise ForensixError(f"the rule compiler process failed: {reply[1]}",
                        "check the rules with: forensix rules check PATH (it compiles them in this process)")


def _main() -> int:
    paths, builtin = pickle.loads(sys.stdin.buffer.read())  # from our parent
    reply: tuple[Any, ...]
    try:
        reply = ("ok", load_rules(paths, builtin=builtin))
    except ForensixError as e:
        reply = ("error", type(e).__name__, e.message, e.hint)
    sys.stdout.buffer.write(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_main())
