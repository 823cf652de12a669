"""The server's TLS certificate: a per-profile CA and a server certificate for the profile's
allowed hosts (`tls = "self-signed"`), or the user's own files (`tls = "files"`).

The CA is made once and kept (clients trust it through MLFLOW_TRACKING_SERVER_CERT_PATH, so
it must outlive renders); the server certificate is issued again when the allowed hosts
change or it nears its end, and on `invoke tls.renew`. It names exactly the allowed hosts:
a certificate for any other name is never issued. Keys are 0600, written atomically.
"""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mlflow_stack.errors import StackError
from mlflow_stack.files import write_atomic

MODES = ("off", "self-signed", "files")
CA_DAYS = 3650
# Browsers refuse server certificates valid for more than 398 days.
SERVER_DAYS = 397
RENEW_BEFORE = timedelta(days=30)
KEY_MODE = 0o600
CERT_MODE = 0o644


@dataclass(frozen=True)
class TlsFiles:
    """Where the server's certificate chain and key are, and what clients should trust."""

    certificate: Path
    key: Path
    trust: Path  # the CA for self-signed; the user's certificate file for files


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mlflow-stack"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def names_of(certificate: x509.Certificate) -> set[str]:
    """The host names and addresses a certificate is valid for."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return set()
    dns = san.value.get_values_for_type(x509.DNSName)
    ips = san.value.get_values_for_type(x509.IPAddress)
    return {*dns, *(str(ip) for ip in ips)}


def make_ca(profile_name: str, now: datetime) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(f"mlflow-stack {profile_name} CA")
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def issue_server(
    ca_pem: bytes, ca_key_pem: bytes, hosts: tuple[str, ...], now: datetime
) -> tuple[bytes, bytes]:
    """A server certificate for exactly `hosts`, signed by the CA."""
    if not hosts:
        raise StackError("no allowed_hosts to issue a certificate for")
    ca = x509.load_pem_x509_certificate(ca_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise StackError("the profile's CA key is not an EC key: `invoke tls.renew --ca`")
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=SERVER_DAYS))
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def needs_new_server_certificate(pem: bytes, hosts: tuple[str, ...], now: datetime) -> bool:
    certificate = x509.load_pem_x509_certificate(pem)
    return (
        names_of(certificate) != set(hosts) or certificate.not_valid_after_utc - RENEW_BEFORE < now
    )


def ensure_self_signed(
    folder: Path,
    profile_name: str,
    hosts: tuple[str, ...],
    *,
    renew: bool = False,
    new_ca: bool = False,
    now: datetime | None = None,
) -> TlsFiles:
    """The profile's CA (made once) and a current server certificate for `hosts`."""
    now = now or datetime.now(UTC)
    ca_cert, ca_key = folder / "ca.crt", folder / "ca.key"
    server_cert, server_key = folder / "server.crt", folder / "server.key"
    if new_ca or not (ca_cert.exists() and ca_key.exists()):
        cert_pem, key_pem = make_ca(profile_name, now)
        write_atomic(ca_key, key_pem.decode(), KEY_MODE)
        write_atomic(ca_cert, cert_pem.decode(), CERT_MODE)
        renew = True
    if (
        renew
        or not (server_cert.exists() and server_key.exists())
        or needs_new_server_certificate(server_cert.read_bytes(), hosts, now)
    ):
        cert_pem, key_pem = issue_server(ca_cert.read_bytes(), ca_key.read_bytes(), hosts, now)
        write_atomic(server_key, key_pem.decode(), KEY_MODE)
        # The chain a client needs: the server certificate, then its CA.
        write_atomic(server_cert, (cert_pem + ca_cert.read_bytes()).decode(), CERT_MODE)
    return TlsFiles(server_cert, server_key, ca_cert)


def user_files(certificate: str, key: str) -> TlsFiles:
    """`tls = "files"`: the user's certificate (chain) and key, checked to be a pair."""
    cert_path, key_path = Path(certificate).expanduser(), Path(key).expanduser()
    try:
        cert_pem, key_pem = cert_path.read_bytes(), key_path.read_bytes()
    except OSError as exc:
        raise StackError(f"tls files: {exc.filename}: {exc.strerror}") from None
    try:
        leaf = x509.load_pem_x509_certificate(cert_pem)
        private = serialization.load_pem_private_key(key_pem, password=None)
    except ValueError as exc:
        raise StackError(f"tls files: not a PEM certificate and unencrypted key: {exc}") from None
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if public != leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise StackError(f"tls files: {key_path} is not the key of {cert_path}")
    return TlsFiles(cert_path, key_path, cert_path)


def public_key_pin(certificate: Path) -> str:
    """The base64 SHA-256 of a certificate's public key (what curl's --pinnedpubkey and
    Chromium's --ignore-certificate-errors-spki-list take)."""
    cert = x509.load_pem_x509_certificate(certificate.read_bytes())
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashes.Hash(hashes.SHA256())
    digest.update(spki)
    return base64.b64encode(digest.finalize()).decode()
