"""``fedfort server``: a federation whose clients are other processes or hosts, over gRPC + mTLS.

:class:`NetworkServer` is a :class:`~fedfort.run.federation.Federation`: the same dataset split,
stage pipeline, round engine and SQLite checkpoints as a simulation, with a
:class:`~fedfort.transport.service.NetworkExecutor` as its runtime. Its state directory
(``--out``) holds the checkpoints, the registry of enrolled identities and the server's
identity key, so a killed server restarted with ``resume=True`` continues from its last
committed round and its clients need not enroll again.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import grpc

from fedfort.config import NetworkConfig, RunConfig
from fedfort.crypto.pki import (
    CA_CERT_FILE,
    CA_KEY_FILE,
    CRL_FILE,
    RevocationList,
    federation_of,
    load_certificate,
    tls_key_pem,
)
from fedfort.errors import ConfigError, RoundFailed
from fedfort.models import ModelFactory
from fedfort.run.federation import Federation, RunResult
from fedfort.run.privacy import sample_size
from fedfort.server.engine import ClientExecutor, RoundEngine, RoundRecord, Stateful
from fedfort.server.stages import EnforceQuorum
from fedfort.transport.admission import PeerLimits
from fedfort.transport.enrollment import EnrollmentTerms
from fedfort.transport.frames import FRAME_OVERHEAD
from fedfort.transport.gate import Gate
from fedfort.transport.outcome import MAX_REASON_CHARS, absent_clients
from fedfort.transport.padding import PaddingPolicy
from fedfort.transport.registry import Registry
from fedfort.transport.service import FederationService, NetworkExecutor, ServerKeys

__all__ = ["REGISTRY_FILE", "Credentials", "NetworkServer", "refuse_ca_key"]

log = logging.getLogger("fedfort.transport")

REGISTRY_FILE = "registry.sqlite"


@dataclass(frozen=True)
class Credentials:
    """A party's TLS credentials: its certificate and key, the CA, the CRL, the federation."""

    cert: Path
    key: Path
    ca: Path
    crl: Path | None
    federation_id: str

    @classmethod
    def from_pki(
        cls, pki_dir: str | Path, name: str, *, role: Literal["client", "server"] = "client"
    ) -> Credentials:
        """``pki_dir/{name}.pem``, ``{name}.key``, ``ca.pem``, ``crl.pem`` (if present); the
        federation id is the CA certificate's organisation, so a client needs no other file.
        A missing file is a :class:`ConfigError` naming the command that issues it for
        ``role``."""
        d = Path(pki_dir)
        crl = d / CRL_FILE
        needed = [d / f"{name}.pem", d / f"{name}.key", d / CA_CERT_FILE]
        missing = [str(path) for path in needed if not path.is_file()]
        if missing:
            role_option = " --role server" if role == "server" else ""
            raise ConfigError(
                f"no certificate for {name!r}: looked for {', '.join(map(str, needed))}; "
                f"missing {', '.join(missing)}. Issue them on the CA's machine with `fedfort "
                f"certs issue --dir CA_DIR --out {d} --name {name}{role_option}` (the CA from "
                "`fedfort certs init`), or pass the --pki directory that holds them"
            )
        fid = federation_of(load_certificate(d / CA_CERT_FILE))
        return cls(
            d / f"{name}.pem",
            d / f"{name}.key",
            d / CA_CERT_FILE,
            crl if crl.exists() else None,
            fid,
        )

    def pems(self) -> tuple[bytes, bytes, bytes]:
        """(CA PEM, key PEM, certificate PEM) for gRPC's SSL credentials."""
        key = tls_key_pem(self.key)  # decrypted in memory only, never written out plain
        try:
            return self.ca.read_bytes(), key, self.cert.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read TLS credentials: {exc}") from exc


def refuse_ca_key(credentials: Credentials) -> None:
    """Raise :class:`ConfigError` when the CA's private key sits beside the server's credentials.

    A server that can read ``ca.key`` can issue client certificates, enroll Sybil clients and so
    defeat every bound that assumes at most ``f`` of ``n`` clients collude (Douceur, *The Sybil
    Attack*, IPTPS 2002). The CA key belongs on the operator's machine; the server needs only
    ``server.pem``, ``server.key``, ``ca.pem`` and ``crl.pem`` (``fedfort certs issue``).
    """
    for directory in {credentials.cert.parent, credentials.ca.parent}:
        key = directory / CA_KEY_FILE
        if key.exists():
            raise ConfigError(
                f"{key} is the federation CA's private key: a server that holds it can mint "
                "client certificates. Move it off the server (keep it where `fedfort certs` "
                "runs) or, for a throwaway test, pass --allow-ca-key-on-server"
            )


