"""``fedfort client``: one data holder taking part in a served federation over gRPC + mTLS.

:class:`NetworkClient` runs the same :class:`~fedfort.client.FederatedClient` and
:class:`~fedfort.client.LocalTrainer` as a simulated client. Its loop: enroll its identity
binding, poll for work, check that the work is signed by the server's current key and
addressed to it, train (or answer a secure-aggregation step), and submit the signed reply
bound to the server's nonce. While it trains, a heartbeat tells the server it is alive. When
the connection fails it reconnects with exponential backoff and jitter; work it already
answered is answered again from a cache (same bytes, same nonce), never trained twice.

The identity key lives in ``state_dir/identity.key`` (owner-only). ``fedfort keys rotate``
replaces it while the client runs; the client picks the new key up before its next signature.

The client's privacy is its own (:mod:`fedfort.client.policy`): it applies its policy whatever
the task's directive says, and keeps its privacy ledger -- epsilon spent, and the global models
it released masked inputs for -- in ``state_dir/privacy-ledger.json`` (owner-only, written
before each release leaves), so a restarted client still knows what it has spent. It refuses
a task its policy cannot serve and stops once its budget is spent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from fedfort import jsonio
from fedfort.client.client import FederatedClient
from fedfort.client.ledger import ClientLedger
from fedfort.client.policy import ClientPrivacyPolicy
from fedfort.client.training import ClientData, LocalTrainer
from fedfort.config import NetworkConfig
from fedfort.crypto.keystore import FileKeyStore, open_keystore
from fedfort.crypto.pki import load_certificate, load_private_key
from fedfort.crypto.primitives import SigningKey, verify
from fedfort.errors import (
    ConfigError,
    PolicyRefused,
    PrivacyBudgetExhausted,
    ProtocolError,
    Refused,
    SecAggAbort,
)
from fedfort.messages import ClientUpdate, EvaluateTask, StatisticsRequest, TrainTask
from fedfort.secagg.policy import ClientPolicy
from fedfort.transport import codec
from fedfort.transport.frames import FRAME_OVERHEAD, read_message, serialize, to_frames
from fedfort.transport.gate import REPLY_KIND
from fedfort.transport.identity import (
    SERVER,
    Route,
    check_binding,
    envelope_statement,
    make_binding,
    seal_envelope,
)
from fedfort.transport.outcome import (
    REASON_BYTES,
    end_reason,
    refusal_message,
    rejection_hint,
)
from fedfort.transport.padding import PaddingPolicy, open_payload, pad_payload
from fedfort.transport.proto import fedfort_pb2 as pb
from fedfort.transport.server import Credentials

__all__ = ["LEDGER_FILE", "ClientReport", "NetworkClient", "rotate_client_key"]

#: the client's privacy ledger in its state directory
LEDGER_FILE = "privacy-ledger.json"

log = logging.getLogger("fedfort.transport")

_RETRY = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.ABORTED,
}


@dataclass
class ClientReport:
    """What a client did in a served run."""

    client_id: str
    rounds_trained: list[int] = field(default_factory=list)
    #: rounds whose global model the client scored on its hold-out
    rounds_evaluated: list[int] = field(default_factory=list)
    secagg_messages: int = 0
    acknowledged: list[int] = field(default_factory=list)
    reconnects: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    finished: bool = False
    #: (round, the client's own epsilon spent after that round's release), in order
    epsilon: list[tuple[int, float]] = field(default_factory=list)
    budget_exhausted: bool = False
    #: (round, reason code) of every update the server's checks rejected, in order
    rejected: list[tuple[int, str]] = field(default_factory=list)
    #: why the server ended the run without finishing it (``None``: it completed)
    end_reason: str | None = None


class _Stub:
    def __init__(self, channel: grpc.Channel) -> None:
        ser = serialize
        self.enroll = channel.unary_unary(
            "/fedfort.v1.Federation/Enroll", ser, pb.EnrollReply.FromString
        )
        self.poll = channel.unary_stream("/fedfort.v1.Federation/Poll", ser, pb.Frame.FromString)
        self.submit = channel.stream_unary(
            "/fedfort.v1.Federation/Submit", ser, pb.Verdict.FromString
        )
        self.heartbeat = channel.unary_unary(
            "/fedfort.v1.Federation/Heartbeat", ser, pb.HeartbeatReply.FromString
        )


def open_channel(target: str, credentials: Credentials, network: NetworkConfig) -> grpc.Channel:
    """A mutually authenticated channel to the federation server at ``target``."""
    ca, key, cert = credentials.pems()
    limit = network.chunk_bytes + FRAME_OVERHEAD
    return grpc.secure_channel(
        target,
        grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert),
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
        ],
    )


class _Identity:
    """The client's identity key, re-read when ``fedfort keys rotate`` replaced it.

    It lives in the key store of ``state_dir`` (:func:`fedfort.crypto.keystore.open_keystore`):
    ``state_dir/identity.key`` (owner-only, encrypted under a passphrase when one is set) or a
    PKCS#11 token. ``identity.json`` beside it holds the key's version.
    """

    NAME = "identity"

    def __init__(self, state_dir: Path) -> None:
        self.store = open_keystore(state_dir)
        self.path = state_dir / f"{self.NAME}.key"
        self.meta = state_dir / "identity.json"
        state_dir.mkdir(parents=True, exist_ok=True)
        if not self.store.exists(self.NAME):
            self.store.generate(self.NAME)
            self.meta.write_text(jsonio.dumps({"version": 1}))
        self._stamp: tuple[int, ...] | None = None
        self.reload()

    def reload(self) -> None:
        b = self.meta.stat()
        stamp: tuple[int, ...] = (b.st_mtime_ns, b.st_ino)
        if isinstance(self.store, FileKeyStore):
            a = self.path.stat()
            stamp += (a.st_mtime_ns, a.st_ino)
        if stamp != self._stamp:
            self.key = self.store.get(self.NAME)
            self.version = int(json.loads(self.meta.read_text())["version"])
            self._stamp = stamp

    def replace(self, key: SigningKey) -> None:
        """Make ``key`` the identity key (after the server accepted its binding)."""
        self.store.put(self.NAME, key)

    def current(self) -> tuple[SigningKey, int]:
        self.reload()
        return self.key, self.version


class NetworkClient:
    """A federated client served by a :class:`~fedfort.transport.server.NetworkServer`.

    ``secure_policy`` is the client's own floor for masking sessions (``fedfort client``'s
    ``--secagg-*`` options); the server cannot lower it. ``holdout`` is the client's own
    evaluation data: it answers the server's evaluation tasks with metrics only.
    """

    def __init__(
        self,
        client_id: str,
        data: ClientData,
        trainer: LocalTrainer,
        *,
        target: str,
        credentials: Credentials,
        state_dir: str | Path,
        network: NetworkConfig | None = None,
        data_metrics: Mapping[str, float] | None = None,
        policy: ClientPrivacyPolicy | None = None,
        ledger_path: str | Path | None = None,
        on_release: Callable[[int, float], object] | None = None,
        secure_policy: ClientPolicy | None = None,
        on_rejected: Callable[[int, str, int], object] | None = None,
        warn_after_rejections: int = 3,
        declaration: pb.Declaration | None = None,
        holdout: ClientData | None = None,
        rounds: int | None = None,
    ) -> None:
        self.client_id = client_id
        #: called with (round, reason code, rejections in a row) when an update is rejected
        self.on_rejected = on_rejected
        #: rejections in a row after which the client logs an error naming the fix
        self.warn_after_rejections = warn_after_rejections
        self._rejections_in_a_row = 0
        #: what the client declares when it enrolls: its run and its data's schema
        #: (:func:`fedfort.transport.enrollment.declaration`)
        self.declaration = declaration
        self.trainer = trainer
        self.target = target
        self.credentials = credentials
        self.network = network or NetworkConfig()
        self.federation_id = credentials.federation_id
        self.ca = load_certificate(credentials.ca)
        self.cert_pem = credentials.cert.read_bytes()
        self.cert_key = load_private_key(credentials.key)
        self.identity = _Identity(Path(state_dir))
        policy = ClientPrivacyPolicy() if policy is None else policy
        ledger = ClientLedger(
            Path(state_dir) / LEDGER_FILE if ledger_path is None else ledger_path,
            accountant=policy.accountant,
            delta=policy.delta,
            max_total_epsilon=policy.max_total_epsilon,
        )
        self.client = FederatedClient(
            client_id,
            data,
            data_metrics,
            policy=policy,
            ledger=ledger,
            secure_policy=secure_policy,
            holdout=holdout,
            max_evaluation_round=rounds,
        )
        #: called with (round, epsilon spent) after every noisy release
        self.on_release = on_release
        self.client.identity = self.client.secure.identity = self.identity.current()[0]
        self.report = ClientReport(client_id)
        self.server_key: tuple[bytes, int] | None = None
        self._channel: grpc.Channel | None = None
        self._stub: _Stub | None = None
        self._answers: OrderedDict[bytes, list[pb.Frame]] = OrderedDict()
        self._updates: dict[int, ClientUpdate] = {}
        self._latest = (0, 0)
        self._stop = threading.Event()
        self._busy = threading.Event()
        #: the padded sizes of replies and server requests (docs/side-channels.md)
        self.padding = PaddingPolicy(self.network.pad_messages)
        self._clock: Callable[[], float] = time.monotonic
        self._sleep: Callable[[float], object] = self._stop.wait

    # -- connection -------------------------------------------------------------------------

    def _connect(self) -> _Stub:
        if self._stub is None:
            self._channel = open_channel(self.target, self.credentials, self.network)
            self._stub = _Stub(self._channel)
        return self._stub

    def _disconnect(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self._channel, self._stub = None, None

    def binding(self) -> pb.IdentityBinding:
        key, version = self.identity.current()
        return make_binding(
            self.federation_id, self.client_id, key, version, self.cert_pem, self.cert_key
        )

    def enroll(self) -> None:
        """Register the identity binding and learn the server's signing key."""
        request = pb.EnrollRequest(identity=self.binding(), declaration=self.declaration)
        reply = self._connect().enroll(request, timeout=30)
        if not reply.verdict.accepted:
            reason = reply.verdict.reason[:64]
            raise Refused(reason, refusal_message(reason, self.client_id).partition(": ")[2])
        self._accept_server_key(reply.server)

    def _accept_server_key(self, binding: pb.IdentityBinding) -> None:
        if binding.subject != SERVER:
            raise Refused("bad_signature", "the server's key binding names another subject")
        check_binding(binding, self.federation_id, self.ca)
        if self.server_key is not None and binding.version < self.server_key[1]:
            raise Refused("stale_key_version", "the server offered an older key than it uses")
        self.server_key = (binding.public_key, binding.version)

    # -- the loop ---------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def run(self, timeout_s: float | None = None) -> ClientReport:
        """Take part until the server says the run is finished (or ``timeout_s`` passes)."""
        end = None if timeout_s is None else time.monotonic() + timeout_s
        backoff = self.network.backoff_initial_s
        failures = 0  # connection failures in a row
        beat = threading.Thread(target=self._heartbeats, daemon=True)
        beat.start()
        try:
            while not self._stop.is_set() and not self.report.finished:
                if end is not None and time.monotonic() > end:
                    break
                try:
                    if self.server_key is None:
                        self.enroll()
                    self._poll_once()
                    backoff = self.network.backoff_initial_s
                    failures = 0
                except grpc.RpcError as exc:
                    code = exc.code()
                    if code not in _RETRY:
                        reason = (exc.details() or code.name).split(":")[0][:64]
                        message = refusal_message(reason, self.client_id)
                        raise Refused(reason, message.partition(": ")[2]) from None
                    self.report.reconnects += 1
                    log.info("%s: %s; retrying in %.1fs", self.client_id, code, backoff)
                    details = exc.details() or ""
                    if "handshake" in details.lower() and failures % 10 == 0:
                        log.warning(
                            "%s: the TLS handshake with the server at %s failed; retrying. The "
                            "server's certificate and the ca.pem in --pki must come from the "
                            "same `fedfort certs init` CA, and the --server host must be one "
                            "its certificate names (`fedfort certs issue --host`)",
                            self.client_id,
                            self.target,
                        )
                    elif code == grpc.StatusCode.UNAVAILABLE and failures % 10 == 0:
                        log.warning(
                            "%s: cannot reach the server at %s (%s); retrying. Is `fedfort "
                            "server` running there, and do --server and the certificates in "
                            "--pki belong to this federation?",
                            self.client_id,
                            self.target,
                            details,
                        )
                    failures += 1
                    self._disconnect()
                    self._stop.wait(backoff * (0.5 + random.random()))
                    backoff = min(backoff * 2, self.network.backoff_max_s)
        finally:
            self._stop.set()
            beat.join(timeout=5)
            self._disconnect()
        return self.report

    def _heartbeats(self) -> None:
        while not self._stop.wait(self.network.heartbeat_s):
            if not self._busy.is_set():
                continue
            stub = self._stub
            if stub is None:
                continue
            with contextlib.suppress(grpc.RpcError):
                stub.heartbeat(
                    pb.HeartbeatRequest(federation_id=self.federation_id, client_id=self.client_id),
                    timeout=self.network.heartbeat_s * 2,
                )

    def _poll_once(self) -> None:
        stub = self._connect()
        assert self.server_key is not None
        request = pb.PollRequest(
            federation_id=self.federation_id,
            client_id=self.client_id,
            server_key_version=self.server_key[1],
        )
        frames = stub.poll(request, timeout=self.network.poll_timeout_s + 30)
        envelope, payload, keys = read_message(frames, self.network.max_payload_bytes)
        for binding in keys:
            self._accept_server_key(binding)
        try:
            self._check(envelope, payload)
        except Refused as exc:
            self.report.refused[exc.reason] = self.report.refused.get(exc.reason, 0) + 1
            log.warning("%s refused a message from the server: %s", self.client_id, exc)
            return
        if envelope.kind == "finished":
            self.report.finished = True
            self.report.end_reason = end_reason(payload)
            if self.report.end_reason is not None:
                log.error("%s: %s", self.client_id, self.report.end_reason)
        elif envelope.kind == "ack":
            update = self._updates.pop(envelope.round, None)
            if update is not None:
                self.client.acknowledge(update)
                self.report.acknowledged.append(envelope.round)
                self._rejections_in_a_row = 0
        elif envelope.kind == "rejected":
            self._rejected(envelope.round, payload)
        elif envelope.kind in REPLY_KIND:
            self._answer(stub, envelope, payload)

    def _rejected(self, round_: int, payload: bytes) -> None:
        """The server's checks rejected this client's update of ``round_``."""
        if self._updates.pop(round_, None) is None:
            return  # not an update of ours that awaits a verdict (a repeated notice)
        reason = end_reason(payload[:REASON_BYTES]) or "unknown"
        self.report.rejected.append((round_, reason))
        self._rejections_in_a_row += 1
        row = self._rejections_in_a_row
        log.warning(
            "%s: round %d update rejected by the server: %s", self.client_id, round_, reason
        )
        if row >= self.warn_after_rejections:
            log.error(
                "%s: the server rejected %d updates in a row (%s): %s",
                self.client_id,
                row,
                reason,
                rejection_hint(reason),
            )
        if self.on_rejected is not None:
            self.on_rejected(round_, reason, row)

    def _check(self, e: pb.Envelope, payload: bytes) -> None:
        assert self.server_key is not None
        public, version = self.server_key
        if e.federation_id != self.federation_id or e.recipient != self.client_id:
            raise Refused("misaddressed", "a message for another federation or client")
        if e.key_version != version:
            raise Refused("bad_signature", f"signed with server key {e.key_version}, not {version}")
        if hashlib.sha256(payload).digest() != e.payload_sha256 or len(payload) != e.payload_size:
            raise Refused("payload_hash_mismatch", "payload differs from what the server signed")
        if not verify(public, e.signature, envelope_statement(e)):
            raise Refused("bad_signature", "message not signed by the server's current key")
        if e.kind in ("task", "secagg") and (e.round, e.attempt) < self._latest:
            raise Refused("stale_round", f"work for round {e.round} after {self._latest}")

    def submit_at(self, received_at: float) -> float | None:
        """When to submit the answer to a task received at ``received_at`` (``None``: at once).

        With ``network.submit_at_fraction_of_deadline = f`` every client holds its update
        until ``f * round_deadline_s`` after the task arrived, so the moment it is sent (which
        the server and the network see) does not depend on how long training took, and
        training time grows with the client's data. The update's ``train_time_s`` metric is
        then left out as well.
        """
        fraction = self.network.submit_at_fraction_of_deadline
        if fraction is None:
            return None
        return received_at + fraction * self.network.round_deadline_s

    def _answer(self, stub: _Stub, e: pb.Envelope, payload: bytes) -> None:
        cached = self._answers.get(e.nonce)
        if cached is None:
            received_at = self._clock()
            self._busy.set()  # heartbeats go on while training and while holding the reply
            try:
                work = self._work(e, payload)
                at = self.submit_at(received_at) if e.kind == "task" else None
                if work is not None and at is not None:
                    self._sleep(max(0.0, at - self._clock()))
            finally:
                self._busy.clear()
            if work is None or work[1] is None:
                return
            request, reply = work
            if at is not None and isinstance(reply, ClientUpdate):
                reply = _without_timing(reply)
            data = pad_payload(
                pb.Payload(body=codec.to_value(reply)), self.padding.reply_rule(request)
            )
            kind = REPLY_KIND[e.kind]
            route = Route(
                self.federation_id,
                self.client_id,
                SERVER,
                kind,
                e.round,
                e.attempt,
                e.step,
                e.nonce,
            )
            key, version = self.identity.current()
            self.client.identity = self.client.secure.identity = key
            cached = to_frames(
                seal_envelope(route, data, key, version), data, self.network.chunk_bytes
            )
            self._answers[e.nonce] = cached
            while len(self._answers) > 8:
                self._answers.popitem(last=False)
        verdict = stub.submit(iter(cached), timeout=self.network.round_deadline_s)
        if not verdict.accepted:
            self.report.refused[verdict.reason] = self.report.refused.get(verdict.reason, 0) + 1
            log.warning("%s: server refused the reply: %s", self.client_id, verdict.reason)

    def _evaluate(self, e: pb.Envelope, body: object) -> tuple[object, object] | None:
        """The client's report on its hold-out, when it agrees to evaluate (one answer per
        round, for later rounds only: :class:`fedfort.client.evaluation.EvaluationGuard`)."""
        assert isinstance(body, EvaluateTask)
        if body.round != e.round:
            log.warning("%s: evaluation header mismatch", self.client_id)
            return None
        try:
            report = self.client.evaluate(body, self.trainer)
        except (ProtocolError, ConfigError) as exc:
            self.report.refused["evaluation"] = self.report.refused.get("evaluation", 0) + 1
            log.warning("%s refused to evaluate round %d: %s", self.client_id, body.round, exc)
            return None
        self.report.rounds_evaluated.append(body.round)
        return body, report

    def _work(self, e: pb.Envelope, payload: bytes) -> tuple[object, object] | None:
        """The work item and the reply to it, or ``None`` when there is nothing to send."""
        try:
            message = pb.Payload.FromString(payload)
            expected = {"task": TrainTask, "evaluate": EvaluateTask}.get(e.kind)
            body = codec.from_value(message.body, expected)
        except Exception as exc:  # a peer's bytes: protobuf and codec errors alike
            log.warning("%s: undecodable work item: %s", self.client_id, exc)
            return None
        self.padding.observe(body)
        try:
            open_payload(payload, self.padding.request_rule(body))
        except Refused as exc:
            self.report.refused[exc.reason] = self.report.refused.get(exc.reason, 0) + 1
            log.warning("%s refused a work item: %s", self.client_id, exc)
            return None
        if e.kind == "evaluate":
            return self._evaluate(e, body)
        self._latest = max(self._latest, (e.round, e.attempt))
        if e.kind == "secagg":
            self.report.secagg_messages += 1
            try:
                if isinstance(body, StatisticsRequest):
                    if body.round != e.round or body.attempt != e.attempt:
                        log.warning("%s: statistics request header mismatch", self.client_id)
                        return None
                    directory = self._directory(message) if body.secure is not None else {}
                    return body, self.client.answer_statistics(body, directory)
                return body, self.client.secure_handle(e.round, e.attempt, body)
            except (ProtocolError, SecAggAbort, PolicyRefused) as exc:
                log.warning("%s: secure aggregation step refused: %s", self.client_id, exc)
                return None
        assert isinstance(body, TrainTask)
        if body.client_id != self.client_id or body.round != e.round:
            log.warning("%s: task header mismatch", self.client_id)
            return None
        releases = len(self.client.ledger.releases)
        try:
            update = self.client.handle(body, self.trainer)
        except (PolicyRefused, PrivacyBudgetExhausted) as exc:
            exhausted = isinstance(exc, PrivacyBudgetExhausted)
            reason = "privacy_budget_exhausted" if exhausted else "privacy_policy"
            self.report.refused[reason] = self.report.refused.get(reason, 0) + 1
            log.warning("%s refused round %d: %s", self.client_id, body.round, exc)
            if exhausted:  # nothing more can be released: leave the federation
                self.report.budget_exhausted = True
                self._stop.set()
            return None
        if len(self.client.ledger.releases) > releases:
            spent = self.client.ledger.spent()
            self.report.epsilon.append((body.round, spent))
            if self.on_release is not None:
                self.on_release(body.round, spent)
        self._updates = {r: u for r, u in self._updates.items() if r >= body.round - 1}
        self._updates[body.round] = update
        self.report.rounds_trained.append(body.round)
        if body.secure is None:
            return body, update
        return body, self.client.seal(body, update, self._directory(message))

    def _directory(self, message: pb.Payload) -> dict[str, bytes]:
        """The identity keys a work item carries, each binding checked against the CA."""
        directory = {}
        for binding in message.directory:
            try:
                check_binding(binding, self.federation_id, self.ca)
            except Refused as exc:
                log.warning("%s: directory entry refused: %s", self.client_id, exc)
                continue
            directory[binding.subject] = binding.public_key
        return directory


