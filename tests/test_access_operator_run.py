"""The operator API on a running federation: start, pause, rollback, resume and stop take effect
between rounds, leave a committed state that resumes, and every call is in a verifying log."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from access_helpers import access_entries, call, small_config
from fedfort.access import TokenStore
from fedfort.access.setup import start_monitoring
from fedfort.audit import AUDIT_FILE, read_entries, verify_run
from fedfort.run.federation import SimulationResult
from fedfort.server.checkpoint import CheckpointStore
from fedfort.simulation import Simulation

pytestmark = pytest.mark.slow


def _wait(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    end = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def test_pause_rollback_resume_stop_take_effect(tmp_path: Path) -> None:
    store_path = tmp_path / "tokens.sqlite"
    with TokenStore(store_path) as store:
        operator = store.issue("alice", "operator")[0]
        viewer = store.issue("bob", "viewer")[0]
    config = small_config(rounds=500, tokens=str(store_path), hold_at_start=True)
    out = tmp_path / "run"
    results: list[SimulationResult] = []
    with Simulation(config, out_dir=out) as sim:
        urls = start_monitoring(sim, operator_address="127.0.0.1:0")
        assert urls["operator"].startswith("http://127.0.0.1:")
        port = int(urls["operator"].rsplit(":", 1)[1])
        runner = threading.Thread(target=lambda: results.append(sim.run()), daemon=True)
        runner.start()

        # held at the start until an operator starts it; a viewer cannot
        _wait(lambda: sim.control.status()["parked"])
        assert sim.engine.round == 0
        assert call(port, "POST", "/v1/run/start", token=viewer)[0] == 403
        time.sleep(0.1)
        assert sim.engine.round == 0 and sim.control.state == "held"
        assert call(port, "POST", "/v1/run/start", token=operator)[0] == 200
        _wait(lambda: sim.engine.round >= 3)

        # pause: the round in progress commits, then nothing moves
        status, payload, _ = call(port, "POST", "/v1/run/pause", token=operator)
        assert status == 200 and json.loads(payload)["state"] == "paused"
        _wait(lambda: sim.control.status()["parked"])
        paused_at = sim.engine.round
        time.sleep(0.4)
        assert sim.engine.round == paused_at

        # rollback while paused: applied at once by the run loop's thread
        status, payload, _ = call(
            port,
            "POST",
            "/v1/model/rollback",
            token=operator,
            body={"version": 1, "reason": "suspected poisoning"},
        )
        answer = json.loads(payload)
        assert status == 200 and answer["applied"] is True and answer["to_version"] == 1
        with CheckpointStore(out / "checkpoints.sqlite") as checkpoints:
            version_1 = checkpoints.load(1).model
        assert np.array_equal(sim.engine.model, version_1)
        assert sim.engine.round == paused_at

        # resume: rounds continue from the rolled-back model
        assert call(port, "POST", "/v1/run/resume", token=operator)[0] == 200
        _wait(lambda: sim.engine.round >= paused_at + 2)

        # stop: the run ends after a committed round
        assert call(port, "POST", "/v1/run/stop", token=operator)[0] == 200
        runner.join(timeout=30)
        assert not runner.is_alive()
        stopped_at = sim.engine.round
        status, payload, _ = call(port, "GET", "/v1/status", token=viewer)
        assert json.loads(payload)["state"] == "stopped"
    assert results[0].stopped == "operator_stop"
    assert stopped_at < 500 and results[0].records[-1]["round"] == stopped_at

    with CheckpointStore(out / "checkpoints.sqlite") as checkpoints:
        assert checkpoints.latest_round() == stopped_at
    assert verify_run(out).ok
    entries = list(read_entries(out / AUDIT_FILE))
    rollback = [e.data for e in entries if e.kind == "rollback"]
    assert rollback and rollback[-1]["to_version"] == 1 and rollback[-1]["at_round"] == paused_at
    assert [e.data["stopped"] for e in entries if e.kind == "run_end"] == ["operator_stop"]
    decisions = [(e["action"], e["decision"]) for e in access_entries(out)]
    for action in ("run.start", "run.pause", "model.rollback", "run.resume", "run.stop"):
        assert (action, "allow") in decisions
    assert ("run.start", "deny") in decisions

    # the stopped run resumes from its committed state and nothing was lost
    with Simulation.resume(out, rounds=stopped_at + 1) as again:
        assert again.engine.round == stopped_at
        again.control.start()  # the stored config holds at the start again
        assert again.run().records[-1]["round"] == stopped_at + 1
    assert verify_run(out).ok
