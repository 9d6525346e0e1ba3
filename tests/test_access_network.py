"""The operator API of a networked server: HTTPS with the federation's PKI, key rotation the
running server follows, revocation its gate honours, and a member's certificate refused."""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path

import pytest
from cryptography import x509

from access_helpers import Pki, call, client_context
from fedfort.access import TokenStore
from fedfort.access.setup import start_monitoring, tls_context
from fedfort.crypto.pki import RevocationList, load_certificate
from fedfort.transport.server import Credentials, NetworkServer
from netfed import ca_dir, make_pki, net_config

pytestmark = pytest.mark.slow


def test_rotate_and_revoke_through_the_operator_api(tmp_path: Path) -> None:
    pki_dir = make_pki(tmp_path, 2)
    pki = Pki(pki_dir, pki_dir)
    store_path = tmp_path / "tokens.sqlite"
    with TokenStore(store_path) as store:
        admin = store.issue("root", "admin")[0]
        operator = store.issue("ops", "operator")[0]
    # the operator API's clients.revoke signs CRLs, so it needs the CA's own directory
    config = net_config(2, access={"tokens": str(store_path), "ca_dir": str(ca_dir(pki_dir))})
    cred = Credentials.from_pki(pki_dir, "server")
    server = NetworkServer(config, tmp_path / "out", credentials=cred)
    try:
        tls = tls_context(config.access, cred.cert, cred.key, cred.ca)
        url = start_monitoring(server, operator_address="127.0.0.1:0", tls=tls)["operator"]
        assert url.startswith("https://")
        port = int(url.rsplit(":", 1)[1])
        https = client_context(pki)

        # an operator may not rotate keys; an admin may, and the running server follows
        assert server.keys.current()[1] == 1
        assert call(port, "POST", "/v1/keys/rotate", token=operator, context=https)[0] == 403
        status, body, _ = call(port, "POST", "/v1/keys/rotate", token=admin, context=https)
        assert status == 200 and json.loads(body)["key_version"] == 2
        time.sleep(0.6)
        assert server.keys.current()[1] == 2

        # revocation: by an id that never enrolled (409, nothing changes), then by serial
        status, body, _ = call(
            port,
            "POST",
            "/v1/clients/revoke",
            token=admin,
            body={"client": "client-000"},
            context=https,
        )
        assert status == 409 and "not an enrolled client" in json.loads(body)["error"]
        serial = x509.load_pem_x509_certificate((pki_dir / "client-000.pem").read_bytes())
        crl = RevocationList(pki_dir / "crl.pem", load_certificate(pki_dir / "ca.pem"))
        assert not crl.is_revoked(serial.serial_number)
        status, _, _ = call(
            port,
            "POST",
            "/v1/clients/revoke",
            token=admin,
            body={"serial": serial.serial_number},
            context=https,
        )
        assert status == 200 and crl.is_revoked(serial.serial_number)

        # a member's certificate passes the TLS handshake but carries no operator role
        member = client_context(pki, "client-001")
        status, body, _ = call(port, "POST", "/v1/run/stop", context=member)
        assert status == 403 and json.loads(body)["error"] == "certificate_not_operator"
        # a plain-HTTP request to the HTTPS port gets no answer
        with pytest.raises((OSError, http.client.HTTPException)):
            call(port, "GET", "/v1/status", token=admin)
    finally:
        server.close()