def _bind(net: NetworkConfig, credentials: Credentials) -> tuple[grpc.Server, int]:
    """A gRPC server listening with mTLS on ``net.address`` (not started, no handlers yet) and
    its port; :class:`ConfigError` naming the address when it cannot be bound."""
    host, colon, port_text = net.address.rpartition(":")
    malformed = not colon or not host or not port_text.isdigit() or int(port_text) > 65535
    if malformed and not net.address.startswith("unix:"):
        raise ConfigError(
            f"cannot listen on {net.address!r}: give HOST:PORT, e.g. 0.0.0.0:50051 (all "
            "interfaces) or 127.0.0.1:50051, with --address or [network] address"
        )
    ca_pem, key_pem, cert_pem = credentials.pems()
    creds = grpc.ssl_server_credentials(
        [(key_pem, cert_pem)], root_certificates=ca_pem, require_client_auth=True
    )
    limit = net.chunk_bytes + FRAME_OVERHEAD
    server = grpc.server(
        ThreadPoolExecutor(max_workers=net.max_concurrent_rpcs + 8),
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.max_concurrent_streams", 16),
            ("grpc.so_reuseport", 0),
            ("grpc.http2.bdp_probe", 0),
        ],
        maximum_concurrent_rpcs=net.max_concurrent_rpcs,
    )
    try:
        port = server.add_secure_port(net.address, creds)
    except RuntimeError:  # gRPC >= 1.60 raises where older versions returned 0
        port = 0
    if port == 0:
        server.stop(None)
        raise ConfigError(
            f"cannot listen on {net.address}: port {port_text} is in use (another fedfort "
            f"server?) or {host} is not an address of this machine; pick another port with "
            "--address HOST:PORT or [network] address in the config"
        )
    return server, port


class _CountRejections:
    """Counts the engine's own rejections (NaN/Inf, wrong shape, ...) with the gate's."""

    def __init__(self, server: NetworkServer) -> None:
        self.server = server

    def on_commit(self, engine: RoundEngine, record: RoundRecord) -> None:
        rejected = list(record.rejected)
        for d in record.discarded_attempts:
            rejected += d.get("rejected", [])
        for r in rejected:
            # the round record already carries these to the audit log and the metrics
            self.server.gate.refuse(
                r["client_id"], r["reason"], f"round {record.round}: {r['detail']}", report=False
            )
        # each client whose update did not count learns why (an accepted one gets its "ack")
        reasons = {r["client_id"]: r["reason"] for r in reversed(rejected)}
        members = set(self.server.ids) - set(record.accepted)
        self.server.network.reject(
            record.round, {c: why for c, why in reasons.items() if c in members}
        )


class _RuntimeEvents:
    """Transport events for the audit log, gathered from gRPC threads (thread-safe).

    Refusals at the gate, enrolments and key rotations happen on the service's threads; they
    are buffered here and written by the engine's thread after each commit, so the audit log
    and the checkpoint database keep a single writer. Refusals are coalesced per (client,
    reason) and round, with a count and the first detail, and the number of distinct keys is
    bounded, so a flood of bad requests cannot flood the log.
    """

    MAX_KEYS = 1024

    def __init__(self, server: NetworkServer) -> None:
        self.server = server
        self._lock = threading.Lock()
        self._events: list[tuple[str, dict[str, Any]]] = []
        self._refused: dict[tuple[str, str], dict[str, Any]] = {}

    def refused(self, client: str, reason: str, detail: str) -> None:
        self.server.metrics.refused(reason)
        if self.server.alerts is not None:
            self.server.alerts.refused(client, reason, detail)
        with self._lock:
            key = (client[:64], reason)
            if key not in self._refused and len(self._refused) >= self.MAX_KEYS:
                key = ("*", reason)
            entry = self._refused.setdefault(
                key,
                {
                    "client_id": key[0],
                    "reason": reason,
                    "detail": detail[:240],
                    "count": 0,
                    "first_at": time.time(),
                },
            )
            entry["count"] += 1

    def enrolled(self, client: str, version: int, key_sha256: str) -> None:
        kind = "client_enrolled" if version <= 1 else "client_key_rotated"
        body = {"client_id": client, "key_version": version, "public_key_sha256": key_sha256}
        with self._lock:
            self._events.append((kind, {**body, "at": time.time()}))

    def server_key(self, version: int, public: bytes) -> None:
        body = {"key_version": version, "public_key_sha256": hashlib.sha256(public).hexdigest()}
        with self._lock:
            self._events.append(("server_key_rotated", {**body, "at": time.time()}))

    def drain(self) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            events = self._events + [("update_refused", e) for e in self._refused.values()]
            self._events, self._refused = [], {}
        return events

    def on_commit(self, engine: RoundEngine, record: RoundRecord) -> None:
        self.flush(record.round)

    def flush(self, round_: int | None) -> None:
        events = self.drain()
        if events and self.server.audit is not None:
            self.server.audit.events([(kind, round_, body) for kind, body in events])


