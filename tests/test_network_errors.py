"""The errors a new user meets first on the network command line: each is one line that says
what was wrong and what to do, never a traceback; a run that cannot go on tells every waiting
client why, and a client whose updates are rejected learns the reason and the fix."""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedfort.cli import main
from fedfort.cli.network import _client_outcome, _print_rejection
from fedfort.client.policy import ClientPrivacyPolicy
from fedfort.client.training import ClientData, LocalTrainer
from fedfort.config import RunConfig
from fedfort.crypto.pki import issue_certificate
from fedfort.errors import ConfigError, RoundFailed
from fedfort.models import ModelSpec, build_model
from fedfort.run.federation import split_data
from fedfort.transport.client import ClientReport, NetworkClient
from fedfort.transport.enrollment import declaration
from fedfort.transport.outcome import participation_problems, rejection_hint
from fedfort.transport.server import REGISTRY_FILE, Credentials, NetworkServer
from netfed import (
    FAST_NETWORK,
    RawClient,
    ServerThread,
    ca_dir,
    make_pki,
    net_config,
    start_clients,
)


def _toml(path: Path, clients: int, address: str, **network: float) -> Path:
    """A federation TOML for the command line, with the fast loopback [network] of netfed."""
    lines = [
        "seed = 0",
        "rounds = 1",
        f"[clients]\ncount = {clients}",
        '[model]\nname = "logreg"',
        "[server]\nfraction = 1.0",
        "[network]",
    ]
    for key, value in {**FAST_NETWORK, "address": address, **network}.items():
        lines.append(f"{key} = {value!r}".replace("'", '"'))
    path.write_text("\n".join(lines) + "\n")
    return path


