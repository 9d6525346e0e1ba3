"""The operator actions themselves, apart from how they are asked for and authorized.

:class:`Operations` binds every action of the permission matrix to one run: its directory (for
the read actions: dashboard state, audit export and verification, the report), its
:class:`~fedfort.server.control.RunControl` (start, stop, pause, resume), and the machinery
fedfort already has for the rest, reused rather than repeated:

- ``model.rollback``: :meth:`fedfort.run.federation.Federation.rollback` run on the run loop's
  thread between rounds while a run is live, else
  :func:`fedfort.audit.rollback_request.request_rollback` (filed and audited, applied on
  ``--resume``), as ``fedfort model rollback``;
- ``keys.rotate``: :func:`fedfort.transport.service.rotate_server_key`, as
  ``fedfort keys rotate --server`` (the running server switches within a second);
- ``clients.revoke``: :func:`fedfort.crypto.pki.revoke` with the CA directory, as
  ``fedfort certs revoke``; the re-signed CRL is copied to where the server reads it, and the
  server refuses that client on its next request.

Bad input raises :class:`~fedfort.errors.ConfigError` and changes nothing.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedfort import jsonio
from fedfort.errors import ConfigError
from fedfort.server.control import RunControl

if TYPE_CHECKING:
    from fedfort.run.federation import Federation

__all__ = ["Operations"]


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{what} must be a non-negative integer, got {value!r}")
    return value


class Operations:
    """Every action of the matrix, on the run in ``run_dir`` (see the module docstring)."""

    def __init__(
        self,
        run_dir: str | Path,
        control: RunControl | None = None,
        *,
        federation: Federation | None = None,
        rotate_key: Callable[[], int] | None = None,
        client_serial: Callable[[str], int] | None = None,
        ca_dir: str | Path | None = None,
        crl_path: str | Path | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.control = control if control is not None else RunControl()
        self.federation = federation
        self.rotate_key = rotate_key
        self.client_serial = client_serial
        self.ca_dir = None if ca_dir is None else Path(ca_dir)
        self.crl_path = None if crl_path is None else Path(crl_path)
        self._state: Any = None

    @classmethod
    def for_federation(
        cls, federation: Federation, *, ca_dir: str | Path | None = None
    ) -> Operations:
        """The actions on a live federation (a simulation, or a :class:`NetworkServer`)."""
        if federation.out_dir is None:
            raise ConfigError("the operator API works on a run directory: give the run an --out")
        rotate: Callable[[], int] | None = None
        serial: Callable[[str], int] | None = None
        crl: Path | None = None
        keys = getattr(federation, "keys", None)
        registry = getattr(federation, "registry", None)
        credentials = getattr(federation, "credentials", None)
        if keys is not None and registry is not None and credentials is not None:
            from fedfort.transport.service import rotate_server_key

            def rotate() -> int:
                return rotate_server_key(
                    federation.out_dir or Path("."),
                    registry,
                    credentials.federation_id,
                    credentials.cert,
                    credentials.key,
                )

            def serial(client: str) -> int:
                from cryptography import x509

                binding = registry.get(client)
                if binding is None or client == "server":
                    raise ConfigError(f"{client!r} is not an enrolled client of this federation")
                return int(x509.load_pem_x509_certificate(binding.certificate).serial_number)

            crl = credentials.crl
        return cls(
            federation.out_dir,
            federation.control,
            federation=federation,
            rotate_key=rotate,
            client_serial=serial,
            ca_dir=ca_dir,
            crl_path=crl,
        )

    # ------------------------------------------------------------------ run control

    def status(self) -> dict[str, Any]:
        return self.control.status()

    def start(self) -> dict[str, Any]:
        return self.control.start()

    def stop(self) -> dict[str, Any]:
        return self.control.stop()

    def pause(self) -> dict[str, Any]:
        return self.control.pause()

    def resume(self) -> dict[str, Any]:
        return self.control.resume()

    def rollback(self, version: Any, reason: Any) -> dict[str, Any]:
        """Roll the model back to ``version`` now (live run) or on the next resume."""
        version = _positive_int(version, "version")
        if not isinstance(reason, str) or not reason.strip():
            raise ConfigError("say why: a rollback needs a reason for the audit log")
        federation = self.federation
        if federation is not None and self.control.attached:

            def apply() -> dict[str, Any]:
                return {"applied": True, **federation.rollback(version, reason)}

            return self.control.submit("roll back", apply)
        from fedfort.audit.rollback_request import request_rollback
        from fedfort.server.versions import ModelRegistry

        with ModelRegistry(self.run_dir) as registry:
            return {"applied": False, **request_rollback(registry, version, reason)}

    # ------------------------------------------------------------------ keys and clients

    def rotate_keys(self) -> dict[str, Any]:
        """Rotate the server's identity key (networked runtime only)."""
        if self.rotate_key is None:
            raise ConfigError("this runtime has no server identity key to rotate (simulation)")
        return {"key_version": self.rotate_key()}

    def revoke_client(self, client: Any = None, serial: Any = None) -> dict[str, Any]:
        """Revoke a client's certificate by client id (enrolled) or serial number."""
        from fedfort.crypto.pki import CRL_FILE, revoke

        if self.ca_dir is None:
            raise ConfigError("revoking needs the CA: set access.ca_dir to the directory of ca.key")
        if (client is None) == (serial is None):
            raise ConfigError("name either a client id or a certificate serial number")
        if client is not None:
            if not isinstance(client, str) or self.client_serial is None:
                raise ConfigError("revoking by client id needs a networked federation")
            number = self.client_serial(client)
        else:
            number = _positive_int(serial, "serial")
        revoked = revoke(self.ca_dir, number)
        source = self.ca_dir / CRL_FILE
        target = self.crl_path
        if target is not None and target.resolve() != source.resolve():
            data = source.read_bytes()
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".crl-")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        return {"serial": f"{revoked:#x}", "client": client}

    # ------------------------------------------------------------------ reads

    def dashboard(self) -> dict[str, Any]:
        """The run's state as the dashboard shows it (JSON-ready)."""
        from fedfort.monitoring.dashboard import RunStateReader, json_ready

        if self._state is None:
            self._state = RunStateReader(self.run_dir)
        return dict(json_ready(self._state.read()))

    def audit_export(self) -> bytes:
        """The audit log as JSON lines."""
        from fedfort.audit import read_entries
        from fedfort.audit.log import AUDIT_FILE

        lines = [
            jsonio.dumps(e.to_json(), sort_keys=True)
            for e in read_entries(self.run_dir / AUDIT_FILE)
        ]
        return ("\n".join(lines) + "\n").encode("utf-8")

    def audit_verify(self) -> dict[str, Any]:
        from fedfort.audit import verify_run

        return verify_run(self.run_dir).to_dict()

    def report(self) -> bytes:
        from fedfort.report import build_report

        return build_report(self.run_dir).encode("utf-8")
