"""A cheap first pass of the live engine: the rows some rule could match, found with one
case-insensitive RE2 scan per text column instead of every rule's tests on every row.

Most of a busy host's events are file opens, and most rules over them name a few paths
(``/etc/shadow``, a suffix ``/.bash_history``, a prefix ``/var/log/``). Each rule's
lowering, regexes and lookups over every open cost ~6 µs per stored event on a build.
``hooks`` finds, for a predicate tree, literal tests on raw text columns of which every
matching row passes at least one: the rows failing all of them cannot match and are
never evaluated. What the sieve lets through is then evaluated exactly as before, so a
rule raises the same alerts on the same rows; the sieve only decides which rows are
worth the exact evaluation.

Why it may only let through more, never less: a test compares the column, or its
``lower()`` for a case-insensitive rule, with a literal; the sieve scans the column
itself with RE2 ignoring case. For an ASCII value, ``lower(v)`` matches the literal only
if ``v`` does ignoring case. A non-ASCII value may lower into ASCII (``İ`` -> ``i``, the
Kelvin sign -> ``k``), so rows holding a byte above 0x7f always go through.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from forensix.rules.ir import Const, Node, Not, Or, Pred, literal_alternatives
from forensix.rules.live import Codes

__all__ = ["Hook", "Sieve", "hooks", "required_literals"]

# (raw text column, op, literal): op is eq, prefix, suffix or contains
Hook = tuple[str, str, str]

# Text columns the sieve scans, and the derived columns that are one of them row by row.
SCANNED = frozenset({"file_path", "file_target_path", "message"})
_ALIASES = {"fx_target_filename": ("file_path", "file_target_path")}
_LITERAL_OPS = frozenset({"eq", "prefix", "suffix", "contains"})
_MIN_RUN = 3  # a shorter required literal lets through too much to be worth a scan


def _columns(col: str) -> tuple[str, ...] | None:
    if col in SCANNED:
        return (col,)
    return _ALIASES.get(col)


def _pred_hooks(p: Pred) -> frozenset[Hook] | None:
    cols = _columns(p.column)
    if cols is None or p.as_text:
        return None
    found: list[tuple[str, str]] | None = None
    if p.op in _LITERAL_OPS and isinstance(p.value, str):
        found = [(p.op, p.value)]
    elif p.op == "in" and all(isinstance(v, str) for v in p.value):
        found = [("eq", v) for v in p.value]
    elif p.op == "regex":
        lits = literal_alternatives(p.value)
        found = [(lits[0], a) for a in lits[1]] if lits is not None else required_literals(p.value)
    if not found or not all(lit.isascii() for _, lit in found):
        return None  # (a non-ASCII literal: RE2's case folding is not lower()'s)
    return frozenset((c, op, lit) for c in cols for op, lit in found)


def _cost(h: frozenset[Hook]) -> tuple[int, int]:
    """Substring searches cost a pass over the text; head and tail keys are compared at once."""
    return sum(op == "contains" for _, op, _ in h), len(h)


def hooks(node: Node) -> frozenset[Hook] | None:
    """Literal tests of which every row matching ``node`` passes one (ignoring case), or
    None when no such set is known. An empty set: no row can match."""
    if isinstance(node, Pred):
        return _pred_hooks(node)
    if isinstance(node, Const):
        return frozenset() if not node.value else None
    if isinstance(node, Not):
        return None
    if isinstance(node, Or):
        out: set[Hook] = set()
        for item in node.items:
            got = hooks(item)
            if got is None:
                return None
            out |= got
        return frozenset(out)
    # And: any item's hooks will do; the cheapest to test
    options = [h for h in (hooks(i) for i in node.items) if h is not None]
    return min(options, key=_cost) if options else None


_QUANTIFIERS = frozenset("?*+{")


def required_literals(pattern: str) -> list[tuple[str, str]] | None:
    """For each top-level alternative of a regular expression, a literal every match of
    it holds: ``("prefix", s)`` for a run right after a leading ``^``, ``("suffix", s)``
    for one right before a final ``$``, else ``("contains", s)`` for its longest run of
    literal characters. None when some alternative has no run of ``_MIN_RUN`` or the
    pattern is beyond this simple reading.

    Groups and classes end a run (what is inside may be optional or repeated); a
    quantifier takes the character before it off the run; escapes of letters and digits
    (``\\s``, ``\\d``, ``\\b``) end a run, escapes of punctuation are that character."""
    out: list[tuple[str, str]] = []
    runs: list[tuple[str, str]] = []  # this alternative's (op, run)
    run: list[str] = []
    at_start = True  # nothing but ``^`` read in this alternative
    anchored = False  # the current run began right after a leading ``^``
    depth, i, n = 0, 0, len(pattern)

    def end_run(op: str = "contains") -> None:
        nonlocal run, anchored
        if run:
            runs.append(("prefix" if anchored and op == "contains" else op, "".join(run)))
        run, anchored = [], False

    def end_branch() -> bool:
        end_run()
        good = [r for r in runs if len(r[1]) >= _MIN_RUN]
        if not good:
            return False
        out.append(max(good, key=lambda r: (r[0] != "contains", len(r[1]))))
        runs.clear()
        return True

    while i < n:
        c = pattern[i]
        if at_start and pattern.startswith("(?s)", i):  # (dot-all changes no literal)
            i += 4
            continue
        if c == "\\":
            if i + 1 >= n:
                return None
            nxt = pattern[i + 1]
            if depth == 0 and nxt.isascii() and not nxt.isalnum() and nxt.isprintable():
                run.append(nxt)  # an escaped punctuation character is that character
            else:
                end_run()
            at_start = False
            i += 2
            continue
        if c == "[":
            end_run()
            j = i + 1
            if j < n and pattern[j] == "^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            if j >= n:
                return None
            i = j + 1
            at_start = False
            continue
        if c == "^" and depth == 0 and at_start:
            anchored = True
            at_start = False
            i += 1
            continue
        at_start = False
        if c == "(":
            end_run()
            depth += 1
        elif c == ")":
            if depth == 0:
                return None
            depth -= 1
            end_run()
        elif c in _QUANTIFIERS:
            if run:
                run.pop()  # (the character before it may be absent or repeated)
            end_run()
            if c == "{":
                j = pattern.find("}", i)
                if j < 0:
                    return None
                i = j
        elif c == "|" and depth == 0:
            if not end_branch():
                return None
            at_start = True
        elif c == "$" and depth == 0 and (i + 1 == n or pattern[i + 1] == "|"):
            end_run("suffix")
        elif c in "^$.|" or depth > 0:
            end_run()
        else:
            run.append(c)
        i += 1
    if depth or not end_branch():
        return None
    return out


class Sieve:
    """The candidate rows of a batch for the groups whose hooks are known.

    A row is a candidate for the groups its action allows (``Codes``) whose literals its
    values hold. The literals of all groups are tested at once, each value's first and
    last eight bytes as one integer looked up among the literals' (``_Keys``), which says
    for which groups it is one: a chmod under /tmp/ is a candidate for the setuid rule,
    an open under /tmp/ (a build in /tmp) for no rule at all."""

    BLOCK = 64  # groups per bit mask

    def __init__(self, groups: Sequence[frozenset[Hook] | None]) -> None:
        self.hooks = list(groups)
        self.hooked = [h is not None for h in groups]
        self._keys: dict[tuple[int, ...], dict[str, _Keys]] = {}

    def rows(self, batch: pa.Table, codes: Codes, groups: Sequence[tuple[int, Node]]) -> np.ndarray | None:
        """Ascending indices of the rows that may match some of ``groups`` (index, the
        group's condition on the action), or None when a column to scan is missing."""
        hit = np.zeros(batch.num_rows, dtype=bool)
        columns: dict[str, _Column] = {}
        for b in range(0, len(groups), self.BLOCK):
            block = groups[b:b + self.BLOCK]
            need_by_code = np.zeros(len(codes.actions.values), dtype=np.uint64)
            for bit, (_, kinds) in enumerate(block):
                need_by_code |= codes.decide(kinds).astype(np.uint64) << np.uint64(bit)
            need = need_by_code[codes.actions.codes]
            if not need.any():
                continue
            have = np.zeros(batch.num_rows, dtype=np.uint64)
            for col, keys in self._block_keys(tuple(g for g, _ in block)).items():
                got = columns.get(col)
                if got is None:
                    at = batch.schema.get_field_index(col)
                    if at < 0 or not pa.types.is_string(batch.schema.field(at).type):
                        return None
                    got = columns[col] = _Column(batch.column(at))
                have |= got.groups(keys)
            hit |= (have & need) != 0
        out: np.ndarray = np.flatnonzero(hit)
        return out

    def _block_keys(self, block: tuple[int, ...]) -> dict[str, _Keys]:
        got = self._keys.get(block)
        if got is None:
            by_column: dict[str, list[tuple[str, str, int]]] = {}
            for bit, g in enumerate(block):
                for c, op, lit in sorted(self.hooks[g] or ()):
                    by_column.setdefault(c, []).append((op, lit.lower(), 1 << bit))
            got = {c: _Keys(tests) for c, tests in by_column.items()}
            if len(self._keys) > 64:
                self._keys.clear()
            self._keys[block] = got
        return got


_K = 8  # bytes of a value's head and tail compared at once (one uint64)
_TABLE = bytes.maketrans(bytes(range(0x41, 0x5B)), bytes(range(0x61, 0x7B)))  # ASCII lower()


class _Keys:
    """The literals of one column, each with the bit mask of the groups it stands for.

    A prefix (or an equality) becomes its first bytes (up to eight) as an integer, a
    suffix its last; a value's head and tail keys cut to that length are looked up among
    them. A value shorter than a key reads bytes of its neighbours into it: that may let
    it through, never hold it back (its own bytes are all compared)."""

    def __init__(self, tests: list[tuple[str, str, int]]) -> None:
        heads: dict[int, dict[int, int]] = {}  # key length -> key -> groups
        tails: dict[int, dict[int, int]] = {}
        contains: dict[bytes, int] = {}
        for op, lit, bits in tests:
            b = lit.encode()
            k = min(len(b), _K)
            if op in ("prefix", "eq"):
                d = heads.setdefault(k, {})
                d[int.from_bytes(b[:k], "big")] = d.get(int.from_bytes(b[:k], "big"), 0) | bits
            elif op == "suffix":
                d = tails.setdefault(k, {})
                d[int.from_bytes(b[-k:], "big")] = d.get(int.from_bytes(b[-k:], "big"), 0) | bits
            else:
                contains[b] = contains.get(b, 0) | bits
        self.heads = [(k, *_table(d)) for k, d in sorted(heads.items())]
        self.tails = [(k, *_table(d)) for k, d in sorted(tails.items())]
        self.contains = sorted(contains.items())


def _table(d: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
    keys = sorted(d)
    return np.array(keys, np.uint64), np.array([d[k] for k in keys], np.uint64)


_LOW7 = np.uint64(0x7F7F7F7F7F7F7F7F)
_HIGH = np.uint64(0x8080808080808080)
_BEFORE_A = np.uint64(0x3F3F3F3F3F3F3F3F)  # 0x80 - 0x41 in each byte
_AFTER_Z = np.uint64(0x2525252525252525)  # 0x7f - 0x5a in each byte


def _lowered(x: np.ndarray) -> np.ndarray:
    """ASCII lower() of the eight bytes of each uint64 at once: a byte gets 0x20 when it
    lies in 0x41..0x5a (bytes above 0x7f are left as they are)."""
    low = x & _LOW7
    upper = (low + _BEFORE_A) & ~(low + _AFTER_Z) & ~x & _HIGH
    out: np.ndarray = x | (upper >> np.uint64(2))
    return out


def _words(data: np.ndarray) -> np.ndarray:
    """The eight bytes from each position of ``data`` as a big-endian integer: a view,
    nothing copied (one byte apart)."""
    n = max(len(data) - _K + 1, 0)
    out: np.ndarray = np.ndarray((n,), dtype=">u8", buffer=data, offset=0, strides=(1,))
    return out


def _lookup(x: np.ndarray, keys: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """The group bits of each of ``x`` among sorted ``keys`` (0 where it is none)."""
    at = np.minimum(np.searchsorted(keys, x), len(keys) - 1)
    out: np.ndarray = np.where(keys[at] == x, bits[at], np.uint64(0))
    return out


class _Column:
    """One text column of a batch: each value's first and last eight bytes (lowered) as
    integers, computed once for every block of groups tested on it."""

    def __init__(self, col: pa.ChunkedArray) -> None:
        chunk = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
        n = len(chunk)
        self.n = n
        self.empty = chunk.null_count == n
        _, obuf, dbuf = chunk.buffers()
        offsets = np.frombuffer(obuf, np.int32, n + 1, chunk.offset * 4).astype(np.int64) if obuf is not None \
            else np.zeros(n + 1, np.int64)
        lo, hi = int(offsets[0]), int(offsets[-1])
        # (only the bytes of these values: a slice's buffer may hold a whole batch's)
        self.raw = np.frombuffer(dbuf, np.uint8, hi - lo, lo) if dbuf is not None and hi > lo else np.zeros(0, np.uint8)
        self.offsets = offsets - lo
        self.starts = self.offsets[:-1]
        self.ends = self.offsets[1:]
        self._heads: np.ndarray | None = None
        self._tails: np.ndarray | None = None
        self._text: bytes | None = None
        # a value with a byte above 0x7f goes through (see the module's doc)
        self.wide = ~pc.string_is_ascii(chunk).fill_null(True).to_numpy(zero_copy_only=False) \
            if len(self.raw) and int(self.raw.max()) > 0x7F else None

    def groups(self, keys: _Keys) -> np.ndarray:
        """For each value, the bit mask of the groups one of whose literals it may hold."""
        out = np.zeros(self.n, dtype=np.uint64)
        if self.empty:
            return out
        if self._heads is None and (keys.heads or keys.tails):
            pad = np.zeros(_K, np.uint8)  # (a value's key may read past the first or last value)
            words = _words(np.concatenate([pad, self.raw, pad]))
            self._heads = _lowered(words[self.starts + _K].astype(np.uint64))
            self._tails = _lowered(words[self.ends].astype(np.uint64))
        for k, table, bits in keys.heads:
            out |= _lookup(self._heads >> np.uint64(8 * (_K - k)), table, bits)  # type: ignore[operator]
        for k, table, bits in keys.tails:
            out |= _lookup(self._tails & np.uint64((1 << (8 * k)) - 1), table, bits)  # type: ignore[operator]
        for lit, mask in keys.contains:
            out[self._containing(lit)] |= np.uint64(mask)
        if self.wide is not None:
            out[self.wide] = ~np.uint64(0)
        return out

    def _containing(self, lit: bytes) -> np.ndarray:
        """Rows holding ``lit`` (a find across two values only adds one)."""
        if self._text is None:
            self._text = self.raw.tobytes().translate(_TABLE)
        found = []
        at = self._text.find(lit)
        while at >= 0:
            found.append(at)
            at = self._text.find(lit, at + 1)
        rows = np.searchsorted(self.offsets, np.array(found, np.int64), "right") - 1
        out: np.ndarray = rows[(rows >= 0) & (rows < self.n)]
        return out