def _until(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    end = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < end, f"{what} did not happen within {timeout_s}s"
        time.sleep(0.05)


# -- 1. the port is taken ----------------------------------------------------------------------


def test_a_busy_port_is_named_and_leaves_no_run_behind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = make_pki(tmp_path, 2)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        address = f"127.0.0.1:{port}"
        config = _toml(tmp_path / "fed.toml", 2, address)
        out = tmp_path / "server"
        argv = ["server", "--config", str(config), "--pki", str(pki), "--out", str(out)]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith(f"fedfort: error: cannot listen on {address}: port {port}")
        assert "--address HOST:PORT" in err[-1]
        assert "Traceback" not in "\n".join(err)
        assert not out.exists()  # nothing to --resume: the next try starts clean
        with pytest.raises(ConfigError, match=f"port {port} is in use"):
            NetworkServer(
                net_config(2, 1, network={"address": address}),
                tmp_path / "api",
                credentials=Credentials.from_pki(pki, "server"),
            )
    assert not (tmp_path / "api" / REGISTRY_FILE).exists()


# -- 2. no certificate for the name ------------------------------------------------------------


@pytest.mark.parametrize("command", ["client", "server"])
def test_a_missing_certificate_names_the_files_and_the_command_that_issues_them(
    tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = make_pki(tmp_path, 2)
    config = _toml(tmp_path / "fed.toml", 2, "127.0.0.1:0")
    argv = [command, "--config", str(config), "--pki", str(pki), "--name", "client-009"]
    if command == "client":
        argv += ["--data", "partition:0", "--state", str(tmp_path / "state")]
    else:
        argv += ["--out", str(tmp_path / "server")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("fedfort: error: no certificate for 'client-009'")
    for name in ("client-009.pem", "client-009.key"):
        assert str(pki / name) in err
    role = " --role server" if command == "server" else ""
    assert f"`fedfort certs issue --dir CA_DIR --out {pki} --name client-009{role}`" in err
    assert not (tmp_path / "state").exists() and not (tmp_path / "server").exists()


# -- 3. a client fails at start: the others end with the reason ----------------------------------


def _serve(server: NetworkServer) -> tuple[list[BaseException], threading.Thread]:
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            server.serve()
        except BaseException as exc:  # kept for the test
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return errors, thread


@pytest.mark.parametrize("failing", ["never_starts", "exits_at_once"])
def test_a_run_that_cannot_start_tells_the_waiting_clients_why(
    tmp_path: Path, failing: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """client-002 never starts (or enrolls and exits); client-000 (the API) and client-001 (the
    command line) wait. The server gives up at network.start_timeout_s: both clients hear why
    from the server and end, the command-line client with a non-zero status."""
    config = net_config(3, 1, network={"start_timeout_s": 1.0})
    pki = make_pki(tmp_path, 3)
    server = NetworkServer(
        config, tmp_path / "server", credentials=Credentials.from_pki(pki, "server")
    )
    try:
        port = server.start()  # listening; the start timeout runs once serve() is called
        [api], [api_thread] = start_clients(config, pki, tmp_path, port, [0])
        toml = _toml(tmp_path / "fed.toml", 3, f"127.0.0.1:{port}", start_timeout_s=1.0)
        argv = ["client", "--config", str(toml), "--data", "partition:1", "--pki", str(pki)]
        argv += ["--name", "client-001", "--state", str(tmp_path / "client-001")]
        status: list[int] = []
        cli = threading.Thread(target=lambda: status.append(main(argv)), daemon=True)
        cli.start()
        if failing == "exits_at_once":
            raw = RawClient(pki, "client-002", port, config.network, declare=config)
            assert raw.enroll().verdict.accepted
            raw.close()
        waiting = {"client-000", "client-001"}
        _until(lambda: waiting <= set(server.network.online()), "the two clients polling")
        _until(lambda: "client-002" not in server.network.online(), "client-002 gone silent")
        errors, serving = _serve(server)
        serving.join(120)
        api_thread.join(120)
        cli.join(120)
        assert not serving.is_alive() and not api_thread.is_alive() and not cli.is_alive()
    finally:
        server.close()
    absent = "never joined" if failing == "never_starts" else "joined, then went silent"
    [error] = errors
    assert isinstance(error, RoundFailed)
    assert f"{absent}: client-002)" in str(error)
    assert "client-000" not in str(error) and "client-001" not in str(error)
    reason = api.report.end_reason
    assert reason is not None and reason.startswith("the run ended after round 0: only 2 of")
    assert f"{absent}: client-002" in reason
    assert api.report.rounds_trained == [] and api_thread.error is None
    assert status == [1]  # the command-line client exits non-zero, saying why
    out = capsys.readouterr().out
    assert f"fedfort client client-001: {reason}" in out
    assert "finished False" in out


def test_a_round_that_fails_tells_the_clients_who_went_silent(tmp_path: Path) -> None:
    """The quorum cannot be met after the retries: the clients hear the engine's reason and
    which client went silent, instead of a bare 'finished'."""
    # a loaded machine may starve the honest clients' heartbeats too: they may be named as well
    config = net_config(
        3, 2, server={"quorum": 1.0, "max_attempts": 2}, network={"liveness_s": 4.0}
    )
    pki = make_pki(tmp_path, 3)
    srv = ServerThread(config, tmp_path / "server", pki)
    raw = RawClient(pki, "client-002", srv.port, config.network, declare=config)
    assert raw.enroll().verdict.accepted  # enrolled, online for liveness_s, then silent
    clients, threads = start_clients(config, pki, tmp_path, srv.port, [0, 1])
    raw.close()
    silent = r"joined, then went silent: (client-00[01], )*client-002\)$"
    with pytest.raises(RoundFailed, match=silent):
        srv.join()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive()
    for client in clients:
        reason = client.report.end_reason
        assert reason is not None and "round 1 failed after 2 attempts" in reason
        assert re.search(silent, reason), reason


# -- 4. updates rejected every round -------------------------------------------------------------


def _nan_client(config: RunConfig, pki: Path, root: Path, port: int, **kw: Any) -> NetworkClient:
    data = split_data(config)
    x, y = data.client_arrays(2)
    x = x.copy()
    x[0, 0] = np.nan  # a missing value the data holder did not notice; no [edge] policy
    spec = ModelSpec(config.model.name, data.dataset.num_features, data.dataset.num_classes, {})
    return NetworkClient(
        "client-002",
        ClientData.from_numpy(x, y),
        LocalTrainer(build_model(spec, seed=config.seed)),
        target=f"localhost:{port}",
        credentials=Credentials.from_pki(pki, "client-002"),
        state_dir=root / "client-002",
        network=config.network,
        policy=ClientPrivacyPolicy.from_config(config.privacy.client),
        declaration=declaration(config, None),
        **kw,
    )


def test_a_client_whose_updates_are_rejected_learns_why_and_is_warned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = net_config(3, 3)
    pki = make_pki(tmp_path, 3)
    srv = ServerThread(config, tmp_path / "server", pki)
    clients, threads = start_clients(config, pki, tmp_path, srv.port, [0, 1])
    told: list[tuple[int, str, int]] = []
    bad = _nan_client(
        config,
        pki,
        tmp_path,
        srv.port,
        on_rejected=lambda *a: told.append(a),
        warn_after_rejections=3,
    )
    with caplog.at_level(logging.WARNING, logger="fedfort.transport"):
        bad.run(timeout_s=120)
        result = srv.join()
    for thread in threads:
        thread.join(60)
    assert [r["accepted"] for r in result.records] == [["client-000", "client-001"]] * 3
    assert bad.report.rejected == [(1, "non_finite"), (2, "non_finite"), (3, "non_finite")]
    assert told == [(1, "non_finite", 1), (2, "non_finite", 2), (3, "non_finite", 3)]
    assert bad.report.acknowledged == [] and bad.report.end_reason is None
    assert all(c.report.rejected == [] and c.report.acknowledged == [1, 2, 3] for c in clients)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        "client-002: the server rejected 3 updates in a row (non_finite): "
        + rejection_hint("non_finite")
    ]
    [line] = participation_problems(result.records)
    assert line.startswith("client-002: updates rejected in 3 of 3 rounds (non_finite x3); ")
    assert "[edge]" in line and "fix the data" in line


def test_the_client_command_prints_rejections_and_fails_when_none_counted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for round_ in (1, 2, 3):
        _print_rejection("client-002", round_, "non_finite", round_)
    out = capsys.readouterr().out.splitlines()
    assert out[:3] == [
        f"fedfort client client-002: round {r}: the server rejected the update (non_finite)"
        for r in (1, 2)
    ] + ["fedfort client client-002: round 3: the server rejected the update (non_finite)"]
    assert out[3].startswith("fedfort client client-002: WARNING: 3 updates in a row rejected")
    assert "[edge]" in out[3] and len(out) == 4
    report = ClientReport("client-002", finished=True, rejected=[(1, "non_finite")])
    assert _client_outcome("client-002", report) == 1
    assert "none of its updates counted, all rejected (non_finite x1)" in capsys.readouterr().out
    report.acknowledged = [2]  # one counted: the run went on with it
    assert _client_outcome("client-002", report) == 0
    assert _client_outcome("client-002", ClientReport("c", finished=False)) == 1
    ended = ClientReport("c", finished=True, end_reason="the server was interrupted")
    assert _client_outcome("c", ended) == 1
    assert (
        capsys.readouterr().out.splitlines()[-1] == "fedfort client c: the server was interrupted"
    )


def test_participation_problems_name_dropped_and_rejected_clients() -> None:
    records = [
        {
            "selected": ["a", "b", "c"],
            "dropped": ["c"],
            "rejected": [{"client_id": "b", "reason": "bad_shape", "detail": "x"}],
        },
        {"selected": ["a", "b", "c"], "dropped": ["c"], "rejected": []},
    ]
    assert participation_problems(records) == [
        f"b: updates rejected in 1 of 2 rounds (bad_shape x1); {rejection_hint('bad_shape')}",
        "c: no update in 2 of 2 rounds (not running, too slow for the deadline, or it failed at "
        "start: see its own output)",
    ]
    assert participation_problems(records[1:2] and [{"selected": ["a"]}]) == []


# -- 6. more first-day mistakes on the network command line ---------------------------------------


def test_a_name_off_the_roster_is_told_which_names_the_server_knows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = net_config(2, 1)
    pki = make_pki(tmp_path, 2)
    issue_certificate(ca_dir(pki), pki, "client-009", role="client")  # valid, but not a member
    server = NetworkServer(
        config, tmp_path / "server", credentials=Credentials.from_pki(pki, "server")
    )
    try:
        port = server.start()
        toml = _toml(tmp_path / "fed.toml", 2, f"127.0.0.1:{port}")
        argv = ["client", "--config", str(toml), "--data", "partition:0", "--pki", str(pki)]
        assert main([*argv, "--name", "client-009", "--state", str(tmp_path / "c9")]) == 2
    finally:
        server.network.finish()
        server.close()
    err = capsys.readouterr().err.strip()
    assert err == (
        "fedfort: error: unknown_client: the server does not know client-009: --name must be "
        "one of the run's clients ([clients] names of the server's config, else client-000, "
        "client-001, ... up to [clients] count) and the name of its certificate"
    )


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("50051", "cannot listen on '50051': give HOST:PORT"),
        ("127.0.0.1:99999", "cannot listen on '127.0.0.1:99999': give HOST:PORT"),
        ("no-such-host.invalid:50051", "no-such-host.invalid is not an address of this machine"),
    ],
)
def test_a_bad_listen_address_says_what_to_give(
    tmp_path: Path, address: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = make_pki(tmp_path, 2)
    config = _toml(tmp_path / "fed.toml", 2, "127.0.0.1:0")
    out = tmp_path / "server"
    argv = ["server", "--config", str(config), "--pki", str(pki), "--out", str(out)]
    assert main([*argv, "--address", address]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("fedfort: error: ") and message in err and "--address" in err
    assert not out.exists()


def test_resuming_a_folder_without_a_run_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = make_pki(tmp_path, 2)
    config = _toml(tmp_path / "fed.toml", 2, "127.0.0.1:0")
    out = tmp_path / "empty"
    argv = ["server", "--config", str(config), "--pki", str(pki), "--out", str(out), "--resume"]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        f"fedfort: error: {out} holds no run to resume (checkpoints.sqlite is missing): pass "
        "the --out of the run to continue, or start a new run without --resume"
    )


def test_the_server_command_ends_with_the_clients_whose_updates_never_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as probe:  # a free port for the command line's config
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = net_config(3, 1)
    pki = make_pki(tmp_path, 3)
    toml = _toml(tmp_path / "fed.toml", 3, f"127.0.0.1:{port}")
    argv = ["server", "--config", str(toml), "--pki", str(pki), "--out", str(tmp_path / "srv")]
    status: list[int] = []
    server = threading.Thread(target=lambda: status.append(main(argv)), daemon=True)
    server.start()
    _, threads = start_clients(config, pki, tmp_path, port, [0, 1])
    bad = _nan_client(config, pki, tmp_path, port)
    bad.run(timeout_s=120)
    server.join(120)
    for thread in threads:
        thread.join(60)
    assert status == [0] and bad.report.rejected == [(1, "non_finite")]
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == (
        "fedfort server: client-002: updates rejected in 1 of 1 rounds (non_finite x1); "
        + rejection_hint("non_finite")
    )


def test_rotating_a_key_without_a_server_leaves_the_key_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as probe:  # a port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    pki = make_pki(tmp_path, 2)
    toml = _toml(tmp_path / "fed.toml", 2, address)
    state = tmp_path / "client-000"
    argv = ["keys", "rotate", "--client", "--name", "client-000", "--config", str(toml)]
    assert main([*argv, "--pki", str(pki), "--address", address, "--state", str(state)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert err.startswith(f"fedfort: error: cannot reach the server at {address} to enroll")
    assert err.endswith("the key is unchanged: rotate again once the server is up")
    assert json.loads((state / "identity.json").read_text()) == {"version": 1}


def _plain_client(config: RunConfig, pki: Path, root: Path, target: str) -> NetworkClient:
    data = split_data(config)
    x, y = data.client_arrays(0)
    spec = ModelSpec(config.model.name, data.dataset.num_features, data.dataset.num_classes, {})
    return NetworkClient(
        "client-000",
        ClientData.from_numpy(x, y),
        LocalTrainer(build_model(spec, seed=config.seed)),
        target=target,
        credentials=Credentials.from_pki(pki, "client-000"),
        state_dir=root / "client-000",
        network=config.network,
    )


def test_a_client_that_cannot_reach_the_server_says_where_it_looked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        target = f"127.0.0.1:{probe.getsockname()[1]}"
    config = net_config(2, 1)
    client = _plain_client(config, make_pki(tmp_path, 2), tmp_path, target)
    with caplog.at_level(logging.WARNING, logger="fedfort.transport"):
        report = client.run(timeout_s=2.0)
    assert not report.finished and report.reconnects >= 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and warnings[0].startswith(f"client-000: cannot reach the server at {target}")
    assert "Is `fedfort server` running there" in warnings[0]


def test_a_client_of_another_ca_is_told_the_handshake_failed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = net_config(2, 1)
    pki = make_pki(tmp_path / "ours", 2)
    theirs = make_pki(tmp_path / "theirs", 2)  # same names, another CA
    server = NetworkServer(
        config, tmp_path / "server", credentials=Credentials.from_pki(pki, "server")
    )
    try:
        port = server.start()
        client = _plain_client(config, theirs, tmp_path, f"localhost:{port}")
        with caplog.at_level(logging.WARNING, logger="fedfort.transport"):
            report = client.run(timeout_s=2.0)
    finally:
        server.network.finish()
        server.close()
    assert not report.finished and report.reconnects >= 1
    warnings = [r.getMessage() for r in caplog.records if r.name == "fedfort.transport"]
    handshake = [w for w in warnings if "TLS handshake" in w]
    assert handshake and handshake[0].startswith(
        f"client-000: the TLS handshake with the server at localhost:{port} failed; retrying."
    )
    assert "same `fedfort certs init` CA" in handshake[0]
