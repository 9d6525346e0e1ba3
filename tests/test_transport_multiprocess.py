"""The gRPC runtime across processes: one ``fedfort server`` and client processes on loopback,
all over mutual TLS, driven through the command line exactly as the README shows."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from fedfort.config import parse_config
from fedfort.crypto.pki import init_ca, issue_certificate, issue_clients
from fedfort.simulation import Simulation

pytestmark = pytest.mark.slow
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "network" / "federation.toml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _setup(tmp_path: Path, clients: int, rounds: int, liveness_s: float = 6.0) -> tuple[Path, Path]:
    """The example config with this test's rounds, clients and a free port; a fresh PKI."""
    text = EXAMPLE.read_text()
    for line, replacement in (
        ("rounds = 15", f"rounds = {rounds}"),
        ("count = 10", f"count = {clients}"),
        ('address = "127.0.0.1:50051"', f'address = "127.0.0.1:{_free_port()}"'),
        ("liveness_s = 6.0", f"liveness_s = {liveness_s}"),
        ("linger_s = 10.0", "linger_s = 5.0"),
    ):
        assert line in text, f"examples/network/federation.toml no longer has {line!r}"
        text = text.replace(line, replacement)
    config = tmp_path / "federation.toml"
    config.write_text(text)
    ca, pki = tmp_path / "ca", tmp_path / "pki"  # the CA key stays out of the server's dir
    init_ca(ca, "mp-test")
    issue_certificate(ca, pki, "server", role="server")
    issue_clients(ca, pki, clients)
    return config, pki


def _fedfort(*args: object, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "fedfort.cli", *map(str, args)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
    )


def _server(config: Path, pki: Path, out: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    return _fedfort("server", "--config", config, "--pki", pki, "--out", out, *extra, log=log)


def _client(config: Path, pki: Path, k: int, root: Path) -> subprocess.Popen[bytes]:
    name = f"client-{k:03d}"
    return _fedfort(
        "client",
        "--config",
        config,
        "--data",
        f"partition:{k}",
        "--pki",
        pki,
        "--name",
        name,
        "--state",
        root / "clients" / name,
        "--timeout",
        400,
        log=root / f"{name}.log",
    )


def _wait(proc: subprocess.Popen[bytes], timeout: float, log: Path) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"process timed out; log:\n{log.read_text()[-3000:]}") from None


def _committed(out: Path) -> int:
    path = out / "checkpoints.sqlite"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path, timeout=1) as db:
            row = db.execute("SELECT MAX(round) FROM checkpoints").fetchone()
    except sqlite3.Error:
        return 0
    return int(row[0] or 0)


def test_ten_client_processes_match_the_simulation(tmp_path: Path) -> None:
    config, pki = _setup(tmp_path, clients=10, rounds=8)
    out = tmp_path / "server"
    server = _server(config, pki, out, tmp_path / "server.log")
    clients = [_client(config, pki, k, tmp_path) for k in range(10)]
    assert _wait(server, 480, tmp_path / "server.log") == 0
    for k, c in enumerate(clients):
        assert _wait(c, 60, tmp_path / f"client-{k:03d}.log") == 0
    served = json.loads((out / "results.json").read_text())
    sim = Simulation(parse_config(tomllib.loads(config.read_text()))).run()
    net_acc = served["final"]["accuracy"]
    sim_acc = sim.final["accuracy"]
    assert [r["participants"] for r in served["rounds"]] == [10] * 8
    assert abs(net_acc - sim_acc) <= 0.01, (net_acc, sim_acc)
    assert net_acc > 0.8


def test_client_killed_and_server_restarted(tmp_path: Path) -> None:
    config, pki = _setup(tmp_path, clients=4, rounds=8, liveness_s=3.0)
    out = tmp_path / "server"
    server = _server(config, pki, out, tmp_path / "server.log")
    clients = [_client(config, pki, k, tmp_path) for k in range(4)]
    deadline = time.monotonic() + 300
    while _committed(out) < 2:
        assert time.monotonic() < deadline and server.poll() is None
        time.sleep(0.1)
    clients[3].send_signal(signal.SIGKILL)  # mid-run: later rounds complete without it
    while _committed(out) < 4:
        assert time.monotonic() < deadline and server.poll() is None
        time.sleep(0.05)
    server.send_signal(signal.SIGKILL)
    server.wait(30)
    k = _committed(out)
    # the three live clients come back with backoff, at their own pace on a loaded machine:
    # the restarted server waits until all three are online (up to start_timeout_s) rather than
    # for a fixed grace period, so the first round after the restart cannot start with two
    restarted = _server(
        config, pki, out, tmp_path / "server2.log", "--resume", "--start-clients", "3"
    )
    assert _wait(restarted, 300, tmp_path / "server2.log") == 0
    for i, c in enumerate(clients[:3]):
        assert _wait(c, 60, tmp_path / f"client-{i:03d}.log") == 0
    served = json.loads((out / "results.json").read_text())
    rounds = [r["round"] for r in served["rounds"]]
    assert rounds == list(range(1, 9))  # none lost, none repeated
    after_kill = served["rounds"][2:]
    assert all(r["participants"] == 3 for r in after_kill[1:])
    assert any("client-003" in r["dropped"] for r in after_kill)
    log = (tmp_path / "server2.log").read_text()
    assert f"round {k + 1}:" in log and "round 1:" not in log
    client_logs = [(tmp_path / f"client-{i:03d}.log").read_text() for i in range(3)]
    assert all("reconnects 0" not in text for text in client_logs)