class NetworkServer(Federation):
    """A federation served over gRPC with mutual TLS (see docs/deployment.md).

    >>> server = NetworkServer(config, "runs/net", credentials=Credentials.from_pki(...))
    >>> result = server.serve()

    With ``[data] source = "files"`` the server holds no client data: the model is sized from
    the schema written in ``[data] features`` / ``classes``, and it evaluates on
    ``[data] validation`` only when the config names one.
    """

    holds_client_data = False

    def __init__(
        self,
        config: RunConfig,
        out_dir: str | Path,
        *,
        credentials: Credentials,
        model_factory: ModelFactory | None = None,
        allow_ca_key: bool = False,
        _resuming: bool = False,
    ) -> None:
        if not allow_ca_key:
            refuse_ca_key(credentials)
        self.credentials = credentials
        self.state_dir = Path(out_dir)
        self._grpc: grpc.Server | None = None
        self.port: int | None = None
        self.events = _RuntimeEvents(self)
        # the port first: a server that cannot listen leaves no run behind in out_dir
        self._listener, self._bound = _bind(config.network, credentials)
        try:
            super().__init__(config, out_dir, model_factory=model_factory, _resuming=_resuming)
        except BaseException:
            self._listener.stop(None)
            raise
        self.engine.hooks += [_CountRejections(self), self.events]
        self.gate.on_refused = self.events.refused
        self.gate.on_enrolled = self.events.enrolled
        self.keys.on_rotated = self.events.server_key

    def _runtime(self) -> tuple[ClientExecutor, dict[str, Stateful]]:
        net, cred = self.config.network, self.credentials
        ca = load_certificate(cred.ca)
        revoked = None if cred.crl is None else RevocationList(cred.crl, ca)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.registry = Registry(self.state_dir / REGISTRY_FILE)
        # a model's update and control delta, or a secure-aggregation vector, plus framing
        self.max_payload = min(net.max_payload_bytes, 24 * self.spec.dim + (4 << 20))
        self.gate = Gate(
            cred.federation_id,
            ca,
            self.registry,
            self.ids,
            revoked=revoked,
            max_payload=self.max_payload,
            rate_per_s=net.rate_per_s,
            burst=net.burst,
            # a joining client declares its run and, on the clients' files, its data's schema
            terms=EnrollmentTerms.of(
                self.config, self.schema if self.config.data.source == "files" else None
            ),
        )
        self.keys = ServerKeys(
            self.state_dir, self.registry, cred.federation_id, cred.cert, cred.key
        )
        self.network = NetworkExecutor(
            self.gate,
            self.keys,
            chunk_bytes=net.chunk_bytes,
            round_deadline_s=net.round_deadline_s,
            step_deadline_s=net.step_deadline_s,
            liveness_s=net.liveness_s,
            padding=PaddingPolicy(net.pad_messages),
        )
        return self.network, {}

    def directory(self) -> Mapping[str, bytes]:
        members = set(self.ids)
        return {s: b.public_key for s, b in self.registry.all().items() if s in members}

    def start(self) -> int:
        """Listen on ``network.address`` with mTLS; return the bound port."""
        if self._grpc is not None:
            assert self.port is not None
            return self.port
        net = self.config.network
        self.limits = PeerLimits(
            max_streams=net.max_streams_per_client,
            max_bytes=net.max_upload_bytes_per_client or 2 * self.max_payload,
            idle_s=net.stream_idle_s,
            total_s=net.upload_deadline_s,
            refuse=self.gate.refuse,
            recheck=self.gate.recheck,
        )
        members = len(self.ids) * net.max_streams_per_client
        if members > net.max_concurrent_rpcs:
            log.warning(
                "network.max_concurrent_rpcs=%d is below clients x max_streams_per_client=%d: "
                "members holding all their streams can fill it; raise it to keep a slot for "
                "every member",
                net.max_concurrent_rpcs,
                members,
            )
        self.service = FederationService(
            self.network,
            max_payload=self.max_payload,
            poll_timeout_s=net.poll_timeout_s,
            limits=self.limits,
        )
        server, port = self._listener, self._bound
        server.add_generic_rpc_handlers([self.service.handler()])
        server.start()
        self.limits.start()
        self._grpc, self.port = server, port
        log.info("serving federation %s on port %d", self.credentials.federation_id, port)
        return port

    def wait_for_clients(self, count: int | None = None, timeout_s: float | None = None) -> None:
        """Block until ``count`` roster clients enrolled and are online."""
        net = self.config.network
        need = count or net.start_clients or len(self.ids)
        end = time.monotonic() + (timeout_s or net.start_timeout_s)
        while True:
            ready = set(self.gate.enrolled()) & set(self.network.online())
            if len(ready) >= need:
                return
            if time.monotonic() >= end:
                waited = timeout_s or net.start_timeout_s
                raise RoundFailed(
                    f"only {len(ready)} of the {need} clients needed to start came online "
                    f"within {waited:g}s; start the missing clients (each prints why it "
                    "stopped) or lower network.start_clients"
                )
            time.sleep(0.1)

    def serve(
        self,
        rounds: int | None = None,
        on_round: Callable[[RoundRecord], None] | None = None,
        *,
        linger: bool = True,
    ) -> RunResult:
        """Start, wait for the clients, run the rounds, tell clients the run is finished."""
        self.start()
        try:
            if self.engine.round == 0 or not self.gate.enrolled():
                self.wait_for_clients()
            else:  # resumed: clients reconnect on their own, with backoff
                self._wait_for_returning_clients()
            return self.run(rounds, on_round)
        except RoundFailed as exc:
            # the waiting clients learn why, and the operator which clients were missing
            absent = absent_clients(self.ids, self.gate.enrolled(), self.network.online())
            reason = f"{exc} ({absent})" if absent else str(exc)
            self.network.finish(f"the run ended after round {self.engine.round}: {reason}")
            raise RoundFailed(reason) from None
        except BaseException as exc:
            why = "was interrupted" if isinstance(exc, KeyboardInterrupt) else f"stopped: {exc}"
            self.network.finish(f"the server {why}"[:MAX_REASON_CHARS])
            raise
        finally:
            self.events.flush(self.engine.round)
            self.network.finish()
            if linger:
                self._linger()

    def _wait_for_returning_clients(self) -> None:
        """After a restart: ``network.start_clients`` clients when set (up to
        ``start_timeout_s``), else a quorum's worth; then a grace period (two backoff ceilings)
        for the others to come back, so none is dropped for being slow to retry."""
        quorum = self.engine.stage("quorum")
        need = quorum.required(sample_size(self.config)) if isinstance(quorum, EnforceQuorum) else 1
        self.wait_for_clients(count=self.config.network.start_clients or need)
        net = self.config.network
        end = time.monotonic() + 2 * net.backoff_max_s + net.heartbeat_s
        enrolled = set(self.gate.enrolled())
        while time.monotonic() < end and not enrolled <= set(self.network.online()):
            time.sleep(0.1)

    def _linger(self) -> None:
        """Keep answering polls with "finished" until every client heard it or time is up."""
        end = time.monotonic() + self.config.network.linger_s
        while time.monotonic() < end and set(self.network.online()) - self.network.told_finished:
            time.sleep(0.1)

    @property
    def rejections(self) -> dict[str, int]:
        """Refusals by reason code: the gate's and the engine's verification's."""
        return dict(self.gate.counts)

    def close(self) -> None:
        if self._grpc is not None:
            self._grpc.stop(grace=1.0).wait()
            self._grpc = None
            self.limits.stop()
        else:  # bound, never started
            self._listener.stop(None)
        super().close()
        self.registry.close()

    @classmethod
    def resume(
        cls,
        out_dir: str | Path,
        *,
        credentials: Credentials,
        rounds: int | None = None,
        network: Mapping[str, Any] | None = None,
        model_factory: ModelFactory | None = None,
        allow_ca_key: bool = False,
    ) -> NetworkServer:
        """Reopen the served run in ``out_dir`` at its last committed round."""
        config = cls._reopen_config(out_dir, {"rounds": rounds})
        if network:
            config = config.with_overrides({f"network.{k}": v for k, v in network.items()})
        return cls(
            config,
            out_dir,
            credentials=credentials,
            model_factory=model_factory,
            allow_ca_key=allow_ca_key,
            _resuming=True,
        )
