"""Load and attach the kernel sensor; say exactly what is wrong when the kernel refuses.

The object is built by the set-up step (``make -C bpf``) into ``sensor/_bpf/``: the
CO-RE ELF and ``abi.json`` (layouts from its BTF, syscall numbers).
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from forensix.errors import KernelFeatureError, PrivilegeError, SensorError
from forensix.sensor import libbpf as lb
from forensix.sensor.syscalls import SOCKET_RW, SYSCALLS

__all__ = [
    "ACC_FLOW_INSERTS",
    "ACC_OPEN_INSERTS",
    "ORPHAN_TIMEOUT_S",
    "PAUSED_ORPHAN",
    "Sensor",
    "SensorConfig",
    "bpf_dir",
    "is_pinned",
    "load_abi",
    "pin_dir_for",
    "preflight",
    "ring_sizes_mb",
    "unpin",
]

TRACEFS = Path("/sys/kernel/tracing")
BPFFS = Path("/sys/fs/bpf")
# What an agent that adopts a pinned sensor needs: the rings, the kernel's counters and
# aggregation maps, and the control section (by this name in the pin directory).
PINNED_MAPS = ("rb_proc", "rb_net", "rb_main", "counters", "flows", "reopens", "proc_drops", "accounted",
               "mapped", "tty_budget", "control")
# Pinned too when the sensor has them; a sensor pinned by an older forensix has not, and is
# adopted all the same (it then records on without a heartbeat watch).
OPTIONAL_PINS = ("heartbeat_timer",)
# The per-CPU slot caches in front of flows and reopens (sensor/slots.py): pinned and adopted
# when the sensor has them; one pinned by an older forensix has none to drain.
SLOT_PINS = ("flow_slots", "open_slots", "flow_spill")  # the spill: edges pushed out of the flow slots
# The mmapped slot arrays are pinned under names of their own, and a small map of another value
# size under their old names ("the decoy"). An agent older than the mmapped slots reads a pinned
# "flow_slots" as per-CPU values (its one check, the value size, passed: it read wrong rows), and
# one of the first mmapped ones would never flip a bank it cannot find; with the decoy both stop
# at that check, with "the sensor's flow_slots slots are 8 bytes, this forensix reads 136",
# before they read or change anything, and the pinned sensor records on for this forensix to
# adopt (tests/sensor/test_slot_downgrade.py). A sensor pinned by such an agent (per-CPU slots,
# or the mmapped ones under the old names) is adopted as it is, and its mmapped slots re-pinned.
SLOT_BANK_PINS = {"flow_slots": "flow_slot_banks", "open_slots": "open_slot_banks"}
DECOY_NAME = "fx_slots_moved"  # the decoy's map name (bpftool map shows it)
_DECOY_VALUE = 8
BPF_MAP_TYPE_ARRAY = 2  # linux/bpf.h: the slot caches' type since they are mmapped (a PERCPU_ARRAY before)
# TCP connections counted by their own counters (SensorConfig.tcp_counters): the socket storage
# that holds each owner's share until its next transfer after a flush, or its close.
TCP_PINS = ("tcp_own",)
# A pinned sensor stops recording after this long without an agent (bpf/sensor.bpf.c,
# the heartbeat watch): long enough for a restart or an upgrade, short of recording a
# host for nobody for good. The next agent resumes it and writes the pause as a gap.
ORPHAN_TIMEOUT_S = 600.0
_HEARTBEAT_ARM = "fx_heartbeat_arm"
PAUSED_AGENT = 1  # events.h FX_PAUSED_AGENT
PAUSED_ORPHAN = 2  # events.h FX_PAUSED_ORPHAN
ACC_DETACHED = 8181  # events.h FX_ACC_DETACHED: boot ns at which the orphan watch detached the programs
ACC_FLOW_INSERTS = 8182  # events.h FX_ACC_FLOW_INSERTS: inserts into the flows hash map, counted by the programs
ACC_OPEN_INSERTS = 8183  # events.h FX_ACC_OPEN_INSERTS: inserts into the reopens hash map
ACC_COUNTING = 8184  # events.h FX_ACC_COUNTING: 1 while the attached programs count those inserts
BTF = Path("/sys/kernel/btf/vmlinux")
_LIFECYCLE = ("fx_fork", "fx_exec", "fx_exit")
# Classic-tracepoint stand-ins for kernels that refuse tp_btf; fx_fork_child hooks the
# child's return from these syscalls.
_LIFECYCLE_CLASSIC = ("fx_exec_tp", "fx_exit_tp")
_FORK_SYSCALLS = ("clone", "clone3", "fork", "vfork")
# Socket data flow from the socket layer (tp_btf), and the tracepoints they need (Linux 6.3)
_SOCK_FLOW = {"fx_sock_send": "sock_send_length", "fx_sock_recv": "sock_recv_length"}
_TCP_CLOSE = "fx_tcp_state"  # tp_btf/inet_sock_set_state
SOCK_COUNTERS = 2  # events.h FX_SOCK_COUNTERS


def bpf_dir() -> Path:
    return Path(os.environ.get("FORENSIX_BPF_DIR", Path(__file__).parent / "_bpf"))


def load_abi(path: Path | None = None) -> dict[str, Any]:
    p = path or bpf_dir() / "abi.json"
    try:
        return dict(json.loads(p.read_text()))
    except FileNotFoundError:
        raise SensorError(
            f"the sensor is not built ({p} is missing)",
            "run scripts/setup.sh (it builds bpf/ with clang against this kernel's BTF)",
        ) from None


def _mem_total() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) << 10
    except (OSError, ValueError, IndexError):
        pass
    return 4 << 30


def _pow2_floor(n: int) -> int:
    return 1 << max(n.bit_length() - 1, 0)


def ring_sizes_mb(mem_bytes: int | None = None) -> tuple[int, int, int]:
    """Sizes of the (main, network, process) rings in MiB, from the host's memory.

    1/256 of memory for the main ring (file records and flow edges) and for the network
    ring, a quarter of that for the process ring, within 32-256 MiB and 8-64 MiB: 64/64/16
    MiB on 24 GiB. The rings are kernel memory, allocated whole when the sensor loads (the
    agent maps only what each drain reads). What a ring must hold is what arrives while the
    agent has not stored it: a batch interval, a writer that falls behind (200 k files
    created and deleted are ~160 MB of records), an agent restart. 64 MiB held the full-size
    storms of bench/storm.py with nothing lost, on a host loaded ~5x over its cores.

    The network ring was a quarter of the main one (16 MiB) and lost a few records in every
    run of a web server that takes a new connection per request (bench web-conn): its
    records are ~320 bytes (accept and connect carry both addresses), two per request, ~51 k
    a second at ~25 k requests/s on 2 cores: 16 MiB held one second of them, less than the
    agent's drain interval plus one slow batch. At the main ring's size it holds four."""
    mem = _mem_total() if mem_bytes is None else mem_bytes
    main = min(max(_pow2_floor(mem >> 28), 32), 256)
    side = min(max(main // 4, 8), 64)
    return main, main, side


@dataclass
class SensorConfig:
    full_rw: bool = False
    # socket data counted at the socket layer (tp_btf, Linux 6.3+), not at the read/write syscalls
    sock_layer: bool = True
    # with sock_layer: a long TCP connection's own process is counted by the connection's
    # sequence numbers, not per call; others' transfers stay per call (docs/data-flow.md)
    tcp_counters: bool = False
    every_open: bool = False
    # terminal bytes kept per terminal per second (bpf/tty.bpf.h); 0: no terminal capture
    tty_rate: int = 256 << 10
    ring_main_mb: int = field(default_factory=lambda: ring_sizes_mb()[0])
    ring_proc_mb: int = field(default_factory=lambda: ring_sizes_mb()[2])
    ring_net_mb: int = field(default_factory=lambda: ring_sizes_mb()[1])
    exclude_tgid: int = field(default_factory=os.getpid)
    # where the programs, maps and links are pinned so that recording outlives the agent
    # (pin_dir_for(store)); None: nothing pinned, the sensor dies with the agent
    pin_dir: Path | None = None
    lifecycle: str = "auto"  # auto: tp_btf, else classic tracepoints; or force "btf" / "classic"
    # a pinned sensor with no agent heartbeat for this long stops recording (0: never)
    orphan_timeout_s: float = ORPHAN_TIMEOUT_S
    # non-zero: record only the tasks of this network namespace (its inode; sensor/netns.py)
    netns: int = 0


def _map_type(fd: int) -> int:
    info = (ctypes.c_uint32 * 32)()  # struct bpf_map_info: type first
    size = ctypes.c_uint32(ctypes.sizeof(info))
    lb.check_int(lb.lib.bpf_obj_get_info_by_fd(fd, info, ctypes.byref(size)), "read a pinned map's type")
    return int(info[0])


def pin_dir_for(store: str | Path, netns: int = 0) -> Path:
    """The bpffs directory of the sensor that records into ``store`` (one per store, and per
    network namespace recorded as a host: a sensor filtered to one namespace is never
    adopted by, or stopped as, the recorder of another or of the whole host)."""
    name = str(Path(store).resolve()) + (f"\0netns:{netns}" if netns else "")
    key = hashlib.sha256(name.encode()).hexdigest()[:16]
    return BPFFS / f"forensix-{key}"


def is_pinned(pin_dir: Path) -> bool:
    """A sensor pinned there by an agent that did not stop cleanly (killed, crashed)."""
    return all((pin_dir / m).exists() for m in PINNED_MAPS)


def _read_u64(fd: int, key: int) -> int:
    k, val = ctypes.c_uint32(key), ctypes.c_uint64(0)
    return int(val.value) if lb.lib.bpf_map_lookup_elem(fd, ctypes.byref(k), ctypes.byref(val)) == 0 else 0


def mount_bpffs() -> None:
    if any(line.split()[1:3] == [str(BPFFS), "bpf"] for line in Path("/proc/mounts").read_text().splitlines()):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"bpf", str(BPFFS).encode(), b"bpf", 0, None) != 0:
        err = ctypes.get_errno()
        raise KernelFeatureError(
            f"bpffs is not mounted and mounting it at {BPFFS} failed: {os.strerror(err)}",
            f"mount it by hand: mount -t bpf bpf {BPFFS}",
        )


def unpin(pin_dir: Path) -> list[int]:
    """Remove a sensor's pins; returns open descriptors of its links (closing them
    detaches the programs: slow, see Sensor.detach_in_background)."""
    fds = []
    for p in sorted(pin_dir.glob("link-*")):
        fd = lb.lib.bpf_obj_get(str(p).encode())
        if fd >= 0:
            fds.append(fd)
    for p in pin_dir.iterdir():
        p.unlink()
    pin_dir.rmdir()
    return fds


def _lockdown() -> str | None:
    try:
        text = Path("/sys/kernel/security/lockdown").read_text()
    except OSError:
        return None
    m = re.search(r"\[(\w+)\]", text)
    return m.group(1) if m else None


def _mount_tracefs() -> None:
    if (TRACEFS / "events").is_dir():
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"nodev", str(TRACEFS).encode(), b"tracefs", 0, None) != 0:
        err = ctypes.get_errno()
        raise KernelFeatureError(
            f"tracefs is not mounted and mounting it at {TRACEFS} failed: {os.strerror(err)}",
            f"mount it by hand: mount -t tracefs nodev {TRACEFS}",
        )


# kfuncs the sensor calls, and the first kernel that has them (the loader's message)
KFUNCS = {"bpf_rdonly_cast": "Linux 6.2"}
_BTF_KIND_FUNC = 12


_BTF_KIND_TYPEDEF = 8


def _has_sock_tracepoints() -> bool:
    """The socket layer's send/receive tracepoints (Linux 6.3) are in this kernel's BTF."""
    btf = lb.lib.btf__load_vmlinux_btf()
    if not btf:
        return False
    try:
        return all(lb.lib.btf__find_by_name_kind(btf, f"btf_trace_{tp}".encode(), _BTF_KIND_TYPEDEF) >= 0
                   for tp in _SOCK_FLOW.values())
    finally:
        lb.lib.btf__free(btf)


def _missing_kfuncs() -> list[str]:
    """The kfuncs of KFUNCS that this kernel's BTF does not declare."""
    btf = lb.lib.btf__load_vmlinux_btf()
    if not btf:
        return []  # no readable BTF: preflight reports that on its own
    try:
        return [k for k in KFUNCS if lb.lib.btf__find_by_name_kind(btf, k.encode(), _BTF_KIND_FUNC) < 0]
    finally:
        lb.lib.btf__free(btf)


