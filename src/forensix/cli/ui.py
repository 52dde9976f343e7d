"""``forensix ui``: the investigation UI and its JSON API, served from one process."""

from __future__ import annotations

import ipaddress
import secrets
import socket
import ssl
from pathlib import Path
from types import FrameType
from typing import Any

import click

from forensix.cli.options import reader, store_option
from forensix.errors import UsageError
from forensix.store.base import Reader
from forensix.store.hostfilter import HostReader
from forensix.store.open import is_remote, open_reader

__all__ = ["COMMANDS"]


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"--listen {text!r} is not HOST:PORT", "for example 127.0.0.1:8750, or [::1]:8750")
    return host.strip("[]") or "127.0.0.1", int(port)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((host, port))
    except OSError as e:
        s.close()
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror}",
                         "pick another --listen port (port 0 picks a free one)") from None
    s.listen(128)
    return s


def _tls(pki: str | None, cert: str | None, key: str | None, client_ca: str | None) -> dict[str, Any]:
    if pki:
        from forensix.pki.authority import Authority

        auth = Authority(pki)
        cert, key = str(auth.server_cert_path), str(auth.server_key_path)
        client_ca = client_ca or str(auth.ca_cert_path)
    if not cert:
        return {}
    for f in (cert, key, client_ca):
        if f and not Path(f).is_file():
            raise UsageError(f"no file {f}", "give the PEM files of the certificate, its key and the CA")
    out: dict[str, Any] = {"ssl_certfile": cert, "ssl_keyfile": key}
    if client_ca:  # the forensix PKI: only holders of a certificate it issued get in
        out |= {"ssl_ca_certs": client_ca, "ssl_cert_reqs": ssl.CERT_REQUIRED}
    return out


@click.command("ui", epilog="""\b
Examples:
  forensix ui --store host.duckdb                        # http://127.0.0.1:8750/overview
  forensix ui --store host.duckdb --listen 127.0.0.1:0   # a free port
  forensix ui --store /srv/case.duckdb --listen 0.0.0.0:8443 --tls-cert c.pem --tls-key k.pem
  forensix ui --store /srv/logs.duckdb --listen 0.0.0.0:8443 --pki /etc/forensix/pki
""")
@store_option
@click.option("--listen", default="127.0.0.1:8750", show_default=True, help="HOST:PORT to serve on.")
@click.option("--tls-cert", type=click.Path(dir_okay=False), default=None, help="TLS certificate (PEM).")
@click.option("--tls-key", type=click.Path(dir_okay=False), default=None, help="Its private key (PEM).")
@click.option("--client-ca", type=click.Path(dir_okay=False), default=None,
              help="Require client certificates issued by this CA.")
@click.option("--pki", type=click.Path(file_okay=False), default=None,
              help="A forensix PKI directory: its server certificate, and its CA for client certificates.")
@click.option("--token", envvar="FORENSIX_UI_TOKEN", default=None,
              help="Require this token (made up when serving beyond this machine without client certificates).")
def ui_cmd(store: str, listen: str, tls_cert: str | None, tls_key: str | None, client_ca: str | None,
           pki: str | None, token: str | None) -> None:
    """Serve the investigation UI (read-only) and its JSON API."""
    import uvicorn

    from forensix.web.app import create_app, stop_streams

    host, port = _listen(listen)
    if bool(tls_cert) != bool(tls_key):
        raise UsageError("--tls-cert and --tls-key go together", "give both, or --pki DIR")
    tls = _tls(pki, tls_cert, tls_key, client_ca)
    if not _loopback(host):
        if not tls:
            raise UsageError(f"serving on {host} would send evidence in clear text",
                             "give --tls-cert and --tls-key (or --pki DIR), or listen on 127.0.0.1")
        if token is None and "ssl_ca_certs" not in tls:
            token = secrets.token_urlsafe(24)
    reader(store).close()  # says now, not at the first request, when the store cannot be read (and --host)
    only: str | None = click.get_current_context().meta.get("forensix.host")

    def opener() -> Reader:
        if is_remote(store):  # ClickHouse: the slice of --host (or the whole store) pulled into DuckDB
            return open_reader(store, host=only)
        r = open_reader(store)
        return HostReader(r, only) if only else r

    app = create_app(opener, store, token=token)
    sock = _bind(host, port)
    scheme = "https" if tls else "http"
    shown = f"[{host}]" if ":" in host else host
    url = f"{scheme}://{shown}:{sock.getsockname()[1]}/overview" + (f"?token={token}" if token else "")
    click.echo(f"forensix ui: serving {store} at {url}", err=True)
    click.echo(url)
    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            stop_streams(app)  # a page's live stream stays open while its tab does: end it
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5, **tls)
    try:
        Server(config).run(sockets=[sock])
    finally:
        sock.close()


COMMANDS = [ui_cmd]
