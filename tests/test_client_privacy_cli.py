"""``fedfort client`` applies its own privacy policy, prints the epsilon it spent and keeps its
ledger across restarts: a served federation over mTLS with one client run through the CLI."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest

from fedfort.cli import main
from fedfort.config import load_config
from netfed import ServerThread, make_pki, start_clients

# the server asks for local DP at epsilon 8; the client's own policy caps it at 1
FEDERATION_TOML = """
seed = 0
rounds = 2
[clients]
count = 2
[model]
name = "logreg"
[server]
fraction = 1.0
[privacy]
mode = "local"
local_epsilon = 8.0
clip_norm = 1.0
secure_noise = false
[network]
address = "127.0.0.1:0"
poll_timeout_s = 1.0
liveness_s = 2.0
heartbeat_s = 0.3
linger_s = 2.0
round_deadline_s = 30.0
backoff_initial_s = 0.1
backoff_max_s = 0.5
"""

POLICY_TOML = """
local = "gaussian"
max_clip_norm = 1.0
max_round_epsilon = 1.0
accountant = "pld"
"""


def _serve(tmp_path: Path, out: str) -> tuple[ServerThread, Path, Path]:
    toml = tmp_path / "federation.toml"
    toml.write_text(FEDERATION_TOML)
    pki = tmp_path / "pki"
    if not pki.exists():
        make_pki(tmp_path, 2)
    srv = ServerThread(load_config(toml), tmp_path / out, pki)
    return srv, toml, pki


def _client_cli(tmp_path: Path, toml: Path, pki: Path, port: int, *extra: str) -> int:
    policy = tmp_path / "client.toml"
    policy.write_text(POLICY_TOML)
    argv = ["client", "--config", str(toml), "--data", "partition:0", "--pki", str(pki)]
    argv += ["--name", load_config(toml).clients.ids()[0], "--server", f"localhost:{port}"]
    argv += ["--state", str(tmp_path / "state"), "--policy", str(policy), "--timeout", "120"]
    return main([*argv, *extra])


def test_fedfort_client_prints_its_epsilon_and_keeps_its_ledger(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    srv, toml, pki = _serve(tmp_path, "server")
    _, threads = start_clients(load_config(toml), pki, tmp_path, srv.port, [1])
    assert _client_cli(tmp_path, toml, pki, srv.port) == 0
    srv.join()
    for t in threads:
        t.join(30)
    out = capsys.readouterr().out
    per_round = re.findall(r"round (\d+) released, epsilon spent ([0-9.]+)", out)
    assert [r for r, _ in per_round] == ["1", "2"]
    first, second = (float(e) for _, e in per_round)
    assert first == pytest.approx(1.0, abs=0.01)  # its own cap, not the server's epsilon 8
    assert first < second < 2.0
    total = re.search(r"epsilon spent ([0-9.]+) at delta 1e-05 over 2 noisy releases", out)
    assert total is not None and float(total.group(1)) == pytest.approx(second, abs=1e-4)
    ledger = tmp_path / "state" / "privacy-ledger.json"
    assert stat.S_IMODE(os.stat(ledger).st_mode) == 0o600
    assert len(json.loads(ledger.read_text())["releases"]) == 2

    # a restart with a budget the ledger has already spent: the client refuses to train
    srv, toml, pki = _serve(tmp_path, "server2")
    others, _ = start_clients(load_config(toml), pki, tmp_path, srv.port, [1])
    code = _client_cli(tmp_path, toml, pki, srv.port, "--max-total-epsilon", "1.5")
    out = capsys.readouterr().out
    assert code == 1 and "privacy budget spent; left the federation" in out
    assert "'privacy_budget_exhausted': 1" in out and "trained rounds []" in out
    assert len(json.loads(ledger.read_text())["releases"]) == 2  # nothing more was released
    for other in others:
        other.stop()
    srv.server.close()