def preflight() -> None:
    """Check what recording needs, mounting tracefs if it is missing."""
    if os.geteuid() != 0:
        raise PrivilegeError(
            "recording needs root (CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN)",
            "run it with sudo, or as root",
        )
    if not BTF.exists():
        raise KernelFeatureError(
            f"this kernel has no BTF ({BTF} is missing), which the CO-RE sensor needs",
            "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (every major distribution ships one)",
        )
    missing = _missing_kfuncs()
    if missing:
        need = ", ".join(f"{k} ({KFUNCS[k]})" for k in missing)
        raise KernelFeatureError(
            f"this kernel ({os.uname().release}) lacks what the sensor calls: {need}",
            "run a newer kernel; on Debian 12: apt-get install -t bookworm-backports linux-image-amd64",
        )
    _mount_tracefs()


class Sensor:
    """The loaded BPF object with its programs attached."""

    def __init__(self, config: SensorConfig | None = None, obj_path: Path | None = None) -> None:
        self.config = config or SensorConfig()
        self.abi = load_abi()
        self.obj_path = obj_path or bpf_dir() / "sensor.bpf.o"
        self._obj: int | None = None
        self._links: list[int] = []
        self.skipped: list[str] = []  # syscalls this kernel has no tracepoint for
        self.lifecycle = "btf"  # what attach() ended up using
        self.fallback: str | None = None  # why the classic lifecycle hooks are in use
        self.adopted = False  # the sensor was pinned by an earlier agent, and taken over
        # socket reads/writes counted at the socket layer (else at their syscalls' exits)
        self.sock_flows = False
        self.tcp_counters = False  # TCP connections counted by their counters (SensorConfig.tcp_counters)
        self._fds: dict[str, int] = {}  # an adopted sensor's maps
        self._link_fds: list[int] = []  # an adopted sensor's links, once unpinned
        self.reaper_pid: int | None = None  # the child detach_in_background left the links to
        # why the sensor has no heartbeat watch (None: it has one); see arm_heartbeat
        self.no_heartbeat_watch: str | None = None
        self.adopted_control: dict[str, int] = {}  # the control word as the dead agent left it
        # an adopted sensor whose programs the orphan watch detached (sensor/orphan_watch.py):
        # new ones are loaded onto its pinned maps (these) and attached; detached_at: when
        self._reuse: dict[str, int] = {}
        self.reattach = False
        # reattached over slot caches pinned by a forensix before they were mmapped (per-CPU
        # arrays): new programs fill new slots; these hold the detached programs' last rows
        self.legacy_slots: dict[str, int] = {}
        self.detached_at = 0

    # -- load ----------------------------------------------------------------------
    def open_and_load(self) -> None:
        preflight()
        if not self.obj_path.exists():
            raise SensorError(f"the sensor object {self.obj_path} is missing", "run scripts/setup.sh")
        typed, watch = self.config.lifecycle != "classic", True
        while True:
            try:
                self._load(typed_lifecycle=typed, heartbeat_watch=watch)
                return
            except SensorError as e:
                first = e.message.splitlines()[0]
                if watch and f"program {_HEARTBEAT_ARM} " in e.message:
                    # timers in BPF came with Linux 5.15: without them the sensor records,
                    # and a pinned one whose agent died records until stopped by hand
                    watch = False
                    self.no_heartbeat_watch = f"the kernel refused the heartbeat timer ({first})"
                elif typed and self.config.lifecycle == "auto" and any(
                        f"program {p} " in e.message for p in (*_LIFECYCLE, *_SOCK_FLOW, _TCP_CLOSE)):
                    typed = False  # a kernel that refuses tp_btf at load: try again without those three
                    self.fallback = f"the kernel refused the typed sched programs at load ({first})"
                else:
                    raise
                lb.lib.bpf_object__close(self._obj)
                self._obj = None

    def _load(self, typed_lifecycle: bool, heartbeat_watch: bool = True) -> None:
        lb.clear_log()
        obj = lb.lib.bpf_object__open_file(str(self.obj_path).encode(), None)
        if not obj:
            raise SensorError(f"libbpf cannot open {self.obj_path}: {os.strerror(ctypes.get_errno())}")
        self._obj = obj
        if not typed_lifecycle:
            for name in _LIFECYCLE:
                lb.lib.bpf_program__set_autoload(self._prog(name), False)
        self.sock_flows = (self.config.sock_layer and typed_lifecycle and not self.config.full_rw
                           and _has_sock_tracepoints())
        if not self.sock_flows:
            for name in _SOCK_FLOW:
                lb.lib.bpf_program__set_autoload(self._prog(name), False)
        self.tcp_counters = self.sock_flows and self.config.tcp_counters and bool(
            lb.lib.bpf_object__find_program_by_name(obj, _TCP_CLOSE.encode()))
        if not self.tcp_counters and lb.lib.bpf_object__find_program_by_name(obj, _TCP_CLOSE.encode()):
            lb.lib.bpf_program__set_autoload(self._prog(_TCP_CLOSE), False)
        if not heartbeat_watch:
            lb.lib.bpf_program__set_autoload(self._prog(_HEARTBEAT_ARM), False)
        self._set_sizes()
        self._set_config()
        val = self._control_value(False, self.config.exclude_tgid)
        lb.lib.bpf_map__set_initial_value(self._control_map(), val, len(val))
        for name, fd in self._reuse.items():  # an adopted sensor's maps, rings and counters as they are
            m = lb.lib.bpf_object__find_map_by_name(obj, name.encode())
            if name in ("flow_slots", "open_slots") and m and _map_type(fd) != lb.lib.bpf_map__type(m):
                self.legacy_slots[name] = fd  # another layout: the new programs cannot use them
                continue
            if name == "control" or m:
                m = self._control_map() if name == "control" else self._map(name)
                lb.check_int(lb.lib.bpf_map__reuse_fd(m, fd), f"reuse the pinned map {name}")
        ret = lb.lib.bpf_object__load(obj)
        if ret < 0:
            self._load_failed(-ret)
        self._mark_counting()

    def _mark_counting(self) -> None:
        """The programs just loaded count their inserts into flows and reopens (FX_ACC_COUNTING,
        kept in the pinned ``accounted`` map for an agent that adopts them); programs that do
        not were loaded by an older forensix, which never sets it. Reattached over an older
        sensor's maps, ours count from now on: what the old ones inserted is taken by the
        first flush, which walks every map whatever the count."""
        key, one = ctypes.c_uint32(ACC_COUNTING), ctypes.c_uint64(1)
        lb.check_int(lb.lib.bpf_map_update_elem(self.map_fd("accounted"), ctypes.byref(key), ctypes.byref(one), 0),
                     "mark the sensor's insert counts")

    def counts_inserts(self) -> bool:
        """Whether the programs attached to this sensor count their inserts (``_mark_counting``)."""
        return _read_u64(self.map_fd("accounted"), ACC_COUNTING) == 1

    def _map(self, name: str) -> int:
        assert self._obj is not None
        m = lb.lib.bpf_object__find_map_by_name(self._obj, name.encode())
        if not m:
            raise SensorError(f"the sensor object {self.obj_path} has no map {name!r}", "rebuild it: make -C bpf")
        return int(m)

    def _set_sizes(self) -> None:
        lb.lib.bpf_map__set_max_entries(self._map("rb_main"), self.config.ring_main_mb << 20)
        lb.lib.bpf_map__set_max_entries(self._map("rb_proc"), self.config.ring_proc_mb << 20)
        lb.lib.bpf_map__set_max_entries(self._map("rb_net"), self.config.ring_net_mb << 20)
        # the slot caches: one array for all CPUs, two banks each (sensor/slots.py)
        for name in ("flow_slots", "open_slots"):
            m = lb.lib.bpf_object__find_map_by_name(self._obj, name.encode())
            if m and lb.lib.bpf_map__type(m) == BPF_MAP_TYPE_ARRAY:
                per_cpu = lb.lib.bpf_map__max_entries(m)
                lb.lib.bpf_map__set_max_entries(m, per_cpu * lb.lib.libbpf_num_possible_cpus())

    def _set_config(self) -> None:
        assert self._obj is not None
        layout = {m["name"]: m for m in self.abi["structs"]["fx_config"]["members"]}
        buf = bytearray(self.abi["structs"]["fx_config"]["size"])
        values = {
            "agent_tgid": self.config.exclude_tgid,
            "full_rw": int(self.config.full_rw),
            "every_open": int(self.config.every_open),
            "tty_rate": int(self.config.tty_rate),
            "sock_flows": SOCK_COUNTERS if self.tcp_counters else int(self.sock_flows),
        }
        if self.config.netns:
            if "netns" not in layout:
                raise SensorError(f"the sensor object {self.obj_path} cannot record one network namespace",
                                  "rebuild it: make -C bpf")
            values["netns"] = self.config.netns
        for name, value in values.items():
            m = layout[name]
            buf[m["offset"] : m["offset"] + m["size"]] = value.to_bytes(m["size"], "little")
        m = lb.lib.bpf_object__next_map(self._obj, None)
        while m:
            if lb.lib.bpf_map__name(m).endswith(b".rodata"):
                cbuf = (ctypes.c_char * len(buf)).from_buffer(buf)
                if lb.lib.bpf_map__set_initial_value(m, cbuf, len(buf)) < 0:
                    raise SensorError(
                        f"the sensor object's .rodata is not the {len(buf)}-byte config this forensix expects",
                        "rebuild it: make -C bpf (only `cfg` may be a const volatile global)",
                    )
                return
            m = lb.lib.bpf_object__next_map(self._obj, m)
        raise SensorError("the sensor object has no .rodata config", "rebuild it: make -C bpf")

    def _control_value(self, paused: bool | int, tgid: int, orphaned_at: int = 0) -> ctypes.Array[ctypes.c_char]:
        """The control word, with a fresh heartbeat: written by the agent that runs the sensor."""
        layout = {m["name"]: m for m in self.abi["structs"]["fx_control"]["members"]}
        buf = bytearray(self.abi["structs"]["fx_control"]["size"])
        word = paused if isinstance(paused, int) and not isinstance(paused, bool) else PAUSED_AGENT * paused
        values = {"paused": word, "agent_tgid": tgid,
                  "heartbeat": time.clock_gettime_ns(time.CLOCK_BOOTTIME),
                  "orphan_ns": int(self.config.orphan_timeout_s * 1e9), "orphaned_at": orphaned_at}
        for name, value in values.items():
            if name in layout:  # an object built before the heartbeat watch has no such field
                m = layout[name]
                buf[m["offset"] : m["offset"] + m["size"]] = value.to_bytes(m["size"], "little")
        return (ctypes.c_char * len(buf)).from_buffer(buf)

    def beat(self, ctl: dict[str, int], keep_orphan: bool = False) -> None:
        """A heartbeat: the control word ``ctl`` (as read) with a fresh time, this agent's
        pid, and without the heartbeat watch's pause (unless ``keep_orphan``); a pause set
        by the agent that stopped stays off, one set for another reason stays on."""
        word = ctl.get("paused", 0) & ~PAUSED_AGENT
        if not keep_orphan:
            word &= ~PAUSED_ORPHAN
        val = self._control_value(word, os.getpid(), ctl.get("orphaned_at", 0) if word & PAUSED_ORPHAN else 0)
        key = ctypes.c_uint32(0)
        lb.check_int(lb.lib.bpf_map_update_elem(self.map_fd("control"), ctypes.byref(key), val, 0),
                     "write the sensor's heartbeat")

    def read_control(self) -> dict[str, int]:
        """The control word as the kernel has it (the heartbeat timer writes into it too)."""
        layout = self.abi["structs"]["fx_control"]
        buf = (ctypes.c_char * layout["size"])()
        key = ctypes.c_uint32(0)
        lb.check_int(lb.lib.bpf_map_lookup_elem(self.map_fd("control"), ctypes.byref(key), buf),
                     "read the sensor's control")
        raw = bytes(buf)
        return {m["name"]: int.from_bytes(raw[m["offset"] : m["offset"] + m["size"]], "little")
                for m in layout["members"]}

    def arm_heartbeat(self) -> None:
        """Start the kernel's heartbeat watch (once per loaded sensor; an adopted one runs it)."""
        if self.no_heartbeat_watch is not None or self._obj is None:
            return
        self.set_control(paused=False)  # a fresh heartbeat: attaching took seconds since load
        fd = lb.lib.bpf_program__fd(self._prog(_HEARTBEAT_ARM))
        opts = lb.TestRunOpts(sz=ctypes.sizeof(lb.TestRunOpts))
        ret = lb.lib.bpf_prog_test_run_opts(fd, ctypes.byref(opts))
        if ret < 0 or opts.retval != 0:
            err = -ret if ret < -1 else ctypes.get_errno()
            why = os.strerror(err) if ret < 0 else f"the program returned {opts.retval}"
            self.no_heartbeat_watch = f"cannot start the heartbeat timer: {why}"

    def _control_map(self) -> int:
        assert self._obj is not None
        m = lb.lib.bpf_object__next_map(self._obj, None)
        while m:
            if lb.lib.bpf_map__name(m).endswith(b".control"):
                return int(m)
            m = lb.lib.bpf_object__next_map(self._obj, m)
        raise SensorError("the sensor object has no control section", "rebuild it: make -C bpf")

    def _load_failed(self, err: int) -> None:
        log = lb.log_lines()
        prog = None
        for line in log:
            m = re.search(r"prog '(\w+)': (?:BPF program load failed|failed to load)", line)
            if m:
                prog = m.group(1)
        kernel = os.uname().release
        tail = "\n".join(line for line in log[-25:] if line.strip())
        if err in (errno.EPERM, errno.EACCES) and prog is None:
            lock = _lockdown()
            raise PrivilegeError(
                f"the kernel refused to load BPF programs ({os.strerror(err)}); lockdown={lock}",
                "run as root; under lockdown=confidentiality BPF tracing is not available",
            )
        raise SensorError(
            f"the verifier of kernel {kernel} rejected program {prog or '?'} ({os.strerror(err)})\n{tail}",
            "report this with the log above; FORENSIX_BPF_DIR can point to another build",
        )

    # -- attach --------------------------------------------------------------------
    def _prog(self, name: str) -> int:
        assert self._obj is not None
        p = lb.lib.bpf_object__find_program_by_name(self._obj, name.encode())
        if not p:
            raise SensorError(f"the sensor object {self.obj_path} has no program {name!r}", "rebuild it: make -C bpf")
        return int(p)

    def attach(self) -> None:
        if self.config.lifecycle == "classic" or self.fallback:
            self._attach_classic_lifecycle()
        else:
            self._attach_typed_lifecycle()
        if self.sock_flows:
            self._attach_sock_flows()
        if self.tcp_counters:
            self._attach_tcp_counters()
        events = TRACEFS / "events" / "syscalls"
        for sc, spec in SYSCALLS.items():
            if self.sock_flows and sc in SOCKET_RW:
                continue  # counted at the socket layer
            tp = spec.tracepoint or sc
            if not (events / f"sys_exit_{tp}").is_dir():
                self.skipped.append(sc)  # e.g. module syscalls on a kernel without modules
                continue
            # exits only: the handler reads the arguments from the registers saved at entry
            self._tp(self._prog(spec.handler), f"sys_exit_{tp}")

    def _attach_sock_flows(self) -> None:
        for name, tp in _SOCK_FLOW.items():
            link = lb.lib.bpf_program__attach(self._prog(name))
            if not link:
                err = ctypes.get_errno()
                raise KernelFeatureError(
                    f"cannot attach {name} (tp_btf/{tp}): {os.strerror(err)}, lockdown={_lockdown()}",
                    "record with --socket-flows syscall: socket data is then counted at the syscalls",
                )
            self._links.append(link)

    def _attach_tcp_counters(self) -> None:
        link = lb.lib.bpf_program__attach(self._prog(_TCP_CLOSE))
        if not link:
            err = ctypes.get_errno()
            raise KernelFeatureError(
                f"cannot attach {_TCP_CLOSE} (tp_btf/inet_sock_set_state): {os.strerror(err)}",
                "record with --socket-flows socket: TCP data is then counted per call")
        self._links.append(link)

    def _attach_typed_lifecycle(self) -> None:
        links: list[int] = []
        for name in _LIFECYCLE:
            link = lb.lib.bpf_program__attach(self._prog(name))
            if not link:
                err = ctypes.get_errno()
                for lk in links:
                    lb.lib.bpf_link__destroy(lk)
                why = f"cannot attach {name} (tp_btf): {os.strerror(err)}, lockdown={_lockdown()}"
                if self.config.lifecycle == "btf":
                    raise KernelFeatureError(why, "use --lifecycle auto to fall back to classic tracepoints")
                self.fallback = why
                self._attach_classic_lifecycle()
                return
            links.append(link)
        self._links.extend(links)

    def _attach_classic_lifecycle(self) -> None:
        """fork, exec and exit from classic tracepoints (less detail: no binprm)."""
        self.lifecycle = "classic"
        for name in _LIFECYCLE_CLASSIC:
            link = lb.lib.bpf_program__attach(self._prog(name))
            if not link:
                err = ctypes.get_errno()
                raise KernelFeatureError(
                    f"cannot attach {name} to its sched tracepoint: {os.strerror(err)}",
                    f"check that {TRACEFS} is mounted; process lifecycle cannot be recorded without it",
                )
            self._links.append(link)
        child = self._prog("fx_fork_child")
        for sc in _FORK_SYSCALLS:
            if (TRACEFS / "events" / "syscalls" / f"sys_exit_{sc}").is_dir():
                self._tp(child, f"sys_exit_{sc}")

    def _tp(self, prog: int, event: str) -> None:
        link = lb.lib.bpf_program__attach_tracepoint(prog, b"syscalls", event.encode())
        if not link:
            err = ctypes.get_errno()
            raise KernelFeatureError(
                f"cannot attach to tracepoint syscalls/{event}: {os.strerror(err)}",
                f"check that {TRACEFS} is mounted and the kernel has CONFIG_FTRACE_SYSCALLS",
            )
        self._links.append(link)

    # -- pinning: the kernel side outlives the agent -------------------------------
    def pin(self, pin_dir: Path) -> None:
        """Pin maps and links, so that recording goes on if this agent dies."""
        mount_bpffs()
        pin_dir.mkdir(mode=0o700)
        for name in PINNED_MAPS + OPTIONAL_PINS + SLOT_PINS + (TCP_PINS if self.tcp_counters else ()):
            if name not in PINNED_MAPS and not lb.lib.bpf_object__find_map_by_name(self._obj, name.encode()):
                continue
            m = self._control_map() if name == "control" else self._map(name)
            lb.check_int(lb.lib.bpf_map__pin(m, str(pin_dir / _pin_name(name, m)).encode()), f"pin map {name}")
        _pin_decoys(pin_dir)
        self.pin_links(pin_dir)

    def pin_links(self, pin_dir: Path) -> None:
        for i, link in enumerate(self._links):
            lb.check_int(lb.lib.bpf_link__pin(link, str(pin_dir / f"link-{i:04d}").encode()), "pin a link")

    def adopt(self, pin_dir: Path, stop_watch: Callable[[int], object] | None = None) -> None:
        """Take over the sensor an earlier agent pinned: its programs never stopped
        recording, and its rings hold what happened meanwhile. ``stop_watch`` (given the
        ``accounted`` map) ends the dead agent's orphan watch before we look at the links;
        if the watch had detached them, new programs are loaded onto the pinned maps
        (``reattach``: the caller attaches them and pins their links)."""
        self.abi = load_abi()
        for name in PINNED_MAPS:
            fd = lb.lib.bpf_obj_get(str(pin_dir / name).encode())
            if fd < 0:
                raise SensorError(f"cannot open the pinned map {pin_dir / name}: {os.strerror(ctypes.get_errno())}",
                                  f"remove the stale pins with: forensix record --stop --store STORE ({pin_dir})")
            self._fds[name] = fd
        for name in SLOT_PINS + TCP_PINS:
            fd = _open_slot_pin(pin_dir, name)
            if fd >= 0:
                self._fds[name] = fd
        self.tcp_counters = "tcp_own" in self._fds
        if not all((pin_dir / name).exists() for name in OPTIONAL_PINS):
            self.no_heartbeat_watch = "the adopted sensor was pinned by a forensix without a heartbeat watch"
        self.adopted = True
        self.lifecycle = "adopted"
        if stop_watch is not None:
            stop_watch(self._fds["accounted"])
        self.adopted_control = self.read_control()
        detached = _read_u64(self._fds["accounted"], ACC_DETACHED)
        if detached or not any(pin_dir.glob("link-*")):
            self._detached(pin_dir, detached)
        # ours from now on (our own syscalls are not recorded); a pause of the heartbeat
        # watch stays until the recorder is ready to drain and writes it as a gap
        self.beat(self.adopted_control, keep_orphan=True)
        if self.reattach:
            self._reuse = dict(self._fds)
            self.open_and_load()
            for name in self.legacy_slots:  # the next agent adopts the slots these programs fill
                (pin_dir / name).unlink()
                m = self._map(name)
                lb.check_int(lb.lib.bpf_map__pin(m, str(pin_dir / _pin_name(name, m)).encode()), f"pin map {name}")
                self._fds[name] = os.dup(lb.lib.bpf_map__fd(m))
            self.lifecycle = "adopted, its detached programs loaded and attached anew"
        _repin_slot_banks(pin_dir, self._fds)

    def _detached(self, pin_dir: Path, detached_at: int) -> None:
        """The orphan watch detached the programs, or had begun to when it was stopped:
        detach the rest, and record from new programs. Links gone with no pause in the
        control word (removed by hand): nothing is known after the last heartbeat."""
        from concurrent.futures import ThreadPoolExecutor

        now = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        ctl = self.adopted_control
        if not ctl.get("paused", 0) & PAUSED_ORPHAN:
            ctl["paused"] = ctl.get("paused", 0) | PAUSED_ORPHAN
            ctl["orphaned_at"] = ctl.get("heartbeat") or now
        fds = []
        for p in sorted(pin_dir.glob("link-*")):
            fd = lb.lib.bpf_obj_get(str(p).encode())
            p.unlink()
            if fd >= 0:
                fds.append(fd)
        with ThreadPoolExecutor(max_workers=64) as pool:  # each detach waits for an RCU grace period
            list(pool.map(os.close, fds))
        self.detached_at = detached_at or now
        self.reattach = True

    def set_control(self, paused: bool) -> None:
        """Write the control word: pause or resume recording, with a fresh heartbeat."""
        val = self._control_value(paused, os.getpid())
        key = ctypes.c_uint32(0)
        lb.check_int(lb.lib.bpf_map_update_elem(self.map_fd("control"), ctypes.byref(key), val, 0),
                     "write the sensor's control")

    def release_pins(self, pin_dir: Path) -> None:
        """A clean stop: the pins go; the links are detached with ours (in the background)."""
        if pin_dir.exists():
            fds = unpin(pin_dir)
            if self.adopted:
                self._link_fds = fds
            else:
                for fd in fds:
                    os.close(fd)  # ours hold them: these are only extra references

    # -- maps ----------------------------------------------------------------------
    def map_fd(self, name: str) -> int:
        if name in self._fds:
            return self._fds[name]
        if name == "control":
            return int(lb.lib.bpf_map__fd(self._control_map()))
        return int(lb.lib.bpf_map__fd(self._map(name)))

    def has_map(self, name: str) -> bool:
        """Whether the loaded or adopted sensor has this map."""
        if self.adopted:
            return name in self._fds
        return bool(self._obj and lb.lib.bpf_object__find_map_by_name(self._obj, name.encode()))

    def ring_size(self, name: str) -> int:
        if name in self._fds:
            info = (ctypes.c_uint32 * 32)()  # struct bpf_map_info: type, id, key_size, value_size, max_entries
            size = ctypes.c_uint32(ctypes.sizeof(info))
            lb.check_int(lb.lib.bpf_obj_get_info_by_fd(self._fds[name], info, ctypes.byref(size)), f"size of {name}")
            return int(info[4])
        return int(lb.lib.bpf_map__max_entries(self._map(name)))

    def prog_fds(self) -> dict[str, int]:
        assert self._obj is not None
        out: dict[str, int] = {}
        p = lb.lib.bpf_object__next_program(self._obj, None)
        while p:
            out[lb.lib.bpf_program__name(p).decode()] = lb.lib.bpf_program__fd(p)
            p = lb.lib.bpf_object__next_program(self._obj, p)
        return out

    def pause(self) -> None:
        """Stop recording at once (every program returns early) without detaching."""
        self.set_control(paused=True)

    def detach_in_background(self) -> None:
        """Leave the (paused) programs to a short-lived child to detach.

        Detaching a syscall tracepoint waits for an RCU-tasks grace period (~80 ms
        here, serialised in the kernel): 170 of them take over ten seconds. A forked
        child inherits the link descriptors; we let go of ours without detaching (each
        close drops a reference, the child's is the last), then tell the child, whose
        exit detaches them while nobody waits.

        The child used to wait for our exit: a process that records more than once (the
        test suite, a library user) kept every earlier recorder's programs attached until
        it ended (CI: 2,403 link descriptors in pytest, ~27 sensors' programs on every
        syscall, tests timing out from the 86th percent on).
        """
        if not self._links and not self._link_fds:
            return
        r, w = os.pipe()
        # only its own links and pipe: inherited ones (another in-process recorder's links,
        # pipe ends, sockets) would stay attached and open until this child exits
        keep = sorted({r, *self._link_fds, *(lb.lib.bpf_link__fd(x) for x in self._links)} - {-1})
        pid = os.fork()
        if pid == 0:  # the child: hold the links until the parent let go of its own, then exit
            try:
                _close_all_but(keep)
                os.setsid()
                os.read(r, 1)  # EOF: the parent closed its copies (or is gone)
            finally:
                os._exit(0)  # the last references: the kernel detaches them now
        self.reaper_pid = pid
        os.close(r)
        for link in self._links:  # closes its descriptors (and a perf event's): not the last references
            lb.lib.bpf_link__destroy(link)
        self._links = []
        for fd in self._link_fds:
            os.close(fd)
        self._link_fds = []
        os.close(w)
        # reaped when it is done (a zombie holds nothing, but would stay listed until we exit)
        threading.Thread(target=_reap, args=(pid,), name="fx-detach-reap", daemon=True).start()

    def close_links(self) -> None:
        """Detach every program; the maps stay readable until close().

        Each detach waits for an RCU grace period (tens of ms); one after another, 170
        links take seconds. Detaching them from many threads at once lets the waits
        share grace periods (ctypes releases the GIL during each call).
        """
        from concurrent.futures import ThreadPoolExecutor

        links, self._links = self._links, []
        if links:
            with ThreadPoolExecutor(max_workers=min(64, len(links))) as pool:
                list(pool.map(lb.lib.bpf_link__destroy, links))

    def close(self) -> None:
        self.close_links()
        for fd in [*self._link_fds, *self._fds.values(), *self.legacy_slots.values()]:
            os.close(fd)
        self._link_fds, self._fds, self.legacy_slots = [], {}, {}
        if self._obj:
            lb.lib.bpf_object__close(self._obj)
            self._obj = None

    def __enter__(self) -> Self:
        self.open_and_load()
        self.attach()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pin_name(name: str, m: int) -> str:
    """Where map ``name`` (a libbpf map) is pinned: the mmapped slot arrays under their own names."""
    return SLOT_BANK_PINS[name] if name in SLOT_BANK_PINS and lb.lib.bpf_map__type(m) == BPF_MAP_TYPE_ARRAY else name


