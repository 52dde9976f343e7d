"""A small CA on disk, made with ``cryptography``.

Layout of a PKI directory (mode 0700; keys 0600)::

    ca.crt ca.key             the CA (ECDSA P-256, 10 years)
    server.crt server.key     the log host (EKU serverAuth; DNS "forensix-server" + SANs)
    checkpoint.key/.pub       Ed25519: the log host signs chain checkpoints with it
    crl.pem                   revoked host certificates (signed by the CA)
    seal/HOST.json            each host's *initial* seal key (epoch 0) of its newest enrollment:
                              the log host's copy; it names the certificate issued with it
    seal/HOST-SERIAL.json     the same, for every enrollment ever made (a re-issue replaces
                              HOST.json; the older chains stay verifiable with these)
    hosts/HOST/               the bundle to copy to HOST: ca.crt HOST.crt HOST.key seal.key
    issued/HOST-SERIAL.crt    every certificate ever issued (a re-issue replaces the bundle, and
                              ``revoke HOST`` must still reach the certificate the host holds)
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from forensix.errors import ForensixError
from forensix.pki.sealkey import DEFAULT_INTERVAL_S, SealState, write_atomic

__all__ = ["SERVER_NAME", "Authority", "HostBundle", "PKIError"]

SERVER_NAME = "forensix-server"  # the DNS name every server certificate carries
_HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class PKIError(ForensixError):
    """The PKI directory is missing, incomplete, or asked to do something invalid."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _pem_key(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    write_atomic(path, data, mode)


@dataclass(frozen=True)
class HostBundle:
    """What an agent needs: the CA, its certificate and key, its seal key."""

    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def host(self) -> str:
        return self.directory.name

    @property
    def cert(self) -> Path:
        return self.directory / f"{self.host}.crt"

    @property
    def key(self) -> Path:
        return self.directory / f"{self.host}.key"

    @property
    def seal(self) -> Path:
        return self.directory / "seal.key"


