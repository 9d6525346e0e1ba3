"""Test harness for the gRPC runtime: a PKI, an in-process server thread, client threads, and a
raw client that crafts messages byte by byte."""

from __future__ import annotations

import dataclasses
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from fedfort.client.training import ClientData, LocalTrainer
from fedfort.config import RunConfig, parse_config
from fedfort.crypto.pki import (
    init_ca,
    issue_certificate,
    issue_clients,
    load_private_key,
    revoke,
)
from fedfort.crypto.primitives import SigningKey
from fedfort.run.federation import split_data
from fedfort.transport import codec
from fedfort.transport.client import NetworkClient, _Stub, open_channel
from fedfort.transport.enrollment import declaration
from fedfort.transport.frames import read_message, to_frames
from fedfort.transport.identity import SERVER, Route, make_binding, seal_envelope
from fedfort.transport.padding import PaddingPolicy, pad_payload
from fedfort.transport.proto import fedfort_pb2 as pb
from fedfort.transport.server import Credentials, NetworkServer

FEDERATION = "testfed"


def make_pki(root: Path, clients: int) -> Path:
    """The CA in ``root/ca`` (its private key stays there); the server's and the clients'
    credentials and a copy of the CRL in ``root/pki``, the directory the server reads."""
    pki = root / "pki"
    init_ca(ca_dir(pki), FEDERATION)
    issue_certificate(ca_dir(pki), pki, "server", role="server")
    issue_clients(ca_dir(pki), pki, clients)
    publish_crl(pki)
    return pki


def ca_dir(pki: Path) -> Path:
    """The CA directory of a PKI made by :func:`make_pki`."""
    return pki.parent / "ca"


def publish_crl(pki: Path) -> None:
    """Copy the CA's current CRL to the server's directory, atomically (as an operator would)."""
    tmp = pki / ".crl.tmp"
    shutil.copyfile(ca_dir(pki) / "crl.pem", tmp)
    os.replace(tmp, pki / "crl.pem")


def revoke_member(pki: Path, name: str) -> None:
    """Revoke ``name``'s certificate at the CA and publish the new CRL to the server."""
    revoke(ca_dir(pki), pki / f"{name}.pem")
    publish_crl(pki)


#: the [network] settings of a test federation on loopback: short polls, deadlines and backoff
FAST_NETWORK: dict[str, Any] = {
    "address": "127.0.0.1:0",
    "poll_timeout_s": 1.0,
    "liveness_s": 2.0,
    "heartbeat_s": 0.3,
    "linger_s": 2.0,
    "round_deadline_s": 30.0,
    "backoff_initial_s": 0.1,
    "backoff_max_s": 0.5,
}


def net_config(clients: int = 3, rounds: int = 2, **sections: dict[str, Any]) -> RunConfig:
    body: dict[str, Any] = {
        "seed": 0,
        "rounds": rounds,
        "clients": {"count": clients},
        "model": {"name": "logreg"},
        "server": {"fraction": 1.0},
        "network": dict(FAST_NETWORK),
    }
    for name, values in sections.items():
        body[name] = {**body.get(name, {}), **values}
    return parse_config(body)


class ServerThread:
    """A NetworkServer serving in a background thread."""

    def __init__(self, config: RunConfig, out: Path, pki: Path, *, resume: bool = False) -> None:
        cred = Credentials.from_pki(pki, "server")
        if resume:
            self.server = NetworkServer.resume(out, credentials=cred)
        else:
            self.server = NetworkServer(config, out, credentials=cred)
        self.port = self.server.start()
        self.result: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            self.result = self.server.serve()
        except BaseException as exc:  # surfaced by join()
            self.error = exc

    def join(self, timeout: float = 120) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "server did not finish"
        self.server.close()
        if self.error is not None:
            raise self.error
        return self.result


class ClientThread(threading.Thread):
    """Runs a client; what it raised (a refusal, say) is kept in ``error`` for the test."""

    def __init__(self, client: NetworkClient, timeout_s: float) -> None:
        super().__init__(daemon=True)
        self.client, self.timeout_s = client, timeout_s
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.client.run(timeout_s=self.timeout_s)
        except BaseException as exc:  # kept for the test to assert on
            self.error = exc


