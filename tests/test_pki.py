"""The federation PKI: CA, issuance, revocation, verification, CLI and a real mTLS handshake."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from fedfort.cli import main
from fedfort.crypto import pki
from fedfort.crypto.pki import CertificateRefused
from fedfort.errors import ConfigError, PeerError, Refused


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@dataclass
class Federation:
    ca: pki.CaFiles
    out: Path
    server: pki.IssuedFiles
    clients: list[pki.IssuedFiles]

    @property
    def ca_cert(self) -> x509.Certificate:
        return pki.load_certificate(self.ca.cert)


@pytest.fixture
def fed(tmp_path: Path) -> Federation:
    ca = pki.init_ca(tmp_path / "ca", "hospitals-eu")
    out = tmp_path / "issued"
    server = pki.issue_certificate(ca.directory, out, "server", role="server")
    clients = pki.issue_clients(ca.directory, out, 3)
    return Federation(ca, out, server, clients)


@pytest.fixture
def other_ca(tmp_path: Path) -> pki.CaFiles:
    # same federation id, different key: only the signature tells them apart
    return pki.init_ca(tmp_path / "other-ca", "hospitals-eu")


def _refused(reason: str):
    return pytest.raises(CertificateRefused, match=f"^{reason}: ")


# --------------------------------------------------------------------------- CA and issuance


def test_init_ca_writes_files(tmp_path: Path) -> None:
    ca = pki.init_ca(tmp_path / "ca", "fed-1")
    assert ca == pki.CaFiles(
        directory=tmp_path / "ca",
        cert=tmp_path / "ca" / "ca.pem",
        key=tmp_path / "ca" / "ca.key",
        crl=tmp_path / "ca" / "crl.pem",
        federation_id="fed-1",
    )
    assert _mode(ca.key) == 0o600
    assert _mode(ca.cert) == 0o644
    assert json.loads((ca.directory / "federation.json").read_text()) == {"federation_id": "fed-1"}
    assert pki.read_federation_id(ca.directory) == "fed-1"

    cert = pki.load_certificate(ca.cert)
    assert pki.common_name(cert) == "fedfort CA fed-1"
    assert cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)[0].value == "fed-1"
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert cert.public_key() == pki.load_private_key(ca.key).public_key()

    crl = x509.load_pem_x509_crl(ca.crl.read_bytes())
    assert len(crl) == 0
    assert crl.is_signature_valid(cert.public_key())  # type: ignore[arg-type]
    assert crl.next_update_utc is not None
    assert crl.next_update_utc - _now() > dt.timedelta(days=3649)
    assert pki.RevocationList(ca.crl, cert).serials == frozenset()


def test_init_ca_refuses_to_overwrite(tmp_path: Path) -> None:
    pki.init_ca(tmp_path, "fed")
    before = (tmp_path / "ca.key").read_bytes()
    with pytest.raises(ConfigError, match="already exists"):
        pki.init_ca(tmp_path, "fed")
    assert (tmp_path / "ca.key").read_bytes() == before


@pytest.mark.parametrize("bad", ["", "-fed", "fed id", "fed/../x", "a" * 65, "fédé"])
def test_init_ca_refuses_bad_federation_id(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError, match="invalid federation id"):
        pki.init_ca(tmp_path / "ca", bad)
    assert not (tmp_path / "ca" / "ca.key").exists()


def test_issue_server_and_clients(fed: Federation) -> None:
    ca_cert = fed.ca_cert
    assert fed.server == pki.IssuedFiles(
        name="server",
        cert=fed.out / "server.pem",
        key=fed.out / "server.key",
        ca=fed.out / "ca.pem",
    )
    assert [c.name for c in fed.clients] == ["client-000", "client-001", "client-002"]
    assert (fed.out / "ca.pem").read_bytes() == fed.ca.cert.read_bytes()
    for files in [fed.server, *fed.clients]:
        assert _mode(files.key) == 0o600
        assert _mode(files.cert) == 0o644
        cert = pki.load_certificate(files.cert)
        assert pki.common_name(cert) == files.name
        org = cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)
        assert org[0].value == "hospitals-eu"
        assert cert.issuer == ca_cert.subject
        assert cert.public_key() == pki.load_private_key(files.key).public_key()
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
        assert bc.critical and not bc.value.ca
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
        assert ku.critical and ku.value.digital_signature and not ku.value.key_encipherment
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        assert aki.key_identifier == ski.digest

    server = pki.load_certificate(fed.server.cert)
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [x509.ExtendedKeyUsageOID.SERVER_AUTH]
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]

    client = pki.load_certificate(fed.clients[0].cert)
    eku = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [x509.ExtendedKeyUsageOID.CLIENT_AUTH]
    san = client.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["client-000"]
    assert len({pki.load_certificate(c.cert).serial_number for c in fed.clients}) == 3


def test_server_hosts(fed: Federation) -> None:
    files = pki.issue_certificate(
        fed.ca.directory,
        fed.out,
        "edge",
        role="server",
        hosts=["fl.example.org", "::1", "10.0.0.7"],
    )
    san = pki.load_certificate(files.cert).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert san.value.get_values_for_type(x509.DNSName) == ["fl.example.org"]
    assert [str(ip) for ip in san.value.get_values_for_type(x509.IPAddress)] == ["::1", "10.0.0.7"]


def test_issue_clients_padding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = pki.init_ca(tmp_path / "ca", "fed")
    assert [f.name for f in pki.issue_clients(ca.directory, tmp_path / "a", 1)] == ["client-000"]

    def fake_issue(ca_dir: Path, out_dir: Path, name: str, **kwargs: object) -> pki.IssuedFiles:
        assert kwargs["role"] == "client"
        return pki.IssuedFiles(name, out_dir / f"{name}.pem", out_dir / f"{name}.key", out_dir)

    monkeypatch.setattr(pki, "issue_certificate", fake_issue)  # naming only, no 1000 keys
    names = [f.name for f in pki.issue_clients(ca.directory, tmp_path / "b", 1000)]
    assert names[0] == "client-000" and names[-1] == "client-999"
    names = [f.name for f in pki.issue_clients(ca.directory, tmp_path / "b", 1001)]
    assert names[0] == "client-0000" and names[-2:] == ["client-0999", "client-1000"]


def test_issue_refusals(fed: Federation, tmp_path: Path) -> None:
    ca_dir = fed.ca.directory
    before = fed.server.key.read_bytes()
    with pytest.raises(ConfigError, match="already exists"):
        pki.issue_certificate(ca_dir, fed.out, "server", role="server")
    assert fed.server.key.read_bytes() == before
    with pytest.raises(ConfigError, match="already exists"):
        pki.issue_clients(ca_dir, fed.out, 5)
    assert not (fed.out / "client-003.key").exists()  # nothing written when one key exists
    with pytest.raises(ConfigError, match="cannot be named 'server'"):
        pki.issue_certificate(ca_dir, tmp_path / "x", "server", role="client")
    for bad in ["", "../evil", "a b", ".hidden", "x" * 65]:
        with pytest.raises(ConfigError, match="invalid certificate name"):
            pki.issue_certificate(ca_dir, tmp_path / "x", bad, role="client")
    with pytest.raises(ConfigError, match="days"):
        pki.issue_certificate(ca_dir, tmp_path / "x", "c", role="client", days=0)
    with pytest.raises(ConfigError, match=r"federation\.json"):
        pki.issue_certificate(tmp_path / "nowhere", tmp_path / "x", "c", role="client")
    # an output directory that already holds another federation's ca.pem
    other = pki.init_ca(tmp_path / "other", "other-fed")
    with pytest.raises(ConfigError, match="different CA certificate"):
        pki.issue_certificate(other.directory, fed.out, "c", role="client")
    assert not (fed.out / "c.key").exists()


def test_loaders_refuse_bad_files(fed: Federation, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        pki.load_certificate(tmp_path / "missing.pem")
    with pytest.raises(ConfigError, match=r"not a PEM X\.509 certificate"):
        pki.load_certificate(fed.server.key)
    with pytest.raises(ConfigError, match="does not exist"):
        pki.load_private_key(tmp_path / "missing.key")
    with pytest.raises(ConfigError, match="not a PEM private key"):
        pki.load_private_key(fed.server.cert)


def test_sign_and_verify(fed: Federation) -> None:
    key = pki.load_private_key(fed.clients[0].key)
    cert = pki.load_certificate(fed.clients[0].cert)
    other = pki.load_certificate(fed.clients[1].cert)
    sig = pki.sign_with_key(key, b"update round 3")
    assert pki.verify_with_certificate(cert, b"update round 3", sig)
    assert not pki.verify_with_certificate(cert, b"update round 4", sig)
    assert not pki.verify_with_certificate(other, b"update round 3", sig)
    assert not pki.verify_with_certificate(cert, b"update round 3", b"garbage")
    assert not pki.verify_with_certificate(cert, b"update round 3", b"")
    assert not pki.verify_with_certificate(cert, "not bytes", sig)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- verification


def test_good_client_verifies(fed: Federation) -> None:
    revoked = pki.RevocationList(fed.ca.crl, fed.ca_cert)
    pem = fed.clients[1].cert.read_bytes()
    cert = pki.verify_certificate(pem, fed.ca_cert, role="client", revoked=revoked)
    assert pki.common_name(cert) == "client-001"
    server = pki.verify_certificate(fed.server.cert.read_bytes(), fed.ca_cert, role="server")
    assert pki.common_name(server) == "server"
    # no role: any certificate of the federation
    pki.verify_certificate(pem, fed.ca_cert)


def test_refusal_is_a_peer_error(fed: Federation) -> None:
    with pytest.raises(Refused) as info:
        pki.verify_certificate(b"garbage", fed.ca_cert)
    assert isinstance(info.value, PeerError)
    assert info.value.reason == "malformed_certificate"


@pytest.mark.parametrize("garbage", [b"", b"garbage", b"-----BEGIN CERTIFICATE-----\nAAAA\n"])
def test_malformed(fed: Federation, garbage: bytes) -> None:
    with _refused("malformed_certificate"):
        pki.verify_certificate(garbage, fed.ca_cert)


def test_foreign_certificate(fed: Federation, other_ca: pki.CaFiles, tmp_path: Path) -> None:
    foreign = pki.issue_certificate(other_ca.directory, tmp_path / "foreign", "c", role="client")
    with _refused("foreign_certificate"):
        pki.verify_certificate(foreign.cert.read_bytes(), fed.ca_cert, role="client")
    other_fed = pki.init_ca(tmp_path / "other-fed", "another-federation")
    foreign = pki.issue_certificate(other_fed.directory, tmp_path / "f2", "c", role="client")
    with _refused("foreign_certificate"):
        pki.verify_certificate(foreign.cert.read_bytes(), fed.ca_cert, role="client")


def test_ca_certificate_is_not_a_peer(fed: Federation) -> None:
    with _refused("wrong_role"):
        pki.verify_certificate(fed.ca.cert.read_bytes(), fed.ca_cert)


def test_expired_certificate(fed: Federation) -> None:
    expired = pki.issue_certificate(
        fed.ca.directory,
        fed.out,
        "old",
        role="client",
        not_before=_now() - dt.timedelta(days=30),
        not_after=_now() - dt.timedelta(days=1),
    )
    with _refused("expired_certificate"):
        pki.verify_certificate(expired.cert.read_bytes(), fed.ca_cert, role="client")
    # not_after alone in the past also gives an expired certificate
    alone = pki.issue_certificate(
        fed.ca.directory, fed.out, "old2", role="client", not_after=_now() - dt.timedelta(hours=1)
    )
    with _refused("expired_certificate"):
        pki.verify_certificate(alone.cert.read_bytes(), fed.ca_cert)
    # and a good certificate checked at a time after its expiry
    pem = fed.clients[0].cert.read_bytes()
    with _refused("expired_certificate"):
        pki.verify_certificate(pem, fed.ca_cert, now=_now() + dt.timedelta(days=400))


def test_not_yet_valid_certificate(fed: Federation) -> None:
    future = pki.issue_certificate(
        fed.ca.directory, fed.out, "future", role="client", not_before=_now() + dt.timedelta(days=1)
    )
    with _refused("expired_certificate"):
        pki.verify_certificate(future.cert.read_bytes(), fed.ca_cert, role="client")
    later = _now() + dt.timedelta(days=2)
    pki.verify_certificate(future.cert.read_bytes(), fed.ca_cert, role="client", now=later)


def test_wrong_role(fed: Federation) -> None:
    with _refused("wrong_role"):
        pki.verify_certificate(fed.server.cert.read_bytes(), fed.ca_cert, role="client")
    with _refused("wrong_role"):
        pki.verify_certificate(fed.clients[0].cert.read_bytes(), fed.ca_cert, role="server")


def test_revocation(fed: Federation) -> None:
    ca_cert = fed.ca_cert
    revoked = pki.RevocationList(fed.ca.crl, ca_cert)  # a "running server" loads it once
    victim, bystander = fed.clients[0].cert.read_bytes(), fed.clients[1].cert.read_bytes()
    pki.verify_certificate(victim, ca_cert, role="client", revoked=revoked)

    serial = pki.revoke(fed.ca.directory, fed.clients[0].cert)
    assert serial == pki.load_certificate(fed.clients[0].cert).serial_number
    with _refused("revoked_certificate"):
        pki.verify_certificate(victim, ca_cert, role="client", revoked=revoked)
    assert revoked.is_revoked(serial)
    pki.verify_certificate(bystander, ca_cert, role="client", revoked=revoked)
    assert _mode(fed.ca.crl) == 0o644

    # revoking twice changes nothing
    before = fed.ca.crl.read_bytes()
    assert pki.revoke(fed.ca.directory, serial) == serial
    assert fed.ca.crl.read_bytes() == before

    # by serial number; the CRL stays signed by the CA and keeps earlier entries
    other = pki.load_certificate(fed.clients[2].cert).serial_number
    assert pki.revoke(fed.ca.directory, other) == other
    assert revoked.serials == {serial, other}
    crl = x509.load_pem_x509_crl(fed.ca.crl.read_bytes())
    assert crl.is_signature_valid(ca_cert.public_key())  # type: ignore[arg-type]
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 3
    assert not list(fed.ca.directory.glob("*.tmp"))


def test_revoke_refuses_foreign_certificate(fed: Federation, other_ca: pki.CaFiles) -> None:
    foreign = pki.issue_certificate(other_ca.directory, fed.out.parent / "f", "c", role="client")
    with pytest.raises(ConfigError, match="was not issued by the CA"):
        pki.revoke(fed.ca.directory, foreign.cert)
    with pytest.raises(ConfigError, match="positive"):
        pki.revoke(fed.ca.directory, 0)


def test_revocation_list_refuses_forged_crl(fed: Federation, other_ca: pki.CaFiles) -> None:
    forged = fed.ca.crl.parent / "forged.pem"
    forged.write_bytes(other_ca.crl.read_bytes())  # signed by another key, same subject
    with pytest.raises(ConfigError, match="not signed by the federation CA"):
        pki.RevocationList(forged, fed.ca_cert)
    garbage = fed.ca.crl.parent / "garbage.pem"
    garbage.write_bytes(b"nope")
    with pytest.raises(ConfigError, match="not a PEM certificate revocation list"):
        pki.RevocationList(garbage, fed.ca_cert)
    # a running list whose file is replaced by a forgery fails closed
    revoked = pki.RevocationList(fed.ca.crl, fed.ca_cert)
    os.replace(forged, fed.ca.crl)
    with pytest.raises(ConfigError):
        revoked.is_revoked(1)


# --------------------------------------------------------------------------- CLI


def test_cli_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca, out = tmp_path / "ca", tmp_path / "pki"
    assert main(["certs", "init", "--dir", str(ca), "--federation", "fed-x"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"wrote {ca / n}" for n in ["ca.key", "ca.pem", "crl.pem", "federation.json"]]

    argv = ["certs", "issue", "--dir", str(ca), "--out", str(out)]
    assert main([*argv, "--name", "server", "--role", "server", "--host", "fl.local"]) == 0
    lines = capsys.readouterr().out.splitlines()
    bundle = ["server.key", "server.pem", "ca.pem", "crl.pem"]  # what the server needs, no ca.key
    assert lines == [f"wrote {out / n}" for n in bundle]
    assert sorted(p.name for p in out.iterdir()) == sorted(bundle)
    server = pki.load_certificate(out / "server.pem")
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["fl.local"]

    assert main([*argv, "--clients", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"wrote {out / n}"
        for n in ["client-000.key", "client-000.pem", "client-001.key", "client-001.pem"]
    ]
    assert main([*argv, "--name", "alice"]) == 0  # role defaults to client
    capsys.readouterr()
    alice = pki.load_certificate(out / "alice.pem")
    ca_cert = pki.load_certificate(ca / "ca.pem")
    pki.verify_certificate((out / "alice.pem").read_bytes(), ca_cert, role="client")

    revoking = ["certs", "revoke", "--dir", str(ca), "--cert", str(out / "client-001.pem")]
    assert main([*revoking, "--publish", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2:] == [f"wrote {ca / 'crl.pem'}", f"wrote {out / 'crl.pem'}"]
    assert (out / "crl.pem").read_bytes() == (ca / "crl.pem").read_bytes()
    assert main(["certs", "revoke", "--dir", str(ca), "--serial", hex(alice.serial_number)]) == 0
    capsys.readouterr()
    revoked = pki.RevocationList(ca / "crl.pem", ca_cert)
    assert revoked.serials == {
        pki.load_certificate(out / "client-001.pem").serial_number,
        alice.serial_number,
    }
    assert main(["certs", "revoke", "--dir", str(ca), "--serial", str(alice.serial_number)]) == 0
    assert "already revoked" in capsys.readouterr().out


def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca = tmp_path / "ca"
    assert main(["certs", "init", "--dir", str(ca), "--federation", "bad id"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fedfort: error: invalid federation id 'bad id'")
    assert main(["certs", "init", "--dir", str(ca), "--federation", "fed"]) == 0
    capsys.readouterr()
    assert main(["certs", "init", "--dir", str(ca), "--federation", "fed"]) == 2
    assert "already exists" in capsys.readouterr().err
    argv = ["certs", "issue", "--dir", str(ca), "--out", str(tmp_path / "o")]
    assert main([*argv, "--name", "c1", "--host", "example.org"]) == 2
    assert "--host applies to server certificates only" in capsys.readouterr().err
    assert main([*argv, "--name", "server"]) == 2
    assert "cannot be named 'server'" in capsys.readouterr().err
    assert main([*argv, "--clients", "0"]) == 2
    assert "count must be a positive integer" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # --name and --clients are exclusive
        main([*argv, "--name", "a", "--clients", "2"])
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- mTLS handshake


@dataclass
class EchoServer:
    port: int
    ca_pem: bytes
    seen: list[str]


def _serve(fed: Federation) -> Iterator[EchoServer]:
    ca_cert = fed.ca_cert
    revoked = pki.RevocationList(fed.ca.crl, ca_cert)
    seen: list[str] = []

    def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
        pems = context.auth_context().get("x509_pem_cert", [])
        if not pems:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "no client certificate")
        try:
            cert = pki.verify_certificate(pems[0], ca_cert, role="client", revoked=revoked)
        except CertificateRefused as exc:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, exc.reason)
        name = pki.common_name(cert)
        seen.append(name)
        return name.encode() + b":" + request

    server = grpc.server(futures.ThreadPoolExecutor(4))
    handler = grpc.method_handlers_generic_handler(
        "test.Echo",
        {
            "Echo": grpc.unary_unary_rpc_method_handler(
                echo, request_deserializer=None, response_serializer=None
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
    credentials = grpc.ssl_server_credentials(
        [(fed.server.key.read_bytes(), fed.server.cert.read_bytes())],
        root_certificates=fed.ca.cert.read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    assert port > 0
    server.start()
    try:
        yield EchoServer(port, fed.ca.cert.read_bytes(), seen)
    finally:
        server.stop(grace=None).wait(5)


@pytest.fixture
def echo_server(fed: Federation) -> Iterator[EchoServer]:
    yield from _serve(fed)


def _call(
    srv: EchoServer,
    client: pki.IssuedFiles | None,
    *,
    target: str = "127.0.0.1",
    root: bytes | None = None,
) -> bytes:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=root if root is not None else srv.ca_pem,
        private_key=None if client is None else client.key.read_bytes(),
        certificate_chain=None if client is None else client.cert.read_bytes(),
    )
    options = [("grpc.ssl_target_name_override", "localhost")] if target == "127.0.0.1" else []
    with grpc.secure_channel(f"{target}:{srv.port}", credentials, options=options) as channel:
        echo = channel.unary_unary("/test.Echo/Echo")
        response: bytes = echo(b"ping", timeout=5)
        return response


def test_mtls_good_client(fed: Federation, echo_server: EchoServer) -> None:
    assert _call(echo_server, fed.clients[0]) == b"client-000:ping"
    assert _call(echo_server, fed.clients[2]) == b"client-002:ping"
    assert echo_server.seen == ["client-000", "client-002"]


def test_mtls_ip_address_san(fed: Federation, echo_server: EchoServer) -> None:
    # without a name override the server certificate's IP SAN 127.0.0.1 must match
    credentials = grpc.ssl_channel_credentials(
        root_certificates=echo_server.ca_pem,
        private_key=fed.clients[0].key.read_bytes(),
        certificate_chain=fed.clients[0].cert.read_bytes(),
    )
    with grpc.secure_channel(f"127.0.0.1:{echo_server.port}", credentials) as channel:
        assert channel.unary_unary("/test.Echo/Echo")(b"x", timeout=5) == b"client-000:x"


def _assert_unavailable(srv: EchoServer, client: pki.IssuedFiles | None, **kw: object) -> None:
    with pytest.raises(grpc.RpcError) as info:
        _call(srv, client, **kw)  # type: ignore[arg-type]
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value  # type: ignore[attr-defined]
    assert srv.seen == []


def test_mtls_foreign_client_refused(
    echo_server: EchoServer, other_ca: pki.CaFiles, tmp_path: Path
) -> None:
    foreign = pki.issue_certificate(other_ca.directory, tmp_path / "f", "client-000", role="client")
    _assert_unavailable(echo_server, foreign)


def test_mtls_expired_client_refused(fed: Federation, echo_server: EchoServer) -> None:
    expired = pki.issue_certificate(
        fed.ca.directory,
        fed.out,
        "expired",
        role="client",
        not_before=_now() - dt.timedelta(days=30),
        not_after=_now() - dt.timedelta(days=1),
    )
    _assert_unavailable(echo_server, expired)


def test_mtls_not_yet_valid_client_refused(fed: Federation, echo_server: EchoServer) -> None:
    future = pki.issue_certificate(
        fed.ca.directory, fed.out, "future", role="client", not_before=_now() + dt.timedelta(days=1)
    )
    _assert_unavailable(echo_server, future)


def test_mtls_client_without_certificate_refused(echo_server: EchoServer) -> None:
    _assert_unavailable(echo_server, None)


def test_mtls_client_refuses_foreign_server(
    fed: Federation, echo_server: EchoServer, other_ca: pki.CaFiles
) -> None:
    # a client that trusts another CA does not accept this server (server impersonation)
    _assert_unavailable(echo_server, fed.clients[0], root=other_ca.cert.read_bytes())


def test_mtls_revoked_client_refused_by_application(
    fed: Federation, echo_server: EchoServer
) -> None:
    assert _call(echo_server, fed.clients[1]) == b"client-001:ping"
    pki.revoke(fed.ca.directory, fed.clients[1].cert)
    # TLS does not check the CRL: the handshake succeeds and the application refuses
    with pytest.raises(grpc.RpcError) as info:
        _call(echo_server, fed.clients[1])
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    assert info.value.details() == "revoked_certificate"  # type: ignore[attr-defined]
    assert _call(echo_server, fed.clients[0]) == b"client-000:ping"


def test_mtls_server_certificate_as_client_refused(
    fed: Federation, echo_server: EchoServer
) -> None:
    # BoringSSL checks the extended key usage: a serverAuth-only certificate cannot be a client
    _assert_unavailable(echo_server, fed.server)


def test_mtls_client_certificate_as_server_refused(fed: Federation) -> None:
    # a client certificate (clientAuth only) whose SAN matches the host still cannot serve
    impostor = pki.issue_certificate(fed.ca.directory, fed.out, "localhost", role="client")
    gen = _serve(Federation(fed.ca, fed.out, impostor, fed.clients))
    srv = next(gen)
    try:
        _assert_unavailable(srv, fed.clients[0])
    finally:
        gen.close()


def test_client_certificates_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca = tmp_path / "ca"
    assert main(["certs", "init", "--dir", str(ca), "--federation", "hospitals"]) == 0
    run = tmp_path / "run.toml"
    run.write_text('[clients]\nnames = ["hospital-a", "hospital-b"]\n')
    out = tmp_path / "pki"
    assert main(["certs", "issue", "--dir", str(ca), "--out", str(out), "--config", str(run)]) == 0
    issued = {p.stem for p in out.glob("*.pem")} - {"ca"}
    assert issued == {"hospital-a", "hospital-b"}
    cert = pki.load_certificate(out / "hospital-b.pem")
    assert pki.common_name(cert) == "hospital-b"
    argv = ["certs", "issue", "--dir", str(ca), "--out", str(tmp_path / "more")]
    assert main([*argv, "--names", "clinic-x, clinic-y"]) == 0
    assert {p.stem for p in (tmp_path / "more").glob("clinic-*.key")} == {"clinic-x", "clinic-y"}
    capsys.readouterr()
    # a bad or repeated name, or a name that exists already, writes nothing
    assert main([*argv, "--names", "ok,bad name"]) == 2
    assert "invalid client name 'bad name'" in capsys.readouterr().err
    assert main([*argv, "--names", "dup,dup"]) == 2
    assert "appear twice" in capsys.readouterr().err
    assert main([*argv, "--names", "new-one,clinic-x"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert not (tmp_path / "more" / "new-one.key").exists()
    assert main([*argv, "--names", " , "]) == 2
    assert "lists no client names" in capsys.readouterr().err