class Authority:
    """The CA in a PKI directory."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)

    # -- paths -----------------------------------------------------------------
    @property
    def ca_cert_path(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def server_cert_path(self) -> Path:
        return self.dir / "server.crt"

    @property
    def server_key_path(self) -> Path:
        return self.dir / "server.key"

    @property
    def crl_path(self) -> Path:
        return self.dir / "crl.pem"

    @property
    def checkpoint_key_path(self) -> Path:
        return self.dir / "checkpoint.key"

    @property
    def checkpoint_pub_path(self) -> Path:
        return self.dir / "checkpoint.pub"

    def seal_path(self, host: str, serial: str | None = None) -> Path:
        """The newest enrollment's key, or (``serial``) the enrollment of that certificate."""
        return self.dir / "seal" / (f"{host}-{serial}.json" if serial else f"{host}.json")

    def bundle(self, host: str) -> HostBundle:
        return HostBundle(self.dir / "hosts" / host)

    # -- init ------------------------------------------------------------------
    def init(self, server_sans: list[str] | None = None) -> None:
        if self.ca_cert_path.exists():
            raise PKIError(f"a CA already exists in {self.dir}", "use another --pki directory")
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        (self.dir / "seal").mkdir(mode=0o700, exist_ok=True)
        (self.dir / "hosts").mkdir(mode=0o700, exist_ok=True)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "forensix CA")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - dt.timedelta(minutes=5))
            .not_valid_after(_now() + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write(self.dir / "ca.key", _pem_key(ca_key), 0o600)
        _write(self.ca_cert_path, ca.public_bytes(serialization.Encoding.PEM))
        self._issue_server(server_sans or [])
        ck = ed25519.Ed25519PrivateKey.generate()
        _write(self.checkpoint_key_path, _pem_key(ck), 0o600)
        pub = ck.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        _write(self.checkpoint_pub_path, pub)
        self._write_crl([])

    def _load_ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        try:
            cert = x509.load_pem_x509_certificate(self.ca_cert_path.read_bytes())
            key = serialization.load_pem_private_key((self.dir / "ca.key").read_bytes(), None)
        except FileNotFoundError:
            raise PKIError(f"no CA in {self.dir}", "create one: forensix pki init --pki DIR") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PKIError(f"{self.dir / 'ca.key'} is not an EC key", "re-create the PKI")
        return cert, key

    def _leaf(
        self,
        cn: str,
        sans: list[x509.GeneralName],
        eku: x509.ObjectIdentifier,
        days: int,
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        ca, ca_key = self._load_ca()
        key = ec.generate_private_key(ec.SECP256R1())
        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - dt.timedelta(minutes=5))
            .not_valid_after(_now() + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
        )
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return b.sign(ca_key, hashes.SHA256()), key

    def _issue_server(self, extra: list[str]) -> None:
        names: list[str] = [SERVER_NAME, "localhost", socket.gethostname(), "127.0.0.1", *extra]
        sans: list[x509.GeneralName] = []
        for n in dict.fromkeys(names):
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        cert, key = self._leaf(SERVER_NAME, sans, ExtendedKeyUsageOID.SERVER_AUTH, 825)
        _write(self.server_key_path, _pem_key(key), 0o600)
        _write(self.server_cert_path, cert.public_bytes(serialization.Encoding.PEM))

    # -- hosts -----------------------------------------------------------------
    def issue(self, host: str, *, seal_interval_s: int = DEFAULT_INTERVAL_S) -> HostBundle:
        if not _HOST_RE.match(host) or host == SERVER_NAME:
            raise PKIError(
                f"{host!r} is not a valid host name",
                "letters, digits, '.', '_' and '-', at most 63 characters",
            )
        ca, _ = self._load_ca()
        cert, key = self._leaf(host, [], ExtendedKeyUsageOID.CLIENT_AUTH, 825)
        bundle = self.bundle(host)
        bundle.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write(bundle.ca, ca.public_bytes(serialization.Encoding.PEM))
        _write(bundle.cert, cert.public_bytes(serialization.Encoding.PEM))
        _write(bundle.key, _pem_key(key), 0o600)
        (self.dir / "issued").mkdir(mode=0o700, exist_ok=True)
        _write(self.dir / "issued" / f"{host}-{cert.serial_number:x}.crt", cert.public_bytes(serialization.Encoding.PEM))
        # Enrollment of the seal key: the same initial key for the agent and the log host.
        # A re-issue is a new enrollment: new certificate, new seal key, new epoch origin. The
        # key names its certificate, which is how the log host tells the new enrollment from
        # someone holding the old key (the new certificate is the authority).
        seal = SealState.new(host, time.time_ns(), seal_interval_s, f"{cert.serial_number:x}")
        (self.dir / "seal").mkdir(mode=0o700, exist_ok=True)
        seal.save(self.seal_path(host, seal.serial))
        seal.save(self.seal_path(host))
        seal.save(bundle.seal)
        return bundle

    def issued(self, host: str) -> list[x509.Certificate]:
        """Every certificate issued to ``host``: the register, and the bundle (PKIs made before it)."""
        paths = [*sorted((self.dir / "issued").glob(f"{host}-*.crt")), self.bundle(host).cert]
        certs: dict[int, x509.Certificate] = {}
        for p in paths:
            try:
                c = x509.load_pem_x509_certificate(p.read_bytes())
            except FileNotFoundError:
                continue
            cns = c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            if cns and cns[0].value == host:
                certs[c.serial_number] = c
        return list(certs.values())

    def revoke(self, host: str) -> list[int]:
        """Revoke every certificate issued to ``host``; returns their serials.

        A running log host re-reads the CRL within a fraction of a second and closes the
        host's open connections (it does not wait for the host to reconnect).
        """
        certs = self.issued(host)
        if not certs:
            raise PKIError(f"no certificate for {host!r} in {self.dir}", "see forensix pki list")
        revoked = self.revoked_serials()
        new = sorted(c.serial_number for c in certs)
        self._write_crl(sorted(revoked | set(new)))
        return new

    def revoked_serials(self) -> set[int]:
        return revoked_serials(self.crl_path)

    def _write_crl(self, serials: list[int]) -> None:
        ca, ca_key = self._load_ca()
        b = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca.subject)
            .last_update(_now())
            .next_update(_now() + dt.timedelta(days=3650))
        )
        for s in serials:
            b = b.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(s).revocation_date(_now()).build()
            )
        crl = b.sign(ca_key, hashes.SHA256())
        _write(self.crl_path, crl.public_bytes(serialization.Encoding.PEM))

    def hosts(self) -> list[tuple[str, int, bool]]:
        """(host, serial, revoked) for every issued host."""
        revoked = self.revoked_serials()
        out = []
        for d in sorted((self.dir / "hosts").glob("*")):
            b = HostBundle(d)
            if b.cert.exists():
                c = x509.load_pem_x509_certificate(b.cert.read_bytes())
                out.append((b.host, c.serial_number, c.serial_number in revoked))
        return out


def revoked_serials(crl_path: Path) -> set[int]:
    try:
        crl = x509.load_pem_x509_crl(crl_path.read_bytes())
    except FileNotFoundError:
        return set()
    return {r.serial_number for r in crl}
