"""Access control from ``[access]``: the guard of a run, its operator API and its servers.

:func:`access_guard` builds the :class:`~fedfort.access.guard.AccessGuard` of a run directory
(the token store of ``access.tokens``, decisions written to the run's audit log);
:func:`start_operator_api` serves :class:`~fedfort.access.api.OperatorServer` for a live
federation, and :func:`start_monitoring` serves a live federation's metrics, dashboard and
operator API behind its guard; :func:`serve_dashboard` does the same for the dashboard of a
run directory. Without ``access.tokens`` there is no guard, and the monitoring servers may only
bind loopback addresses.

This is the interface layer: the run (:class:`~fedfort.run.federation.Federation`) holds its guard
in ``Federation.access_guard`` and imports nothing from here.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedfort.access.api import OperatorServer, server_tls_context
from fedfort.access.guard import AccessAudit, AccessGuard, CertificateRoles
from fedfort.access.operations import Operations
from fedfort.access.tokens import TokenStore
from fedfort.audit import AUDIT_FILE, AUDIT_KEY_FILE, AuditLog
from fedfort.config import AccessConfig
from fedfort.crypto.keyfiles import load_signing_key
from fedfort.crypto.pki import CRL_FILE, RevocationList, load_certificate
from fedfort.errors import ConfigError
from fedfort.monitoring import dashboard
from fedfort.monitoring.guarding import RequestGuard
from fedfort.monitoring.metrics import MetricsServer

if TYPE_CHECKING:
    from fedfort.run.federation import Federation

__all__ = [
    "access_guard",
    "certificate_roles",
    "federation_guard",
    "serve_dashboard",
    "start_monitoring",
    "start_operator_api",
    "tls_context",
]


def certificate_roles(access: AccessConfig, members: Iterable[str]) -> CertificateRoles | None:
    """``access.roles`` with the CA (``access.tls_ca``) and its CRL; ``None`` when unset.

    The CRL is ``crl.pem`` beside ``tls_ca`` or in ``ca_dir``; without one, certificates
    cannot be checked for revocation and the map is refused (fail closed).
    """
    if not access.roles:
        return None
    if access.tls_ca is None:
        raise ConfigError("access.roles needs access.tls_ca, the CA that issued the certificates")
    ca_path = Path(access.tls_ca)
    candidates = [ca_path.parent / CRL_FILE]
    if access.ca_dir is not None:
        candidates.append(Path(access.ca_dir) / CRL_FILE)
    crl = next((c for c in candidates if c.exists()), None)
    if crl is None:
        raise ConfigError(
            f"access.roles needs the CA's revocation list ({CRL_FILE} beside access.tls_ca or "
            "in access.ca_dir): a certificate's role must be revocable"
        )
    ca = load_certificate(ca_path)
    return CertificateRoles(dict(access.roles), ca, RevocationList(crl, ca), frozenset(members))


def access_guard(
    access: AccessConfig,
    run_dir: str | Path,
    *,
    log: AuditLog | None = None,
    members: Iterable[str] = (),
) -> AccessGuard | None:
    """The guard of ``run_dir`` per ``access`` (``None`` when access control is off).

    Decisions go to ``log`` or to the run's own audit log, opened with its audit key; a run
    without an audit log cannot be put behind access control (its decisions must be audited).
    """
    if access.tokens is None:
        return None
    if log is None:
        run = Path(run_dir)
        key = run / AUDIT_KEY_FILE
        if not (run / AUDIT_FILE).exists() or not key.exists():
            raise ConfigError(
                f"access control audits every decision, but {run} has no audit log and key: "
                "keep governance.audit on and give the run an --out"
            )
        log = AuditLog(run / AUDIT_FILE, load_signing_key(key))
    audit = AccessAudit(log, window_s=access.audit_window_s)
    certificates = certificate_roles(access, members)
    return AccessGuard(TokenStore(access.tokens), audit, certificates=certificates)


def federation_guard(federation: Federation) -> RequestGuard | None:
    """The (one, cached in ``federation.access_guard``) guard of a live federation, from its
    ``[access]`` section."""
    cached = federation.access_guard
    if cached is not None or federation.config.access.tokens is None:
        return cached
    if federation.audit is None or federation.out_dir is None:
        raise ConfigError(
            "access control audits every decision: the run needs an --out and governance.audit"
        )
    guard = access_guard(
        federation.config.access,
        federation.out_dir,
        log=federation.audit.log,
        members=federation.ids,
    )
    federation.access_guard = guard
    return guard


def tls_context(
    access: AccessConfig,
    cert: str | Path | None = None,
    key: str | Path | None = None,
    ca: str | Path | None = None,
) -> ssl.SSLContext | None:
    """HTTPS for the operator API and monitoring: ``access.tls_*`` or the given credentials."""
    cert = access.tls_cert or cert
    key = access.tls_key or key
    ca = access.tls_ca or ca
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ConfigError("HTTPS needs both access.tls_cert and access.tls_key")
    return server_tls_context(cert, key, ca)


def start_operator_api(
    federation: Federation, address: str | None = None, *, tls: ssl.SSLContext | None = None
) -> OperatorServer | None:
    """Serve the operator API of ``federation`` (``access.operator_address`` by default)."""
    access = federation.config.access
    address = address or access.operator_address
    if address is None:
        return None
    guard = federation_guard(federation)
    if guard is None:
        raise ConfigError(
            "the operator API needs access control: set access.tokens (a token store made "
            "with fedfort access token issue)"
        )
    operations = Operations.for_federation(federation, ca_dir=access.ca_dir)
    server = OperatorServer(
        operations,
        guard,
        address,
        tls=tls if tls is not None else tls_context(access),
        metrics=federation.metrics.registry,
    ).start()
    federation._servers.append(server)
    return server


def start_monitoring(
    federation: Federation,
    metrics_address: str | None = None,
    dashboard_address: str | None = None,
    operator_address: str | None = None,
    *,
    tls: Any = None,
) -> dict[str, str]:
    """Serve Prometheus ``/metrics``, the live dashboard and the operator API; return URLs.

    Addresses default to ``[monitoring]`` and ``access.operator_address`` of the config;
    nothing is served without one. With ``[access]`` every endpoint is behind access
    control (docs/access-control.md); ``tls`` (an ``ssl.SSLContext``) serves HTTPS. The
    servers close with the federation.
    """
    urls: dict[str, str] = {}
    guard = federation_guard(federation)
    if guard is not None and tls is None:
        tls = tls_context(federation.config.access)
    monitoring = federation.config.monitoring
    metrics_address = metrics_address or monitoring.metrics_address
    dashboard_address = dashboard_address or monitoring.dashboard_address
    operator = start_operator_api(federation, operator_address, tls=tls)
    if operator is not None:
        urls["operator"] = operator.url
    if metrics_address is not None:
        server = MetricsServer(
            federation.metrics.registry, metrics_address, guard=guard, tls=tls
        ).start()
        federation._servers.append(server)
        urls["metrics"] = server.url
    if dashboard_address is not None:
        if federation.out_dir is None:
            raise ConfigError("the dashboard reads the run directory: give the run an --out")
        board = dashboard.DashboardServer(
            federation.out_dir,
            dashboard_address,
            metrics=federation.metrics.registry,
            guard=guard,
            tls=tls,
        ).start()
        federation._servers.append(board)
        urls["dashboard"] = board.url
    return urls


def serve_dashboard(
    run_dir: str | Path, address: str = "127.0.0.1:8321", *, access: AccessConfig | None = None
) -> None:
    """Serve the dashboard of ``run_dir`` until interrupted (``fedfort dashboard RUN``).

    With ``access`` every route is behind the run's access control (its guard writes to the
    run's audit log, closed when the server stops); see
    :func:`fedfort.monitoring.dashboard.serve_dashboard`.
    """
    run = dashboard.run_directory(run_dir)
    guard, tls = None, None
    if access is not None:
        guard = access_guard(access, run)
        tls = tls_context(access) if guard is not None else None
    try:
        dashboard.serve_dashboard(run, address, guard=guard, tls=tls)
    finally:
        if guard is not None:
            guard.audit.log.close()
