"""The live evaluator: the predicate IR over Arrow batches, vectorised with pyarrow.compute.

``ProcessContext`` remembers, from the ``processes`` batches and the exec/fork events
that pass by, each process's images over time and its parent, so that an event can be
given its process's command line and its parent's image as of the event time (the same
as-of rule as the SQL view's ASOF JOIN). ``enrich`` adds the derived ``fx_*`` columns
to a batch; ``Evaluator`` computes a rule's boolean mask, sharing sub-results between
rules of one batch.
"""

from __future__ import annotations

import bisect
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from forensix.analysis.users import AccountBook, this_host_id
from forensix.rules import fields as F
from forensix.rules.ir import (
    RAW_COLUMNS,
    And,
    Const,
    Node,
    Not,
    Or,
    Pred,
    columns_of,
    literal_alternatives,
)

__all__ = ["DERIVED_ARROW", "Actions", "Codes", "Evaluator", "ProcessContext", "Selection", "actions_of", "count_true", "enrich", "null_false", "true_rows"]

_Image = tuple[int, str | None, str | None, str | None]  # (image_ts, executable, cmdline, name)


def _join_args(args: pa.Array) -> pa.Array:
    """' '-joined argv, skipping NULL elements (as DuckDB's array_to_string does)."""
    if isinstance(args, pa.ChunkedArray):
        args = args.combine_chunks()
    values = pc.list_flatten(args)
    if values.null_count:
        parents = pc.list_parent_indices(args).to_numpy()
        keep = pc.is_valid(values).to_numpy(zero_copy_only=False)
        counts = np.bincount(parents[keep], minlength=len(args))
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
        rebuilt = pa.ListArray.from_arrays(
            pa.array(offsets), values.filter(pa.array(keep)), mask=pc.is_null(args)
        )
        args = rebuilt
    return pc.binary_join(args, " ")


_LEARNT = frozenset({"exec", "fork"})


