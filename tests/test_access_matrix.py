"""The bar test of access control: every role against every action of the operator API.

Each call is allowed or refused exactly as :data:`fedfort.access.roles.PERMISSIONS` says, and
each decision is found in the run's audit log, which still verifies. Unauthenticated calls,
malformed, unknown, expired and revoked tokens, and a federation member's client certificate
are all refused.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from access_helpers import Pki, access_entries, call, client_context, make_pki, small_config
from fedfort.access import AccessAudit, AccessGuard, Operations, OperatorServer, TokenStore
from fedfort.access.api import ROUTES, server_tls_context
from fedfort.access.guard import CertificateRoles
from fedfort.access.roles import ACTIONS, PERMISSIONS, ROLES, allowed
from fedfort.access.setup import certificate_roles
from fedfort.audit import AUDIT_FILE, AuditLog, run_audit_key, verify_run
from fedfort.config import AccessConfig
from fedfort.crypto.pki import (
    RevocationList,
    issue_certificate,
    load_certificate,
    revoke,
)
from fedfort.errors import ConfigError
from fedfort.server.control import RunControl
from fedfort.simulation import Simulation
from fedfort.transport.registry import Registry
from fedfort.transport.service import rotate_server_key

#: action -> (method, path) of the operator API
ROUTE_OF = {action: (method, path) for (method, path), (action, _) in ROUTES.items()}
ROUTE_OF["metrics.read"] = ("GET", "/metrics")


@dataclass
class Setup:
    run: Path
    pki: Pki
    server: OperatorServer
    ops: Operations
    guard: AccessGuard
    tokens: dict[str, str]
    store: TokenStore
    client_serial: int


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("access")
    pki = make_pki(root)
    run = root / "run"
    with Simulation(small_config(), out_dir=run) as sim:
        sim.run()
        registry_metrics = sim.metrics.registry
    registry = Registry(root / "registry.sqlite")

    def rotate() -> int:
        return rotate_server_key(
            root / "keys", registry, "access-test", pki.out / "server.pem", pki.out / "server.key"
        )

    store = TokenStore(root / "tokens.sqlite")
    tokens = {role: store.issue(f"{role}-1", role)[0] for role in ROLES}
    log = AuditLog(run / AUDIT_FILE, run_audit_key(run))
    for name in ("ops-carol", "audit-dan", "ops-eve"):
        issue_certificate(pki.ca_dir, pki.out, name, role="client")
    revoke(pki.ca_dir, pki.out / "ops-eve.pem")
    ca_cert = load_certificate(pki.ca_dir / "ca.pem")
    roles = CertificateRoles(
        {
            "ops-carol": "operator",
            "audit-dan": "auditor",
            "ops-eve": "operator",
            "client-000": "admin",
        },
        ca_cert,
        RevocationList(pki.ca_dir / "crl.pem", ca_cert),
        frozenset({"client-000", "client-001"}),
    )
    guard = AccessGuard(store, AccessAudit(log, window_s=3600), certificates=roles)
    ops = Operations(run, RunControl(), rotate_key=rotate, ca_dir=pki.ca_dir)
    tls = server_tls_context(pki.out / "server.pem", pki.out / "server.key", pki.ca)
    server = OperatorServer(ops, guard, "127.0.0.1:0", tls=tls, metrics=registry_metrics).start()
    cert = x509.load_pem_x509_certificate((pki.out / "client-000.pem").read_bytes())
    yield Setup(run, pki, server, ops, guard, tokens, store, cert.serial_number)
    server.close()
    log.close()
    registry.close()
    store.close()


def _prepare(setup: Setup, action: str) -> dict[str, object]:
    """Put the run control where ``action`` is valid; the request body it needs."""
    if action == "run.start":
        setup.ops.control = RunControl(hold=True)
    elif action == "run.resume":
        setup.ops.control = RunControl()
        setup.ops.control.pause()
    else:
        setup.ops.control = RunControl()
    if action == "model.rollback":
        return {"version": 1, "reason": "matrix test"}
    if action == "clients.revoke":
        return {"serial": setup.client_serial}
    return {}


def _last_decision(setup: Setup, action: str) -> dict[str, object]:
    setup.guard.audit.flush()
    entries = [e for e in access_entries(setup.run) if e["action"] == action]
    assert entries, f"no access entry for {action}"
    return entries[-1]


@dataclass(frozen=True)
class Cell:
    status: int
    payload: bytes
    entry: dict[str, object]


@pytest.fixture(scope="module")
def matrix(setup: Setup) -> dict[tuple[str, str], Cell]:
    """Every role calls every action once, and every action is called once without a token
    (so the audit log holds a denial of even the actions every role may take).

    Run once per module by whichever test needs it first, so every test below stands on its
    own however pytest orders or distributes them.
    """
    context = client_context(setup.pki)
    cells: dict[tuple[str, str], Cell] = {}
    for action in ACTIONS:
        method, path = ROUTE_OF[action]
        for role in ROLES:
            body = _prepare(setup, action)
            status, payload, _ = call(
                setup.server.port,
                method,
                path,
                token=setup.tokens[role],
                body=body,
                context=context,
            )
            cells[role, action] = Cell(status, payload, _last_decision(setup, action))
        status, payload, _ = call(
            setup.server.port, method, path, body=_prepare(setup, action), context=context
        )
        cells["", action] = Cell(status, payload, _last_decision(setup, action))
    return cells


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("action", ACTIONS)
def test_every_role_against_every_action(
    setup: Setup, matrix: dict[tuple[str, str], Cell], role: str, action: str
) -> None:
    cell = matrix[role, action]
    status, payload, entry = cell.status, cell.payload, cell.entry
    token_id = setup.tokens[role].split("_")[1]
    assert entry["identity"] == f"token:{token_id}:{role}-1"
    assert entry["role"] == role
    if allowed(role, action):
        assert status == 200, (status, payload)
        assert entry["decision"] == "allow" and entry["reason"] == "role_permitted"
    else:
        assert status == 403, (status, payload)
        assert json.loads(payload)["error"] == "role_not_permitted"
        assert entry["decision"] == "deny" and entry["status"] == 403


def test_allowed_actions_took_effect(setup: Setup, matrix: dict[tuple[str, str], Cell]) -> None:
    """What the admin's calls changed: a run-control state, a filed rollback, a key, a CRL."""
    token = setup.tokens["admin"]
    context = client_context(setup.pki)
    setup.ops.control = RunControl()
    status, payload, _ = call(
        setup.server.port, "POST", "/v1/run/pause", token=token, context=context
    )
    assert status == 200 and json.loads(payload)["state"] == "paused"
    assert setup.ops.control.state == "paused"
    status, payload, _ = call(
        setup.server.port, "POST", "/v1/keys/rotate", token=token, context=context
    )
    first = json.loads(payload)["key_version"]
    status, payload, _ = call(
        setup.server.port, "POST", "/v1/keys/rotate", token=token, context=context
    )
    assert json.loads(payload)["key_version"] == first + 1

    crl = RevocationList(
        setup.pki.ca_dir / "crl.pem", load_certificate(setup.pki.ca_dir / "ca.pem")
    )
    assert crl.is_revoked(setup.client_serial)
    status, payload, _ = call(
        setup.server.port,
        "POST",
        "/v1/model/rollback",
        token=token,
        body={"version": 1, "reason": "check"},
        context=context,
    )
    assert status == 200 and json.loads(payload)["to_version"] == 1


