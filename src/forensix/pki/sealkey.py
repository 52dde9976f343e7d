"""Forward-secure seal keys: one-way evolution per epoch, atomic erasure of old keys.

A host's seal key starts as 32 random bytes made at enrollment (``forensix pki issue``),
given to the agent and kept by the log host. Time is cut into epochs of ``interval_s``
seconds from ``t0_ns``. The key of epoch e+1 is ``HMAC-SHA256(key_e, "forensix/evolve" || e)``;
the agent keeps only the current one, so whoever takes the host at epoch k cannot compute
the key of any epoch before k. The log host keeps key_0 and derives any epoch's key.

Batches are MACed with a key derived from the epoch key (domain separation: the MAC key
never appears as input to the evolution). Each batch names its epoch and its sealing
time, and a verifier checks the MAC with *that* epoch's key and that the sealing time
falls in that epoch (CVE-2023-31439: journald's verifier accepted entries not covered by
the epoch it checked them against).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

from forensix.errors import ForensixError

__all__ = [
    "DEFAULT_INTERVAL_S",
    "KeySchedule",
    "SealKeyError",
    "SealState",
    "evolve",
    "mac_key",
    "write_atomic",
]

DEFAULT_INTERVAL_S = 60
_EVOLVE = b"forensix/evolve"
_MAC = b"forensix/mac"
KEY_LEN = 32


class SealKeyError(ForensixError):
    """A seal key file is missing, malformed, or for another host."""


def evolve(key: bytes, epoch: int) -> bytes:
    """The key of epoch+1 from the key of epoch (one way)."""
    return hmac.new(key, _EVOLVE + epoch.to_bytes(8, "big"), hashlib.sha256).digest()


def mac_key(key: bytes) -> bytes:
    """The batch MAC key of an epoch key."""
    return hmac.new(key, _MAC, hashlib.sha256).digest()


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data``: temp file, fsync, rename, fsync the directory."""
    # the thread too: two threads of one process replacing the same file must not share a temp name
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


@dataclass
class SealState:
    """One host's seal key at one epoch (the agent's copy evolves; the server's stays at 0)."""

    host: str
    t0_ns: int
    interval_s: int
    epoch: int
    key: bytes
    # The serial (hex) of the certificate issued with this key: the enrollment it belongs to.
    # Empty for keys made before re-enrollment existed (then any certificate of the host goes).
    serial: str = ""

    @classmethod
    def new(cls, host: str, t0_ns: int, interval_s: int = DEFAULT_INTERVAL_S, serial: str = "") -> SealState:
        return cls(host, t0_ns, interval_s, 0, secrets.token_bytes(KEY_LEN), serial)

    @property
    def enrollment(self) -> str:
        """Names the enrollment (constant while the key evolves): certificate serial and t0."""
        return f"{self.serial or '-'}@{self.t0_ns}"

    def epoch_of(self, ts_ns: int) -> int:
        return max(0, (ts_ns - self.t0_ns) // (self.interval_s * 10**9))

    def window(self, epoch: int) -> tuple[int, int]:
        start = self.t0_ns + epoch * self.interval_s * 10**9
        return start, start + self.interval_s * 10**9

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "format": "forensix-seal/1",
                "host": self.host,
                "t0_ns": self.t0_ns,
                "interval_s": self.interval_s,
                "epoch": self.epoch,
                "key": self.key.hex(),
                **({"serial": self.serial} if self.serial else {}),
            },
            indent=1,
        ).encode()

    @classmethod
    def load(cls, path: Path) -> SealState:
        try:
            d = json.loads(path.read_bytes())
            if d.get("format") != "forensix-seal/1":
                raise ValueError("not a forensix seal key")
            key = bytes.fromhex(d["key"])
            if len(key) != KEY_LEN:
                raise ValueError("bad key length")
            return cls(str(d["host"]), int(d["t0_ns"]), int(d["interval_s"]), int(d["epoch"]), key,
                       str(d.get("serial", "")))
        except FileNotFoundError:
            raise SealKeyError(
                f"no seal key at {path}", "enroll the host: forensix pki issue HOST, copy its bundle"
            ) from None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SealKeyError(f"seal key {path} is unreadable: {e}", "re-enroll the host") from e

    def save(self, path: Path) -> None:
        write_atomic(path, self.to_json())

    def advance_to(self, epoch: int) -> bool:
        """Evolve (in memory) to ``epoch``; returns whether the key changed."""
        if epoch <= self.epoch:
            return False
        key = self.key
        for e in range(self.epoch, epoch):
            key = evolve(key, e)
        self.key, self.epoch = key, epoch
        return True


class KeySchedule:
    """The verifier's side: any epoch's MAC key from key_0, derived forward and cached."""

    def __init__(self, initial: SealState, max_epoch: int) -> None:
        if initial.epoch != 0:
            raise SealKeyError(
                f"the verifier needs the enrollment key (epoch 0) of {initial.host}, got epoch {initial.epoch}",
                "use the seal key from the PKI directory (seal/HOST.json), not the agent's",
            )
        self.state = initial
        self.max_epoch = max_epoch
        self._keys: list[bytes] = [initial.key]

    def mac_key(self, epoch: int) -> bytes | None:
        """None when the epoch is beyond what the verifier accepts (a forged huge epoch)."""
        if epoch < 0 or epoch > self.max_epoch:
            return None
        while len(self._keys) <= epoch:
            e = len(self._keys) - 1
            self._keys.append(evolve(self._keys[e], e))
        return mac_key(self._keys[epoch])
