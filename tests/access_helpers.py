"""Shared set-up of the access-control tests: a PKI, a finished run, tokens per role."""

from __future__ import annotations

import http.client
import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedfort.access.guard import ACCESS_KIND
from fedfort.audit import AUDIT_FILE, read_entries
from fedfort.config import RunConfig, parse_config
from fedfort.crypto.pki import init_ca, issue_certificate


def small_config(rounds: int = 2, **access: Any) -> RunConfig:
    return parse_config(
        {
            "seed": 3,
            "rounds": rounds,
            "data": {
                "dataset": "synthetic",
                "synthetic_samples": 400,
                "synthetic_features": 8,
                "synthetic_classes": 2,
            },
            "clients": {"count": 4, "epochs": 1},
            "model": {"name": "logreg"},
            "access": access,
        }
    )


@dataclass
class Pki:
    ca_dir: Path
    out: Path

    @property
    def ca(self) -> Path:
        return self.out / "ca.pem"


def make_pki(root: Path) -> Pki:
    ca_dir = root / "ca"
    init_ca(ca_dir, "access-test")
    out = root / "pki"
    issue_certificate(ca_dir, out, "server", role="server")
    issue_certificate(ca_dir, out, "client-000", role="client")
    return Pki(ca_dir, out)


def client_context(pki: Pki, cert_name: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if cert_name is not None:
        context.load_cert_chain(
            str(pki.out / f"{cert_name}.pem"), str(pki.out / f"{cert_name}.key")
        )
    return context


def call(
    port: int,
    method: str,
    path: str,
    *,
    token: str | None = None,
    body: dict[str, Any] | None = None,
    context: ssl.SSLContext | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes, dict[str, str]]:
    """One request; ``context`` makes it HTTPS. Returns (status, body, headers)."""
    if context is not None:
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            "localhost", port, context=context, timeout=30
        )
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    send = dict(headers or {})
    if token is not None:
        send["Authorization"] = f"Bearer {token}"
    data = None
    if method == "POST":
        data = json.dumps(body or {}).encode()
        send["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=data, headers=send)
        response = conn.getresponse()
        return response.status, response.read(), {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()


def access_entries(run_dir: Path) -> list[dict[str, Any]]:
    return [e.data for e in read_entries(run_dir / AUDIT_FILE) if e.kind == ACCESS_KIND]
