"""``forensix fleet`` (questions across every host, answered in ClickHouse) and ``forensix retention``."""

from __future__ import annotations

import re
import time
from typing import Any

import click
import pyarrow as pa

from forensix.cli.options import DEFAULT_STORE, emit, format_option, time_option
from forensix.errors import UsageError

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
                        now_ns=time.time_ns(), silence_s=kw.get("silence"))
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


@click.command("retention", epilog="""\b
Examples:
  forensix retention --keep 90d --store 'clickhouse://ch1:9000/forensix?cluster=fleet' --dry-run
  forensix retention --keep 30d""")
@click.option("--store", default=DEFAULT_STORE, show_default=True,
              help="The fleet store: clickhouse://HOST:PORT/DB[?cluster=NAME].")
@click.option("--keep", required=True, help="Keep this many days (e.g. 90d), counted back from today (UTC).")
@click.option("--dry-run", is_flag=True, help="Only list the partitions that would be dropped.")
@format_option()
def retention(store: str, keep: str, dry_run: bool, fmt: str) -> None:
    """Drop whole day partitions older than --keep, on every shard (never single rows).

    The evidence segments on each log host are not touched: they stay verifiable
    (`forensix verify --evidence DIR`) for as long as the log host keeps them."""
    m = _KEEP.match(keep.strip())
    if not m or int(m.group(1)) < 1:
        raise UsageError(f"--keep {keep!r} is not a number of days", "for example --keep 90d")
    days = int(m.group(1))
    cutoff = time.strftime("%Y%m%d", time.gmtime(time.time() - days * 86400))
    with _store(store) as st:
        old = [p for p in st.partitions() if p[2] < cutoff]
        if not dry_run:
            for server, table, part, _ in old:
                st.drop_partition(server, table, part)
    emit(pa.table({
        "server": [p[0] for p in old], "table": [p[1] for p in old], "partition": [p[2] for p in old],
        "rows": pa.array([p[3] for p in old], pa.uint64()),
        "status": ["would drop" if dry_run else "dropped"] * len(old),
    }), fmt)
    click.echo(f"{'would drop' if dry_run else 'dropped'} {len(old)} partitions older than {cutoff} "
               f"({sum(p[3] for p in old)} rows)", err=True)


COMMANDS = [fleet_group, retention]
