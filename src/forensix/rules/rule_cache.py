"""The compiled rules of a recorder, kept on disk between starts (issue 25: half the cost).

Compiling the curated set in a child process (``rules.precompile``) was ~1.9 s of the
~2.9 s of CPU a `forensix record` spent starting up, and it compiled the same files to
the same rules every time. The compiled ``RuleSet`` is kept in a file named by a key
that covers everything the result depends on: the path and bytes of every rule file in
load order (a changed, added or removed file is another key), the forensix version, the
IR format (``IR_FORMAT``), the source of the rule compiler (``forensix/rules/*.py``,
so a development tree never runs rules compiled by older code), pySigma's version and
Python's.

An evidence tool must not run a rule set someone else planted: an entry is read only
when it, its directory and every directory above are owned by root or by this user and
writable by nobody else (a root-owned sticky directory such as /tmp is allowed above:
nobody else can rename or remove what is in it). Otherwise the cache is not used, and
the caller is told why. An entry that cannot be read, unpickled, or that carries
another key is a miss: the rules are compiled again and the entry rewritten.

The default place is /var/cache/forensix/rules for root (recording needs root);
``FORENSIX_RULE_CACHE`` names another directory, or ``off`` to compile every time.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import stat
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from forensix import __version__
from forensix.errors import UsageError
from forensix.rules.loader import _SUFFIXES, RuleSet, builtin_rules_dir

__all__ = ["CACHE_ENV", "DEFAULT_CACHE_DIR", "IR_FORMAT", "UnsafeCache", "cache_dir", "get", "put", "rules_key"]

# Bump when CompiledRule, RuleSet or the IR they hold change shape in a way the compiler
# source hash would not show (it shows every change made in forensix/rules).
IR_FORMAT = 1
CACHE_ENV = "FORENSIX_RULE_CACHE"
DEFAULT_CACHE_DIR = Path("/var/cache/forensix/rules")
_MAGIC = b"forensix-rules\n"
_KEEP = 8  # entries kept: a few rule sets in turn (one per --rules choice) without growing for ever


class UnsafeCache(Exception):
    """The cache directory or an entry could be written by someone else: not used."""


def cache_dir() -> Path | None:
    """Where compiled rules are kept, or None (turned off, or not root with no directory given)."""
    env = os.environ.get(CACHE_ENV)
    if env is not None:
        return None if env.strip().lower() in ("", "off", "0", "no") else Path(env)
    return DEFAULT_CACHE_DIR if os.geteuid() == 0 else None


def _rule_files(path: Path) -> list[Path]:
    # the same files, in the same order, as loader.load_paths reads
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix in _SUFFIXES and p.is_file())
    if path.is_file():
        return [path]
    raise UsageError(f"no rule file or directory at {path}", "give a .yml file or a directory of them")


def _compiler_digest() -> bytes:
    h = hashlib.sha256()
    here = Path(__file__).parent
    for f in sorted(here.glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.digest()


def _pysigma_version() -> str:
    # the dist-info directory's name beside the package, not importlib.metadata: that
    # imports the email parser and compiles regexes, ~0.1 s of the start it is here to cut
    from importlib.util import find_spec

    spec = find_spec("sigma")
    if spec is None or not spec.submodule_search_locations:
        return "-"
    where = Path(next(iter(spec.submodule_search_locations)))
    dists = sorted(p.name for p in where.parent.glob("*.dist-info") if p.name.lower().startswith("pysigma-"))
    return ",".join(dists) or str(where)


def rules_key(paths: Sequence[str | Path], builtin: bool) -> str:
    """The key of what ``load_rules(paths, builtin=builtin)`` gives now (module doc).
    A rule path that does not exist is the loader's ``UsageError``."""
    h = hashlib.sha256()
    for part in (f"ir={IR_FORMAT}", f"forensix={__version__}", f"pysigma={_pysigma_version()}",
                 f"python={sys.version}", f"builtin={builtin}"):
        h.update(part.encode() + b"\0")
    h.update(_compiler_digest())
    roots = ([builtin_rules_dir()] if builtin else []) + [Path(p) for p in paths]
    for root in roots:
        h.update(b"root\0" + str(root).encode() + b"\0")
        for f in _rule_files(root):
            try:
                body = f.read_bytes()
            except OSError as e:  # the loader reports it as a rule that cannot be read; so is the key
                body = f"unreadable: {e}".encode()
            h.update(str(f).encode() + b"\0" + str(len(body)).encode() + b"\0" + body)
    return h.hexdigest()


def _check_owned(st: os.stat_result, what: Path, leaf: bool) -> None:
    me = os.geteuid()
    if st.st_uid not in (0, me):
        raise UnsafeCache(f"{what} is owned by uid {st.st_uid}")
    if st.st_mode & 0o022:
        # a sticky root-owned directory above (e.g. /tmp): others cannot touch our entry in it
        if not leaf and stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX and st.st_uid == 0:
            return
        raise UnsafeCache(f"{what} is writable by {'group' if st.st_mode & 0o020 else 'others'}")


def _safe_dir(d: Path, create: bool) -> Path:
    if create:
        os.makedirs(d, mode=0o700, exist_ok=True)
    real = Path(os.path.realpath(d))
    st = os.stat(real)
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeCache(f"{real} is not a directory")
    if st.st_uid != os.geteuid():
        raise UnsafeCache(f"{real} is owned by uid {st.st_uid}")
    _check_owned(st, real, leaf=True)
    for parent in real.parents:
        _check_owned(os.stat(parent), parent, leaf=False)
    return real


def get(d: Path, key: str) -> RuleSet | None:
    """The rules kept under ``key``, or None (absent, unreadable, corrupt, another key).
    Raises ``UnsafeCache`` when the directory or entry could be someone else's."""
    try:
        real = _safe_dir(d, create=False)
    except FileNotFoundError:
        return None
    try:
        fd = os.open(real / f"{key}.pickle", os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError:  # a symlink (ELOOP) or unreadable: never followed, rebuilt over
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            return None
        if st.st_uid != os.geteuid():
            raise UnsafeCache(f"{real / (key + '.pickle')} is owned by uid {st.st_uid}")
        _check_owned(st, real / f"{key}.pickle", leaf=True)
        data = f.read()
    if not data.startswith(_MAGIC):
        return None
    try:
        # safe to unpickle: written by this user into a directory only this user (or root) can write
        stored_key, rs = pickle.loads(data[len(_MAGIC):])
    except Exception:  # noqa: BLE001 - any corruption is a miss, rebuilt
        return None
    if stored_key != key or not isinstance(rs, RuleSet):
        return None
    return rs


def put(d: Path, key: str, rs: RuleSet) -> None:
    """Keep ``rs`` under ``key`` (written whole, then renamed into place), and drop the
    oldest entries past a few."""
    real = _safe_dir(d, create=True)
    data = _MAGIC + pickle.dumps((key, rs), protocol=pickle.HIGHEST_PROTOCOL)
    fd, tmp = tempfile.mkstemp(dir=real, prefix=".new-", suffix=".pickle")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, real / f"{key}.pickle")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    entries = sorted(real.glob("*.pickle"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[_KEEP:]:
        old.unlink(missing_ok=True)
