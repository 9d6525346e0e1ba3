"""A federation across a two-node Ray cluster: a head and a worker node on loopback.

Both nodes are started with ``ray start --block`` as separate process sessions of this test
(their own temp dir, free ports, a fresh authentication token), and the driver runs in a
subprocess, so nothing here touches another Ray on the machine. Cleanup stops exactly the
process sessions the test started (``ray stop`` would stop every Ray of the machine's user).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

RAY = str(Path(sys.executable).with_name("ray"))
SRC = str(Path(__file__).resolve().parents[1] / "src")

DRIVER = """
import json, sys, time
import ray
from fedfort import Simulation
from fedfort.config import parse_config
from fedfort.simulation.ray_runtime import RayConnection

address = sys.argv[1]
RayConnection.open(address)  # what --ray-address does; the Simulation below reuses it
for _ in range(240):
    alive = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
    if len(alive) == 2:
        break
    time.sleep(0.5)
cfg = parse_config({
    "rounds": 3,
    "clients": {"count": 8, "epochs": 1},
    "simulation": {"runtime": "ray", "ray_address": address, "ray_actors": 2},
})
with Simulation(cfg) as sim:
    result = sim.run()
    workers = sim.executor.workers()
    per_node = dict(sim.executor.tasks_per_node)
print(json.dumps({
    "alive": alive,
    "tasks_per_node": per_node,
    "worker_nodes": [node for node, _ in workers],
    "participants": [r["participants"] for r in result.records],
}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def session_processes(leaders: list[subprocess.Popen[bytes]]) -> list[psutil.Process]:
    """Live processes in the sessions of ``leaders`` (each ``ray start`` got its own)."""
    sessions = {p.pid for p in leaders}
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) in sessions and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (OSError, psutil.Error):
            continue
    return found


def stop(leaders: list[subprocess.Popen[bytes]]) -> None:
    for leader in leaders:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(leader.pid, signal.SIGTERM)
    _, alive = psutil.wait_procs(session_processes(leaders), timeout=10)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    for leader in leaders:
        leader.wait(timeout=10)


def test_joining_an_address_where_no_head_answers_fails_fast() -> None:
    from fedfort.errors import ConfigError
    from fedfort.simulation.ray_runtime import RayConnection

    ray = pytest.importorskip("ray")
    assert not ray.is_initialized()
    with pytest.raises(ConfigError, match=r"no Ray head answers at 127\.0\.0\.1"):
        RayConnection.open(f"127.0.0.1:{free_port()}")
    assert not ray.is_initialized()


@pytest.mark.slow
def test_a_federation_trains_on_both_nodes_of_a_cluster() -> None:
    port = free_port()
    temp = tempfile.mkdtemp(prefix="fedfort-cluster-")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p),
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
    }
    node = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--block", "--disable-usage-stats"]
    leaders: list[subprocess.Popen[bytes]] = []
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    try:
        head = [RAY, "start", "--head", f"--port={port}", "--include-dashboard=false"]
        leaders.append(
            subprocess.Popen(
                [*head, f"--temp-dir={temp}", *node], env=env, start_new_session=True, **quiet
            )
        )
        for _ in range(240):  # the worker node needs the head's GCS to be up
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.25)
        worker = [RAY, "start", f"--address=127.0.0.1:{port}", f"--temp-dir={temp}", *node]
        leaders.append(subprocess.Popen(worker, env=env, start_new_session=True, **quiet))
        done = subprocess.run(
            [sys.executable, "-c", DRIVER, f"127.0.0.1:{port}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        body = json.loads(done.stdout.strip().splitlines()[-1])
        assert len(body["alive"]) == 2
        # one actor per node (each node has one CPU), and both nodes trained clients
        assert sorted(body["worker_nodes"]) == sorted(body["alive"])
        assert set(body["tasks_per_node"]) == set(body["alive"])
        assert all(count > 0 for count in body["tasks_per_node"].values())
        assert body["participants"] == [8, 8, 8]
    finally:
        stop(leaders)
        shutil.rmtree(temp, ignore_errors=True)
    assert session_processes(leaders) == []
