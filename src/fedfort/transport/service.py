"""The server's gRPC runtime: mailboxes that the round engine fills, and the RPCs that empty them.

:class:`NetworkExecutor` is the round engine's :class:`~fedfort.server.engine.ClientExecutor`
and :class:`~fedfort.server.engine.SecureChannel` over the network. For each task (or
secure-aggregation message) it asks the :class:`~fedfort.transport.gate.Gate` for a fresh nonce,
signs the message with the server's identity key, and leaves it in the client's mailbox; then it
waits until every addressee answered, the deadline passed, or the addressees still missing have
gone silent (no poll or heartbeat for ``liveness_s``), exactly the "dropped" of simulation.

:class:`~fedfort.transport.handlers.FederationService` (re-exported here) implements the RPCs
of ``fedfort.v1.Federation`` over these mailboxes. Work stays in a mailbox until it is answered
or withdrawn, so a client that lost its connection gets the same item again when it comes back.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from fedfort.crypto.keystore import open_keystore
from fedfort.crypto.pki import load_certificate, load_private_key
from fedfort.crypto.primitives import SigningKey
from fedfort.errors import ConfigError
from fedfort.messages import (
    ClientUpdate,
    EvaluateTask,
    EvaluationReport,
    StatisticsRequest,
    TrainTask,
)
from fedfort.server.engine import CollectOutcome, EvaluationOutcome
from fedfort.transport import codec
from fedfort.transport.frames import to_frames
from fedfort.transport.gate import REPLY_KIND, Admitted, Gate
from fedfort.transport.handlers import FederationService
from fedfort.transport.identity import (
    NONCE_BYTES,
    SERVER,
    Route,
    make_binding,
    seal_envelope,
)
from fedfort.transport.outcome import REASON_BYTES, end_payload
from fedfort.transport.padding import PaddingPolicy, pad_payload
from fedfort.transport.proto import fedfort_pb2 as pb
from fedfort.transport.registry import Registry

__all__ = ["FederationService", "NetworkExecutor", "ServerKeys", "rotate_server_key"]

_PEM = Encoding.PEM

log = logging.getLogger("fedfort.transport")

_VERSION_KEY = "server_key_version"


def _key_name(version: int) -> str:
    """The key-store name of server identity key ``version`` (file ``NAME.key``)."""
    return f"server_identity.v{version}"


class ServerKeys:
    """The server's identity key and its binding; follows rotations made while it runs."""

    def __init__(
        self,
        state_dir: Path,
        registry: Registry,
        federation_id: str,
        cert_path: Path,
        key_path: Path,
    ) -> None:
        self.state_dir, self.registry = state_dir, registry
        self.federation_id = federation_id
        self.cert_path, self.key_path = cert_path, key_path
        self._lock = threading.Lock()
        self._checked = 0.0
        #: called with (version, public key) when the server switches to a rotated key
        self.on_rotated: Callable[[int, bytes], None] | None = None
        if registry.get_meta(_VERSION_KEY) is None:
            rotate_server_key(state_dir, registry, federation_id, cert_path, key_path)
        self._load()

    def _load(self) -> None:
        version = int(self.registry.get_meta(_VERSION_KEY) or 0)
        binding = self.registry.get(SERVER)
        if binding is None or binding.version != version:
            raise ConfigError(f"{self.registry.path} holds no binding for server key {version}")
        self.key = open_keystore(self.state_dir).get(_key_name(version))
        self.version = version
        self.binding = binding

    def current(self) -> tuple[SigningKey, int, pb.IdentityBinding]:
        """The key to sign with now (re-read at most twice a second)."""
        with self._lock:
            now = time.monotonic()
            if now - self._checked > 0.5:
                self._checked = now
                if int(self.registry.get_meta(_VERSION_KEY) or 0) != self.version:
                    self._load()
                    log.info("server identity key rotated to version %d", self.version)
                    if self.on_rotated is not None:
                        self.on_rotated(self.version, self.key.public)
            return self.key, self.version, self.binding


