"""Executed files preserved by content (SHA-256): the store, the collector, YARA scans."""

from forensix.artifacts.collect import Collector
from forensix.artifacts.store import ArtifactStore, Put, artifacts_dir

__all__ = ["ArtifactStore", "Collector", "Put", "artifacts_dir"]
