"""The gRPC runtime end to end in one process: a real mTLS server thread and real clients.

Bad input: every refusal is asserted with its reason code, its count, and a global model equal
to the one of a run where the attacker stayed silent (so the bad messages changed nothing).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from fedfort.audit import AUDIT_FILE, read_entries, verify_run
from fedfort.cli import main
from fedfort.crypto.pki import init_ca, issue_certificate, issue_clients
from fedfort.crypto.primitives import SigningKey
from fedfort.errors import ConfigError, Refused
from fedfort.simulation import Simulation
from fedfort.transport.client import rotate_client_key
from fedfort.transport.identity import SERVER, Route, seal_envelope
from fedfort.transport.proto import fedfort_pb2 as pb
from fedfort.transport.registry import Registry
from fedfort.transport.server import REGISTRY_FILE, Credentials, NetworkServer
from fedfort.transport.service import rotate_server_key
from netfed import (
    FEDERATION,
    RawClient,
    ServerThread,
    ca_dir,
    make_pki,
    net_config,
    revoke_member,
    start_clients,
    tampered,
    update_for,
)


@pytest.mark.parametrize("mode", ["none", "secagg"])
def test_network_run_equals_simulation(tmp_path: Path, mode: str) -> None:
    # secure aggregation is privacy against the server: the clients train on their own OS
    # randomness unless they choose the non-secure reproducible mode, as here; 3 clients
    # against 1 corrupt one need all 3 shares (t = 3): no dropout slack
    slack = {"dropout_fraction": 0.0} if mode != "none" else {}
    config = net_config(
        3,
        2,
        secure_aggregation={"mode": mode, **slack},
        privacy={"client": {"reproducible": True}},
    )
    pki = make_pki(tmp_path, 3)
    srv = ServerThread(config, tmp_path / "server", pki)
    clients, threads = start_clients(config, pki, tmp_path, srv.port, [0, 1, 2])
    result = srv.join()
    for t in threads:
        t.join(30)
    sim = Simulation(config).run()
    assert [r["participants"] for r in result.records] == [3, 3]
    assert all(c.report.finished and c.report.acknowledged == [1, 2] for c in clients)
    if mode == "none":
        assert np.array_equal(result.model, sim.model)  # one engine: bit-identical
    else:  # fixed-point encoding with stochastic rounding: within the encoding's error
        assert np.abs(result.model - sim.model).max() < 1e-4
        assert all(c.report.secagg_messages >= 2 * 5 for c in clients)
    assert result.records[-1]["accuracy"] == sim.records[-1]["accuracy"]


def _attacked_run(tmp_path: Path, attack: bool) -> tuple[np.ndarray, dict[str, int], list[int]]:
    """Three rounds; client-002 is an attacker (or silent); the other two are honest."""
    # the raw attacker sends no heartbeats: a long liveness window keeps its round open
    config = net_config(3, 3, network={"start_clients": 3 if attack else 2, "liveness_s": 60})
    pki = make_pki(tmp_path, 3)
    srv = ServerThread(config, tmp_path / "server", pki)
    raw = RawClient(pki, "client-002", srv.port, config.network, declare=config)
    if attack:
        assert raw.enroll().verdict.accepted
    _, threads = start_clients(config, pki, tmp_path, srv.port, [0, 1])
    server = srv.server
    counts = server.gate.counts
    if attack:
        # -- round 1: transport-level forgeries, then a NaN update the engine must reject
        task, body = raw.poll()
        model = server.engine.model.copy()
        dim = server.spec.dim
        good = update_for(body, np.zeros(dim, np.float32))
        frames = raw.frames(task, good)

        def refused(frames: list[pb.Frame], reason: str, collecting: bool = True) -> None:
            before = counts[reason]
            verdict = raw.submit(frames)
            assert not verdict.accepted and verdict.reason == reason, verdict
            assert not verdict.detail  # the reason code only: details stay in the log
            assert counts[reason] == before + 1
            if collecting:  # the round waits for the attacker: nothing may have moved
                assert np.array_equal(server.engine.model, model)

        refused(tampered(frames), "payload_hash_mismatch")
        refused(raw.frames(task, good, pad=False), "wrong_padding")  # its length would leak
        refused(raw.frames(task, good, key=SigningKey()), "bad_signature")
        refused(raw.frames(task, good, nonce=b"\0" * 16), "unknown_nonce")
        refused(raw.frames(task, good, federation="other"), "wrong_federation")
        refused(
            raw.frames(task, update_for(body, good.delta, client_id="client-001")),
            "mismatched_header",
        )
        garbage = [pb.Frame(envelope=frames[0].envelope), pb.Frame(chunk=b"\xff" * 64)]
        garbage[0].envelope.payload_size = 64
        refused(garbage, "payload_hash_mismatch")  # garbage never reaches the decoder unsigned
        signed_garbage = raw.frames(task, good)
        rule = raw.padding.reply_rule(raw.requests[task.nonce])
        assert rule is not None and rule.exact is not None
        # garbage of the padded size passes the size check and reaches the decoder
        data = b"\x0a\xff\xff\xff\xff\x0f garbage".ljust(rule.exact, b"\0")
        env = seal_envelope(
            Route(FEDERATION, raw.name, SERVER, "update", task.round, task.attempt, 0, task.nonce),
            data,
            raw.identity,
            1,
        )
        refused([pb.Frame(envelope=env), pb.Frame(chunk=data)], "malformed")
        refused([pb.Frame(chunk=b"no envelope")], "malformed")
        big = pb.Frame(envelope=signed_garbage[0].envelope)
        big.envelope.payload_size = server.max_payload + 1
        refused([big], "oversized")
        refused(raw.frames(task, good, round_=2), "future_round")
        nan = raw.frames(task, update_for(body, np.full(dim, np.nan, np.float32)))
        assert raw.submit(nan).accepted  # well-formed and signed: the engine judges values
        # the round may commit from here on; the final comparison covers these two
        refused(nan, "replayed", collecting=False)
        refused(raw.frames(task, good), "duplicate", collecting=False)
        # -- round 2: a stale message, then a wrong shape
        task2, body2 = raw.poll()
        assert task2.round == 2
        model[:] = server.engine.model  # round 1 committed; round 2 is collecting
        refused(raw.frames(task, good, nonce=b"\1" * 16), "stale_round")
        assert raw.submit(raw.frames(task2, update_for(body2, np.zeros(dim + 1, np.float32))))
        # -- round 3: Inf
        task3, body3 = raw.poll()
        inf = np.zeros(dim, np.float32)
        inf[3] = np.inf
        assert raw.submit(raw.frames(task3, update_for(body3, inf))).accepted
    result = srv.join()
    for t in threads:
        t.join(30)
    raw.close()
    metrics = server.metrics.registry
    for reason, count in server.rejections.items():
        # the gate's refusals and the engine's rejections are one Prometheus series
        assert metrics.get_sample_value("fedfort_updates_rejected_total", {"reason": reason}) == (
            count
        )
    return result.model, dict(server.rejections), [r["participants"] for r in result.records]


def _audited(run: Path, kind: str) -> list[dict[str, Any]]:
    return [e.data for e in read_entries(run / AUDIT_FILE) if e.kind == kind]


def test_bad_inputs_are_refused_counted_and_change_nothing(tmp_path: Path) -> None:
    attacked, counts, participants = _attacked_run(tmp_path / "a", attack=True)
    silent, silent_counts, silent_participants = _attacked_run(tmp_path / "b", attack=False)
    assert participants == silent_participants == [2, 2, 2]
    # every bad message changed nothing: the model equals the run without the attacker
    assert np.array_equal(attacked, silent)
    for reason in (
        "payload_hash_mismatch",
        "bad_signature",
        "unknown_nonce",
        "wrong_federation",
        "mismatched_header",
        "malformed",
        "oversized",
        "future_round",
        "replayed",
        "duplicate",
        "stale_round",
        "wrong_padding",
        "non_finite",  # the engine's verification, counted with the gate's
        "bad_shape",
    ):
        assert counts.get(reason, 0) >= 1, (reason, counts)
    assert counts["non_finite"] == 2
    assert not silent_counts
    # the audit log holds every refusal with its reason, and still verifies
    run = tmp_path / "a" / "server"
    assert verify_run(run).ok
    refused = _audited(run, "update_refused")
    assert {r["reason"] for r in refused} == set(counts) - {"non_finite", "bad_shape"}
    logged: dict[str, int] = {}
    for r in refused:
        assert r["client_id"] in ("client-002", "")  # "": a frame that named no one
        logged[r["reason"]] = logged.get(r["reason"], 0) + r["count"]
    assert logged == {k: v for k, v in counts.items() if k not in ("non_finite", "bad_shape")}
    rejected = _audited(run, "update_rejected")
    assert sorted(r["reason"] for r in rejected) == ["bad_shape", "non_finite", "non_finite"]
    enrolled = _audited(run, "client_enrolled")
    assert sorted(e["client_id"] for e in enrolled) == ["client-000", "client-001", "client-002"]


def test_unknown_foreign_and_expired_certificates_are_refused(tmp_path: Path) -> None:
    config = net_config(2, 1)
    pki = make_pki(tmp_path, 2)
    # a client of this CA that is not on the roster
    issue_certificate(ca_dir(pki), pki, "client-099", role="client")
    # a client named like a member, from another federation's CA
    other = tmp_path / "other"
    init_ca(other, FEDERATION)
    issue_clients(other, other, 2)
    # a member's name on an expired certificate from the right CA
    expired = tmp_path / "expired"
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    issue_certificate(
        ca_dir(pki),
        expired,
        "client-001",
        role="client",
        not_before=past,
        not_after=past + dt.timedelta(days=1),
    )
    srv = ServerThread(config, tmp_path / "server", pki)
    server = srv.server
    model = server.engine.model.copy()
    try:
        stranger = RawClient(pki, "client-099", srv.port, config.network, declare=config)
        reply = stranger.enroll()
        assert not reply.verdict.accepted and reply.verdict.reason == "unknown_client"
        impostor = RawClient(pki, "client-099", srv.port, config.network, declare=config)
        reply = impostor.enroll(name="client-000")  # its certificate says client-099
        assert reply.verdict.reason in ("unknown_client", "identity_mismatch")
        with pytest.raises(grpc.RpcError) as info:
            impostor.stub.heartbeat(
                pb.HeartbeatRequest(federation_id=FEDERATION, client_id="client-000"), timeout=5
            )
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        for cred_dir in (other, expired):
            bad = RawClient(cred_dir, "client-001", srv.port, config.network, declare=config)
            with pytest.raises(grpc.RpcError) as info:
                bad.enroll()
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE  # TLS handshake refused
            bad.close()
        assert server.gate.counts["unknown_client"] >= 2
        assert server.gate.accepted == 0 and server.gate.enrolled() == []
        assert np.array_equal(server.engine.model, model)
        stranger.close()
        impostor.close()
    finally:
        server.network.finish()
        server.close()


def test_key_rotation_and_revocation_while_running(tmp_path: Path) -> None:
    config = net_config(3, 4, server={"quorum": 0.3})
    pki = make_pki(tmp_path, 3)
    srv = ServerThread(config, tmp_path / "server", pki)
    raw = RawClient(pki, "client-002", srv.port, config.network, declare=config)
    assert raw.enroll().verdict.accepted
    clients, threads = start_clients(config, pki, tmp_path, srv.port, [0, 1])
    server = srv.server
    task, body = raw.poll()
    good = update_for(body, np.zeros(server.spec.dim, np.float32))
    # the raw client rotates: the old key stops working at once, the new one works
    old = raw.identity
    raw.identity = SigningKey()
    assert raw.enroll(version=2).verdict.accepted
    raw.version = 2
    stale = raw.frames(task, good, key=old)
    stale[0].envelope.key_version = 1
    verdict = raw.submit(stale)
    assert verdict.reason == "bad_signature"
    raw.identity = old
    assert raw.enroll(version=1).verdict.reason == "stale_key_version"  # no going back
    # a real client rotates through the CLI path while it runs
    rotate_client_key(
        f"localhost:{srv.port}",
        Credentials.from_pki(pki, "client-000"),
        "client-000",
        tmp_path / "client-000",
        config.network,
    )
    # the server rotates its key; clients follow and refuse the old one
    registry = Registry(tmp_path / "server" / REGISTRY_FILE)
    old_server_key, old_version, _ = server.keys.current()
    rotate_server_key(
        tmp_path / "server", registry, FEDERATION, pki / "server.pem", pki / "server.key"
    )
    registry.close()
    # revoke client-001: it is cut off at its next request, the run goes on without it
    revoke_member(pki, "client-001")
    raw.close()
    result = srv.join()
    for t in threads:
        t.join(30)
    participants = [r["participants"] for r in result.records]
    assert len(participants) == 4 and participants[-1] == 1  # only client-000 at the end
    assert server.gate.counts["revoked_certificate"] >= 1
    # the revoked client stops with the server's reason; the others end normally
    assert isinstance(threads[1].error, Refused) and "revoked_certificate" in str(threads[1].error)
    assert threads[0].error is None
    assert server.keys.version == old_version + 1
    # key lifecycle events are in the audit log
    run = tmp_path / "server"
    assert verify_run(run).ok
    assert [e["key_version"] for e in _audited(run, "server_key_rotated")] == [2]
    rotated = sorted(
        (e["client_id"], e["key_version"]) for e in _audited(run, "client_key_rotated")
    )
    assert rotated == [("client-000", 2), ("client-002", 2)]
    revoked = [e for e in _audited(run, "update_refused") if e["reason"] == "revoked_certificate"]
    assert revoked and revoked[0]["client_id"] == "client-001"
    c0 = clients[0]
    assert c0.report.finished and c0.server_key is not None and c0.server_key[1] == 2
    assert c0.report.rounds_trained[-1] == 4 and c0.identity.version == 2
    # a message signed with the rotated-out server key is refused by the client
    e = seal_envelope(
        Route(FEDERATION, SERVER, "client-000", "task", 9, 1, 0, b"n" * 16),
        b"",
        old_server_key,
        2,
    )
    with pytest.raises(Refused) as info:
        c0._check(e, b"")
    assert info.value.reason == "bad_signature"


class _Proxy:
    """A TCP relay whose connections the test can cut (a network outage)."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = threading.Event()
        self.up.set()
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                a, _ = self.listener.accept()
            except OSError:
                return
            if not self.up.is_set():
                a.close()
                continue
            b = socket.create_connection(("127.0.0.1", self.target))
            self.conns += [a, b]
            for src, dst in ((a, b), (b, a)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):  # a cut connection ends the relay
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.close()

    def cut(self) -> None:
        self.up.clear()
        for s in self.conns:
            with contextlib.suppress(OSError):
                s.close()
        self.conns = []

    def restore(self) -> None:
        self.up.set()


