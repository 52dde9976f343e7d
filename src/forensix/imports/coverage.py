"""What a store's imported sources cannot answer, for the report to say so."""

from __future__ import annotations

from forensix.errors import StoreError
from forensix.store.base import Reader

__all__ = ["unanswered"]


def unanswered(reader: Reader) -> list[str]:
    """One note per imported source in the store: the questions it leaves open."""
    from forensix.imports import FORMATS

    try:
        t = reader.query("SELECT DISTINCT event_module FROM events WHERE event_module IS NOT NULL "
                         "AND event_action <> 'import-warning' ORDER BY 1")
    except StoreError:
        return []  # a store from before event_module (format /12): nothing was imported into it
    notes = []
    for module in t.column("event_module").to_pylist():
        spec = FORMATS.get(str(module))
        if spec is not None:
            notes.append(f"events imported from {module} cannot answer: " + "; ".join(spec.cannot))
    return notes
