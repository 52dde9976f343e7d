"""The log host: mTLS listener, verification on receipt, evidence, ingest, ``verify``."""

from pathlib import Path

from forensix.server.listener import LogServer, ServerConfig
from forensix.server.verify import Verdicts, verify_evidence

__all__ = ["LogServer", "ServerConfig", "Verdicts", "evidence_dir_for", "verify_evidence"]


def evidence_dir_for(store: str) -> Path:
    """Where the log host keeps the evidence of a store: ``STORE.evidence/`` beside it."""
    return Path(str(store) + ".evidence")
