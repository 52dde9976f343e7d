"""numpy views of the sensor's C structs, built from abi.json (the object's BTF)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["enum", "struct_dtype"]


def struct_dtype(abi: dict[str, Any], name: str) -> np.dtype:
    s = abi["structs"][name]
    names, formats, offsets = [], [], []
    for m in s["members"]:
        base = np.dtype(f"<{'i' if m['kind'] == 'i' else 'u'}{m['size']}")
        names.append(m["name"])
        formats.append(base if m["count"] == 1 else (base, (m["count"],)))
        offsets.append(m["offset"])
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": s["size"]})


def enum(abi: dict[str, Any], name: str) -> dict[str, int]:
    return {k: int(v) for k, v in abi["enums"][name].items()}
