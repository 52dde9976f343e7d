"""What an auditd rule would have been logged for: its watch, from the rule's `definition`.

auditd writes a PATH or SYSCALL record only for what its configuration watches: ``-w
/etc/ld.so.preload -p wa`` logs writes and attribute changes of that file, never the
dynamic loader reading it at every exec. forensix records every event, so a SigmaHQ
``service: auditd`` rule run on forensix events must be narrowed to what its watch would
have logged, or "Modification of ld.so.preload" fires on every program started while the
file exists. The watch comes from the rule's ``logsource.definition`` (``-w PATH -p
PERMS`` lines give the permission classes; ``-a ... -S NAME`` lines the syscalls); a rule
that gives none is read by what its title says it detects (a modification, change,
creation, write, deletion or removal is ``wa``; anything else, such as discovery by
reading a file, keeps every access). docs/rules.md has the mapping.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["PERM_ACTIONS", "AuditWatch", "audit_watch", "path_predicate_parts"]

# auditd's permission classes (auditctl -p r w x a) -> forensix event actions. Opens are
# split by their flags: an open for writing or creating is ``w``, any other open ``r``.
PERM_ACTIONS: dict[str, tuple[str, ...]] = {
    "r": (),  # read-only opens, added by flags
    "w": ("rename", "link", "symlink", "mkdir", "truncate", "unlink", "rmdir", "mknod"),
    "a": ("chmod", "chown", "utimes", "setxattr", "removexattr"),
    "x": ("exec",),
}

_WATCH = re.compile(r"(?:^|\s)-w\s+(\S+)(?:\s+-p\s+([rwxa]+))?")
_SYSCALL = re.compile(r"(?:^|\s)-S\s+([\w,]+)")
# Titles that name a change to the watched file: auditd rules for those are `-p wa`.
_CHANGE_TITLE = re.compile(r"\b(modif|chang|creat|writ|tamper|delet|remov|replac)", re.IGNORECASE)


@dataclass(frozen=True)
class AuditWatch:
    """The permission classes a rule's PATH records stand for, and the syscalls of its
    SYSCALL records (None: any). ``origin`` says where they came from, for `rules list`."""

    perms: frozenset[str] | None
    syscalls: tuple[str, ...] | None
    origin: str


def audit_watch(definition: str | None, title: str) -> AuditWatch:
    """The watch an auditd rule assumes: from its definition, else from its title."""
    text = definition or ""
    watches = _WATCH.findall(text)
    syscalls = tuple(sorted({s for group in _SYSCALL.findall(text) for s in group.split(",") if s}))
    if watches:
        # a watch without -p logs every class (auditctl's default is rwxa)
        perms = frozenset(c for _, p in watches for c in (p or "rwxa"))
        return AuditWatch(perms, syscalls or None, "definition")
    if _CHANGE_TITLE.search(title):
        return AuditWatch(frozenset("wa"), syscalls or None, "title")
    return AuditWatch(None, syscalls or None, "definition" if syscalls else "none")


def path_predicate_parts(perms: frozenset[str]) -> tuple[tuple[str, ...], bool, bool]:
    """(actions, write opens, read-only opens) that a PATH record of ``perms`` covers."""
    actions = tuple(sorted({a for p in perms for a in PERM_ACTIONS[p]}))
    return actions, "w" in perms, "r" in perms


