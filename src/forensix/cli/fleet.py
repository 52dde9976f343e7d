"""``forensix fleet`` (questions across every host, answered in ClickHouse) and ``forensix retention``."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import click
import pyarrow as pa

from forensix.cli.options import DEFAULT_STORE, emit, format_option, time_option
from forensix.cli.pki import DEFAULT_PKI
from forensix.errors import UsageError
from forensix.model.timefmt import format_ns

__all__ = ["COMMANDS"]


def _store(url: str) -> Any:
    from forensix.store.clickhouse import ClickHouseStore
    from forensix.store.open import is_remote

    if not is_remote(url):
        raise UsageError(f"{url} is not a ClickHouse store: fleet questions run in ClickHouse",
                         "give --store clickhouse://HOST:PORT/DB[?cluster=NAME]; on one host's DuckDB "
                         "store use `forensix events --path/--action`")
    return ClickHouseStore(url)


_EXAMPLES = {
    "exe": ["/tmp/.x/miner", "'/tmp/*' --from -7d --format json"],
    "cmdline": ["'base64 -d'", "'curl -o /tmp/' --from -1d"],
    "sha256": ["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"],
    "ip": ["203.0.113.66", "10.0.0.7 --from 2026-11-26T04:00:00Z"],
    "path": ["/etc/ld.so.preload", "'/etc/cron.d/*' --format csv"],
    "hosts": ["", "--silence 300 --silent", "--from -1h"],
}


def _question(name: str, arg: str | None, meta: str, help_text: str) -> click.Command:
    def run(store: str, fmt: str, value: str = "", **kw: Any) -> None:
        from forensix.store.clickhouse.fleet import ask

        with _store(store) as st:
            # a store without the summaries (not yet migrated by a log host) is scanned
            table = ask(st.native, name, value, kw.get("from"), kw.get("to"), summarized=st.summarized(),
                        now_ns=time.time_ns(), silence_s=kw.get("silence"), each=st.native_each,
                        files=st.paths_summarized())
        if kw.get("only_silent"):
            table = table.filter(table["silent"])
        emit(table, fmt)

    params: list[click.Parameter] = []
    if arg:
        params.append(click.Argument([arg], metavar=meta))
    epilog = "\b\nExamples:\n" + "\n".join(
        f"  forensix fleet {name} {ex} --store 'clickhouse://ch1:9000/forensix?cluster=fleet'".replace("  ", " ")
        .replace(" forensix", "  forensix", 1) for ex in _EXAMPLES[name])
    cmd = click.Command(name, callback=run, help=help_text, params=params, epilog=epilog)
    cmd = click.option("--store", default=DEFAULT_STORE, show_default=True,
                       help="The fleet store: clickhouse://HOST:PORT/DB[?cluster=NAME].")(cmd)
    if name == "hosts":
        cmd = click.option("--silent", "only_silent", is_flag=True, help="Only the hosts that stopped reporting.")(cmd)
        cmd = click.option("--silence", default=60.0, show_default=True, type=float,
                           help="A host whose last event is older than this many seconds is silent.")(cmd)
    cmd = time_option("--from", "Start of the window")(cmd)
    cmd = time_option("--to", "End of the window")(cmd)
    return format_option()(cmd)


@click.group("fleet", epilog="""\b
Examples:
  forensix fleet exe /tmp/.x/miner --store 'clickhouse://ch1:9000/forensix?cluster=fleet'
  forensix fleet exe '/tmp/*' --from -7d
  forensix fleet cmdline 'base64 -d' --format json
  forensix fleet ip 203.0.113.66
  forensix fleet path /etc/cron.d/evil
  forensix fleet hosts""")
def fleet_group() -> None:
    """Questions across every host of a ClickHouse store, answered by ClickHouse itself."""


def _build() -> None:
    from forensix.store.clickhouse.fleet import QUESTIONS

    args = {"exe": ("value", "PATH"), "cmdline": ("value", "TEXT"), "sha256": ("value", "SHA256"),
            "ip": ("value", "IP"), "path": ("value", "PATH"), "hosts": (None, "")}
    for name, q in QUESTIONS.items():
        arg, meta = args[name]
        fleet_group.add_command(_question(name, arg, meta, q.help))


_build()

_KEEP = re.compile(r"^(\d+)\s*d$")


def _now_ns() -> int:
    """The clock retention counts back from (the tests set it forward: a seam of ours)."""
    return time.time_ns()


@click.command("retention", epilog="""\b
Examples:
  forensix retention --keep 90d --store 'clickhouse://ch1:9000/forensix?cluster=fleet' --dry-run
  forensix retention --keep 365d --evidence /var/lib/forensix/evidence --pki /etc/forensix/pki
  forensix retention --keep 90d --store 'clickhouse://ch1:9000/forensix' --evidence /var/lib/forensix/evidence""")
@click.option("--store", default=None,
              help="A fleet store: clickhouse://HOST:PORT/DB[?cluster=NAME] (drops its day partitions).")
@click.option("--evidence", type=click.Path(file_okay=False), default=None,
              help="A log host's evidence directory (drops its oldest whole segments, signed).")
@click.option("--pki", "pki_dir", default=DEFAULT_PKI, show_default=True, type=click.Path(file_okay=False),
              help="The log host's PKI: its checkpoint key signs what --evidence retention removes.")
@click.option("--keep", required=True, help="Keep this many days (e.g. 90d), counted back from today (UTC).")
@click.option("--dry-run", is_flag=True, help="Only list what would be dropped.")
@format_option()
def retention(store: str | None, evidence: str | None, pki_dir: str, keep: str, dry_run: bool, fmt: str) -> None:
    """Age out evidence older than --keep: whole day partitions of a ClickHouse store (on every
    shard, never single rows), and/or a log host's oldest whole evidence segments.

    \b
    An evidence segment goes only when every frame in it is older than the cutoff (by the
    log host's clock and by the sealing times), is already in the store, and it is not the
    segment the stream appends to. The log host signs a record of what it removed
    (STREAM/retention.jsonl) before removing it: `forensix verify` then starts each chain at
    the signed head, reports the removal as a note, and still fails on any other deletion."""
    m = _KEEP.match(keep.strip())
    if not m or int(m.group(1)) < 1:
        raise UsageError(f"--keep {keep!r} is not a number of days", "for example --keep 90d")
    if store is None and evidence is None:
        raise UsageError("nothing to age out", "give --store clickhouse://... and/or --evidence DIR")
    days = int(m.group(1))
    now = _now_ns()
    cutoff_ns = now - days * 86400 * 10**9
    cutoff = time.strftime("%Y%m%d", time.gmtime(cutoff_ns / 1e9))
    rows: list[dict[str, Any]] = []
    verb = "would drop" if dry_run else "dropped"
    if store is not None:
        with _store(store) as st:
            old = [p for p in st.partitions() if p[2] < cutoff]
            if not dry_run:
                for server, table, part, _ in old:
                    st.drop_partition(server, table, part)
        rows += [{"where": p[0], "what": f"{p[1]} partition {p[2]}", "rows": p[3], "bytes": None, "status": verb}
                 for p in old]
        click.echo(f"{verb} {len(old)} partitions older than {cutoff} ({sum(p[3] for p in old)} rows)", err=True)
    if evidence is not None:
        drops = _evidence_retention(Path(evidence), Path(pki_dir), cutoff_ns, now, dry_run)
        rows += [{"where": f"{d.host}/{d.stream}", "what": f"seq {d.first_seq}..{d.last_seq} in "
                  f"{len(d.segments)} segment(s)", "rows": d.frames, "bytes": d.bytes, "status": verb}
                 for d in drops]
        click.echo(f"{verb} {sum(len(d.segments) for d in drops)} evidence segments of {len(drops)} streams "
                   f"wholly older than {format_ns(cutoff_ns)} ({sum(d.bytes for d in drops)} bytes)", err=True)
    emit(pa.Table.from_pylist(rows, schema=pa.schema([("where", pa.string()), ("what", pa.string()),
                                                      ("rows", pa.uint64()), ("bytes", pa.uint64()),
                                                      ("status", pa.string())])), fmt)


def _evidence_retention(evidence: Path, pki_dir: Path, cutoff_ns: int, now: int, dry_run: bool) -> list[Any]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from forensix.server.retention import apply_retention, plan_retention

    if not evidence.is_dir():
        raise UsageError(f"no evidence directory at {evidence}", "give the log host's --evidence DIR")
    drops = plan_retention(evidence, cutoff_ns)
    if dry_run or not drops:
        return drops
    key_path = pki_dir / "checkpoint.key"
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read the checkpoint key {key_path}: {getattr(e, 'strerror', None) or e}",
                         "give the log host's PKI with --pki DIR: retention is signed with its checkpoint key") from e
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise UsageError(f"{key_path} is not an Ed25519 key", "give the log host's PKI with --pki DIR")
    pub = evidence / "checkpoint.pub"
    if pub.exists() and pub.read_bytes() != key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo):
        raise UsageError(f"the checkpoint key in {pki_dir} is not the one this evidence is checked with ({pub})",
                         "give the PKI of the log host that wrote this evidence")
    apply_retention(drops, key, cutoff_ns, now)
    return drops


COMMANDS = [fleet_group, retention]
