"""The deployment's own CA and a certificate per host (`bookstore tls init|issue`), keys written 0600."""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bookstore.runtime.tls import CA_CERT, CA_KEY, HOST_CERT, HOST_KEY

CA_DAYS = 3650
HOST_DAYS = 825
# A DNS name as a certificate's SAN holds it: labels of letters, digits and hyphens (a leading "*." too).
HOST_NAME = re.compile(r"(\*\.)?(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*")


class CertificateError(Exception):
    """The material cannot be made: no CA yet, one already there, a bad address; says what to do."""


@dataclass(frozen=True)
class Issued:
    """What `issue` wrote: the host's certificate and key, and the CA's certificate beside them."""

    cert: Path
    key: Path
    ca: Path
    names: tuple[str, ...]
    addresses: tuple[str, ...]
    not_after: datetime.datetime


def init_ca(directory: Path, *, days: int = CA_DAYS, replace: bool = False) -> Path:
    """A new CA in `directory` (ca.crt, and ca.key 0600); CertificateError when one is there already."""
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    if not replace and (cert_path.exists() or key_path.exists()):
        # A new CA would make every host's certificate untrusted at once.
        raise CertificateError(f"{directory} already holds a CA ({CA_CERT}); --replace makes a new one")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bookstore deployment CA")])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
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
    directory.mkdir(parents=True, exist_ok=True)
    _write_private(key_path, _key_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path


def issue(
    ca_directory: Path,
    out: Path,
    *,
    names: tuple[str, ...],
    addresses: tuple[str, ...],
    days: int = HOST_DAYS,
) -> Issued:
    """A certificate for one host, signed by the CA in `ca_directory`, valid for `names` (DNS) and
    `addresses` (IP) as subject alternative names; written to `out` with the CA's certificate."""
    if not names and not addresses:
        raise CertificateError("name the host: --host NAME and/or --ip ADDRESS (what clients connect to)")
    try:
        ips = [ipaddress.ip_address(a) for a in addresses]
    except ValueError as exc:
        raise CertificateError(f"{exc}: --ip takes an IPv4 or IPv6 address") from None
    for name in names:
        if not HOST_NAME.fullmatch(name):
            # It also names the output directory: no path may hide in it.
            raise CertificateError(f"{name!r} is not a DNS name: --host takes one such as eu.example.com")
    ca_cert, ca_key = _load_ca(ca_directory)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    not_after = min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc)
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    sans += [x509.IPAddress(ip) for ip in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (names or addresses)[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        # A host's certificate serves its listeners and may authenticate it as a client.
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    out.mkdir(parents=True, exist_ok=True)
    _write_private(out / HOST_KEY, _key_pem(key))
    (out / HOST_CERT).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    ca_copy = out / CA_CERT
    if ca_copy.resolve() != (ca_directory / CA_CERT).resolve():
        ca_copy.write_bytes((ca_directory / CA_CERT).read_bytes())
    return Issued(out / HOST_CERT, out / HOST_KEY, ca_copy, names, addresses, not_after)


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
        key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise CertificateError(
            f"no CA in {directory} ({exc.filename}): make one with `bookstore tls init`"
        ) from None
    except ValueError as exc:
        raise CertificateError(f"the CA in {directory} cannot be read: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError(f"{directory / CA_KEY} is not a key `bookstore tls init` made")
    return cert, key


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` readable by its owner alone, from the first byte (never 0644 for a moment)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
