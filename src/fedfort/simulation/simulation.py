"""The simulation front door: a federation whose clients run in this process.

:class:`Simulation` is a :class:`~fedfort.federation.Federation` (the server side: dataset,
model, stage pipeline, checkpoints) whose runtime is simulated: the clients, any attack's
coalition, and a sequential or process-pool executor. It holds no learning or security logic of
its own: the same :class:`~fedfort.server.RoundEngine` and
:class:`~fedfort.client.LocalTrainer` run in a networked deployment.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from fedfort.attacks.adversary import AdversarialClient, Coalition, choose_malicious
from fedfort.attacks.config import build_attack
from fedfort.attacks.data_poisoning import Backdoor
from fedfort.client.client import FederatedClient
from fedfort.federation import (
    CHECKPOINT_FILE,
    Federation,
    SimulationResult,
    local_training_data,
    partition_records,
)
from fedfort.models import ModelFactory
from fedfort.server.engine import ClientExecutor, Stateful
from fedfort.simulation.executors import PoolExecutor, SequentialExecutor, SimulatedClients

__all__ = ["CHECKPOINT_FILE", "Simulation", "SimulationResult"]


class Simulation(Federation):
    """A federated training run on simulated clients.

    >>> sim = Simulation(load_config("examples/demo.toml"), out_dir="runs/demo")
    >>> result = sim.run()

    See :class:`~fedfort.federation.Federation` for checkpoints, resuming and model factories.
    """

    def _runtime(self) -> tuple[ClientExecutor, dict[str, Stateful]]:
        config = self.config
        honest = []
        for k, cid in enumerate(self.ids):
            records = partition_records(config, self.data, k)
            data, metrics = local_training_data(config, records, cid, self.dataset.num_classes)
            honest.append(FederatedClient(cid, data, metrics))
        self.attack = build_attack(config.attack, self.dataset.image_shape)
        self.coalition: Coalition | None = None
        if self.attack is not None:
            self.malicious = choose_malicious(self.ids, config.attack.fraction, config.seed)
            self.coalition = Coalition(
                self.attack,
                self.malicious,
                colluding=config.attack.colluding,
                omniscient=config.attack.omniscient,
                start_round=config.attack.start_round,
                end_round=config.attack.end_round,
                seed=config.seed,
            )
            bad = set(self.malicious)
            honest = [
                AdversarialClient(
                    c,
                    self.attack,
                    self.dataset.num_classes,
                    coalition=self.coalition,
                    seed=config.seed,
                )
                if c.client_id in bad
                else c
                for c in honest
            ]
        self.clients = SimulatedClients(honest, self.coalition)
        sim = config.simulation
        executor: SequentialExecutor | PoolExecutor
        if sim.workers == 0:
            executor = SequentialExecutor(
                self.clients,
                self.trainer,
                seed=config.seed,
                dropout_rate=sim.dropout_rate,
                secure_dropout_rate=config.secure_aggregation.simulated_dropout,
            )
        else:
            executor = PoolExecutor(
                self.clients,
                self.build_module,
                workers=sim.workers,
                seed=config.seed,
                dropout_rate=sim.dropout_rate,
                secure_dropout_rate=config.secure_aggregation.simulated_dropout,
                threads=sim.torch_threads,
            )
        return executor, {"clients": self.clients}

    def directory(self) -> Mapping[str, bytes]:
        return self.clients.directory

    def _backdoor_test_set(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Triggered test inputs whose true label is not the target, labelled as the target."""
        if not isinstance(self.attack, Backdoor):
            return None
        keep = self.dataset.y_test != self.attack.target
        x = self.attack.trigger.apply(self.dataset.x_test[keep])
        y = np.full(int(keep.sum()), self.attack.target, dtype=self.dataset.y_test.dtype)
        return torch.from_numpy(x), torch.from_numpy(y)

    @classmethod
    def resume(
        cls,
        out_dir: str | Path,
        *,
        rounds: int | None = None,
        workers: int | None = None,
        model_factory: ModelFactory | None = None,
    ) -> Simulation:
        """Reopen the run in ``out_dir`` at its last committed round."""
        config = cls._reopen_config(out_dir, {"rounds": rounds, "simulation.workers": workers})
        return cls(config, out_dir, model_factory=model_factory, _resuming=True)
