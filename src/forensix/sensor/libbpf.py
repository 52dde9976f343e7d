"""Thin ctypes binding of the few libbpf calls forensix needs (libbpf.so.1).

libbpf does the ELF, BTF, CO-RE relocation and attach work; this module only declares
the C signatures and turns NULL/negative returns into errno values. libbpf's own log
(including the verifier's) is captured so that a load failure can be shown to the user.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from typing import Any

__all__ = ["LibbpfError", "TestRunOpts", "check_int", "check_ptr", "clear_log", "lib", "log_lines"]


class LibbpfError(OSError):
    pass


def _load() -> ctypes.CDLL:
    name = ctypes.util.find_library("bpf") or "libbpf.so.1"
    for cand in (name, "libbpf.so.1", "/usr/lib/x86_64-linux-gnu/libbpf.so.1"):
        try:
            return ctypes.CDLL(cand, use_errno=True)
        except OSError:
            continue
    raise OSError("libbpf.so.1 not found")


lib: Any = _load()
_libc = ctypes.CDLL(None, use_errno=True)

_vp = ctypes.c_void_p
_cp = ctypes.c_char_p
_sigs: dict[str, tuple[Any, list[Any]]] = {
    "bpf_object__open_file": (_vp, [_cp, _vp]),
    "bpf_object__load": (ctypes.c_int, [_vp]),
    "bpf_object__close": (None, [_vp]),
    "bpf_object__find_map_by_name": (_vp, [_vp, _cp]),
    "bpf_object__next_map": (_vp, [_vp, _vp]),
    "bpf_object__find_program_by_name": (_vp, [_vp, _cp]),
    "bpf_object__next_program": (_vp, [_vp, _vp]),
    "bpf_program__name": (_cp, [_vp]),
    "bpf_program__fd": (ctypes.c_int, [_vp]),
    "bpf_program__set_autoload": (ctypes.c_int, [_vp, ctypes.c_bool]),
    "bpf_program__attach": (_vp, [_vp]),
    "bpf_program__attach_tracepoint": (_vp, [_vp, _cp, _cp]),
    "bpf_link__destroy": (ctypes.c_int, [_vp]),
    "bpf_link__fd": (ctypes.c_int, [_vp]),
    "bpf_map__name": (_cp, [_vp]),
    "bpf_map__fd": (ctypes.c_int, [_vp]),
    "bpf_map__set_max_entries": (ctypes.c_int, [_vp, ctypes.c_uint32]),
    "bpf_map__max_entries": (ctypes.c_uint32, [_vp]),
    "bpf_map__type": (ctypes.c_int, [_vp]),
    "bpf_map__set_initial_value": (ctypes.c_int, [_vp, _vp, ctypes.c_size_t]),
    "bpf_map__reuse_fd": (ctypes.c_int, [_vp, ctypes.c_int]),
    "bpf_map_lookup_elem": (ctypes.c_int, [ctypes.c_int, _vp, _vp]),
    "bpf_map_update_elem": (ctypes.c_int, [ctypes.c_int, _vp, _vp, ctypes.c_uint64]),
    "bpf_map_delete_elem": (ctypes.c_int, [ctypes.c_int, _vp]),
    "bpf_map_get_next_key": (ctypes.c_int, [ctypes.c_int, _vp, _vp]),
    "bpf_map_lookup_and_delete_batch": (
        ctypes.c_int,
        [ctypes.c_int, _vp, _vp, _vp, _vp, ctypes.POINTER(ctypes.c_uint32), _vp],
    ),
    "bpf_map_lookup_batch": (
        ctypes.c_int,
        [ctypes.c_int, _vp, _vp, _vp, _vp, ctypes.POINTER(ctypes.c_uint32), _vp],
    ),
    "bpf_map_update_batch": (ctypes.c_int, [ctypes.c_int, _vp, _vp, ctypes.POINTER(ctypes.c_uint32), _vp]),
    "libbpf_num_possible_cpus": (ctypes.c_int, []),
    "bpf_obj_get": (ctypes.c_int, [_cp]),
    "bpf_obj_pin": (ctypes.c_int, [ctypes.c_int, _cp]),
    "bpf_map_create": (ctypes.c_int, [ctypes.c_int, _cp, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32, _vp]),
    "bpf_map__pin": (ctypes.c_int, [_vp, _cp]),
    "bpf_link__pin": (ctypes.c_int, [_vp, _cp]),
    "bpf_obj_get_info_by_fd": (ctypes.c_int, [ctypes.c_int, _vp, ctypes.POINTER(ctypes.c_uint32)]),
    "btf__load_vmlinux_btf": (_vp, []),
    "btf__find_by_name_kind": (ctypes.c_int, [_vp, _cp, ctypes.c_uint32]),
    "btf__free": (None, [_vp]),
    "bpf_prog_test_run_opts": (ctypes.c_int, [ctypes.c_int, _vp]),
}


class TestRunOpts(ctypes.Structure):
    """struct bpf_test_run_opts (libbpf 1.x): what running a program once takes and gives."""

    _fields_ = [
        ("sz", ctypes.c_size_t), ("data_in", _vp), ("data_out", _vp), ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32), ("ctx_in", _vp), ("ctx_out", _vp), ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32), ("retval", ctypes.c_uint32), ("repeat", ctypes.c_int),
        ("duration", ctypes.c_uint32), ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    ]
for _name, (_res, _args) in _sigs.items():
    fn = getattr(lib, _name)
    fn.restype = _res
    fn.argtypes = _args

# -- libbpf's log, captured (libbpf_set_print passes a va_list: format it with vsnprintf)
_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
_libc.vsnprintf.restype = ctypes.c_int
_libc.vsnprintf.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
_log: list[str] = []
_log_lock = threading.Lock()
_LOG_MAX = 4000


# A verifier log arrives as one string, hence the large buffer. From malloc, not ctypes:
# ctypes zero-fills it, which made all 4 MiB resident in every recorder for good; pages
# of a malloc'ed block this large are resident only once a message has written them.
_BUF_SIZE = 4 << 20
_libc.malloc.restype = ctypes.c_void_p
_libc.malloc.argtypes = [ctypes.c_size_t]
_buf = _libc.malloc(_BUF_SIZE)


_LIBBPF_DEBUG = 2  # enum libbpf_print_level: WARN 0, INFO 1, DEBUG 2


def _print_py(level: int, fmt: bytes, args: int) -> int:
    # libbpf's debug lines (~6,700 at each load of the sensor: every relocation and map) are
    # never read: a failed load is explained from its warnings (the verifier's log is one).
    # Kept, the last 4,000 of them stayed in every recorder's heap for good (~0.5 MB).
    if level >= _LIBBPF_DEBUG:
        return 0
    with _log_lock:
        _libc.vsnprintf(_buf, _BUF_SIZE, fmt, args)
        _log.extend(ctypes.string_at(_buf).decode("utf-8", "replace").splitlines())
        del _log[:-_LOG_MAX]
    return 0


_print = _PRINT_FN(_print_py)  # kept referenced: libbpf holds the pointer for good


lib.libbpf_set_print.restype = ctypes.c_void_p
lib.libbpf_set_print.argtypes = [_PRINT_FN]
lib.libbpf_set_print(_print)


def log_lines() -> list[str]:
    with _log_lock:
        return list(_log)


def clear_log() -> None:
    with _log_lock:
        _log.clear()


def check_ptr(ptr: int | None, what: str) -> int:
    if not ptr:
        err = ctypes.get_errno() or 0
        raise LibbpfError(err, f"{what}: {os.strerror(err) if err else 'failed'}")
    return ptr


def check_int(ret: int, what: str) -> int:
    if ret < 0:
        err = -ret if ret != -1 else (ctypes.get_errno() or 1)
        raise LibbpfError(err, f"{what}: {os.strerror(err)}")
    return ret
