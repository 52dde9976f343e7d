"""TLS 1.3 contexts with mutual authentication (stdlib ``ssl``), and revocation checks."""

from __future__ import annotations

import os
import ssl
import threading
from pathlib import Path
from typing import Any

from cryptography import x509

from forensix.pki.authority import PKIError

__all__ = ["RevocationList", "client_context", "peer_identity", "server_context"]


def _base(purpose: int) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def server_context(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """The log host: TLS 1.3 only, a client certificate from our CA required."""
    ctx = _base(ssl.PROTOCOL_TLS_SERVER)
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_verify_locations(cafile=str(ca))
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as e:
        raise PKIError(f"cannot load the server certificate: {e}", "run forensix pki init --pki DIR") from e
    return ctx


def client_context(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """The agent: TLS 1.3 only, verifies the log host against our CA, presents its cert."""
    ctx = _base(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_verify_locations(cafile=str(ca))
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as e:
        raise PKIError(
            f"cannot load the host certificate {cert}: {e}", "copy the bundle from forensix pki issue HOST"
        ) from e
    return ctx


def peer_identity(sock: ssl.SSLSocket) -> tuple[str, int]:
    """(common name, serial) of the verified peer certificate."""
    der = sock.getpeercert(binary_form=True)
    if der is None:
        raise PKIError("the peer presented no certificate", "every agent needs a host certificate")
    cert = x509.load_der_x509_certificate(der)
    cns = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    if not cns:
        raise PKIError("the peer certificate has no common name", "issue it with forensix pki issue")
    return str(cns[0].value), cert.serial_number


class RevocationList:
    """The CA's CRL, re-read when the file changes, its signature checked against the CA.

    ``version`` grows at every re-read, so a watcher polling ``serials()`` can tell a new
    revocation from the same list (the log host polls it to cut off open connections).
    """

    def __init__(self, crl: Path, ca: Path) -> None:
        self.crl_path = crl
        self.ca = x509.load_pem_x509_certificate(ca.read_bytes())
        self._lock = threading.Lock()
        self._stamp: Any = None
        self._serials: frozenset[int] = frozenset()
        self.version = 0

    def is_revoked(self, serial: int) -> bool:
        return serial in self.serials()

    def serials(self) -> frozenset[int]:
        """The revoked serials as the CRL on disk says now (re-read when the file changed)."""
        try:
            st = os.stat(self.crl_path)
        except FileNotFoundError:
            return frozenset()
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._lock:
            if stamp != self._stamp:
                try:
                    crl = x509.load_pem_x509_crl(self.crl_path.read_bytes())
                except ValueError as e:
                    raise PKIError(f"{self.crl_path} is not a CRL: {e}", "re-create it: forensix pki revoke") from e
                pub = self.ca.public_key()
                if not crl.is_signature_valid(pub):  # type: ignore[arg-type]
                    raise PKIError(f"{self.crl_path} is not signed by the CA", "re-create it: pki revoke")
                self._serials = frozenset(r.serial_number for r in crl)
                self._stamp = stamp
                self.version += 1
            return self._serials
