"""The admission gate without sockets: each check against the attack it stops, with and
without the check (the attack must get through when the check is taken away)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import fedfort.transport.gate as gate_module
from fedfort.crypto.pki import (
    init_ca,
    issue_clients,
    load_certificate,
    load_private_key,
)
from fedfort.crypto.primitives import SigningKey
from fedfort.errors import Refused
from fedfort.messages import ClientUpdate
from fedfort.transport import codec
from fedfort.transport.gate import Gate, TokenBucket
from fedfort.transport.identity import SERVER, Route, make_binding, open_envelope, seal_envelope
from fedfort.transport.proto import fedfort_pb2 as pb
from fedfort.transport.registry import Registry

FED = "gatefed"
DIM = 4


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Gate, SigningKey, bytes, Clock]:
    pki = tmp_path / "pki"
    init_ca(pki, FED)
    issue_clients(pki, pki, 2)
    clock = Clock()
    gate = Gate(
        FED,
        load_certificate(pki / "ca.pem"),
        Registry(tmp_path / "registry.sqlite"),
        ["client-000", "client-001"],
        rate_per_s=2.0,
        burst=200.0,
        clock=clock,
    )
    cert = (pki / "client-000.pem").read_bytes()
    key = SigningKey()
    binding = make_binding(
        FED, "client-000", key, 1, cert, load_private_key(pki / "client-000.key")
    )
    gate.enroll(cert, binding)
    gate.begin_round(1)
    return gate, key, cert, clock


def _message(
    gate: Gate, key: SigningKey, *, delta: np.ndarray | None = None, step: int = 0
) -> tuple[pb.Envelope, bytes]:
    nonce = gate.issue("client-000", "update", 1, 1, 0)
    update = ClientUpdate(1, "client-000", np.zeros(DIM, np.float32) if delta is None else delta, 5)
    payload = pb.Payload(body=codec.to_value(update)).SerializeToString()
    route = Route(FED, "client-000", SERVER, "update", 1, 1, step, nonce)
    return seal_envelope(route, payload, key, 1), payload


def test_forgery_needs_the_signature_check(setup, monkeypatch) -> None:
    gate, _, cert, _ = setup
    envelope, payload = _message(gate, SigningKey())  # a network attacker's own key
    with pytest.raises(Refused) as info:
        gate.admit(cert, envelope, payload)
    assert info.value.reason == "bad_signature" and gate.counts["bad_signature"] == 1
    # without the signature check the forged update is admitted as client-000's
    monkeypatch.setattr(
        gate_module,
        "open_envelope",
        lambda e, p, public, max_bytes: None,
    )
    admitted = gate.admit(cert, envelope, payload)
    assert admitted.client_id == "client-000" and isinstance(admitted.body, ClientUpdate)


def test_a_replay_is_cryptographically_valid_only_the_nonce_stops_it(setup) -> None:
    gate, key, cert, _ = setup
    envelope, payload = _message(gate, key)
    assert gate.admit(cert, envelope, payload).client_id == "client-000"
    public, _ = gate.key_of("client-000") or (b"", 0)
    open_envelope(envelope, payload, public, gate.max_payload)  # signature and hash still hold
    with pytest.raises(Refused) as info:
        gate.admit(cert, envelope, payload)
    assert info.value.reason == "replayed"
    # a second, different answer to the same work item
    other = ClientUpdate(1, "client-000", np.ones(DIM, np.float32), 5)
    data = pb.Payload(body=codec.to_value(other)).SerializeToString()
    route = Route(FED, "client-000", SERVER, "update", 1, 1, 0, envelope.nonce)
    with pytest.raises(Refused) as info:
        gate.admit(cert, seal_envelope(route, data, key, 1), data)
    assert info.value.reason == "duplicate"


def test_nonce_issued_for_another_step_and_truncated_payloads(setup) -> None:
    gate, key, cert, _ = setup
    envelope, payload = _message(gate, key, step=3)
    with pytest.raises(Refused) as info:
        gate.admit(cert, envelope, payload)
    assert info.value.reason == "mismatched_nonce"
    envelope, payload = _message(gate, key)
    with pytest.raises(Refused) as info:
        gate.admit(cert, envelope, payload[:-1])
    assert info.value.reason == "truncated"
    assert gate.admit(cert, envelope, payload).client_id == "client-000"  # nonce not burned


def test_rate_limit_with_and_without(setup) -> None:
    gate, _, cert, clock = setup
    gate.limiter = TokenBucket(2.0, 3.0, clock)
    for _ in range(3):
        assert gate.peer(cert, "client-000") == "client-000"
    with pytest.raises(Refused) as info:
        gate.peer(cert, "client-000")
    assert info.value.reason == "rate_limited" and gate.counts["rate_limited"] == 1
    clock.now += 1.0  # 2 tokens per second come back
    assert gate.peer(cert, "client-000") == "client-000"
    # without a tight limit the same burst all goes through
    gate.limiter = TokenBucket(2.0, 1000.0, clock)
    assert all(gate.peer(cert, "client-000") == "client-000" for _ in range(50))


def test_unknown_and_mismatched_peers(setup, tmp_path: Path) -> None:
    gate, key, cert, _ = setup
    with pytest.raises(Refused) as info:
        gate.peer(cert, "client-001")  # client-000's certificate speaking for client-001
    assert info.value.reason == "identity_mismatch"
    with pytest.raises(Refused) as info:
        gate.peer(None, "client-000")
    assert info.value.reason == "foreign_certificate"
    envelope, payload = _message(gate, key)
    cert1 = (tmp_path / "pki" / "client-001.pem").read_bytes()
    envelope.sender = "client-001"
    with pytest.raises(Refused) as info:  # on the roster but never enrolled
        gate.admit(cert1, envelope, payload)
    assert info.value.reason == "unknown_client"
