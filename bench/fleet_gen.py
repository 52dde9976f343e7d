"""The generated fleet of bench/fleet.py: what it runs, and two ways to write it.

Event N is host N % hosts's (N // hosts)-th: every host's events spread over the whole
span, one every ``step`` ns of the fleet. A host's events come 50 to a process, the first
its exec; the other 49 are drawn (intHash64 of N) from ``_MIX``. Every 97th host's 8th
process is the miner: exec of /tmp/.x/miner, a connect to 198.51.100.23:3333, a
write-open and a write flow of /etc/ld.so.preload, then mmaps of libraries only.

* ``gen_sql``: INSERT ... SELECT from numbers() through the Distributed tables, every choice
  made by ClickHouse (the reference: 47 min for 10^8 at load 15-20, about 5 µs of a
  server's CPU per event for the SELECT alone, since 18.16 evaluates every branch of a
  multiIf for every row);
* ``write_fleet``: the same rows (the same hash of N, the same entity ids, asked of the
  server once per process), made with numpy and pyarrow in chunks, each shard's rows sent as
  Native blocks straight into its local tables (as the log host's direct insert does), both
  shards at once while the next chunk is made. tests/fleet/test_fleet_generator.py checks
  that both write the same rows.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa

from forensix.store.clickhouse import ClickHouseStore
from forensix.store.clickhouse.ddl import local_name
from forensix.store.clickhouse.native import ArrowData

# the realistic host's programs, libraries and /etc files: one list for both generators
from forensix.testing.generator import _BINS, _ETC, _LIBS

T0 = 1_790_000_000 * 10**9
SPREAD = 720_000  # ns between the fleet questions' generated events: 10^8 span 20 h, 10^7 2 h

# What the generated fleet runs: executables (a process each), with a stand-in for their
# content's SHA-256 (of the path: the fleet has no files), and what the processes touch.
_WORKERS = 40  # /opt/svcN/bin/worker: each host runs the worker of its service (host N % 40)
_EXES = _BINS + [f"/opt/svc{i}/bin/worker" for i in range(_WORKERS)]
MINER = "/tmp/.x/miner"
POOL = ("198.51.100.23", 3333)  # where the miner connects
PRELOAD = "/etc/ld.so.preload"  # what the miner writes
_LOGS = [f"/var/log/app/{n}.log" for n in ("access", "error", "audit", "jobs", "sync")]
# per 1000 events that are not an exec: the kinds and how many (as forensix.testing.generator's
# realistic host: reads, flows and mmaps most, writes 15% of opens and flows, a few connects)
_MIX = (("open_r", 350), ("open_w", 70), ("flow_r", 240), ("flow_w", 60), ("mmap", 160), ("connect", 40),
        ("unlink", 25), ("rename", 20), ("chmod", 35))
PROCESS_EVENTS = 50  # events per process: its exec first
MINER_EVERY, MINER_PROCESS = 97, 7  # every 97th host (host0, host97, ...) runs the miner as its 8th process


def _arr(xs: list[str]) -> str:
    return "[" + ", ".join(f"'{x}'" for x in xs) + "]"


def _sha(path: str) -> str:
    import hashlib

    return hashlib.sha256(path.encode()).hexdigest()


def base_sql(n: int, hosts: int, offset: int, step: int, where: str = "") -> str:
    """One row per generated event, with every choice made (a subquery the INSERTs read).
    ``where``: only these events (on N, h, i, p, j, bad, eid, k, r, x, kind), filtered before
    their strings are made."""
    bounds, acc = [], 0
    for kind, k in _MIX:
        acc += k
        bounds.append((kind, acc))
    assert acc == 1000
    kind = "multiIf(j = 0, 'exec', bad AND j = 1, 'connect', bad AND j = 2, 'open_w', bad AND j = 3, 'flow_w', " \
           "bad, 'mmap', " + ", ".join(f"r < {b}, '{k}'" for k, b in bounds[:-1]) + f", '{bounds[-1][0]}')"
    exes = _arr(_EXES + [MINER])
    shas = _arr([_sha(e) for e in _EXES + [MINER]])
    names = _arr([e.rsplit("/", 1)[1] for e in _EXES + [MINER]])
    # the path of a change (write, unlink, rename, chmod): data files, logs or /tmp; of a
    # read: /etc, a library or a data file; of an mmap: a library
    data = "concat('/var/lib/app/data/', toString(intDiv(x, 100) % 4000), '.db')"
    # logs are written by their programs, renamed or deleted only by log rotation (a rename or
    # unlink of one by any program is what fx_logs_tampered raises: 84,422 findings before)
    changed = (f"multiIf(x % 10 < 5, {data}, x % 10 < 7 AND kind IN ('open_w', 'flow_w'), "
               f"{_arr(_LOGS)}[intDiv(x, 10) % {len(_LOGS)} + 1], "
               "concat('/tmp/tmp.', lower(hex(intDiv(x, 10) % 100000))))")
    read = (f"multiIf(x % 10 < 4, {_arr(_ETC)}[intDiv(x, 10) % {len(_ETC)} + 1], "
            f"x % 10 < 7, {_arr(_LIBS)}[intDiv(x, 10) % {len(_LIBS)} + 1], {data})")
    lib = f"{_arr(_LIBS)}[intDiv(x, 10) % {len(_LIBS)} + 1]"
    return f"""