class ProcessContext:
    """Process images and parents seen so far, bounded by ``max_entities``."""

    def __init__(self, max_entities: int = 400_000) -> None:
        self.images: dict[int, list[_Image]] = {}
        self.parent: dict[int, int] = {}
        self.max_entities = max_entities
        # each host's users as its recorder read them (the accounts rows of the stream): a log
        # host names the uids of every agent's host as that host had them
        self.accounts = AccountBook()

    def _add(self, eid: int, img: _Image) -> None:
        lst = self.images.get(eid)
        if lst is None:  # the common cases first: a new process, a later image
            self.images[eid] = [img]
            return
        last = lst[-1][0]
        if img[0] > last:
            lst.append(img)
            return
        pos = len(lst) - 1 if img[0] == last else bisect.bisect_left(lst, img[0], key=lambda x: x[0])
        if pos < len(lst) and lst[pos][0] == img[0]:
            # the exec event and the processes row describe one image: merge, never erase
            old = lst[pos]
            lst[pos] = (img[0], img[1] or old[1], img[2] if img[2] is not None else old[2], img[3] or old[3])
        else:
            lst.insert(pos, img)

    def image_at(self, eid: int, ts: int) -> _Image | None:
        lst = self.images.get(eid)
        if not lst:
            return None
        if lst[-1][0] <= ts:  # the usual question: the latest image
            return lst[-1]
        pos = bisect.bisect_right(lst, ts, key=lambda x: x[0])
        return lst[pos - 1] if pos else None

    def add_processes(self, data: pa.Table) -> None:
        cmd = _join_args(data.column("args").combine_chunks()).to_pylist()
        cols = [data.column(c).to_pylist() for c in ("entity_id", "image_ts", "executable", "name", "parent_entity_id")]
        for eid, its, exe, name, parent, c in zip(*cols, cmd):
            self._add(eid, (its, exe, c, name))
            if parent:
                self.parent[eid] = parent
        self._trim()

    def add_events(self, data: pa.Table) -> None:
        """Learn from exec and fork events (before the batch is evaluated)."""
        acts = actions_of(data)
        if not acts.any(_LEARNT):
            return
        names = ("event_action", "ts", "process_entity_id", "target_entity_id", "process_executable", "process_name")
        rows = data.select([*names, "process_args"]).filter(pa.array(acts.where(_LEARNT)))
        cmd = _join_args(rows.column("process_args").combine_chunks()).to_pylist()
        cols = [rows.column(c).to_pylist() for c in names]
        for act, ts, eid, child, exe, name, c in zip(*cols, cmd):
            if act == "exec" and eid:
                self._add(eid, (ts, exe, c, name))
            elif act == "fork" and child and eid:
                self.parent[child] = eid
                img = self.image_at(eid, ts)
                if img is not None and child not in self.images:
                    self._add(child, (ts, img[1], img[2], img[3]))
        self._trim()

    def _trim(self) -> None:
        over = len(self.images) - self.max_entities
        if over > 0:  # oldest entities first (dicts keep insertion order)
            for eid in list(self.images)[:over]:
                del self.images[eid]
                self.parent.pop(eid, None)

    def lookup(self, eids: np.ndarray, ts: np.ndarray) -> list[_Image | None]:
        """The image of each (entity, time), with one Python step per distinct entity."""
        out: list[_Image | None] = [None] * len(eids)
        if not len(eids):
            return out
        uniq, inverse = np.unique(eids, return_inverse=True)
        last_ok = np.full(len(uniq), np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(last_ok, inverse, ts)
        simple: list[_Image | None] = []
        complex_ = set()
        for i, u in enumerate(uniq.tolist()):
            lst = self.images.get(u)
            if lst and lst[-1][0] <= last_ok[i]:
                simple.append(lst[-1])
            else:
                simple.append(None)
                if lst:
                    complex_.add(i)
        for row, ui in enumerate(inverse.tolist()):
            out[row] = simple[ui] if ui not in complex_ else self.image_at(int(uniq[ui]), int(ts[row]))
        return out

    def parents(self, eids: np.ndarray) -> np.ndarray:
        get = self.parent.get
        return np.fromiter((get(e, 0) for e in eids.tolist()), dtype=np.uint64, count=len(eids))


# -- derived columns --------------------------------------------------------------------

_Builder = Callable[[pa.Table, "_Ctx"], pa.Array]


class _Ctx:
    """Per-batch memo of the process and parent images of each row."""

    def __init__(self, table: pa.Table, pctx: ProcessContext | None, actions: Actions | None = None,
                 rows: np.ndarray | None = None) -> None:
        self.table = table
        self.pctx = pctx or ProcessContext()
        self.actions = actions  # the batch's (``rows`` of it, when the table is a Selection)
        self.rows = rows
        self._p: list[_Image | None] | None = None
        self._pp: list[_Image | None] | None = None

    def _eids(self, col: str) -> np.ndarray:
        out: np.ndarray = self.table.column(col).fill_null(0).to_numpy().astype(np.uint64)
        return out

    def _ts(self) -> np.ndarray:
        out: np.ndarray = self.table.column("ts").to_numpy().astype(np.int64)
        return out

    def p(self) -> list[_Image | None]:
        if self._p is None:
            self._p = self.pctx.lookup(self._eids("process_entity_id"), self._ts())
        return self._p

    def pp(self) -> list[_Image | None]:
        if self._pp is None:
            parents = self.pctx.parents(self._eids("process_entity_id"))
            self._pp = self.pctx.lookup(parents, self._ts())
        return self._pp


def _own_or_image(own: pa.Array, c: _Ctx, i: int) -> pa.Array:
    """The event's own value (an exec's), else field ``i`` of its process's image: looked
    up only when some row lacks its own (an exec batch needs no lookup)."""
    return pc.coalesce(own, _pick(c.p(), i)) if own.null_count else own


def _pick(images: list[_Image | None], i: int) -> pa.Array:
    return pa.array([img[i] if img is not None else None for img in images], pa.string())


def _col(t: pa.Table, name: str) -> pa.Array:
    col = t.column(name)
    return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()  # (combining one chunk copies it)


def _by_value(arr: pa.Array, fmt: Callable[[Any], str | None]) -> pa.Array:
    """Map each distinct value once (uid -> name, mode -> octal), then gather."""
    enc = pc.dictionary_encode(arr)
    if isinstance(enc, pa.ChunkedArray):
        enc = enc.combine_chunks()
    dictionary = pa.array([fmt(v) for v in enc.dictionary.to_pylist()], pa.string())
    return pc.take(dictionary, enc.indices)


def _flag_names(flags: int) -> str:
    acc = flags & 3
    parts = ["O_RDONLY" if acc == 0 else "O_WRONLY" if acc == 1 else "O_RDWR"]
    parts += [name for bit, name in F.OPEN_FLAG_NAMES if flags & bit]
    return "|".join(parts)


def _flags(t: pa.Table, c: _Ctx) -> pa.Array:
    # A batch holds a handful of distinct flag words: name each once.
    return _by_value(_col(t, "file_flags"), lambda f: None if f is None else _flag_names(f))


def _mode(t: pa.Table, c: _Ctx) -> pa.Array:
    return _by_value(_col(t, "file_mode"), lambda m: None if m is None else f"{m & 0o7777:04o}")


def _user(t: pa.Table, c: _Ctx) -> pa.Array:
    """fx_user: as ``analysis.users`` names it, from the accounts rows of the stream; a host
    whose recorder sent none yet: this machine's names for this machine's rows, else NULL."""
    book = c.pctx.accounts
    hosts = _col(t, "host_id")
    if not book.hosts():
        names = F.cached_user_names()
        here = pc.fill_null(pc.equal(hosts, this_host_id()), False)
        mine = _by_value(_col(t, "user_id"), lambda u: None if u is None else names.get(u))
        return pc.if_else(here, mine, pa.scalar(None, pa.string()))
    found, _ = book.names(hosts.to_pylist(), _col(t, "user_id").to_pylist(), _col(t, "ts").to_pylist())
    return pa.array(found, pa.string())


def _case(t: pa.Table, col: str, mapping: dict[str, str]) -> pa.Array:
    src = _col(t, col)
    out = pa.nulls(len(src), pa.string())
    for k, v in mapping.items():
        out = pc.if_else(pc.fill_null(pc.equal(src, k), False), v, out)
    return out


def _sudo_user(t: pa.Table, c: _Ctx) -> pa.Array:
    """fx_sudo_user: the USER= of a sudo log line (fields.SUDO_USER_RE, as the SQL side)."""
    is_sudo = pc.fill_null(pc.equal(_col(t, "event_action"), "sudo"), False)
    if not pc.any(is_sudo).as_py():
        return pa.nulls(t.num_rows, pa.string())
    found = pc.extract_regex(_col(t, "message"), F.SUDO_USER_RE.replace("(", "(?P<u>", 1))
    return pc.if_else(is_sudo, pc.struct_field(found, [0]), pa.scalar(None, pa.string()))


_MOVES = frozenset({"rename", "link"})


def _target_filename(t: pa.Table, c: _Ctx) -> pa.Array:
    if c.actions is not None:  # the batch's action codes: no string compares
        where = c.actions.where(_MOVES)
        moved = pa.array(where if c.rows is None else where[c.rows])
    else:
        moved = pc.fill_null(pc.is_in(_col(t, "event_action"), pa.array(sorted(_MOVES))), False)
    if count_true(moved) == 0:
        return _col(t, "file_path")  # the common batch: no rename or link, no string copy
    return pc.if_else(moved, _col(t, "file_target_path"), _col(t, "file_path"))


def _nametype(t: pa.Table, c: _Ctx) -> pa.Array:
    act = _col(t, "event_action")
    flags = _col(t, "file_flags")
    delete = pc.fill_null(pc.is_in(act, pa.array(["unlink", "rmdir"])), False)
    creat_open = pc.and_(
        pc.fill_null(pc.equal(act, "open"), False),
        pc.fill_null(pc.not_equal(pc.bit_wise_and(flags, pa.scalar(0o100, flags.type)), 0), False),
    )
    create = pc.or_(pc.fill_null(pc.is_in(act, pa.array(["mkdir", "symlink", "link", "memfd_create"])), False), creat_open)
    out = pc.if_else(delete, "DELETE", pc.if_else(create, "CREATE", "NORMAL"))
    return pc.if_else(pc.is_null(_col(t, "file_path")), pa.scalar(None, pa.string()), out)


def _list_element(lists: pa.Array, i: int) -> pa.Array:
    """lists[i] or NULL when shorter (list_element alone raises)."""
    sliced = pc.list_slice(lists, i, i + 1)
    values = pc.list_flatten(sliced)
    parents = pc.list_parent_indices(sliced).to_numpy()
    idx = np.full(len(lists), -1, dtype=np.int64)
    idx[parents] = np.arange(len(parents))
    return pc.take(values, pa.array(idx, mask=idx < 0))


def _audit_arg(i: int) -> _Builder:
    def build(t: pa.Table, c: _Ctx) -> pa.Array:
        is_exec = pc.fill_null(pc.equal(_col(t, "event_action"), "exec"), False)
        argv = _list_element(_col(t, "process_args"), i)
        if i > 3:
            return pc.if_else(is_exec, argv, pa.scalar(None, pa.string()))
        raw = _by_value(_col(t, f"a{i}"), lambda v: None if v is None else f"{v:x}")
        return pc.if_else(is_exec, argv, raw)

    return build


def _time_back(t: pa.Table, c: _Ctx) -> pa.Array:
    """The further back of the two times a utimes call set (0 = now, -1 = left as it was; a
    NULL times pointer is "now" too, whatever a sensor before 2026-12 read past it)."""
    sc = _col(t, "syscall")
    null_times = pc.or_kleene(  # (Kleene: a pointer column left null by the other syscall kind is no answer)
        pc.and_kleene(pc.is_in(sc, pa.array(["utimensat", "futimesat"])), pc.equal(_col(t, "a2"), 0)),
        pc.and_kleene(pc.is_in(sc, pa.array(["utimes", "utime"])), pc.equal(_col(t, "a1"), 0)))
    utimes = pc.and_(pc.fill_null(pc.equal(_col(t, "event_action"), "utimes"), False),
                     pc.invert(pc.fill_null(null_times, False)))
    backs = []
    for name in ("file_mtime", "file_atime"):
        v = _col(t, name)
        set_ = pc.and_(utimes, pc.fill_null(pc.invert(pc.is_in(v, pa.array([0, -1], pa.int64()))), False))
        backs.append(pc.if_else(set_, pc.subtract(_col(t, "ts"), v), pa.scalar(None, pa.int64())))
    return pc.max_element_wise(*backs, skip_nulls=True)


DERIVED_ARROW: dict[str, _Builder] = {
    "fx_image": lambda t, c: _own_or_image(_col(t, "process_executable"), c, 1),
    "fx_command_line": lambda t, c: _own_or_image(_join_args(_col(t, "process_args")), c, 2),
    "fx_parent_image": lambda t, c: _pick(c.pp(), 1),
    "fx_parent_command_line": lambda t, c: _pick(c.pp(), 2),
    "fx_parent_name": lambda t, c: _pick(c.pp(), 3),
    "fx_user": _user,
    "fx_target_filename": _target_filename,
    "fx_initiated": lambda t, c: _case(t, "event_action", {"connect": "true", "accept": "false"}),
    "fx_flags": _flags,
    "fx_mode": _mode,
    "fx_nametype": _nametype,
    "fx_success": lambda t, c: _case(t, "event_outcome", {"success": "yes", "failure": "no"}),
    "fx_time_back": _time_back,
    "fx_hashes": lambda t, c: pc.binary_join_element_wise("SHA256=", pc.utf8_upper(_col(t, "process_hash_sha256")), ""),
    **{f"fx_audit_a{i}": _audit_arg(i) for i in range(10)},
    "fx_sudo_user": _sudo_user,
}


def enrich(table: pa.Table, derived: Iterable[str], pctx: ProcessContext | None) -> pa.Table:
    """The rule view of a batch: its columns plus the named derived ones."""
    c = _Ctx(table, pctx)
    for name in derived:
        if table.schema.get_field_index(name) >= 0:
            continue
        table = table.append_column(name, DERIVED_ARROW[name](table, c))
    return table


class Selection:
    """The rows ``rows`` (ascending indices) of a batch, each column taken when first read.

    It stands in for the filtered table wherever the evaluator and the derived-column
    builders read one (``column``, ``schema``, ``num_rows``): a rule group reads a
    few of the ~80 event columns, and filtering them all cost more than evaluating.
    """

    def __init__(self, table: pa.Table, rows: np.ndarray) -> None:
        self.base = table
        self.rows = rows
        self._take = pa.array(rows, pa.int64())
        self.schema: pa.Schema = table.schema
        self.num_rows = len(rows)
        self._cols: dict[str, pa.ChunkedArray] = {}

    def column(self, name: str) -> pa.ChunkedArray:
        got = self._cols.get(name)
        if got is None:
            got = self.base.column(name).take(self._take)
            self._cols[name] = got
        return got

    def filter(self, mask: pa.Array) -> pa.Table:
        """Whole rows: those of the selection under ``mask``."""
        return self.base.take(pa.array(self.rows[true_rows(mask)], pa.int64()))


def null_false(mask: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """``fill_null(mask, False)`` for a boolean array: one AND of its validity and value
    bitmaps (Arrow's fill_null goes value by value, fifteen times slower)."""
    if not mask.null_count:
        return mask
    if isinstance(mask, pa.ChunkedArray):
        return pa.chunked_array([null_false(c) for c in mask.chunks], mask.type)
    if mask.type != pa.bool_():
        return pc.fill_null(mask, False)
    validity, values = mask.buffers()
    size = (mask.offset + len(mask) + 7) // 8
    both = np.frombuffer(validity, np.uint8, size) & np.frombuffer(values, np.uint8, size)
    return pa.Array.from_buffers(pa.bool_(), len(mask), [None, pa.py_buffer(both)], offset=mask.offset)


def true_rows(mask: pa.Array) -> np.ndarray:
    """Indices of the rows where ``mask`` is true (NULL is false)."""
    return np.flatnonzero(null_false(mask).to_numpy(zero_copy_only=False))


def count_true(mask: pa.Array | pa.ChunkedArray) -> int:
    """Rows where ``mask`` is true (NULL is not): ``pc.any`` costs twenty times more."""
    if isinstance(mask, pa.ChunkedArray):
        return sum(c.true_count for c in mask.chunks)
    n: int = mask.true_count
    return n


class Actions:
    """A batch's ``event_action`` as dictionary codes: a handful of distinct strings over
    thousands of rows. The evaluator, the process context and the detectors all ask
    which rows have which actions; ``actions_of`` encodes a batch once for all of them."""

    COLUMN = "event_action"

    def __init__(self, batch: pa.Table) -> None:
        enc = pc.dictionary_encode(_col(batch, self.COLUMN))
        self.type = batch.schema.field(self.COLUMN).type
        self.values: list[Any] = [*enc.dictionary.to_pylist(), None]  # NULL last
        self.key = tuple(self.values)  # batches of a host repeat the same few actions in the same order
        nulls = enc.indices.null_count
        self.codes: np.ndarray = (enc.indices.fill_null(len(self.values) - 1) if nulls else enc.indices).to_numpy()
        self.present = slice(None) if nulls else slice(0, -1)  # the codes the rows use

    def where(self, actions: frozenset[str]) -> np.ndarray:
        """For each row, whether its action is one of ``actions``."""
        ok = np.fromiter((v in actions for v in self.values), dtype=bool, count=len(self.values))
        out: np.ndarray = ok[self.codes]
        return out

    def any(self, actions: frozenset[str]) -> bool:
        return any(v in actions for v in self.values[self.present])


_LAST_ACTIONS: tuple[weakref.ref[pa.Table], Actions] | None = None


def actions_of(batch: pa.Table) -> Actions:
    """The batch's ``Actions``, encoded once per batch object: the engine, the process
    context and the detectors look at the same table one after another."""
    global _LAST_ACTIONS
    last = _LAST_ACTIONS
    if last is not None and last[0]() is batch:
        return last[1]
    got = Actions(batch)
    _LAST_ACTIONS = (weakref.ref(batch), got)
    return got


class Codes:
    """Conditions on the action alone, decided once per distinct action and spread to
    the rows by their codes (``Actions``): an array lookup instead of a string
    comparison per row. Decisions are kept across batches in ``decided``, a dict the
    caller keeps (node id -> (node, value -> bool); the node is held, so its id stays
    its own)."""

    COLUMN = Actions.COLUMN
    MAX_VALUES = 10_000  # per node; the decoder's vocabulary is a few dozen actions
    MAX_ORDERS = 64  # per node: the arrays kept by the batch's actions in their order (``Actions.key``)

    def __init__(self, batch: pa.Table, decided: dict[int, tuple[Node, dict[Any, Any]]]) -> None:
        self.actions = actions_of(batch)
        self.decided = decided
        self._here: dict[int, np.ndarray] = {}  # this batch's decisions by node id

    def decide(self, node: Node) -> np.ndarray:
        """``node`` (reading ``event_action`` only) for each code. The array for a batch's
        actions in their order is kept too: a host's batches bring the same few, and a rules
        round asked ~30 nodes, each a pass over the values in Python."""
        got = self._here.get(id(node))
        if got is not None:
            return got
        values = self.actions.values
        entry = self.decided.get(id(node))
        if entry is None:
            entry = self.decided[id(node)] = (node, {"": {}, "orders": {}})
        known, orders = entry[1][""], entry[1]["orders"]
        got = orders.get(self.actions.key)
        if got is None:
            missing = [v for v in values if v not in known]
            if missing:
                if len(known) > self.MAX_VALUES:
                    known.clear()
                    missing = values
                batch = pa.table({self.COLUMN: pa.array(missing, self.actions.type)})
                known.update(zip(missing, map(bool, Evaluator(batch).mask(node).to_pylist())))
            got = np.fromiter((known[v] for v in values), dtype=bool, count=len(values))
            if len(orders) >= self.MAX_ORDERS:
                orders.clear()
            orders[self.actions.key] = got
        self._here[id(node)] = got
        return got

    def mask(self, node: Node, rows: np.ndarray | None) -> pa.Array:
        """``node`` for every row (or for ``rows``) of the batch."""
        return pa.array(self.bits(node, rows))

    def bits(self, node: Node, rows: np.ndarray | None) -> np.ndarray:
        """``mask`` as numpy booleans."""
        ok, codes = self.decide(node), self.actions.codes
        out: np.ndarray = ok[codes] if rows is None else ok[codes[rows]]
        return out

    def possible(self, node: Node) -> bool:
        """Whether some row of the batch can satisfy ``node``."""
        return bool(self.decide(node)[self.actions.present].any())


# -- predicates -------------------------------------------------------------------------


def _scalar(v: Any, t: pa.DataType) -> pa.Scalar:
    try:
        return pa.scalar(v, t)
    except (OverflowError, pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.scalar(float(v), pa.float64())


_CMP = {"lt": pc.less, "le": pc.less_equal, "gt": pc.greater, "ge": pc.greater_equal, "ne": pc.not_equal}
_STR_OPS = {"prefix": pc.starts_with, "suffix": pc.ends_with, "contains": pc.match_substring}


_FEW = 256  # rows below which a prefix or suffix alternation is matched in Python (RE2 compiles per call)
_LITERAL_TESTS: dict[str, Callable[[str, tuple[str, ...]], bool]] = {
    "prefix": str.startswith,
    "suffix": str.endswith,
    "contains": lambda s, alts: any(a in s for a in alts),  # (slower than RE2 on command lines)
}


def _match_literals(col: pa.Array, op: str, alts: tuple[str, ...]) -> pa.Array:
    """What the regex ``literal_alternatives`` read matches, on a few rows: compiling it
    costs RE2 more than these rows do in Python."""
    test = _LITERAL_TESTS[op]
    return pa.array([None if s is None else test(s, alts) for s in col.to_pylist()], pa.bool_())


class Evaluator:
    """Boolean masks of predicate trees over one batch, memoised per node.

    Derived columns are computed on first use (with ``pctx`` for the process context),
    so a rule whose cheap raw-column tests already fail costs no enrichment.
    """

    SPARSE = 4  # a conjunction true on fewer than 1/SPARSE of the rows goes on with those rows only (0: never)

    def __init__(self, table: pa.Table | Selection, pctx: ProcessContext | None = None,
                 codes: Codes | None = None) -> None:
        self.table = table
        self.n = table.num_rows
        self._memo: dict[Any, pa.Array] = {}
        self._rows = table.rows if isinstance(table, Selection) else None
        self._ctx = _Ctx(table, pctx, codes.actions if codes is not None else None, self._rows)
        self._derived: dict[str, pa.Array] = {}
        self._subs: dict[tuple[int, ...], tuple[tuple[Node, ...], np.ndarray, Evaluator]] = {}
        self._codes = codes

    def narrow(self, rows: np.ndarray) -> Evaluator:
        """An evaluator of the same batch restricted to ``rows`` (ascending indices of
        this evaluator's rows)."""
        if isinstance(self.table, Selection):
            sel = Selection(self.table.base, self.table.rows[rows])
        else:
            sel = Selection(self.table, rows)
        return Evaluator(sel, self._ctx.pctx, self._codes)

    def column(self, name: str) -> pa.Array:
        got = self._derived.get(name)  # raw columns too: combining chunks copies
        if got is None:
            if self.table.schema.get_field_index(name) >= 0:  # (Table.column_names costs 30 us)
                got = _col(self.table, name)
            else:
                got = DERIVED_ARROW[name](self.table, self._ctx)
            self._derived[name] = got
        return got

    def _operand(self, p: Pred) -> pa.Array:
        key = ("col", p.column, p.as_text, p.cased or p.op in ("null", "notnull"))
        got = self._memo.get(key)
        if got is None:
            got = self.column(p.column)
            if p.as_text:
                got = pc.cast(got, pa.string())
            if not key[3]:
                got = pc.utf8_lower(got)
            self._memo[key] = got
        return got

    def _pred(self, p: Pred) -> np.ndarray:
        if self._codes is not None and p.column == Codes.COLUMN and p.op != "colref":
            return self._codes.bits(p, self._rows)
        col = self._operand(p)
        op, v = p.op, p.value
        if op == "null":
            return _bits(pc.is_null(col))
        if op == "notnull":
            return _bits(pc.is_valid(col))
        if op == "eq":
            out = pc.equal(col, _scalar(v, col.type))
        elif op == "in":
            try:
                values = pa.array(list(v), col.type)
            except (OverflowError, pa.ArrowInvalid, pa.ArrowTypeError):
                values = pa.array([x for x in v if _fits(x, col.type)], col.type)
            out = pc.is_in(col, value_set=values)
        elif op in _STR_OPS:
            out = _STR_OPS[op](col, v)
        elif op == "regex":
            lits = literal_alternatives(v) if len(col) <= _FEW else None
            if lits and lits[0] != "contains":
                out = _match_literals(col, *lits)
            else:
                out = pc.match_substring_regex(col, v)
        elif op in _CMP:
            out = _CMP[op](col, _scalar(v, col.type))
        elif op == "bits":
            out = pc.not_equal(pc.bit_wise_and(col, pa.scalar(int(v), col.type)), 0)
        elif op == "colref":
            other = pc.cast(self.column(str(v)), pa.string())
            out = pc.equal(pc.cast(col, pa.string()), other)
        else:
            raise ValueError(f"unknown predicate op {op!r}")
        return _bits(null_false(out))

    def mask(self, node: Node) -> pa.Array:
        """``node`` for each row of the batch (NULL is false)."""
        return pa.array(self.bits(node))

    def bits(self, node: Node) -> np.ndarray:
        """``mask`` as numpy booleans: the tree's ANDs, ORs and NOTs are numpy operations
        (a pyarrow.compute call costs ~5-10 us whatever the batch, numpy's ~1 us: a batch
        of a few hundred rows paid more for the calls than for the rows)."""
        got = self._memo.get(id(node))
        if got is not None:
            out: np.ndarray = got
            return out
        if isinstance(node, Const):
            out = np.full(self.n, node.value, dtype=bool)
        elif isinstance(node, Pred):
            out = self._pred(node)
        elif isinstance(node, And):
            out = self._all(node.items)
        elif isinstance(node, Or):
            out = self.bits(node.items[0])
            for it in node.items[1:]:
                out = out | self.bits(it)
        elif isinstance(node, Not):
            out = ~self.bits(node.item)
        else:
            raise TypeError(f"not a predicate node: {node!r}")
        self._memo[id(node)] = out
        return out

    def _narrowed(self, done: tuple[Node, ...], got: np.ndarray) -> tuple[np.ndarray, Evaluator]:
        """The rows where the conjunction ``done`` holds, and an evaluator of them: kept,
        so that conjunctions starting alike (rule groups on the same actions) share its
        columns and sub-results."""
        key = tuple(id(n) for n in done)
        hit = self._subs.get(key)
        if hit is not None and all(a is b for a, b in zip(hit[0], done)):
            return hit[1], hit[2]
        rows = np.flatnonzero(got)
        sub = self.narrow(rows)
        self._subs[key] = (done, rows, sub)
        return rows, sub

    def _all(self, items: tuple[Node, ...]) -> np.ndarray:
        """A conjunction, item by item; once few rows are left, the remaining items are
        evaluated on those rows only (row-wise predicates: the same values)."""
        got = self.bits(items[0])
        for i in range(1, len(items)):
            left = int(np.count_nonzero(got))
            if left == 0:
                break
            if self.SPARSE and left * self.SPARSE <= self.n and _raw_only(items[i:]):
                rows, sub = self._narrowed(items[:i], got)
                inner = sub._all(items[i:])
                out = np.zeros(self.n, dtype=bool)
                out[rows[inner]] = True
                return out
            got = got & self.bits(items[i])
        return got


def _bits(mask: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean array without NULLs as numpy booleans."""
    out: np.ndarray = mask.to_numpy(zero_copy_only=False)
    return out


_RAW_ONLY: dict[int, tuple[Node, bool]] = {}  # node id -> (node, reads raw columns only)


def _raw_only(items: tuple[Node, ...]) -> bool:
    """Whether these items read raw event columns only. What is left of a conjunction is
    narrowed to its few rows only then: derived columns are better computed once on
    the group's rows, where the other rules of the group share them."""
    for item in items:
        got = _RAW_ONLY.get(id(item))
        if got is None or got[0] is not item:
            if len(_RAW_ONLY) > 100_000:
                _RAW_ONLY.clear()
            got = _RAW_ONLY[id(item)] = (item, columns_of(item) <= RAW_COLUMNS)
        if not got[1]:
            return False
    return True


def _fits(x: Any, t: pa.DataType) -> bool:
    try:
        pa.scalar(x, t)
        return True
    except (OverflowError, pa.ArrowInvalid, pa.ArrowTypeError):
        return False
