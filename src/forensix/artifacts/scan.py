"""YARA scans over the preserved artifacts (yara-x)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from forensix.artifacts.store import ArtifactStore
from forensix.errors import UsageError

__all__ = ["compile_rules", "scan"]

_SCHEMA = pa.schema([("sha256", pa.string()), ("size", pa.uint64()), ("rule", pa.string()),
                     ("namespace", pa.string()), ("tags", pa.list_(pa.string()))])


def compile_rules(path: Path) -> object:
    import yara_x

    try:
        text = path.read_text()
    except OSError as e:
        raise UsageError(f"cannot read the YARA rules {path}: {e.strerror}", "give a readable .yar file") from e
    try:
        return yara_x.compile(text)
    except yara_x.CompileError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "compile error"
        raise UsageError(f"the YARA rules in {path} do not compile: {first}", "fix the rule (yr check FILE)") from e


def scan(store: ArtifactStore, rules: object) -> pa.Table:
    """One row per (artifact, matching rule)."""
    import yara_x

    assert isinstance(rules, yara_x.Rules)
    scanner = yara_x.Scanner(rules)
    rows = []
    for blob in store.blobs():
        data = store.read(blob.name)
        for r in scanner.scan(data).matching_rules:
            rows.append({"sha256": blob.name, "size": len(data), "rule": r.identifier, "namespace": r.namespace,
                         "tags": list(r.tags)})
    return pa.Table.from_pylist(rows, schema=_SCHEMA)
