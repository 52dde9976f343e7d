"""``forensix pki``: the CA that authenticates agents and the log host."""

from __future__ import annotations

import os

import click
import pyarrow as pa

from forensix.cli.options import emit, format_option
from forensix.pki.authority import Authority

__all__ = ["COMMANDS"]

DEFAULT_PKI = os.environ.get("FORENSIX_PKI", "/etc/forensix/pki")

pki_option = click.option(
    "--pki", "pki_dir", default=DEFAULT_PKI, show_default=True, type=click.Path(file_okay=False),
    help="The PKI directory (CA, server and host certificates, seal keys); $FORENSIX_PKI.",
)


@click.group("pki")
def pki() -> None:
    """Certificates and seal keys for the log host and its agents.

    \b
    Examples:
      forensix pki init --pki /etc/forensix/pki --san loghost.example --san 10.0.0.5
      forensix pki issue web01 --pki /etc/forensix/pki   # copy hosts/web01/ to web01
      forensix pki revoke web01 --pki /etc/forensix/pki
      forensix pki list --pki /etc/forensix/pki
    """


@pki.command("init")
@pki_option
@click.option("--san", multiple=True, help="Another DNS name or IP address of the log host.")
def init(pki_dir: str, san: tuple[str, ...]) -> None:
    """Create the CA, the log host's certificate and its checkpoint signing key."""
    a = Authority(pki_dir)
    a.init(list(san))
    click.echo(f"CA created in {pki_dir}; server certificate {a.server_cert_path}")


@pki.command("issue")
@click.argument("host")
@pki_option
@click.option("--seal-interval", default=60, show_default=True, type=click.IntRange(1, 86400),
              help="Seconds per seal epoch (the key evolves and the old one is erased).")
def issue(host: str, pki_dir: str, seal_interval: int) -> None:
    """Enroll HOST: a client certificate and its initial seal key."""
    b = Authority(pki_dir).issue(host, seal_interval_s=seal_interval)
    click.echo(f"issued {host}: copy {b.directory}/ to the host (e.g. /etc/forensix/agent/)")


@pki.command("revoke")
@click.argument("host")
@pki_option
def revoke(host: str, pki_dir: str) -> None:
    """Revoke every certificate issued to HOST.

    A running `forensix server` using this PKI notices within a second: it closes HOST's
    open connections at once (the agent is told why) and refuses every new one. The
    host's evidence so far stays; the refusals are written beside it.
    """
    serials = Authority(pki_dir).revoke(host)
    click.echo(f"revoked {host} (serial {', '.join(f'{s:x}' for s in serials)})")


@pki.command("list")
@pki_option
@format_option()
def list_hosts(pki_dir: str, fmt: str) -> None:
    """The enrolled hosts and whether they are revoked."""
    rows = [{"host_name": h, "serial": f"{s:x}", "revoked": r} for h, s, r in Authority(pki_dir).hosts()]
    emit(pa.Table.from_pylist(rows, schema=pa.schema(
        [("host_name", pa.string()), ("serial", pa.string()), ("revoked", pa.bool_())])), fmt)


COMMANDS = [pki]