def test_client_reconnects_after_a_network_cut(tmp_path: Path) -> None:
    config = net_config(2, 60, server={"quorum": 0.5})
    pki = make_pki(tmp_path, 2)
    srv = ServerThread(config, tmp_path / "server", pki)
    proxy = _Proxy(srv.port)
    direct, t_direct = start_clients(config, pki, tmp_path, srv.port, [0])
    cut_off, t_cut = start_clients(config, pki, tmp_path, proxy.port, [1])
    while srv.server.engine.round < 2:
        time.sleep(0.05)
    proxy.cut()
    time.sleep(3.0)  # longer than liveness_s: the server drops it from a round
    proxy.restore()
    result = srv.join()
    for t in t_direct + t_cut:
        t.join(30)
    c = cut_off[0]
    assert c.report.reconnects >= 1 and c.report.finished
    participants = [r["participants"] for r in result.records]
    assert len(participants) == 60 and min(participants) == 1 and participants[-1] == 2
    assert direct[0].report.finished


def test_concurrent_rpcs_are_bounded(tmp_path: Path) -> None:
    config = net_config(2, 1, network={"max_concurrent_rpcs": 4, "poll_timeout_s": 5.0})
    pki = make_pki(tmp_path, 2)
    srv = ServerThread(config, tmp_path / "server", pki)
    raw = RawClient(pki, "client-000", srv.port, config.network, declare=config)
    try:
        assert raw.enroll().verdict.accepted
        request = pb.PollRequest(
            federation_id=FEDERATION, client_id="client-000", server_key_version=raw.server_version
        )
        held = [raw.stub.poll(request, timeout=10) for _ in range(4)]  # 4 idle long polls
        time.sleep(0.5)
        with pytest.raises(grpc.RpcError) as info:
            raw.stub.heartbeat(
                pb.HeartbeatRequest(federation_id=FEDERATION, client_id="client-000"), timeout=5
            )
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        for call in held:
            call.cancel()
        time.sleep(0.5)  # the slots free up: the same request now goes through
        reply = raw.stub.heartbeat(
            pb.HeartbeatRequest(federation_id=FEDERATION, client_id="client-000"), timeout=5
        )
        assert reply.round == 0
    finally:
        raw.close()
        srv.server.network.finish()
        srv.server.close()