def test_unauthenticated_calls_are_refused(setup: Setup) -> None:
    context = client_context(setup.pki)
    for action in ACTIONS:
        method, path = ROUTE_OF[action]
        status, _, headers = call(setup.server.port, method, path, body={}, context=context)
        assert status == 401, action
        assert headers["www-authenticate"].startswith("Bearer")
        entry = _last_decision(setup, action)
        assert entry["identity"] == "anonymous" and entry["reason"] == "missing_credential"


@pytest.mark.parametrize("kind", ["malformed", "unknown", "expired", "revoked", "basic"])
def test_bad_tokens_are_refused(setup: Setup, kind: str) -> None:
    if kind == "malformed":
        token, reason = "not-a-token", "malformed_token"
    elif kind == "unknown":
        token = f"fft_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"
        reason = "unknown_token"
    elif kind == "expired":
        token = setup.store.issue("short", "admin", ttl_s=0.05)[0]
        time.sleep(0.1)
        reason = "expired_token"
    elif kind == "revoked":
        token = setup.store.issue("gone", "admin")[0]
        setup.store.revoke(token.split("_")[1])
        reason = "revoked_token"
    else:
        token, reason = "", "malformed_credential"
    headers = {"Authorization": "Basic YWRtaW46YWRtaW4="} if kind == "basic" else None
    setup.ops.control = RunControl()
    status, payload, _ = call(
        setup.server.port,
        "POST",
        "/v1/run/stop",
        token=token or None,
        headers=headers,
        context=client_context(setup.pki),
    )
    assert status == 401 and json.loads(payload)["error"] == reason
    assert setup.ops.control.state == "running"  # nothing happened
    entry = _last_decision(setup, "run.stop")
    assert entry["decision"] == "deny" and entry["reason"] == reason
    # a tampered valid token (same id, other secret) is unknown too
    good = setup.tokens["admin"]
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    status, _, _ = call(
        setup.server.port, "POST", "/v1/run/stop", token=forged, context=client_context(setup.pki)
    )
    assert status == 401 and setup.ops.control.state == "running"