def _is_decoy(fd: int) -> bool:
    info = (ctypes.c_uint32 * 32)()  # struct bpf_map_info: type, id, key_size, value_size, max_entries
    size = ctypes.c_uint32(ctypes.sizeof(info))
    return lb.lib.bpf_obj_get_info_by_fd(fd, info, ctypes.byref(size)) == 0 and info[3] == _DECOY_VALUE


def _open_slot_pin(pin_dir: Path, name: str) -> int:
    """The pinned map ``name`` of SLOT_PINS or TCP_PINS, -1 if there is none: a slot array under its
    own name (SLOT_BANK_PINS), else under the old one unless a decoy holds it."""
    for pin in ((SLOT_BANK_PINS[name], name) if name in SLOT_BANK_PINS else (name,)):
        fd = lb.lib.bpf_obj_get(str(pin_dir / pin).encode()) if (pin_dir / pin).exists() else -1
        if fd >= 0 and pin == name and name in SLOT_BANK_PINS and _is_decoy(fd):
            os.close(fd)
            fd = -1
        if fd >= 0:
            return int(fd)
    return -1


def _pin_decoys(pin_dir: Path) -> None:
    """The decoy under the slot arrays' old names (SLOT_BANK_PINS: an older agent refuses to adopt)."""
    fd = lb.lib.bpf_map_create(BPF_MAP_TYPE_ARRAY, DECOY_NAME.encode(), 4, _DECOY_VALUE, 1, None)
    if fd < 0:
        raise SensorError(f"cannot make the pinned sensor's guard against older agents: {os.strerror(-fd)}",
                          "check that the sensor is loaded (bpf() map creation)")
    try:
        for old in SLOT_BANK_PINS:
            if not (pin_dir / old).exists():
                lb.check_int(lb.lib.bpf_obj_pin(fd, str(pin_dir / old).encode()), f"pin the guard {old}")
    finally:
        os.close(fd)


