"""The simulation front door: a federation whose clients run in this process.

:class:`Simulation` is a :class:`~fedfort.run.federation.Federation` (the server side: dataset,
model, stage pipeline, checkpoints) whose runtime is simulated: the clients, any attack's
coalition, and a sequential or process-pool executor. It holds no learning or security logic of
its own: the same :class:`~fedfort.server.RoundEngine` and
:class:`~fedfort.client.LocalTrainer` run in a networked deployment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fedfort.aggregation.base import Aggregator
from fedfort.attacks.adversary import AdversarialClient, Coalition, choose_malicious
from fedfort.attacks.base import Attack
from fedfort.attacks.config import build_attack
from fedfort.attacks.data_poisoning import Backdoor
from fedfort.client.client import FederatedClient
from fedfort.client.policy import ClientPrivacyPolicy
from fedfort.client.secure import client_policy
from fedfort.client.training import ClientData
from fedfort.config import RunConfig, SimulationConfig, parse_config
from fedfort.errors import ConfigError
from fedfort.models import ModelFactory
from fedfort.privacy.modes import PrivacyMode
from fedfort.run.composition import compose
from fedfort.run.data import with_given_data
from fedfort.run.features import Feature
from fedfort.run.federation import (
    CHECKPOINT_FILE,
    Federation,
    RunResult,
    SimulationResult,
    local_training_data,
    partition_records,
)
from fedfort.server.engine import ClientExecutor, Stateful
from fedfort.server.optimizers import ServerOptimizer
from fedfort.simulation.executors import PoolExecutor, SequentialExecutor, SimulatedClients

__all__ = ["CHECKPOINT_FILE", "RunResult", "Simulation", "SimulationResult"]


class Simulation(Federation):
    """A federated training run on simulated clients.

    >>> sim = Simulation(load_config("examples/demo.toml"), out_dir="runs/demo")
    >>> result = sim.run()

    The components may be given as objects instead of (or on top of) a config::

        Simulation(
            model=MyNet(),
            aggregator=NormBounding(Krum(num_byzantine=2), max_norm=5.0),
            privacy=DPFedAvg(target_epsilon=3.0, delta=1e-5),
            rounds=30,
            out_dir="runs/x",
        )

    Each object is named in the run's config (:func:`fedfort.run.composition.compose`), so the run
    stores every component in its identity and :meth:`resume` rebuilds them.

    See :class:`~fedfort.run.federation.Federation` for checkpoints, resuming and model factories.
    With ``simulation.runtime = "ray"`` the clients are registered lazily and trained by Ray
    actors (:mod:`fedfort.simulation.ray_runtime`); the server side is the same.
    """

    def __init__(
        self,
        config: RunConfig | Mapping[str, Any] | None = None,
        out_dir: str | Path | None = None,
        *,
        model: nn.Module | ModelFactory | str | None = None,
        model_factory: ModelFactory | None = None,
        aggregator: Aggregator | str | None = None,
        attack: Attack | str | None = None,
        malicious_fraction: float | None = None,
        privacy: PrivacyMode | None = None,
        server_optimizer: ServerOptimizer | str | None = None,
        rounds: int | None = None,
        seed: int | None = None,
        clients: int | None = None,
        features: Sequence[Feature] = (),
        data: Mapping[str, Any] | None = None,
        test_data: Mapping[str, Any] | None = None,
        feature_names: Sequence[str] | None = None,
        _resuming: bool = False,
    ) -> None:
        options: dict[str, Any] = {}
        if data is not None and isinstance(config, Mapping):
            # keys for the clients' own rows: valid once the data is known to be given
            config, options = _without_own_data_keys(config)
        composed, factory = compose(
            config,
            model=model,
            aggregator=aggregator,
            attack=attack,
            malicious_fraction=malicious_fraction,
            privacy=privacy,
            server_optimizer=server_optimizer,
            rounds=rounds,
            seed=seed,
            clients=clients,
        )
        if factory is not None and model_factory is not None:
            raise ConfigError("give the model once: model= or model_factory=")
        given = None
        if data is not None:
            composed, given = with_given_data(composed, data, test_data, feature_names, options)
        elif test_data is not None:
            raise ConfigError("test_data= needs data= (each client's training rows) as well")
        super().__init__(
            composed,
            out_dir,
            model_factory=model_factory or factory,
            features=features,
            data_tables=given,
            _resuming=_resuming,
        )

    def _training_set_sizes(self) -> dict[str, int]:
        """The simulation knows every client's partition, whatever the clients declare."""
        return {cid: int(n) for cid, n in zip(self.ids, self.partition.sizes(), strict=True)}

    def _declared_sample_counts(self) -> dict[str, int]:
        """The simulation hands each client its partition, so a partition's size is what the
        client declares; ``server.declared_sample_counts`` takes precedence."""
        sizes = {cid: int(n) for cid, n in zip(self.ids, self.partition.sizes(), strict=True)}
        return {**sizes, **super()._declared_sample_counts()}

    def _runtime(self) -> tuple[ClientExecutor, dict[str, Stateful]]:
        config = self.config
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
        if config.simulation.runtime == "ray":
            return self._ray_runtime()
        # every simulated client holds the run's client policy ([privacy.client])
        policy = ClientPrivacyPolicy.from_config(config.privacy.client, config.privacy.dp_sgd)
        honest = []
        secure_policy = client_policy(config.secure_aggregation)
        for k, cid in enumerate(self.ids):
            data, metrics = local_training_data(
                config, partition_records(config, self.data, k), cid, self.schema.num_classes
            )
            holdout = self.data.client_test_arrays(k)
            honest.append(
                FederatedClient(
                    cid,
                    data,
                    metrics,
                    policy=policy,
                    secure_policy=secure_policy,
                    holdout=None if holdout is None else ClientData.from_numpy(*holdout),
                )
            )
        if self.attack is not None:
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

    def _ray_runtime(self) -> tuple[ClientExecutor, dict[str, Stateful]]:
        """Clients registered lazily, trained by Ray actors (see docs/ray-runtime.md)."""
        from fedfort.simulation.ray_runtime import LazyClients, RayExecutor, RayOptions

        config = self.config
        self.clients = LazyClients(
            self.ids,
            self.malicious,
            self.coalition,
            policy=ClientPrivacyPolicy.from_config(
                self.config.privacy.client, self.config.privacy.dp_sgd
            ),
            secure_policy=client_policy(self.config.secure_aggregation),
            num_records=self._training_set_sizes(),
        )
        executor = RayExecutor(
            self.clients,
            self.build_module,
            self.data,
            attack=self.attack,
            seed=config.seed,
            dropout_rate=config.simulation.dropout_rate,
            secure_dropout_rate=config.secure_aggregation.simulated_dropout,
            options=RayOptions.from_config(config.simulation),
            edge=config.edge,
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
        runtime: str | None = None,
        ray_address: str | None = None,
        features: Sequence[Feature] = (),
        data: Mapping[str, Any] | None = None,
        test_data: Mapping[str, Any] | None = None,
        feature_names: Sequence[str] | None = None,
    ) -> Simulation:
        """Reopen the run in ``out_dir`` at its last committed round.

        The stored config names the run's model (a ``model_factory`` the run was given is
        recorded by its import path), so the model is rebuilt without one; give
        ``model_factory`` again only for a class this process cannot import (defined inside a
        function, or in another script's ``__main__``). ``runtime`` (and ``ray_address``) may
        move the run to another runtime: they are not part of its identity, and both runtimes
        compute the same rounds. ``features`` are the
        run's own features again (the stored pipeline must match, see
        :meth:`~fedfort.run.federation.Federation.run`). A run whose data was given as
        objects needs the same ``data`` (and ``test_data``) again: its digest is part of the
        run's identity.
        """
        config = cls._reopen_config(out_dir, {"rounds": rounds, "simulation.workers": workers})
        if runtime is not None or ray_address is not None:
            config = _on_runtime(config, runtime or "ray", ray_address)
        return cls(
            config,
            out_dir,
            model_factory=model_factory,
            features=features,
            data=data,
            test_data=test_data,
            feature_names=feature_names,
            _resuming=True,
        )


def _on_runtime(config: RunConfig, runtime: str, ray_address: str | None) -> RunConfig:
    """``config`` moved to another runtime (``inprocess`` or ``ray``; not part of its identity)."""
    body = config.to_dict()
    sim = body["simulation"]
    if runtime == "ray":
        sim.update(runtime="ray", workers=0, ray_address=ray_address)
    else:
        if ray_address is not None:
            raise ConfigError("a Ray address needs the Ray runtime")
        defaults = SimulationConfig().model_dump()
        for key in ("ray_address", "ray_cpus_per_client", "ray_gpus_per_client", "ray_actors"):
            sim[key] = defaults[key]
        sim["runtime"] = runtime
    return parse_config(body)


#: ``[data]`` keys about the clients' own rows, which an embedded dataset refuses
OWN_DATA_KEYS = ("standardize", "impute", "value_bound", "count_bound")


def _without_own_data_keys(
    config: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``config`` without :data:`OWN_DATA_KEYS` in ``[data]``, and those keys."""
    body = dict(config)
    data = dict(body.get("data") or {})
    options = {k: data.pop(k) for k in OWN_DATA_KEYS if k in data}
    body["data"] = data
    return body, options
