"""The federation's public-key infrastructure for mutual TLS.

Every party of a federation (the server and each client) holds an X.509 certificate issued by
the federation's own certificate authority (CA), and every connection is mutually authenticated
with TLS: the server proves it is the federation's server, each client proves it is one of the
federation's clients, and the client's certificate common name (``client-000``, ...) is its
identity at the application layer.

What this defends against:

* **impersonation by a network attacker** - someone who can read, drop or inject traffic
  between the parties cannot pose as the server (to collect updates or push a poisoned model)
  or as a client (to inject updates) without a private key the CA has certified;
* **clients from another federation** - certificates carry the federation id and are only
  accepted when signed directly by *this* federation's CA, so a valid credential of another
  federation (even one with the same id but another CA key) is worthless here;
* **stolen-then-revoked or expired credentials** - certificates are short-lived (365 days by
  default) and the operator can revoke one (``fedfort certs revoke``), which adds its serial to
  the CA-signed certificate revocation list ``crl.pem`` (an RFC 5280 CRL).

TLS itself (gRPC's BoringSSL) refuses, during the handshake, a peer certificate that does not
chain to the configured root ``ca.pem`` (a foreign certificate), one outside its validity
window (expired or not yet valid) and a client that presents no certificate at all. gRPC Python
does not check CRLs, so revocation is checked by the application: on each connection the server
passes the peer's certificate (from the call's auth context) to :func:`verify_certificate` with
a :class:`RevocationList`, which re-reads ``crl.pem`` whenever the file changes so that a
running server honours a revocation without a restart.

Keys are ECDSA P-256 (the curve best supported by BoringSSL); private keys are written as
PKCS#8 PEM readable by their owner only (mode 0600), encrypted under ``FEDFORT_KEY_PASSPHRASE``
when it is set (see :mod:`fedfort.crypto.keyfiles`; gRPC gets them decrypted in memory), and
certificates as PEM (0644).
Layout of a CA directory: ``ca.pem``, ``ca.key``, ``crl.pem`` and ``federation.json``; it stays
with the operator. A server's directory holds ``server.pem``, ``server.key``, ``ca.pem`` and a
copy of ``crl.pem`` (:func:`publish_crl` after each revocation), never ``ca.key``: a server that
holds the CA key can mint client certificates, and refuses to start beside one.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import re
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedfort import jsonio
from fedfort.crypto.keyfiles import load_private_pem, private_pem, write_private_file
from fedfort.errors import ConfigError, Refused

__all__ = [
    "CA_CERT_FILE",
    "CA_KEY_FILE",
    "CRL_FILE",
    "FEDERATION_FILE",
    "CaFiles",
    "CertificateRefused",
    "IssuedFiles",
    "RevocationList",
    "common_name",
    "federation_of",
    "init_ca",
    "issue_certificate",
    "issue_clients",
    "load_certificate",
    "load_private_key",
    "publish_crl",
    "read_federation_id",
    "revoke",
    "sign_with_key",
    "tls_key_pem",
    "verify_certificate",
    "verify_with_certificate",
]

CA_CERT_FILE = "ca.pem"
"""File name of the CA certificate, in the CA directory and in every issued directory."""
CA_KEY_FILE = "ca.key"
"""File name of the CA private key (never leaves the CA directory)."""
CRL_FILE = "crl.pem"
"""File name of the CA-signed certificate revocation list."""
FEDERATION_FILE = "federation.json"
"""File name of the federation description (``{"federation_id": ...}``)."""

Role = Literal["server", "client"]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_CRL_DAYS = 3650
# issued certificates start slightly in the past so that small clock skews do not reject them
_CLOCK_SKEW = dt.timedelta(minutes=5)
_ROLE_USAGE = {"server": ExtendedKeyUsageOID.SERVER_AUTH, "client": ExtendedKeyUsageOID.CLIENT_AUTH}


@dataclass(frozen=True)
class CaFiles:
    """The files of a federation's certificate authority, as written by :func:`init_ca`."""

    directory: Path
    cert: Path
    key: Path
    crl: Path
    federation_id: str


