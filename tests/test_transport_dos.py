"""Denial of service against the gRPC server: the server does no work for a peer it has not
authenticated, and an authenticated member gets only its share.

A real ``NetworkServer`` (in its own process, so its memory can be measured) runs a federation
of three honest clients while, at the same time:

* a client whose certificate was revoked opens idle ``Submit`` streams, each sending a few
  megabytes of an upload it never finishes;
* a peer with a certificate from another CA (same federation name) keeps trying to connect;
* a member with a valid certificate does the same as the revoked one, many streams at once.

The test uses only the APIs of the first networked release, so it can be run against it:
there the attackers' streams fill every RPC slot, honest clients cannot enroll, the run fails
and the server's memory grows by hundreds of megabytes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest

from fedfort.audit import AUDIT_FILE, read_entries
from fedfort.config import NetworkConfig
from fedfort.crypto.pki import init_ca, issue_clients
from fedfort.transport.client import _Stub
from fedfort.transport.identity import SERVER, Route
from fedfort.transport.proto import fedfort_pb2 as pb
from fedfort.transport.server import Credentials
from netfed import FAST_NETWORK, FEDERATION, make_pki, net_config, revoke_member, start_clients

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent
ROUNDS = 6
MEMORY_BOUND = 100 * 2**20
NETWORK = {
    **FAST_NETWORK,
    "start_clients": 3,
    "start_timeout_s": 90.0,
    "max_concurrent_rpcs": 64,
    "stream_idle_s": 2.0,
}
NETWORK_JSON = json.dumps(NETWORK)
# the server in a process of its own; it prints its port, then its rounds and refusals
DRIVER = """
import json, sys
sys.path.insert(0, sys.argv[1])
from netfed import net_config
from fedfort.transport.server import Credentials, NetworkServer
from fedfort.config import NetworkConfig
network = {k: v for k, v in json.loads(sys.argv[4]).items() if k in NetworkConfig.model_fields}
config = net_config(5, int(sys.argv[5]), server={"quorum": 0.5}, network=network)
server = NetworkServer(config, sys.argv[2], credentials=Credentials.from_pki(sys.argv[3], "server"))
print("port", server.start(), flush=True)
try:
    result = server.serve()
    print("participants", json.dumps([r["participants"] for r in result.records]), flush=True)
finally:
    print("refusals", json.dumps(server.rejections), flush=True)
    server.close()
"""
CHUNK = b"\0" * (1 << 20)


def _channel(pki: Path, name: str, port: int) -> grpc.Channel:
    """A channel with its own connection (gRPC would otherwise share one per target)."""
    ca, key, cert = Credentials.from_pki(pki, name).pems()
    return grpc.secure_channel(
        f"localhost:{port}",
        grpc.ssl_channel_credentials(ca, key, cert),
        options=[("grpc.use_local_subchannel_pool", 1)],
    )


class IdleUploader:
    """Opens ``streams`` Submit calls at once as ``name``, each declaring a 4 MiB payload,
    sending 3 MiB of it and then nothing (``silent``: not even the envelope); opens a new one
    whenever one ends. The envelopes are not even signed: the server must refuse the peer before
    it gets that far."""

    def __init__(
        self,
        pki: Path,
        name: str,
        port: int,
        streams: int,
        stop: threading.Event,
        *,
        silent: bool = False,
    ):
        self.name, self.stop, self.silent = name, stop, silent
        self.channels = [_channel(pki, name, port) for _ in range(max(1, streams // 8))]
        self.outcomes: list[tuple[float, str]] = []  # (when, status:details)
        self.threads = [
            threading.Thread(target=self._loop, args=(i,), daemon=True) for i in range(streams)
        ]
        for t in self.threads:
            t.start()

    def _frames(self) -> Iterator[pb.Frame]:
        if self.silent:  # open the call and send nothing at all: it holds a slot, no bytes
            self.stop.wait()
            return
        route = Route(FEDERATION, self.name, SERVER, "update", 1, 1, 0, b"n" * 16)
        envelope = pb.Envelope(
            federation_id=route.federation_id,
            sender=route.sender,
            recipient=route.recipient,
            kind=route.kind,
            round=route.round,
            nonce=route.nonce,
            payload_size=4 << 20,
            key_version=1,
        )
        yield pb.Frame(envelope=envelope)
        for _ in range(3):
            yield pb.Frame(chunk=CHUNK)
        self.stop.wait()  # ... and then nothing, until the test ends

    def _loop(self, i: int) -> None:
        stub = _Stub(self.channels[i % len(self.channels)])
        while not self.stop.is_set():
            try:
                verdict = stub.submit(self._frames(), timeout=30)
                outcome = f"verdict:{verdict.reason}"
            except grpc.RpcError as exc:
                outcome = f"{exc.code().name}:{exc.details()}"
            self.outcomes.append((time.monotonic(), outcome))
            self.stop.wait(0.25)

    def close(self) -> None:
        for t in self.threads:
            t.join(40)
        for c in self.channels:
            c.close()


def _foreign_attempts(
    root: Path, port: int, stop: threading.Event, seen: list[tuple[float, str]]
) -> None:
    """A client certificate from another CA with this federation's name keeps trying."""
    other = root / "foreign"
    init_ca(other, FEDERATION)
    issue_clients(other, other, 1)
    while not stop.is_set():
        channel = _channel(other, "client-000", port)
        try:
            _Stub(channel).heartbeat(
                pb.HeartbeatRequest(federation_id=FEDERATION, client_id="client-000"), timeout=5
            )
            seen.append((time.monotonic(), "answered"))
        except grpc.RpcError as exc:
            seen.append((time.monotonic(), exc.code().name))
        finally:
            channel.close()
        stop.wait(0.5)


