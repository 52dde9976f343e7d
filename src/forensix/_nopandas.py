"""Keep pandas out of the recorder.

pyarrow, on its first conversion of a Python list (``pa.array([...])``,
``Table.from_pylist``), imports pandas just to ask whether the list is a pandas object:
1 s of start-up and 30 MB of resident memory in a recorder that never uses pandas. Made to
find no pandas at that first question, pyarrow remembers the answer; an explicit
``to_pandas()`` later still imports it (pyarrow tries again when asked for pandas itself).
"""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Sequence
from types import ModuleType

import pyarrow as pa

__all__ = ["tell_pyarrow_no_pandas"]


class _NoPandas(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Sequence[str] | None, target: ModuleType | None = None) -> None:
        if name == "pandas":
            raise ImportError("pandas is kept out of the recorder (forensix._nopandas)")


def tell_pyarrow_no_pandas() -> None:
    if "pandas" in sys.modules:
        return  # already imported by someone who wants it: nothing to save
    finder = _NoPandas()
    sys.meta_path.insert(0, finder)
    try:
        pa.array([0])
    finally:
        sys.meta_path.remove(finder)