def _without_timing(update: ClientUpdate) -> ClientUpdate:
    """The update without its training time, which would tell the server what the hold hides."""
    if "train_time_s" not in update.metrics:
        return update
    metrics = {k: v for k, v in update.metrics.items() if k != "train_time_s"}
    return dataclasses.replace(update, metrics=metrics)


def rotate_client_key(
    target: str,
    credentials: Credentials,
    client_id: str,
    state_dir: str | Path,
    network: NetworkConfig | None = None,
) -> int:
    """Replace the client's identity key: enroll a binding of a fresh key at the next version,
    then swap the key file. The server refuses the old key from that moment on."""
    identity = _Identity(Path(state_dir))
    _, version = identity.current()
    new_key, new_version = SigningKey(), version + 1
    binding = make_binding(
        credentials.federation_id,
        client_id,
        new_key,
        new_version,
        credentials.cert.read_bytes(),
        load_private_key(credentials.key),
    )
    channel = open_channel(target, credentials, network or NetworkConfig())
    try:
        reply = _Stub(channel).enroll(pb.EnrollRequest(identity=binding), timeout=30)
    except grpc.RpcError as exc:
        raise ConfigError(
            f"cannot reach the server at {target} to enroll the new key ({exc.code().name}: "
            f"{exc.details()}); the key is unchanged: rotate again once the server is up"
        ) from None
    finally:
        channel.close()
    if not reply.verdict.accepted:
        reason = reply.verdict.reason[:64]
        raise Refused(reason, refusal_message(reason, client_id).partition(": ")[2])
    tmp_meta = identity.meta.with_suffix(".json.tmp")
    tmp_meta.write_text(jsonio.dumps({"version": new_version}))
    identity.replace(new_key)
    tmp_meta.replace(identity.meta)
    return new_version
