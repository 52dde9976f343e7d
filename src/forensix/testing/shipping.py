"""A real shipping agent's sink for tests that drive a log host frame by frame.

Each host gets its own certificate from the test's authority, its own copy of the seal key
and its own spool; frames go out at once (no coalescing) over real mutual TLS.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from forensix.agent.shipping import ShippingConfig, ShippingSink
from forensix.model.host import HostInfo
from forensix.pki.authority import Authority
from forensix.pki.tls import client_context

__all__ = ["host_info", "shipping_sink"]


def shipping_sink(pki: Authority, host: str, tmp: Path, addr: tuple[str, int], *, start: bool = True,
                  **config: Any) -> ShippingSink:
    """The agent sink of ``host``, spooling in ``tmp/spool-HOST`` (``config``: other
    ``ShippingConfig`` fields). The seal key is copied into ``tmp`` once: a second sink of the
    host goes on with the key the first evolved, as a restarted agent does. ``start=False``:
    nothing is sent until ``sink.shipper.start()``."""
    b = pki.bundle(host)
    seal = tmp / f"{host}.seal"
    if not seal.exists():
        shutil.copy(b.seal, seal)
    cfg = ShippingConfig(**{"host": host, "server": addr, "context": client_context(b.ca, b.cert, b.key),
                            "seal_key": seal, "spool_dir": tmp / f"spool-{host}", "heartbeat_s": 0.5,
                            "coalesce_s": 0, **config})
    return ShippingSink(cfg, start=start)


def host_info(host: str) -> HostInfo:
    """The identity of a made-up host named ``host`` (id, name, boot, kernel)."""
    return HostInfo(f"id-{host}", host, f"boot-{host}", "6.18")