class Sampler(threading.Thread):
    """The server process's resident memory, sampled until stopped: its growth at the peak."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self.halt = threading.Event()
        self.start()

    def run(self) -> None:
        while not self.halt.wait(0.1):
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return

    @property
    def growth(self) -> int:
        return self.peak - self.base


def test_revoked_foreign_and_greedy_peers_cannot_stop_the_federation(tmp_path: Path) -> None:
    pki = make_pki(tmp_path, 5)
    revoke_member(pki, "client-003")  # a former member, cut off before the run
    out = tmp_path / "server"
    server = subprocess.Popen(
        [sys.executable, "-u", "-c", DRIVER, *map(str, (TESTS, out, pki, NETWORK_JSON, ROUNDS))],
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "server.log").open("wb"),
        text=True,
    )
    assert server.stdout is not None
    line = server.stdout.readline()
    assert line.startswith("port "), (tmp_path / "server.log").read_text()[-3000:]
    port = int(line.split()[1])
    memory = Sampler(server.pid)
    stop = threading.Event()
    foreign: list[tuple[float, str]] = []
    attackers = [
        IdleUploader(pki, "client-003", port, int(os.environ.get("XR", 48)), stop),  # revoked
        IdleUploader(pki, "client-004", port, int(os.environ.get("XM", 24)), stop),  # a member
        # the same member also holds calls open without sending a byte: these take stream slots
        # (not upload bytes) until the idle deadline, so its stream limit is met however fast or
        # slow the machine lets the uploads above reserve their bytes
        IdleUploader(pki, "client-004", port, 16, stop, silent=True),
    ]
    prober = threading.Thread(target=_foreign_attempts, args=(tmp_path, port, stop, foreign))
    prober.start()
    time.sleep(2.0)  # the attack is under way before the honest clients arrive
    known = {k: v for k, v in NETWORK.items() if k in NetworkConfig.model_fields}
    config = net_config(5, ROUNDS, network=known)
    clients, threads = start_clients(config, pki, tmp_path, port, [0, 1, 2])
    lines: list[tuple[float, str]] = []  # what the server printed, and when
    stdout = server.stdout

    def read() -> None:
        for row in stdout:
            lines.append((time.monotonic(), row))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        server.wait(timeout=240)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
    finally:
        stop.set()
        memory.halt.set()
        for c in clients:
            c.stop()
        for t in threads:
            t.join(30)
        for a in attackers:
            a.close()
        prober.join(30)
        reader.join(10)
    log = (tmp_path / "server.log").read_text()[-3000:]
    report: dict[str, Any] = {}
    for _, row in lines:
        key, _, value = row.partition(" ")
        report[key] = json.loads(value)
    # what the attackers saw while the server was serving (not its shutdown afterwards)
    ended = next((t for t, row in lines if not row.startswith("port")), time.monotonic())

    def seen(outcomes: list[tuple[float, str]]) -> Counter[str]:
        # a refused TCP connection means no server was listening: the run had ended and the
        # server closed its port a moment before the report that sets ``ended`` was read
        return Counter(o for t, o in outcomes if t < ended and "Connection refused" not in o)

    revoked, greedy = (
        seen(attackers[0].outcomes),
        seen(attackers[1].outcomes + attackers[2].outcomes),
    )
    tried = seen(foreign)
    numbers = (
        f"exit {server.returncode}, memory growth {memory.growth / 2**20:.0f} MiB, "
        f"report {report}, revoked {dict(revoked)}, member {dict(greedy)}, foreign {dict(tried)}"
    )
    print(numbers)
    # the federation finished every round with every honest client, and the server stayed up
    assert server.returncode == 0, f"{numbers}\n{log}"
    assert report.get("participants") == [3] * ROUNDS, numbers
    assert all(c.report.finished for c in clients), numbers
    # bounded memory: nothing a refused peer sent was buffered, a member only its budget
    assert memory.growth < MEMORY_BOUND, numbers
    # each attacker was refused, with the right reason
    # (or, for a moment when both attackers open streams together, gRPC's global RPC limit)
    assert "PERMISSION_DENIED:revoked_certificate" in revoked, numbers
    assert set(revoked) <= {
        "PERMISSION_DENIED:revoked_certificate",
        "RESOURCE_EXHAUSTED:Concurrent RPC limit exceeded!",
    }, numbers
    assert tried and set(tried) == {"UNAVAILABLE"}, numbers  # the TLS handshake refused it
    codes = {k.split(":", 1)[0] for k in greedy}
    assert "RESOURCE_EXHAUSTED:stream_limit" in greedy, numbers
    # UNAVAILABLE only as HTTP/2's REFUSED_STREAM (code 7): the server's per-connection cap
    # (grpc.max_concurrent_streams) refusing a stream before it reaches fedfort at all
    refused_stream = {k for k in greedy if k.startswith("UNAVAILABLE:") and "error code 7" in k}
    assert codes <= {"RESOURCE_EXHAUSTED", "CANCELLED", "PERMISSION_DENIED", "UNAVAILABLE"}, numbers
    assert {k for k in greedy if k.startswith("UNAVAILABLE:")} == refused_stream, numbers
    refusals = report["refusals"]
    for reason in ("revoked_certificate", "stream_limit", "buffer_limit", "stream_timeout"):
        assert refusals.get(reason, 0) >= 1, (reason, numbers)
    # refusals are recorded under the identity each certificate proves
    refused = [e.data for e in read_entries(out / AUDIT_FILE) if e.kind == "update_refused"]
    by_reason: dict[str, set[str]] = {}
    for e in refused:
        by_reason.setdefault(e["reason"], set()).add(e["client_id"])
    assert by_reason["revoked_certificate"] == {"client-003"}, by_reason
    assert by_reason["stream_limit"] == {"client-004"}, by_reason
