"""Real images over the network: three mTLS clients train the small CNN on MNIST (28x28) with
the gRPC runtime, BatchNorm statistics and all, and reach what the simulation reaches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedfort.simulation import Simulation
from netfed import ServerThread, make_pki, net_config, start_clients

pytestmark = pytest.mark.slow


def test_three_clients_train_the_cnn_on_mnist_over_the_network(tmp_path: Path) -> None:
    config = net_config(
        3,
        3,
        data={"dataset": "mnist", "partition": "iid"},
        model={"name": "cnn", "options": {"channels": 8, "pools": 2}},
        privacy={"client": {"reproducible": True}},
        # a CNN epoch on a loaded machine can starve heartbeats: generous liveness and deadline
        network={"liveness_s": 60.0, "round_deadline_s": 180.0},
    ).with_overrides({"clients.epochs": 1, "clients.batch_size": 16, "clients.lr": 0.05})
    pki = make_pki(tmp_path, 3)
    srv = ServerThread(config, tmp_path / "server", pki)
    clients, threads = start_clients(config, pki, tmp_path, srv.port, [0, 1, 2])
    result = srv.join(timeout=300)
    for t in threads:
        t.join(30)
    assert all(t.error is None for t in threads), [t.error for t in threads]
    assert [r["participants"] for r in result.records] == [3, 3, 3]
    assert all(c.report.finished and c.report.acknowledged == [1, 2, 3] for c in clients)
    accuracy = [r["accuracy"] for r in result.records]
    assert accuracy[-1] >= 0.80  # ten classes: chance is 0.10
    sim = Simulation(config).run()
    assert np.array_equal(result.model, sim.model)  # one engine, on images as on tables
    assert accuracy == [r["accuracy"] for r in sim.records]