def _repin_slot_banks(pin_dir: Path, fds: dict[str, int]) -> None:
    """Adopted or reattached: the mmapped slot arrays under their own names, decoys under the old ones
    (a sensor pinned by the first forensix with mmapped slots had them under the old names)."""
    moved = False
    for name, pin in SLOT_BANK_PINS.items():
        fd = fds.get(name, -1)
        if fd < 0 or (pin_dir / pin).exists() or _map_type(fd) != BPF_MAP_TYPE_ARRAY:
            continue
        lb.check_int(lb.lib.bpf_obj_pin(fd, str(pin_dir / pin).encode()), f"pin map {name}")
        (pin_dir / name).unlink(missing_ok=True)
        moved = True
    if (moved or all((pin_dir / p).exists() for p in SLOT_BANK_PINS.values())) and not all(
            (pin_dir / old).exists() for old in SLOT_BANK_PINS):
        _pin_decoys(pin_dir)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:  # reaped elsewhere (a SIGCHLD handler of the caller's)
        pass


def _close_all_but(keep: list[int]) -> None:
    """Close every descriptor but ``keep`` (ascending), with close_range where it exists."""
    lo = 0
    for fd in keep:
        os.closerange(lo, fd)
        lo = fd + 1
    os.closerange(lo, os.sysconf("SC_OPEN_MAX"))