SELECT N, h, hn, i, p, j, bad, eid, k, kind, x, {T0} + N * {step} AS ts,
       multiIf(kind IN ('open_r', 'open_w'), 'open', kind IN ('flow_r', 'flow_w'), 'flow', kind) AS action,
       kind IN ('open_w', 'flow_w') AS wr,
       {exes}[k + 1] AS exe, {shas}[k + 1] AS sha, {names}[k + 1] AS pname,
       multiIf(bad AND j IN (2, 3), '{PRELOAD}', kind = 'mmap', {lib},
               kind IN ('open_r', 'flow_r'), {read}, {changed}) AS path,
       concat('10.1.', toString(intDiv(h, 250)), '.', toString(h % 250 + 1)) AS host_ip,
       if(bad, [exe, '--pool', '{POOL[0]}:{POOL[1]}'], [exe, concat('--job=', toString(eid % 8))]) AS args
FROM (
  SELECT number + {offset} AS N, N % {hosts} AS h, concat('host', toString(h)) AS hn, intDiv(N, {hosts}) AS i,
         intDiv(i, {PROCESS_EVENTS}) AS p, i % {PROCESS_EVENTS} AS j,
         h % {MINER_EVERY} = 0 AND p = {MINER_PROCESS} AS bad, cityHash64(hn, p) AS eid,
         if(bad, {len(_EXES)}, if(eid % 4 = 0, {len(_BINS)} + h % {_WORKERS}, eid % {len(_BINS)})) AS k,
         intHash64(N) % 1000 AS r, intHash64(N + 1) AS x, {kind} AS kind
  FROM (SELECT number FROM system.numbers LIMIT {n}){f" WHERE {where}" if where else ""})"""


def gen_sql(db: str, table: str, n: int, hosts: int, offset: int, step: int = SPREAD) -> str:
    """INSERT ... SELECT of ``n`` generated events (``table`` events), their flow edges
    (flows: every flow event's edge, as the recorder keeps one with ``in_events``) or their
    processes (one image per process, at its exec) of ``hosts`` hosts (``base_sql``)."""
    base = base_sql(n, hosts, offset, step, {"flows": "kind IN ('flow_r', 'flow_w')", "processes": "j = 0"}.get(table, ""))
    ip = (f"if(bad, '{POOL[0]}', if(x % 10 < 6, concat('10.0.', toString(x % 4), '.', toString(intDiv(x, 4) % 20)), "
          "concat('93.184.216.', toString(x % 32))))")
    port = f"if(bad, {POOL[1]}, [5432, 6379, 443, 8080][intDiv(x, 100) % 4 + 1])"
    nbytes = "toUInt64(intDiv(x, 1000) % 65536 + 1)"
    if table == "events":
        return f"""INSERT INTO `{db}`.events (host_id, host_name, boot_id, ts, cpu, seq, event_kind, event_category,
  event_action, process_entity_id, process_pid, process_name, user_id, process_executable, process_args,
  process_args__null, process_hash_sha256, file_path, file_inode, file_device, file_flags, file_target_path,
  mem_prot, destination_ip, destination_port, source_ip, source_port, network_transport, network_type,
  flow_read_count, flow_read_bytes, flow_write_count, flow_write_bytes, flow_first_ts, flow_last_ts, fx_batch)
SELECT hn, hn, 'boot', ts, 0, N, 'event',
  multiIf(action = 'exec', 'process', action = 'connect', 'network', action = 'flow', 'flow',
          action = 'mmap', 'memory', 'file'),
  action, eid, toUInt32(p % 30000 + 100), pname, toUInt32(if(eid % 3 = 0, 1000, 0)),
  if(action = 'exec', exe, NULL), if(action = 'exec', args, emptyArrayString()),
  if(action = 'exec', 0, 1), if(action = 'exec', sha, NULL),
  if(action IN ('exec', 'connect'), NULL, path), if(action IN ('exec', 'connect'), NULL, cityHash64(path) % 1000000 + 100),
  if(action IN ('exec', 'connect'), NULL, toUInt64(2049)), if(action = 'open', toUInt32(if(wr, 65, 0)), NULL),
  if(action = 'rename', concat(path, '.1'), NULL), if(action = 'mmap', toUInt32(5), NULL),
  if(action = 'connect', {ip}, NULL), if(action = 'connect', toUInt16({port}), NULL),
  if(action = 'connect', host_ip, NULL), if(action = 'connect', toUInt16(x % 28000 + 32768), NULL),
  if(action = 'connect', 'tcp', NULL), if(action = 'connect', 'ipv4', NULL),
  if(action = 'flow', toUInt64(NOT wr), NULL), if(action = 'flow' AND NOT wr, {nbytes}, NULL),
  if(action = 'flow', toUInt64(wr), NULL), if(action = 'flow' AND wr, {nbytes}, NULL),
  if(action = 'flow', ts - 1000, NULL), if(action = 'flow', ts, NULL), 0
FROM ({base})"""
    if table == "flows":
        return f"""INSERT INTO `{db}`.flows (host_id, host_name, boot_id, entity_id, pid, fd, file_inode, file_device,
  file_type, file_path, first_ts, last_ts, read_count, read_bytes, write_count, write_bytes, reason, in_events, fx_batch)
SELECT hn, hn, 'boot', eid, toUInt32(p % 30000 + 100), 3, cityHash64(path) % 1000000 + 100, toUInt64(2049), 'file',
  path, ts - 1000, ts, toUInt64(NOT wr), if(wr, 0, {nbytes}), toUInt64(wr), if(wr, {nbytes}, 0), 'close', 1, 0
FROM ({base})"""
    return f"""INSERT INTO `{db}`.processes (host_id, host_name, boot_id, entity_id, image_seq, pid, parent_entity_id,
  start_ts, image_ts, executable, args, args__null, name, user_id, source, hash_sha256, fx_batch)
SELECT hn, hn, 'boot', eid, 0, toUInt32(p % 30000 + 100), cityHash64(hn, 'init'), ts, ts, exe,
  args, 0, pname, toUInt32(if(eid % 3 = 0, 1000, 0)), 'fork',
  sha, 0
FROM ({base})"""




def load_fleet_sql(st: ClickHouseStore, events: int, hosts: int, step: int = SPREAD) -> float:
    """``events`` events of ``hosts`` hosts (their flow edges and processes too) by ``gen_sql``
    through the Distributed tables and the summaries' views; seconds it took."""
    t0 = time.monotonic()
    chunk = 2_000_000
    for off in range(0, events, chunk):
        n = min(chunk, events - off)
        for table in ("events", "flows", "processes"):
            st.entry.execute(gen_sql(st.db, table, n, hosts, off, step), settings={"insert_distributed_sync": 1})
    return time.monotonic() - t0


# -- the same rows made with numpy ------------------------------------------------------



def int_hash64(x: np.ndarray) -> np.ndarray:
    """ClickHouse's intHash64 (a MurmurHash3 finalizer of x xor a constant), on uint64."""
    x = x.astype(np.uint64) ^ np.uint64(0x4CF2D2BAAE6DA887)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(33)
        x *= np.uint64(0xFF51AFD7ED558CCD)
        x ^= x >> np.uint64(33)
        x *= np.uint64(0xC4CEB9FE1A85EC53)
        x ^= x >> np.uint64(33)
    return x


_KINDS = ["exec", "connect", "open_w", "flow_w", "mmap"] + [k for k, _ in _MIX]  # codes: index in this list
_K = {k: i for i, k in enumerate(dict.fromkeys(_KINDS))}
_ACTIONS = ["exec", "connect", "open", "flow", "mmap", "unlink", "rename", "chmod"]
_ACTION_OF = {"exec": "exec", "connect": "connect", "open_r": "open", "open_w": "open", "flow_r": "flow",
              "flow_w": "flow", "mmap": "mmap", "unlink": "unlink", "rename": "rename", "chmod": "chmod"}
_CATEGORY = {"exec": "process", "connect": "network", "flow": "flow", "mmap": "memory"}


class Vocab:
    """Every string the fleet's rows hold, each once, and what the server computes of them
    (cityHash64 of the paths, hex of the /tmp names) asked of it once, so the rows are the
    ones ``gen_sql`` writes byte for byte."""

    DATA, TMP = 4000, 100_000

    def __init__(self, srv: Any, hosts: int) -> None:
        self.hosts = hosts
        self.paths: list[str] = [PRELOAD] + _LIBS + _ETC + _LOGS
        self.lib0 = 1
        self.etc0 = self.lib0 + len(_LIBS)
        self.log0 = self.etc0 + len(_ETC)
        self.data0 = self.log0 + len(_LOGS)
        self.tmp0 = self.data0 + self.DATA
        self.paths += [f"/var/lib/app/data/{i}.db" for i in range(self.DATA)]
        self.paths += [f"/tmp/tmp.{h}" for (h,) in srv.client.execute(
            f"SELECT lower(hex(number)) FROM numbers({self.TMP})")]
        fixed = self.paths[:self.tmp0]
        inode = [int(v) for (v,) in srv.client.execute(
            "SELECT cityHash64(p) %% 1000000 + 100 FROM (SELECT arrayJoin(%(p)s) AS p)", {"p": fixed})]
        inode += [int(v) for (v,) in srv.client.execute(
            f"SELECT cityHash64(concat('/tmp/tmp.', lower(hex(number)))) % 1000000 + 100 FROM numbers({self.TMP})")]
        self.inode = np.array(inode, np.uint64)
        self.path_arr = pa.array(self.paths, pa.string())
        self.target_arr = pa.array([p + ".1" for p in self.paths], pa.string())
        exes = _EXES + [MINER]
        self.exe_arr = pa.array(exes, pa.string())
        self.sha_arr = pa.array([_sha(e) for e in exes], pa.string())
        self.name_arr = pa.array([e.rsplit("/", 1)[1] for e in exes], pa.string())
        # argv words: the executables, then --job=0..7, then the miner's two
        self.job0 = len(exes)
        self.words = pa.array(exes + [f"--job={i}" for i in range(8)] + ["--pool", f"{POOL[0]}:{POOL[1]}"])
        self.ips = pa.array([POOL[0]] + [f"10.0.{a}.{b}" for a in range(4) for b in range(20)]
                            + [f"93.184.216.{c}" for c in range(32)], pa.string())
        self.host_names = pa.array([f"host{h}" for h in range(hosts)], pa.string())
        self.host_ips = pa.array([f"10.1.{h // 250}.{h % 250 + 1}" for h in range(hosts)], pa.string())
        self.parents = np.array([int(v) for (v,) in srv.client.execute(
            f"SELECT cityHash64(concat('host', toString(number)), 'init') FROM numbers({hosts})")], np.uint64)

    def entities(self, srv: Any, p0: int, p1: int) -> np.ndarray:
        """cityHash64('hostH', p) of every host H and process p in [p0, p1), as
        ``[(p - p0) * hosts + H]``: the server's own hash (gen_sql's entity ids)."""
        n = (p1 - p0) * self.hosts
        rows = srv.client.execute(f"SELECT cityHash64(concat('host', toString(number % {self.hosts})), "
                           f"intDiv(number, {self.hosts}) + {p0}) FROM numbers({n})", columnar=True)
        return np.asarray(rows[0], dtype=np.uint64)


def _dict(indices: np.ndarray, dictionary: pa.Array, mask: np.ndarray | None = None) -> pa.DictionaryArray:
    idx = pa.array(indices.astype(np.int32), mask=mask)
    return pa.DictionaryArray.from_arrays(idx, dictionary)


def _take(dictionary: pa.Array, indices: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
    """``dictionary[indices]`` as a plain column (NULL where ``mask``)."""
    return dictionary.take(pa.array(indices.astype(np.int32), mask=mask))


def _const(value: str, n: int) -> pa.DictionaryArray:
    return _dict(np.zeros(n, np.int32), pa.array([value]))


def _opt(values: np.ndarray, present: np.ndarray, t: pa.DataType) -> pa.Array:
    """``values`` where ``present``, NULL elsewhere."""
    return pa.array(values, t, mask=~present)


def _args(v: Vocab, k: np.ndarray, bad: np.ndarray, eid: np.ndarray, rows: np.ndarray) -> pa.Array:
    """The argv of the rows ``rows`` (others empty): [exe, --job=eid%8], the miner's [exe, --pool, POOL]."""
    count = np.where(rows, np.where(bad, 3, 2), 0).astype(np.int32)
    offsets = np.zeros(len(k) + 1, np.int32)
    np.cumsum(count, out=offsets[1:])
    first = offsets[:-1][rows]
    words = np.empty(int(offsets[-1]), np.int32)
    words[first] = k[rows]
    words[first + 1] = np.where(bad[rows], v.job0 + 8, v.job0 + _mod(eid[rows], 8))
    b = rows & bad
    words[offsets[:-1][b] + 2] = v.job0 + 9
    return pa.ListArray.from_arrays(pa.array(offsets), v.words.take(pa.array(words)))


def _mod(a: np.ndarray, d: int) -> np.ndarray:
    """``a % d`` for non-negative ``a``: numpy divides by a scalar fast (libdivide), its % not."""
    return a - (a // d) * d


# every modulus of x (intHash64(N + 1)) gen_sql takes, after a division or not, divides
# this one: x % _XMOD (one uint64 operation) gives every choice with int64 arithmetic
_XMOD = 57_344_000_000  # 2^19 * 5^6 * 7


def make_chunk(v: Vocab, eids: np.ndarray, p0: int, off: int, n: int, step: int,
               shard_of: np.ndarray, shards: int) -> dict[str, list[pa.Table]]:
    """Events ``off`` .. ``off + n`` of the fleet (``base_sql``'s rows, every choice the
    same), by shard (``shard_of[host]``), then host and time as the tables keep them:
    {table: [each shard's rows]} for events, flows and processes."""
    hosts = v.hosts
    nn = np.arange(off, off + n, dtype=np.int64)
    h_all = _mod(nn, hosts)
    order = np.argsort(shard_of[h_all] * hosts + h_all, kind="stable")
    nn = nn[order]
    h = h_all[order]
    i = nn // hosts
    p = i // PROCESS_EVENTS
    j = i - p * PROCESS_EVENTS
    bad = (_mod(h, MINER_EVERY) == 0) & (p == MINER_PROCESS)
    eid = eids[(p - p0) * hosts + h]
    e264 = (eid % np.uint64(264)).astype(np.int64)  # eid % 4, % 22, % 3, % 8 all divide 264
    nb = len(_BINS)
    k = np.where(bad, len(_EXES), np.where(_mod(e264, 4) == 0, nb + _mod(h, _WORKERS), _mod(e264, nb))).astype(np.int32)
    un = nn.astype(np.uint64)
    r = (int_hash64(un) % np.uint64(1000)).astype(np.int64)
    m = (int_hash64(un + np.uint64(1)) % np.uint64(_XMOD)).astype(np.int64)
    # kind: as gen_sql's multiIf, in its order
    kind = np.full(n, _K[_MIX[-1][0]], np.int8)
    for name, bound in reversed(list(zip([k_ for k_, _ in _MIX[:-1]], np.cumsum([s_ for _, s_ in _MIX[:-1]]),
                                         strict=True))):
        kind[r < bound] = _K[name]
    kind[bad] = _K["mmap"]
    for jj, name in ((3, "flow_w"), (2, "open_w"), (1, "connect")):
        kind[bad & (j == jj)] = _K[name]
    kind[j == 0] = _K["exec"]
    ts = np.int64(T0) + nn * np.int64(step)
    x10 = _mod(m, 10)
    xd10 = _mod(m, 14_000_000) // 10  # (x // 10) % 1,400,000: every modulus of x // 10 divides it
    data = v.data0 + _mod(m, 400_000) // 100
    wr = (kind == _K["open_w"]) | (kind == _K["flow_w"])
    changed = np.where(x10 < 5, data, np.where((x10 < 7) & wr, v.log0 + _mod(xd10, len(_LOGS)), v.tmp0 + _mod(xd10, v.TMP)))
    lib = v.lib0 + _mod(xd10, len(_LIBS))
    read = np.where(x10 < 4, v.etc0 + _mod(xd10, len(_ETC)), np.where(x10 < 7, lib, data))
    is_read = (kind == _K["open_r"]) | (kind == _K["flow_r"])
    path = np.where(bad & ((j == 2) | (j == 3)), 0,
                    np.where(kind == _K["mmap"], lib, np.where(is_read, read, changed))).astype(np.int32)
    action = np.array([_ACTIONS.index(_ACTION_OF[k_]) for k_ in _K], np.int8)[kind]
    is_exec, is_conn = action == 0, action == 1
    is_open, is_flow = action == 2, action == 3
    no_path = is_exec | is_conn
    pid = (_mod(p, 30000) + 100).astype(np.uint32)
    uid = np.where(_mod(e264, 3) == 0, 1000, 0).astype(np.uint32)
    inode = v.inode[path]
    nbytes = (_mod(m, 65_536_000) // 1000 + 1).astype(np.uint64)
    ip = np.where(bad, 0, np.where(x10 < 6, 1 + _mod(m, 4) * 20 + _mod(m, 80) // 4, 81 + _mod(m, 32)))
    port = np.where(bad, POOL[1], np.array([5432, 6379, 443, 8080])[_mod(m, 400) // 100])
    x = m  # below: only moduli of x that divide _XMOD
    eid_job = e264
    hn = _dict(h, v.host_names)
    actions = pa.array(_ACTIONS)
    categories = pa.array([_CATEGORY.get(a, "file") for a in _ACTIONS])
    u64, u32 = pa.uint64(), pa.uint32()
    events = pa.table({
        "host_id": hn, "host_name": hn, "boot_id": _const("boot", n), "ts": pa.array(ts, pa.int64()),
        "cpu": pa.array(np.zeros(n, np.uint32)), "seq": pa.array(nn), "event_kind": _const("event", n),
        "event_category": _dict(action, categories), "event_action": _dict(action, actions),
        "process_entity_id": pa.array(eid), "process_pid": pa.array(pid), "process_name": _dict(k, v.name_arr),
        "user_id": pa.array(uid), "process_executable": _take(v.exe_arr, k, ~is_exec),
        "process_args": _args(v, k, bad, eid_job, is_exec), "process_args__null": pa.array((~is_exec).astype(np.uint8)),
        "process_hash_sha256": _take(v.sha_arr, k, ~is_exec), "file_path": _take(v.path_arr, path, no_path),
        "file_inode": _opt(inode, ~no_path, u64), "file_device": _opt(np.full(n, 2049, np.uint64), ~no_path, u64),
        "file_flags": _opt(np.where(wr, 65, 0).astype(np.uint32), is_open, u32),
        "file_target_path": _take(v.target_arr, path, action != _ACTIONS.index("rename")),
        "mem_prot": _opt(np.full(n, 5, np.uint32), action == _ACTIONS.index("mmap"), u32),
        "destination_ip": _take(v.ips, ip, ~is_conn), "destination_port": _opt(port.astype(np.uint16), is_conn, pa.uint16()),
        "source_ip": _take(v.host_ips, h, ~is_conn),
        "source_port": _opt((_mod(x, 28000) + 32768).astype(np.uint16), is_conn, pa.uint16()),
        "network_transport": _dict(np.zeros(n, np.int32), pa.array(["tcp"]), ~is_conn),
        "network_type": _dict(np.zeros(n, np.int32), pa.array(["ipv4"]), ~is_conn),
        "flow_read_count": _opt((~wr).astype(np.uint64), is_flow, u64),
        "flow_read_bytes": _opt(nbytes, is_flow & ~wr, u64),
        "flow_write_count": _opt(wr.astype(np.uint64), is_flow, u64),
        "flow_write_bytes": _opt(nbytes, is_flow & wr, u64),
        "flow_first_ts": _opt(ts - 1000, is_flow, pa.int64()), "flow_last_ts": _opt(ts, is_flow, pa.int64()),
        "fx_batch": pa.array(np.zeros(n, np.uint64)),
    })
    f = np.flatnonzero(is_flow)
    fw = wr[f]
    flows = pa.table({
        "host_id": hn.take(pa.array(f)), "host_name": hn.take(pa.array(f)), "boot_id": _const("boot", len(f)),
        "entity_id": pa.array(eid[f]), "pid": pa.array(pid[f]), "fd": pa.array(np.full(len(f), 3, np.int32)),
        "file_inode": pa.array(inode[f]), "file_device": pa.array(np.full(len(f), 2049, np.uint64)),
        "file_type": _const("file", len(f)), "file_path": _take(v.path_arr, path[f]),
        "first_ts": pa.array(ts[f] - 1000), "last_ts": pa.array(ts[f]),
        "read_count": pa.array((~fw).astype(np.uint64)), "read_bytes": pa.array(np.where(fw, 0, nbytes[f]).astype(np.uint64)),
        "write_count": pa.array(fw.astype(np.uint64)), "write_bytes": pa.array(np.where(fw, nbytes[f], 0).astype(np.uint64)),
        "reason": _const("close", len(f)), "in_events": pa.array(np.ones(len(f), np.uint8)),
        "fx_batch": pa.array(np.zeros(len(f), np.uint64)),
    })
    e = np.flatnonzero(is_exec)
    ones = np.ones(len(e), bool)
    processes = pa.table({
        "host_id": hn.take(pa.array(e)), "host_name": hn.take(pa.array(e)), "boot_id": _const("boot", len(e)),
        "entity_id": pa.array(eid[e]), "image_seq": pa.array(np.zeros(len(e), np.uint32)), "pid": pa.array(pid[e]),
        "parent_entity_id": pa.array(v.parents[h[e]]), "start_ts": pa.array(ts[e]), "image_ts": pa.array(ts[e]),
        "executable": _take(v.exe_arr, k[e]), "args": _args(v, k[e], bad[e], eid_job[e], ones),
        "args__null": pa.array(np.zeros(len(e), np.uint8)), "name": _dict(k[e], v.name_arr), "user_id": pa.array(uid[e]),
        "source": _const("fork", len(e)), "hash_sha256": _take(v.sha_arr, k[e]),
        "fx_batch": pa.array(np.zeros(len(e), np.uint64)),
    })
    shard = shard_of[h]
    out: dict[str, list[pa.Table]] = {}
    for name, t, rows in (("events", events, None), ("flows", flows, f), ("processes", processes, e)):
        of = shard if rows is None else shard[rows]
        ends = np.searchsorted(of, np.arange(shards), side="right")
        starts = np.concatenate([[0], ends[:-1]])
        out[name] = [t.slice(int(a), int(b - a)) for a, b in zip(starts, ends, strict=True)]
    return out


def write_fleet(st: ClickHouseStore, events: int, hosts: int, step: int = SPREAD, chunk: int = 1_000_000,
                stop: threading.Event | None = None) -> float:
    """``events`` events of ``hosts`` hosts (their flow edges and processes too; the rows
    ``load_fleet_sql`` writes) made here and sent to each shard's local tables, through the
    summaries' views there; seconds it took. Each shard inserts one chunk while the next is
    made."""
    t0 = time.monotonic()
    srv = st.entry
    v = Vocab(srv, hosts)
    where = st._shard_of([f"host{h}" for h in range(hosts)])
    shard_of = np.array([where[f"host{h}"] for h in range(hosts)], np.int64)
    targets = {t: f"`{st.db}`.`{local_name(t, st.cluster)}`" for t in ("events", "flows", "processes")}
    # one connection per shard of its own: the store's are not for two threads at once
    from forensix.store.clickhouse.connection import Server

    conns = [Server(s.host, s.port, timeout=600) for s in st.shards]

    def send(i: int, parts: dict[str, list[pa.Table]]) -> None:
        for table, per_shard in parts.items():
            data = per_shard[i]
            if data.num_rows:
                cols = ", ".join(f"`{c}`" for c in data.column_names)
                conns[i].execute(f"INSERT INTO {targets[table]} ({cols}) VALUES", ArrowData.of(data))

    pending: list[Future[None]] = []
    try:
        with ThreadPoolExecutor(len(conns)) as pool:
            for off in range(0, events, chunk):
                if stop is not None and stop.is_set():
                    break
                n = min(chunk, events - off)
                p0 = off // hosts // PROCESS_EVENTS
                p1 = (off + n - 1) // hosts // PROCESS_EVENTS + 1
                parts = make_chunk(v, v.entities(srv, p0, p1), p0, off, n, step, shard_of, len(conns))
                for f in pending:  # the previous chunk stored before this one is sent
                    f.result()
                pending = [pool.submit(send, i, parts) for i in range(len(conns))]
            for f in pending:
                f.result()
    finally:
        for c in conns:
            c.close()
    return time.monotonic() - t0