def rotate_server_key(
    state_dir: Path, registry: Registry, federation_id: str, cert_path: Path, key_path: Path
) -> int:
    """Create the next server identity key, bind it to the server certificate, activate it.

    A running server switches to it within half a second; clients accept the new binding
    (checked against the CA) and refuse messages signed with the old key from then on. The old
    private key file is deleted.
    """
    old = int(registry.get_meta(_VERSION_KEY) or 0)
    version = old + 1
    state_dir.mkdir(parents=True, exist_ok=True)
    store = open_keystore(state_dir)
    key = store.generate(_key_name(version))  # on the token itself with a PKCS#11 store
    cert_pem = load_certificate(cert_path).public_bytes(_PEM)
    registry.put(
        make_binding(federation_id, SERVER, key, version, cert_pem, load_private_key(key_path))
    )
    registry.set_meta(_VERSION_KEY, str(version))
    if old:
        store.delete(_key_name(old))
    return version


@dataclass
class _Item:
    kind: str
    round: int
    attempt: int
    step: int
    nonce: bytes
    frames: list[pb.Frame]
    needs_reply: bool


@dataclass
class _Wait:
    kind: str
    nonces: dict[str, bytes]
    replies: dict[str, object] = field(default_factory=dict)


class NetworkExecutor:
    """Carries the engine's tasks and secure-aggregation messages to networked clients."""

    def __init__(
        self,
        gate: Gate,
        keys: ServerKeys,
        *,
        chunk_bytes: int,
        round_deadline_s: float,
        step_deadline_s: float,
        liveness_s: float,
        padding: PaddingPolicy | None = None,
    ) -> None:
        self.gate, self.keys = gate, keys
        #: the padded sizes of requests and replies (docs/side-channels.md)
        self.padding = PaddingPolicy() if padding is None else padding
        self.chunk_bytes = chunk_bytes
        self.round_deadline_s = round_deadline_s
        self.step_deadline_s = step_deadline_s
        self.liveness_s = liveness_s
        self.cond = threading.Condition()
        self.boxes: dict[str, list[_Item]] = {}
        self.last_seen: dict[str, float] = {}
        self.polling: Counter[str] = Counter()
        self.finished = False
        #: why the run ended without finishing (``None``: it completed, or is running)
        self.end_reason: str | None = None
        self.told_finished: set[str] = set()
        self.late = 0
        self._waits: dict[tuple[int, int, int], _Wait] = {}

    # -- liveness ---------------------------------------------------------------------------

    def seen(self, client_id: str) -> None:
        with self.cond:
            self.last_seen[client_id] = time.monotonic()

    def alive(self, client_id: str) -> bool:
        """Polling now, or heard from within ``liveness_s`` (call with the lock held)."""
        if self.polling[client_id] > 0:
            return True
        last = self.last_seen.get(client_id)
        return last is not None and time.monotonic() - last < self.liveness_s

    def online(self) -> list[str]:
        with self.cond:
            return sorted(c for c in self.last_seen if self.alive(c))

    # -- outgoing ---------------------------------------------------------------------------

    def _sign(
        self,
        client_id: str,
        kind: str,
        round_: int,
        attempt: int,
        step: int,
        nonce: bytes,
        payload: bytes,
    ) -> list[pb.Frame]:
        key, version, _ = self.keys.current()
        route = Route(
            self.gate.federation_id, SERVER, client_id, kind, round_, attempt, step, nonce
        )
        return to_frames(seal_envelope(route, payload, key, version), payload, self.chunk_bytes)

    def notice(self, client_id: str, kind: str) -> list[pb.Frame]:
        """A signed ``idle`` or ``finished`` notice (no reply expected). A ``finished``
        notice of a run that ended without finishing carries the reason as its payload."""
        nonce = os.urandom(NONCE_BYTES)
        payload = end_payload(self.end_reason) if kind == "finished" else b""
        return self._sign(client_id, kind, self.gate.round, 0, 0, nonce, payload)

    def _post(self, items: Mapping[str, _Item]) -> None:
        with self.cond:
            for cid, item in items.items():
                self.boxes.setdefault(cid, []).append(item)
            self.cond.notify_all()

    def _round_trip(
        self,
        kind: str,
        round_: int,
        attempt: int,
        step: int,
        messages: Mapping[str, object],
        directory: Sequence[pb.IdentityBinding],
        deadline_s: float,
    ) -> dict[str, object]:
        """Send one message to each client; the replies that came back in time."""
        items: dict[str, _Item] = {}
        for cid, message in messages.items():
            self.padding.observe(message)
            payload = pb.Payload(body=codec.to_value(message), directory=directory)
            data = pad_payload(payload, self.padding.request_rule(message))
            nonce = self.gate.issue(
                cid,
                REPLY_KIND[kind],
                round_,
                attempt,
                step,
                self.padding.reply_rule(message),
            )
            frames = self._sign(cid, kind, round_, attempt, step, nonce, data)
            items[cid] = _Item(kind, round_, attempt, step, nonce, frames, True)
        wait = _Wait(kind, {cid: item.nonce for cid, item in items.items()})
        key = (round_, attempt, step)
        with self.cond:
            self._waits[key] = wait
        self._post(items)
        end = time.monotonic() + deadline_s
        with self.cond:
            while True:
                pending = [c for c in wait.nonces if c not in wait.replies]
                now = time.monotonic()
                if not pending or now >= end or not any(self.alive(c) for c in pending):
                    break
                self.cond.wait(min(0.25, end - now))
            del self._waits[key]
            for cid in pending:
                self.boxes[cid] = [
                    i for i in self.boxes.get(cid, []) if i.nonce != wait.nonces[cid]
                ]
        for cid in pending:
            self.gate.withdraw(cid, wait.nonces[cid])
        return dict(wait.replies)

    def deliver(self, admitted: Admitted) -> bool:
        """Hand an admitted reply to the waiting round; False if nothing waits for it."""
        with self.cond:
            self.last_seen[admitted.client_id] = time.monotonic()
            box = self.boxes.get(admitted.client_id, [])
            self.boxes[admitted.client_id] = [i for i in box if i.nonce != admitted.nonce]
            wait = self._waits.get((admitted.round, admitted.attempt, admitted.step))
            if wait is None or wait.nonces.get(admitted.client_id) != admitted.nonce:
                self.late += 1
                return False
            wait.replies[admitted.client_id] = admitted.body
            self.cond.notify_all()
            return True

    # -- ClientExecutor / SecureChannel -----------------------------------------------------

    def execute(self, tasks: Sequence[TrainTask], deadline_s: float | None) -> CollectOutcome:
        if not tasks:
            return CollectOutcome([], [])
        round_, attempt = tasks[0].round, tasks[0].attempt
        self.gate.begin_round(round_)
        directory: list[pb.IdentityBinding] = []
        if any(t.secure is not None for t in tasks):
            bindings = self.gate.registry.all()
            directory = [bindings[t.client_id] for t in tasks if t.client_id in bindings]
        replies = self._round_trip(
            "task",
            round_,
            attempt,
            0,
            {t.client_id: t for t in tasks},
            directory,
            self.round_deadline_s if deadline_s is None else deadline_s,
        )
        received = [r for t in tasks if isinstance(r := replies.get(t.client_id), ClientUpdate)]
        missing = [t.client_id for t in tasks if t.client_id not in replies]
        return CollectOutcome(received, missing)

    def exchange(
        self,
        round_: int,
        attempt: int,
        step: int,
        outbox: Mapping[str, object],
        deadline_s: float | None,
    ) -> dict[str, object]:
        directory: list[pb.IdentityBinding] = []
        if any(isinstance(m, StatisticsRequest) and m.secure for m in outbox.values()):
            # the statistics round opens a session: its clients need the directory, as a
            # securely aggregated task carries it
            bindings = self.gate.registry.all()
            directory = [bindings[c] for c in outbox if c in bindings]
        return self._round_trip(
            "secagg",
            round_,
            attempt,
            step + 1,
            outbox,
            directory,
            self.step_deadline_s if deadline_s is None else deadline_s,
        )

    def evaluate(
        self, tasks: Sequence[EvaluateTask], deadline_s: float | None
    ) -> EvaluationOutcome:
        """Ask each client to evaluate on its hold-out (work items of kind ``evaluate``, at
        attempt 0 and step 0 of the round, apart from its tasks and secure-aggregation steps);
        the reports that came back in time."""
        if not tasks:
            return EvaluationOutcome([], [])
        replies = self._round_trip(
            "evaluate",
            tasks[0].round,
            0,
            0,
            {t.client_id: t for t in tasks},
            (),
            self.round_deadline_s if deadline_s is None else deadline_s,
        )
        reports = [r for t in tasks if isinstance(r := replies.get(t.client_id), EvaluationReport)]
        missing = [t.client_id for t in tasks if t.client_id not in replies]
        return EvaluationOutcome(reports, missing)

    def acknowledge(self, round_: int, accepted: Sequence[ClientUpdate]) -> None:
        """Tell each accepted client that its update of ``round_`` was committed."""
        items = {}
        for update in accepted:
            cid = update.client_id
            nonce = os.urandom(NONCE_BYTES)
            items[cid] = _Item(
                "ack", round_, 0, 0, nonce, self._sign(cid, "ack", round_, 0, 0, nonce, b""), False
            )
        self._post(items)

    def reject(self, round_: int, reasons: Mapping[str, str]) -> None:
        """Tell each client whose update of ``round_`` was rejected the reason code (only
        the code: the detail stays in the server's log and audit trail), padded to
        :data:`REASON_BYTES` so that its length does not tell an observer which code it is."""
        items = {}
        for cid, reason in reasons.items():
            nonce = os.urandom(NONCE_BYTES)
            code = reason.encode("utf-8")[:REASON_BYTES].ljust(REASON_BYTES, b" ")
            frames = self._sign(cid, "rejected", round_, 0, 0, nonce, code)
            items[cid] = _Item("rejected", round_, 0, 0, nonce, frames, False)
        self._post(items)

    def finish(self, reason: str | None = None) -> None:
        """End the run: every poll is answered with ``finished`` from now on, carrying
        ``reason`` when the run ended without finishing (the first reason given is kept)."""
        with self.cond:
            if not self.finished:
                self.end_reason = reason
            self.finished = True
            self.cond.notify_all()

    def close(self) -> None:
        self.finish()

    # -- serving polls ----------------------------------------------------------------------

    def next_item(
        self, client_id: str, timeout_s: float, active: threading.Event
    ) -> list[pb.Frame]:
        """The frames of the client's next work item, or of an idle/finished notice."""
        end = time.monotonic() + timeout_s
        with self.cond:
            self.polling[client_id] += 1
            self.last_seen[client_id] = time.monotonic()
            try:
                while True:
                    box = self.boxes.get(client_id)
                    if box:
                        item = box[0]
                        if not item.needs_reply:
                            box.pop(0)
                        return item.frames
                    now = time.monotonic()
                    if self.finished or now >= end or not active.is_set():
                        break
                    self.cond.wait(min(0.5, end - now))
            finally:
                self.polling[client_id] -= 1
                self.last_seen[client_id] = time.monotonic()
            finished = self.finished
            if finished:
                self.told_finished.add(client_id)
        return self.notice(client_id, "finished" if finished else "idle")
