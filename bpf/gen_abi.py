"""Extract the event ABI from the compiled sensor's BTF, and the syscall numbers.

Writes JSON: {"structs": {name: {"size": n, "members": [{name, offset, type, size, count}]}},
"enums": {name: {member: value}}, "syscalls": {name: nr}, "rodata": {var: {offset, size}}}.
The decoder builds its numpy dtypes from this; nothing restates events.h by hand.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

WANT_STRUCTS = {"fx_event", "fx_flow_key", "fx_flow", "fx_counter", "fx_config", "fx_open_key", "fx_open_rep",
                "fx_tty_budget", "fx_drop_key", "fx_drop", "fx_control"}


def btf_types(obj: str) -> list[dict]:
    bpftool = shutil.which("bpftool") or "/usr/sbin/bpftool"
    out = subprocess.run(
        [bpftool, "-j", "btf", "dump", "file", obj], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out)["types"]


def main(obj: str, unistd: str) -> None:
    types = {t["id"]: t for t in btf_types(obj)}

    def resolve(tid: int) -> tuple[str, int, int]:
        """(scalar kind, element size, element count) of a member type."""
        t = types[tid]
        kind = t["kind"]
        if kind in ("TYPEDEF", "CONST", "VOLATILE"):
            return resolve(t["type_id"])
        if kind == "INT":
            enc = "i" if t.get("encoding") == "SIGNED" else "u"
            if t.get("encoding") == "CHAR" or t["name"] == "char":
                enc = "u"
            return enc, t["size"], 1
        if kind == "ARRAY":
            k, sz, n = resolve(t["type_id"])
            return k, sz, n * t["nr_elems"]
        if kind == "ENUM":
            return "u", t["size"], 1
        if kind == "PTR":
            return "u", 8, 1
        raise SystemExit(f"unsupported member type {kind} in the ABI")

    structs: dict[str, dict] = {}
    enums: dict[str, dict] = {}
    rodata: dict[str, dict] = {}
    for t in types.values():
        if t["kind"] == "STRUCT" and t["name"] in WANT_STRUCTS:
            members = []
            for m in t["members"]:
                k, sz, n = resolve(m["type_id"])
                members.append(
                    {"name": m["name"], "offset": m["bits_offset"] // 8, "kind": k, "size": sz, "count": n}
                )
            structs[t["name"]] = {"size": t["size"], "members": members}
        elif t["kind"] == "ENUM" and t["name"].startswith("fx_"):
            enums[t["name"]] = {v["name"]: v["val"] for v in t["values"]}
        elif t["kind"] == "DATASEC" and t["name"] == ".rodata":
            for v in t["vars"]:
                rodata[types[v["type_id"]]["name"]] = {"offset": v["offset"], "size": v["size"]}
    if list(rodata) != ["cfg"]:
        raise SystemExit(f".rodata must hold only `cfg` (the loader writes it at offset 0), not {list(rodata)}")
    missing = WANT_STRUCTS - set(structs)
    if missing:
        raise SystemExit(f"ABI structs missing from BTF: {sorted(missing)}")
    syscalls = {}
    for line in open(unistd):
        m = re.match(r"#define __NR_(\w+)\s+(\d+)", line)
        if m:
            syscalls[m.group(1)] = int(m.group(2))
    json.dump(
        {"structs": structs, "enums": enums, "syscalls": syscalls, "rodata": rodata},
        sys.stdout,
        indent=1,
        sort_keys=True,
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
