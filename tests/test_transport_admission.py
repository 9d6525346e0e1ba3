"""Admission before any request byte: the gate's certificate-only check, the refusal's
identity, and the per-client limits and deadlines (sans-I/O, with a fake clock)."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest

from fedfort.crypto.pki import (
    RevocationList,
    init_ca,
    issue_certificate,
    issue_clients,
    load_certificate,
    revoke,
)
from fedfort.errors import Refused
from fedfort.transport.admission import PeerLimits
from fedfort.transport.gate import Gate
from fedfort.transport.registry import Registry

FED = "admitfed"
ROSTER = ["client-000", "client-001"]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    ca = tmp_path / "ca"
    init_ca(ca, FED)
    issue_clients(ca, tmp_path / "pki", 2)
    return ca


def _gate(ca: Path, tmp_path: Path, refusals: list[tuple[str, str, str]]) -> Gate:
    cert = load_certificate(ca / "ca.pem")
    gate = Gate(
        FED,
        cert,
        Registry(tmp_path / "registry.sqlite"),
        ROSTER,
        revoked=RevocationList(ca / "crl.pem", cert),
    )
    gate.on_refused = lambda client, reason, detail: refusals.append((client, reason, detail))
    return gate


def test_a_refusal_is_recorded_under_the_certificates_identity(pki: Path, tmp_path: Path) -> None:
    refusals: list[tuple[str, str, str]] = []
    gate = _gate(pki, tmp_path, refusals)
    a = (tmp_path / "pki" / "client-000.pem").read_bytes()
    # A (client-000) speaks for B (client-001): the refusal must not land on B's record
    with pytest.raises(Refused) as info:
        gate.peer(a, "client-001")
    assert info.value.reason == "identity_mismatch"
    client, reason, detail = refusals[-1]
    assert (client, reason) == ("client-000", "identity_mismatch")
    assert "'client-001'" in detail
    # a foreign certificate's name proves nothing: recorded as nobody, the claim in the detail
    other = tmp_path / "other"
    init_ca(other, FED)
    issue_clients(other, other, 1)
    with pytest.raises(Refused):
        gate.peer((other / "client-000.pem").read_bytes(), "client-001")
    client, reason, detail = refusals[-1]
    assert (client, reason) == ("", "foreign_certificate") and "'client-001'" in detail
    # a revoked member is still identified by its (our CA's) certificate
    revoke(pki, tmp_path / "pki" / "client-000.pem")
    with pytest.raises(Refused):
        gate.peer(a, "client-001")
    assert refusals[-1][:2] == ("client-000", "revoked_certificate")


def test_member_check_needs_no_request(pki: Path, tmp_path: Path) -> None:
    refusals: list[tuple[str, str, str]] = []
    gate = _gate(pki, tmp_path, refusals)
    assert gate.member((tmp_path / "pki" / "client-001.pem").read_bytes()) == "client-001"
    issue_certificate(pki, tmp_path / "pki", "client-099", role="client")
    with pytest.raises(Refused) as info:
        gate.member((tmp_path / "pki" / "client-099.pem").read_bytes())
    assert info.value.reason == "unknown_client"
    with pytest.raises(Refused) as info:
        gate.member(None)
    assert info.value.reason == "foreign_certificate"
    assert [r[:2] for r in refusals] == [
        ("client-099", "unknown_client"),
        ("", "foreign_certificate"),
    ]


def test_a_certificate_that_expires_while_connected_stops_working(
    pki: Path, tmp_path: Path
) -> None:
    """TLS checks expiry only at the handshake; the gate re-checks it on every call."""
    refusals: list[tuple[str, str, str]] = []
    gate = _gate(pki, tmp_path, refusals)
    now = dt.datetime.now(dt.UTC)
    short = issue_certificate(
        pki,
        tmp_path / "short",
        "client-001",
        role="client",
        not_before=now - dt.timedelta(minutes=1),
        not_after=now + dt.timedelta(seconds=2),
    )
    pem = short.cert.read_bytes()
    assert gate.peer(pem, "client-001") == "client-001"  # valid, and now cached
    time.sleep(
        max(0.0, (now + dt.timedelta(seconds=2.5) - dt.datetime.now(dt.UTC)).total_seconds())
    )
    with pytest.raises(Refused) as info:
        gate.peer(pem, "client-001")
    assert info.value.reason == "expired_certificate"
    assert gate.recheck(pem) is not None  # an open stream's watchdog check says the same


def _limits(clock: Clock, refusals: list[tuple[str, str]], bad: set[bytes]) -> PeerLimits:
    def refuse(client: str, reason: str, detail: str) -> Refused:
        refusals.append((client, reason))
        return Refused(reason, detail)

    return PeerLimits(
        max_streams=3,
        max_bytes=100,
        idle_s=5.0,
        total_s=30.0,
        refuse=refuse,
        recheck=lambda cert: Refused("revoked_certificate", "") if cert in bad else None,
        recheck_s=1.0,
        clock=clock,
    )


def test_stream_and_byte_limits_are_per_client() -> None:
    clock, refusals, cancelled = Clock(), [], []
    limits = _limits(clock, refusals, set())
    greedy = [limits.open("client-000", b"a", lambda: cancelled.append(1)) for _ in range(3)]
    with pytest.raises(Refused) as info:
        limits.open("client-000", b"a", lambda: None)
    assert info.value.reason == "stream_limit"
    other = limits.open("client-001", b"b", lambda: None)  # another member still gets a slot
    greedy[0].reserve(60)
    with pytest.raises(Refused) as info:
        greedy[1].reserve(60)
    assert info.value.reason == "buffer_limit"
    other.reserve(100)  # budgets are per client
    limits.close(greedy[0])
    greedy[1].reserve(60)  # the closed upload's bytes came back
    assert limits.held("client-000") == 2 and limits.reserved("client-000") == 60
    for s in [*greedy[1:], other]:
        limits.close(s)
    assert limits.held("client-000") == 0 and limits.reserved("client-001") == 0
    assert refusals == [("client-000", "stream_limit"), ("client-000", "buffer_limit")]


def test_watchdog_cancels_idle_and_slow_uploads_and_revoked_streams() -> None:
    clock, refusals, cancelled = Clock(), [], []
    bad: set[bytes] = set()
    limits = _limits(clock, refusals, bad)
    limits.open("client-000", b"a", lambda: cancelled.append("idle"))  # sends nothing
    slow = limits.open("client-001", b"b", lambda: cancelled.append("slow"))
    polling = limits.open("client-001", b"b", lambda: cancelled.append("poll"))
    polling.done_reading()  # a long poll: the server is the one waiting
    frames = iter(range(100))
    feed = slow.frames(frames)
    for _ in range(8):  # one frame every 4 s: never idle, but slow
        clock.now += 4.0
        next(feed)
        limits.sweep()
        if clock.now == 8.0:
            assert cancelled == ["idle"]
    assert cancelled == ["idle", "slow"]  # cut at 32 s, past the 30 s total
    assert refusals == [("client-000", "stream_timeout"), ("client-001", "stream_timeout")]
    clock.now += 100.0
    assert limits.sweep() == []  # a long poll is not cut for the server's own wait
    bad.add(b"b")  # ... until its certificate is revoked
    clock.now += 1.0
    assert limits.sweep() == [polling] and cancelled[-1] == "poll"