@dataclass(frozen=True)
class IssuedFiles:
    """The files of one issued certificate: its certificate, its key and the CA certificate."""

    name: str
    cert: Path
    key: Path
    ca: Path


class CertificateRefused(Refused):
    """A peer certificate was refused.

    ``reason`` is one of ``malformed_certificate``, ``foreign_certificate`` (not issued by this
    federation's CA), ``expired_certificate`` (expired or not yet valid),
    ``revoked_certificate`` and ``wrong_role`` (e.g. a server certificate used by a client).
    """


# --------------------------------------------------------------------------- helpers


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _utc(value: dt.datetime) -> dt.datetime:
    """``value`` as an aware UTC datetime; naive values are taken to be UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def _check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise ConfigError(
            f"invalid {what} {value!r}: use 1-64 characters from letters, digits, '.', '_' "
            "and '-', starting with a letter or digit"
        )
    return value


def _check_days(days: int) -> int:
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ConfigError(f"days must be a positive integer, got {days!r}")
    return days


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600; refuse if it exists (never overwrite a key)."""
    write_private_file(path, data, exclusive=True)


def _write_public(path: Path, data: bytes) -> None:
    """Write ``path`` atomically (temporary file + ``os.replace``) with mode 0644."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    # encrypted under FEDFORT_KEY_PASSPHRASE when it is set (fedfort.crypto.keyfiles)
    return private_pem(key)


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _ec_public_key(cert: x509.Certificate) -> ec.EllipticCurvePublicKey:
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ConfigError(f"certificate {common_name(cert)!r} does not hold an ECDSA public key")
    return key


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None


def _build_crl(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    revoked: Sequence[tuple[int, dt.datetime]],
    number: int,
) -> x509.CertificateRevocationList:
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now)
        .next_update(now + dt.timedelta(days=_CRL_DAYS))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    for serial, when in revoked:
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when)
        builder = builder.add_revoked_certificate(entry.build())
    return builder.sign(ca_key, hashes.SHA256())


def _load_crl(path: Path, ca_cert: x509.Certificate) -> x509.CertificateRevocationList:
    """Parse ``path`` and check it is signed by ``ca_cert``; ConfigError otherwise."""
    data = _read_bytes(path, "certificate revocation list")
    try:
        crl = x509.load_pem_x509_crl(data)
    except ValueError:
        raise ConfigError(f"{path} is not a PEM certificate revocation list") from None
    if crl.issuer != ca_cert.subject or not crl.is_signature_valid(_ec_public_key(ca_cert)):
        raise ConfigError(
            f"{path} is not signed by the federation CA {common_name(ca_cert)!r}; "
            "restore the CA's crl.pem"
        )
    return crl


# --------------------------------------------------------------------------- loading


def load_certificate(path: Path) -> x509.Certificate:
    """Load a PEM certificate from ``path`` (ConfigError if missing or not a certificate)."""
    data = _read_bytes(Path(path), "certificate")
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise ConfigError(f"{path} is not a PEM X.509 certificate") from None


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """Load a PEM ECDSA private key from ``path``, decrypting it in memory when it is encrypted.

    Follows the custody rules of :mod:`fedfort.crypto.keyfiles` (passphrase from
    ``FEDFORT_KEY_PASSPHRASE``, owner-only file). Raises ConfigError if the file is missing or
    unreadable, accessible by group or others, not a PEM private key, encrypted without (or
    with a wrong) passphrase, or holds a key of another type.
    """
    key = load_private_pem(Path(path))
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{path} holds a {type(key).__name__}, not an ECDSA private key")
    return key


def tls_key_pem(path: Path) -> bytes:
    """The TLS private key at ``path`` as unencrypted PEM bytes, for gRPC (kept in memory)."""
    return load_private_key(path).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def read_federation_id(ca_dir: Path) -> str:
    """The federation id stored in ``ca_dir/federation.json``."""
    path = Path(ca_dir) / FEDERATION_FILE
    data = _read_bytes(path, "federation file")
    try:
        body = json.loads(data)
    except ValueError:
        raise ConfigError(f"{path} is not valid JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("federation_id"), str):
        raise ConfigError(f"{path} has no string 'federation_id'")
    return _check_name(body["federation_id"], f"federation id in {path}")


def common_name(cert: x509.Certificate) -> str:
    """The subject common name (CN) of ``cert``; empty string if it has none."""
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attrs:
        return ""
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def federation_of(ca_cert: x509.Certificate) -> str:
    """The federation a CA certificate belongs to: its subject organisation (O)."""
    attrs = ca_cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    value = attrs[0].value if attrs else ""
    name = value if isinstance(value, str) else value.decode("utf-8", "replace")
    return _check_name(name, "federation id (organisation) of the CA certificate")


# --------------------------------------------------------------------------- the CA


def init_ca(directory: Path, federation_id: str, *, days: int = 3650) -> CaFiles:
    """Create a federation CA in ``directory``: ``ca.pem``, ``ca.key``, ``crl.pem`` and
    ``federation.json``.

    The CA certificate (ECDSA P-256, valid ``days`` days) may sign end-entity certificates only
    (path length 0); the CRL starts empty. Raises ConfigError for an invalid federation id or
    when ``directory`` already holds a ``ca.key``.
    """
    _check_name(federation_id, "federation id")
    _check_days(days)
    directory = Path(directory)
    files = CaFiles(
        directory=directory,
        cert=directory / CA_CERT_FILE,
        key=directory / CA_KEY_FILE,
        crl=directory / CRL_FILE,
        federation_id=federation_id,
    )
    if files.key.exists():
        raise ConfigError(
            f"{files.key} already exists; refusing to replace the CA of an existing federation "
            "(every certificate it issued would become invalid)"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {directory}: {exc.strerror}") from None

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"fedfort CA {federation_id}"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, federation_id),
        ]
    )
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
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
    # the key goes first: O_EXCL makes a concurrent second init fail here, before anything else
    _write_private(files.key, _key_pem(key))
    _write_public(files.cert, _cert_pem(cert))
    crl = _build_crl(cert, key, [], number=1)
    _write_public(files.crl, crl.public_bytes(serialization.Encoding.PEM))
    body = jsonio.dumps({"federation_id": federation_id}, indent=2) + "\n"
    _write_public(directory / FEDERATION_FILE, body.encode())
    return files


def _load_ca(ca_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, str]:
    ca_dir = Path(ca_dir)
    federation_id = read_federation_id(ca_dir)
    cert = load_certificate(ca_dir / CA_CERT_FILE)
    key = load_private_key(ca_dir / CA_KEY_FILE)
    if cert.public_key() != key.public_key():
        raise ConfigError(f"{ca_dir / CA_KEY_FILE} is not the key of {ca_dir / CA_CERT_FILE}")
    return cert, key, federation_id


def _validity(
    days: int, not_before: dt.datetime | None, not_after: dt.datetime | None
) -> tuple[dt.datetime, dt.datetime]:
    _check_days(days)
    length = dt.timedelta(days=days)
    if not_before is not None and not_after is not None:
        start, end = _utc(not_before), _utc(not_after)
    elif not_before is not None:
        start = _utc(not_before)
        end = start + length
    else:
        start = _now() - _CLOCK_SKEW
        if not_after is None:
            end = start + _CLOCK_SKEW + length
        else:
            end = _utc(not_after)
            if end <= start:  # a certificate that has already expired (for tests)
                start = end - length
    if end <= start:
        raise ConfigError(f"not_after ({end.isoformat()}) must be after not_before")
    return start, end


def _subject_alt_names(name: str, role: Role, hosts: Sequence[str]) -> list[x509.GeneralName]:
    if role == "client":
        return [x509.DNSName(name)]
    if isinstance(hosts, str):
        hosts = [hosts]
    if not hosts:
        raise ConfigError("a server certificate needs at least one host name or IP address")
    names: list[x509.GeneralName] = []
    for host in hosts:
        host = host.strip()
        if not host:
            raise ConfigError("empty host name for a server certificate")
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            try:
                names.append(x509.DNSName(host))
            except ValueError as exc:
                raise ConfigError(f"invalid host name {host!r}: {exc}") from None
    return names


def _place_ca_copy(ca_pem: bytes, target: Path) -> None:
    """Copy the CA certificate to ``target`` unless an identical copy is already there."""
    if target.exists():
        if _read_bytes(target, "CA certificate") == ca_pem:
            return
        raise ConfigError(
            f"{target} holds a different CA certificate (another federation?); "
            "use another output directory"
        )
    _write_public(target, ca_pem)


def issue_certificate(
    ca_dir: Path,
    out_dir: Path,
    name: str,
    *,
    role: Role,
    hosts: Sequence[str] = ("localhost", "127.0.0.1"),
    days: int = 365,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> IssuedFiles:
    """Issue a certificate for ``name`` signed by the CA in ``ca_dir``.

    Writes ``out_dir/{name}.pem``, ``out_dir/{name}.key`` (mode 0600) and a copy of the CA
    certificate as ``out_dir/ca.pem``; for a server, also a copy of the CA's current
    ``crl.pem``. Never the CA's private key: ``out_dir`` is what the party needs, and a server
    refuses to start beside ``ca.key`` (:func:`fedfort.transport.server.refuse_ca_key`).
    The subject is CN=``name``, O=federation id. A server certificate names ``hosts`` (DNS
    names and IP addresses) in its subjectAltName and may only authenticate servers; a client
    certificate names ``name`` and may only authenticate clients. The certificate is valid for
    ``days`` days from now, or over ``[not_before, not_after]`` when given (tests use these to
    make expired or not yet valid certificates; a ``not_after`` alone in the past gives a
    window of ``days`` days ending then).

    Raises ConfigError for an invalid name, a client named ``server``, an existing
    ``{name}.key``, or an unusable CA directory.
    """
    _check_name(name, "certificate name")
    if role not in _ROLE_USAGE:
        raise ConfigError(f"role must be 'server' or 'client', got {role!r}")
    if role == "client" and name == "server":
        raise ConfigError("a client certificate cannot be named 'server'")
    start, end = _validity(days, not_before, not_after)
    alt_names = _subject_alt_names(name, role, hosts)
    out_dir = Path(out_dir)
    files = IssuedFiles(
        name=name,
        cert=out_dir / f"{name}.pem",
        key=out_dir / f"{name}.key",
        ca=out_dir / CA_CERT_FILE,
    )
    if files.key.exists():
        raise ConfigError(f"{files.key} already exists; refusing to overwrite a private key")
    ca_cert, ca_key, federation_id = _load_ca(Path(ca_dir))
    ca_pem = _cert_pem(ca_cert)
    if files.ca.exists() and _read_bytes(files.ca, "CA certificate") != ca_pem:
        _place_ca_copy(ca_pem, files.ca)  # raises: refuse before writing anything
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {out_dir}: {exc.strerror}") from None

    key = ec.generate_private_key(ec.SECP256R1())
    try:
        ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski)
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, name),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, federation_id),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([_ROLE_USAGE[role]]), critical=False)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(aki, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(files.key, _key_pem(key))
    _write_public(files.cert, _cert_pem(cert))
    _place_ca_copy(ca_pem, files.ca)
    if role == "server" and (Path(ca_dir) / CRL_FILE).exists():
        publish_crl(ca_dir, out_dir)
    return files


def publish_crl(ca_dir: Path, out_dir: Path) -> Path:
    """Copy the CA's current ``crl.pem`` into ``out_dir`` (a server's credentials directory),
    atomically, and return the copy's path. The CRL is public and signed by the CA, so it may
    travel by any channel; the server re-reads it when the file changes."""
    crl = Path(ca_dir) / CRL_FILE
    target = Path(out_dir) / CRL_FILE
    if target.resolve() != crl.resolve():
        _write_public(target, _read_bytes(crl, "revocation list"))
    return target


def issue_clients(
    ca_dir: Path,
    out_dir: Path,
    clients: int | Sequence[str],
    *,
    days: int = 365,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> list[IssuedFiles]:
    """Issue client certificates for ``clients``: their names (``[clients] names``), or a count
    of clients named ``client-000`` ... ``client-{count-1}``.

    The zero padding is ``max(3, len(str(count - 1)))`` digits, the client ids of the
    simulation. Nothing is written if any name is invalid or listed twice, or any of the keys
    already exists.
    """
    if isinstance(clients, int) and not isinstance(clients, bool):
        if clients < 1:
            raise ConfigError(f"count must be a positive integer, got {clients!r}")
        width = max(3, len(str(clients - 1)))
        names = [f"client-{i:0{width}d}" for i in range(clients)]
    elif isinstance(clients, Sequence) and not isinstance(clients, str | bytes):
        names = [str(n) for n in clients]
        if not names:
            raise ConfigError("no client names given: list at least one")
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigError(f"client names {twice} appear twice: every client needs its own")
    else:
        raise ConfigError(f"clients must be a count or a list of names, got {clients!r}")
    for name in names:
        _check_name(name, "client name")
        if name == "server":
            raise ConfigError("a client certificate cannot be named 'server'")
        key = Path(out_dir) / f"{name}.key"
        if key.exists():
            raise ConfigError(f"{key} already exists; refusing to overwrite a private key")
    return [
        issue_certificate(
            ca_dir,
            out_dir,
            name,
            role="client",
            days=days,
            not_before=not_before,
            not_after=not_after,
        )
        for name in names
    ]


def revoke(ca_dir: Path, certificate: Path | int) -> int:
    """Revoke a certificate (given by its file or its serial number) and re-sign ``crl.pem``.

    A certificate file must have been issued by this CA. The new CRL replaces the old one
    atomically, so a server reading it never sees a partial file. Revoking an already revoked
    serial changes nothing. Returns the serial number.
    """
    ca_dir = Path(ca_dir)
    ca_cert, ca_key, _ = _load_ca(ca_dir)
    if isinstance(certificate, bool):
        raise ConfigError(f"not a certificate or serial number: {certificate!r}")
    if isinstance(certificate, int):
        serial = certificate
        if serial < 1:
            raise ConfigError(f"a serial number is a positive integer, got {serial}")
    else:
        cert = load_certificate(Path(certificate))
        try:
            cert.verify_directly_issued_by(ca_cert)
        except (ValueError, TypeError, InvalidSignature):
            raise ConfigError(
                f"{certificate} was not issued by the CA in {ca_dir}; nothing to revoke"
            ) from None
        serial = cert.serial_number
    crl_path = ca_dir / CRL_FILE
    crl = _load_crl(crl_path, ca_cert)
    entries = [(r.serial_number, r.revocation_date_utc) for r in crl]
    if any(s == serial for s, _ in entries):
        return serial
    entries.append((serial, _now()))
    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number + 1
    except x509.ExtensionNotFound:
        number = 1
    new = _build_crl(ca_cert, ca_key, entries, number)
    _write_public(crl_path, new.public_bytes(serialization.Encoding.PEM))
    return serial


class RevocationList:
    """The revoked serial numbers of a CRL, re-read whenever the file changes.

    The CRL's signature is checked against ``ca_cert`` on every (re)load; a CRL that is missing,
    unreadable or not signed by the CA raises ConfigError (fail closed: no peer is accepted on
    the strength of a CRL that cannot be trusted). Safe to use from several threads.
    """

    def __init__(self, crl_path: Path, ca_cert: x509.Certificate) -> None:
        self.path = Path(crl_path)
        self.ca_cert = ca_cert
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._serials: frozenset[int] = frozenset()
        self._refresh()

    def _refresh(self) -> None:
        with self._lock:
            try:
                st = os.stat(self.path)
            except OSError as exc:
                raise ConfigError(
                    f"cannot read certificate revocation list {self.path}: {exc.strerror}"
                ) from None
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            if stamp == self._stamp:
                return
            crl = _load_crl(self.path, self.ca_cert)
            self._serials = frozenset(r.serial_number for r in crl)
            self._stamp = stamp

    def is_revoked(self, serial: int) -> bool:
        """Whether ``serial`` is revoked (re-reading the CRL first if the file changed)."""
        self._refresh()
        return serial in self._serials

    @property
    def serials(self) -> frozenset[int]:
        """All revoked serial numbers (re-reading the CRL first if the file changed)."""
        self._refresh()
        return self._serials


# --------------------------------------------------------------------------- verification


def verify_certificate(
    pem: bytes,
    ca_cert: x509.Certificate,
    *,
    role: Role | None = None,
    revoked: RevocationList | None = None,
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """Check a peer certificate (PEM bytes) against the federation and return it parsed.

    Checks, in order: it parses (else ``malformed_certificate``); it was issued directly by
    ``ca_cert`` and is not itself a CA certificate (``foreign_certificate`` /
    ``wrong_role``); ``now`` lies in its validity window (``expired_certificate``); its serial
    is not in ``revoked`` (``revoked_certificate``); and, when ``role`` is given, its extended
    key usage allows that role (``wrong_role``). Raises :class:`CertificateRefused`.
    """
    try:
        cert = x509.load_pem_x509_certificate(bytes(pem))
    except (ValueError, TypeError):
        raise CertificateRefused(
            "malformed_certificate", "the peer certificate is not a PEM X.509 certificate"
        ) from None
    cn = common_name(cert)
    try:
        cert.verify_directly_issued_by(ca_cert)
    except Exception:  # name mismatch, bad signature, unsupported key: all mean "not ours"
        raise CertificateRefused(
            "foreign_certificate",
            f"certificate {cn!r} (issuer {cert.issuer.rfc4514_string()!r}) was not issued by "
            f"this federation's CA {common_name(ca_cert)!r}",
        ) from None
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except (x509.ExtensionNotFound, ValueError):
        constraints = None
    if constraints is not None and constraints.ca:
        raise CertificateRefused("wrong_role", f"certificate {cn!r} is a CA certificate")
    moment = _now() if now is None else _utc(now)
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if moment < start:
        raise CertificateRefused(
            "expired_certificate",
            f"certificate {cn!r} is not valid before {start.isoformat()}",
        )
    if moment > end:
        raise CertificateRefused(
            "expired_certificate", f"certificate {cn!r} expired at {end.isoformat()}"
        )
    if revoked is not None and revoked.is_revoked(cert.serial_number):
        raise CertificateRefused(
            "revoked_certificate",
            f"certificate {cn!r} (serial {cert.serial_number:#x}) has been revoked",
        )
    if role is not None:
        try:
            usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except (x509.ExtensionNotFound, ValueError):
            usages = None
        if usages is None or _ROLE_USAGE[role] not in usages:
            raise CertificateRefused("wrong_role", f"certificate {cn!r} is not valid for a {role}")
    return cert


def sign_with_key(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    """ECDSA (SHA-256) signature of ``message`` with ``key``, DER encoded."""
    return key.sign(message, ec.ECDSA(hashes.SHA256()))


def verify_with_certificate(cert: x509.Certificate, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is a valid ECDSA (SHA-256) signature of ``message`` by the key of
    ``cert``. Returns False, never raises, for any invalid or malformed input."""
    try:
        key = cert.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            return False
        key.verify(bytes(signature), bytes(message), ec.ECDSA(hashes.SHA256()))
    except Exception:
        return False
    return True
