"""Local training: FedAvg deltas, FedProx's proximal pull, and SCAFFOLD's control variates."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fedfort.aggregation import WeightedMean
from fedfort.client import ClientData, FederatedClient, LocalTrainer
from fedfort.messages import LocalTrainingConfig, TrainTask
from fedfort.models import MLP
from fedfort.server import (
    Aggregate,
    ApplyServerOptimizer,
    Broadcast,
    Collect,
    EnforceQuorum,
    RoundEngine,
    ScaffoldControl,
    SelectClients,
    ServerSGD,
    VerifyUpdates,
)
from fedfort.simulation import SequentialExecutor, SimulatedClients


def digits_like(seed: int = 0, n: int = 64) -> ClientData:
    rng = np.random.default_rng(seed)
    x = rng.random((n, 64), dtype=np.float32)
    y = rng.integers(0, 10, n)
    return ClientData.from_numpy(x, y)


def make_task(trainer: LocalTrainer, config: LocalTrainingConfig, seed: int = 1) -> TrainTask:
    weights = trainer.bound.flatten()
    control = np.zeros_like(weights) if config.algorithm == "scaffold" else None
    return TrainTask(1, 1, "c0", weights, config, seed, control)


def test_fedavg_delta_is_local_minus_global_and_reproducible() -> None:
    torch.manual_seed(0)
    trainer = LocalTrainer(MLP(64, 10, hidden=[16]))
    data = digits_like()
    task = make_task(trainer, LocalTrainingConfig(epochs=2, batch_size=8, lr=0.1))
    update = trainer.fit(task, data)
    assert update.delta.dtype == np.float32 and update.delta.shape == (trainer.spec.dim,)
    np.testing.assert_allclose(trainer.bound.flatten(), task.weights + update.delta, atol=1e-6)
    assert update.num_samples == 64
    assert update.metrics["local_steps"] == 16
    assert update.control_delta is None
    again = trainer.fit(task, data)
    np.testing.assert_array_equal(update.delta, again.delta)
    other_seed = trainer.fit(make_task(trainer, task.config, seed=2), data)
    assert not np.array_equal(update.delta, other_seed.delta)


def test_fedprox_proximal_term_keeps_clients_near_the_global_model() -> None:
    torch.manual_seed(0)
    trainer = LocalTrainer(MLP(64, 10, hidden=[16]))
    data = digits_like()
    weights = trainer.bound.flatten()
    base = dict(epochs=5, batch_size=8, lr=0.1)

    def fit(**extra):
        config = LocalTrainingConfig(**base, **extra)
        return trainer.fit(TrainTask(1, 1, "c0", weights, config, 1), data)

    plain = fit()
    prox = fit(algorithm="fedprox", mu=1.0)
    weak = fit(algorithm="fedprox", mu=0.0)
    np.testing.assert_array_equal(weak.delta, plain.delta)
    assert np.linalg.norm(prox.delta) < 0.8 * np.linalg.norm(plain.delta)


# A constructed example of client drift (Karimireddy et al. 2020, section 3): one scalar weight,
# client i minimises mean((w * x_i - y_i)^2). Their optima and curvatures differ, so FedAvg with
# several local steps converges to a point that is not the global optimum; SCAFFOLD's control
# variates correct the drift and reach it.
QUADRATIC_CLIENTS = {
    "a": (1.0, 0.0),  # f_a(w) = (w - 0)^2, curvature 1
    "b": (3.0, 3.0),  # f_b(w) = 9 (w - 1)^2, curvature 9
    "c": (2.0, -1.0),  # f_c(w) = 4 (w + 0.5)^2, curvature 4
}
GLOBAL_OPTIMUM = sum(x * y for x, y in QUADRATIC_CLIENTS.values()) / sum(
    x * x for x, _ in QUADRATIC_CLIENTS.values()
)


def run_quadratic(algorithm: str, rounds: int, fraction: float = 1.0, check=None) -> float:
    trainer = LocalTrainer(nn.Linear(1, 1, bias=False))
    trainer.bound.load(np.zeros(1, np.float32))
    clients = SimulatedClients(
        [
            FederatedClient(cid, ClientData(torch.full((4, 1), x), torch.full((4, 1), y)))
            for cid, (x, y) in QUADRATIC_CLIENTS.items()
        ]
    )
    local = LocalTrainingConfig(algorithm=algorithm, epochs=10, batch_size=0, lr=0.02, loss="mse")  # type: ignore[arg-type]
    scaffold = ScaffoldControl(1, len(QUADRATIC_CLIENTS)) if algorithm == "scaffold" else None
    stages = [
        SelectClients(fraction),
        Broadcast(local, 0, control=None if scaffold is None else scaffold.current),
        Collect(),
        VerifyUpdates(1, expect_control=scaffold is not None),
        EnforceQuorum(),
        Aggregate(WeightedMean()),
        *([scaffold] if scaffold is not None else []),
        ApplyServerOptimizer(ServerSGD()),
    ]
    engine = RoundEngine(
        np.zeros(1, np.float32),
        list(QUADRATIC_CLIENTS),
        stages,
        SequentialExecutor(clients, trainer),
        seed=0,
    )
    for _ in range(rounds):
        engine.run_round()
        if check is not None:
            check(clients, scaffold)
    return float(engine.model[0])


def test_fedavg_drifts_away_from_the_global_optimum_on_heterogeneous_clients() -> None:
    w = run_quadratic("fedavg", rounds=150)
    assert abs(w - GLOBAL_OPTIMUM) > 0.05


def test_scaffold_corrects_client_drift() -> None:
    w = run_quadratic("scaffold", rounds=150)
    assert abs(w - GLOBAL_OPTIMUM) < 1e-3


def test_scaffold_server_control_is_the_mean_of_client_controls() -> None:
    """The invariant c = (1/N) sum_i c_i holds after every round, with partial participation."""
    seen_nonzero = []

    def check(clients: SimulatedClients, scaffold: ScaffoldControl) -> None:
        controls = [
            np.zeros(1, np.float32) if c.control is None else c.control
            for c in clients.clients.values()
        ]
        np.testing.assert_allclose(scaffold.control, np.mean(controls, axis=0), atol=1e-5)
        seen_nonzero.append(float(np.abs(scaffold.control).max()))

    w = run_quadratic("scaffold", rounds=200, fraction=2 / 3, check=check)
    assert max(seen_nonzero) > 0.1  # the control variates actually moved
    assert abs(w - GLOBAL_OPTIMUM) < 1e-2


def test_scaffold_control_delta_follows_option_two() -> None:
    """c_i+ - c_i = -c + (x - y_i) / (K * lr) on the trainable entries."""
    torch.manual_seed(0)
    trainer = LocalTrainer(MLP(64, 10, hidden=[8]))
    data = digits_like()
    config = LocalTrainingConfig(algorithm="scaffold", epochs=1, batch_size=16, lr=0.05)
    weights = trainer.bound.flatten()
    server_c = np.random.default_rng(0).normal(0, 0.01, weights.shape).astype(np.float32)
    client_c = np.random.default_rng(1).normal(0, 0.01, weights.shape).astype(np.float32)
    task = TrainTask(1, 1, "c0", weights, config, 5, server_c)
    update = trainer.fit(task, data, client_c)
    steps = update.metrics["local_steps"]
    expected = -server_c - update.delta / (steps * config.lr)
    np.testing.assert_allclose(update.control_delta, expected, rtol=1e-5, atol=1e-6)
    # the corrected gradient really differs from plain SGD
    plain = trainer.fit(
        TrainTask(1, 1, "c0", weights, LocalTrainingConfig(epochs=1, batch_size=16, lr=0.05), 5),
        data,
    )
    assert not np.allclose(plain.delta, update.delta)