def test_a_federation_client_certificate_cannot_operate(setup: Setup) -> None:
    """The TLS handshake accepts the member's certificate, but it carries no operator role."""
    context = client_context(setup.pki, "client-000")
    setup.ops.control = RunControl()
    for action in ("run.stop", "model.rollback", "keys.rotate", "clients.revoke", "audit.export"):
        method, path = ROUTE_OF[action]
        status, payload, _ = call(setup.server.port, method, path, body={}, context=context)
        assert status == 403 and json.loads(payload)["error"] == "certificate_not_operator"
        entry = _last_decision(setup, action)
        assert entry["identity"] == "cert:client-000" and entry["decision"] == "deny"
    assert setup.ops.control.state == "running"


@pytest.mark.parametrize(
    ("name", "action", "status", "reason"),
    [
        ("ops-carol", "run.pause", 200, "role_permitted"),
        ("ops-carol", "keys.rotate", 403, "role_not_permitted"),
        ("audit-dan", "audit.verify", 200, "role_permitted"),
        ("audit-dan", "run.stop", 403, "role_not_permitted"),
        ("ops-eve", "run.pause", 401, "revoked_certificate"),
        ("client-000", "run.pause", 403, "certificate_not_operator"),  # mapped, but a member
    ],
)
def test_certificate_roles(setup: Setup, name: str, action: str, status: int, reason: str) -> None:
    """``access.roles``: an operator's certificate has its mapped role, unless it is revoked
    or belongs to a federation member."""
    setup.ops.control = RunControl()
    method, path = ROUTE_OF[action]
    got, payload, _ = call(
        setup.server.port, method, path, body={}, context=client_context(setup.pki, name)
    )
    assert got == status, payload
    entry = _last_decision(setup, action)
    assert entry["identity"] == f"cert:{name}" and entry["reason"] == reason
    assert entry["decision"] == ("allow" if status == 200 else "deny")
    assert setup.ops.control.state == (
        "paused" if action == "run.pause" and status == 200 else "running"
    )


def test_certificate_roles_need_the_ca_and_its_crl(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tls_ca"):
        certificate_roles(AccessConfig(roles={"ops": "operator"}), [])
    (tmp_path / "ca.pem").write_text("x")
    with pytest.raises(ConfigError, match="revocation list"):
        certificate_roles(
            AccessConfig(roles={"ops": "operator"}, tls_ca=str(tmp_path / "ca.pem")), []
        )
    with pytest.raises(ValueError):
        AccessConfig.model_validate({"roles": {"ops": "root"}})


def test_scopes_narrow_a_role(setup: Setup) -> None:
    token = setup.store.issue("prometheus", "viewer", scopes=["metrics.read"])[0]
    context = client_context(setup.pki)
    assert call(setup.server.port, "GET", "/metrics", token=token, context=context)[0] == 200
    status, payload, _ = call(
        setup.server.port, "GET", "/v1/dashboard", token=token, context=context
    )
    assert status == 403 and json.loads(payload)["error"] == "outside_scopes"


def test_the_audit_log_verifies_and_holds_no_secret(
    setup: Setup, matrix: dict[tuple[str, str], Cell]
) -> None:
    setup.guard.audit.flush()
    result = verify_run(setup.run)
    assert result.ok, result.describe()
    text = (setup.run / AUDIT_FILE).read_bytes()
    for token in setup.tokens.values():
        assert token.encode() not in text
        assert token.split("_", 2)[2].encode() not in text
    decisions = {(e["action"], e["decision"]) for e in access_entries(setup.run)}
    for action in ACTIONS:  # every action was both allowed and denied at least once
        assert (action, "allow") in decisions and (action, "deny") in decisions


def test_the_matrix_is_complete() -> None:
    assert set(ROUTE_OF) == set(PERMISSIONS)
    for roles in PERMISSIONS.values():
        assert roles <= set(ROLES) and "admin" in roles