def test_server_refuses_a_pki_directory_holding_the_ca_key(tmp_path: Path) -> None:
    """A server that can read ca.key can mint client certificates (Sybils): it will not start
    beside one unless told explicitly."""
    config = net_config(2, 1)
    pki = make_pki(tmp_path, 2)
    shutil.copyfile(ca_dir(pki) / "ca.key", pki / "ca.key")  # the old one-directory layout
    credentials = Credentials.from_pki(pki, "server")
    with pytest.raises(ConfigError, match=r"ca\.key"):
        NetworkServer(config, tmp_path / "server", credentials=credentials)
    explicit = tmp_path / "explicit"
    NetworkServer(config, explicit, credentials=credentials, allow_ca_key=True).close()
    argv = ["server", "--config", str(_toml(tmp_path)), "--pki", str(pki), "--rounds", "1"]
    assert main([*argv, "--out", str(tmp_path / "cli")]) == 2  # the CLI says why, and stops
    assert not (tmp_path / "cli" / REGISTRY_FILE).exists()


def _toml(tmp_path: Path) -> Path:
    path = tmp_path / "federation.toml"
    path.write_text(
        'seed = 0\nrounds = 1\n[clients]\ncount = 2\n[model]\nname = "logreg"\n'
        '[network]\naddress = "127.0.0.1:0"\n'
    )
    return path


