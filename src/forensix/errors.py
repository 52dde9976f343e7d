"""The one exception root of forensix.

Every error a user can cause or meet derives from ``ForensixError`` and carries a
``hint``: what to do about it. The CLI turns these into a clean message (cause, then
fix) at the boundary; nothing below the CLI prints.
"""

from __future__ import annotations

__all__ = [
    "DecodeError",
    "ForensixError",
    "KernelFeatureError",
    "NotAStoreError",
    "PrivilegeError",
    "SensorError",
    "StoreBusyError",
    "StoreError",
    "UsageError",
]


class ForensixError(Exception):
    """Root of every forensix error. ``hint`` says what the user can do."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class UsageError(ForensixError, ValueError):
    """A value given by the user is not valid (a time, an id, a path)."""


class StoreError(ForensixError, OSError):
    """The store cannot be opened, read or written."""


class NotAStoreError(StoreError):
    """The file exists but is not a forensix store; it is never overwritten."""


class StoreBusyError(StoreError):
    """Another process holds the store and offers no query socket."""


class SensorError(ForensixError, RuntimeError):
    """The kernel sensor cannot be built, loaded or attached."""


class PrivilegeError(SensorError, PermissionError):
    """Recording needs root (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN)."""


class KernelFeatureError(SensorError):
    """The running kernel lacks something the sensor needs (BTF, tracefs, an attach type)."""


class DecodeError(ForensixError, ValueError):
    """A record from the ring buffer or the wire cannot be decoded."""