def start_clients(
    config: RunConfig, pki: Path, root: Path, port: int, ks: list[int]
) -> tuple[list[NetworkClient], list[ClientThread]]:
    data = split_data(config)
    ids = config.clients.ids()
    clients, threads = [], []
    from fedfort.client.policy import ClientPrivacyPolicy
    from fedfort.models import ModelSpec, build_model

    spec = ModelSpec(
        config.model.name,
        data.dataset.num_features,
        data.dataset.num_classes,
        dict(config.model.options),
    )
    for k in ks:
        x, y = data.client_arrays(k)
        held = data.client_test_arrays(k)
        c = NetworkClient(
            ids[k],
            ClientData.from_numpy(x, y),
            LocalTrainer(build_model(spec, seed=config.seed)),
            target=f"localhost:{port}",
            credentials=Credentials.from_pki(pki, ids[k]),
            state_dir=root / ids[k],
            network=config.network,
            policy=ClientPrivacyPolicy.from_config(config.privacy.client),
            declaration=declaration(config, None),
            holdout=None if held is None else ClientData.from_numpy(*held),
        )
        t = ClientThread(c, timeout_s=120)
        t.start()
        clients.append(c)
        threads.append(t)
    return clients, threads


class RawClient:
    """A client that builds every message by hand (to send what honest code never would)."""

    def __init__(
        self, pki: Path, name: str, port: int, network: Any, *, declare: RunConfig | None = None
    ) -> None:
        """``declare``: the config whose run the client declares when it enrolls (``None``:
        it declares nothing, which a server refuses)."""
        self.name = name
        self.declared = None if declare is None else declaration(declare, None)
        self.cred = Credentials.from_pki(pki, name)
        self.channel = open_channel(f"localhost:{port}", self.cred, network)
        self.stub = _Stub(self.channel)
        self.identity = SigningKey()
        self.version = 1
        self.server_version = 0
        self.padding = PaddingPolicy(network.pad_messages)
        self.requests: dict[bytes, object] = {}  # work items by nonce: their replies' sizes

    def close(self) -> None:
        self.channel.close()

    def enroll(self, name: str | None = None, version: int = 1) -> pb.EnrollReply:
        binding = make_binding(
            FEDERATION,
            name or self.name,
            self.identity,
            version,
            self.cred.cert.read_bytes(),
            load_private_key(self.cred.key),
        )
        request = pb.EnrollRequest(identity=binding, declaration=self.declared)
        reply: pb.EnrollReply = self.stub.enroll(request, timeout=10)
        if reply.verdict.accepted:
            self.server_version = reply.server.version
        return reply

    def poll(self, want: str = "task", timeout: float = 30) -> tuple[pb.Envelope, object]:
        """Poll until a message of kind ``want`` arrives; its envelope and decoded body."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            frames = self.stub.poll(
                pb.PollRequest(
                    federation_id=FEDERATION,
                    client_id=self.name,
                    server_key_version=self.server_version,
                ),
                timeout=10,
            )
            envelope, payload, _ = read_message(frames, 1 << 30)
            if envelope.kind == want:
                body = codec.from_value(pb.Payload.FromString(payload).body) if payload else None
                self.padding.observe(body)
                self.requests[envelope.nonce] = body
                return envelope, body
        raise AssertionError(f"no {want} within {timeout}s")

    def frames(
        self,
        task: pb.Envelope,
        body: object,
        *,
        key: SigningKey | None = None,
        round_: int | None = None,
        nonce: bytes | None = None,
        federation: str = FEDERATION,
        kind: str = "update",
        pad: bool = True,
    ) -> list[pb.Frame]:
        request = self.requests.get(task.nonce)
        rule = self.padding.reply_rule(request) if pad and request is not None else None
        data = pad_payload(pb.Payload(body=codec.to_value(body)), rule)
        route = Route(
            federation,
            self.name,
            SERVER,
            kind,
            task.round if round_ is None else round_,
            task.attempt,
            task.step,
            task.nonce if nonce is None else nonce,
        )
        envelope = seal_envelope(route, data, key or self.identity, self.version)
        return to_frames(envelope, data, 1 << 20)

    def submit(self, frames: list[pb.Frame]) -> pb.Verdict:
        verdict: pb.Verdict = self.stub.submit(iter(frames), timeout=10)
        return verdict


def update_for(task: Any, delta: np.ndarray, **changes: Any) -> Any:
    from fedfort.messages import ClientUpdate

    u = ClientUpdate(round=task.round, client_id=task.client_id, delta=delta, num_samples=10)
    return dataclasses.replace(u, **changes)


def tampered(frames: list[pb.Frame]) -> list[pb.Frame]:
    """The same message with one payload byte flipped (the signed hash no longer matches)."""
    out = [pb.Frame(envelope=frames[0].envelope)]
    data = bytearray(b"".join(f.chunk for f in frames[1:]))
    data[len(data) // 2] ^= 0x01
    out.append(pb.Frame(chunk=bytes(data)))
    return out