def test_a_long_poll_ends_when_its_certificate_is_revoked(tmp_path: Path) -> None:
    """TLS checks a certificate once, at the handshake; the server re-checks every open call."""
    config = net_config(2, 1, network={"poll_timeout_s": 60.0, "start_clients": 2})
    pki = make_pki(tmp_path, 2)
    srv = ServerThread(config, tmp_path / "server", pki)
    raw = RawClient(pki, "client-000", srv.port, config.network, declare=config)
    try:
        assert raw.enroll().verdict.accepted
        request = pb.PollRequest(
            federation_id=FEDERATION, client_id="client-000", server_key_version=raw.server_version
        )
        waiting = raw.stub.poll(request, timeout=120)  # no round yet: the poll waits
        deadline = time.monotonic() + 30
        while srv.server.limits.held("client-000") == 0:  # the server holds the call open
            assert time.monotonic() < deadline
            time.sleep(0.05)
        revoke_member(pki, "client-000")
        with pytest.raises(grpc.RpcError) as info:
            list(waiting)  # without the re-check: an idle notice after poll_timeout_s
        assert info.value.code() == grpc.StatusCode.CANCELLED
        with pytest.raises(grpc.RpcError) as info:
            raw.stub.heartbeat(
                pb.HeartbeatRequest(federation_id=FEDERATION, client_id="client-000"), timeout=10
            )
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert info.value.details() == "revoked_certificate"
        assert srv.server.gate.counts["revoked_certificate"] >= 2
    finally:
        raw.close()
        srv.server.network.finish()
        srv.server.close()
