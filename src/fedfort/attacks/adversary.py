"""Malicious clients: an honest client wrapped with an attack, and the coalition they form.

:class:`AdversarialClient` wraps a :class:`~fedfort.client.FederatedClient`. It trains with
the honest trainer on its poisoned data, as the attack adjusts the task, and so behaves like
any client towards a runtime: in simulation and behind a network client alike.

Alone (``coalition=None``) it crafts its update from its own honest update only. Inside a
:class:`Coalition` (the simulation's malicious clients) it returns the honest update it
trained and the coalition crafts the final updates of all its members that answered the
round in one vectorised call, after seeing:

- only the members' own honest updates (``omniscient = False``), or
- the honest clients' updates of the round as well (``omniscient = True``), the
  omniscient-attacker setting the ALIE, IPM and Min-Max papers assume; and with
  ``colluding = False`` every member crafts alone.

The attack starts at ``start_round`` and, if ``end_round`` is set, stops after it; outside
those rounds malicious clients behave honestly (still on their poisoned data, as a data
poisoner's data is poisoned from the start).
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

from fedfort.attacks.base import Attack, AttackView
from fedfort.client.client import FederatedClient
from fedfort.client.training import ClientData, LocalTrainer
from fedfort.errors import ConfigError
from fedfort.messages import ClientUpdate, TrainTask

__all__ = ["AdversarialClient", "Coalition", "choose_malicious", "poisoned_data"]

_ATTACK_STREAM = 0x61747461  # distinguishes attack randomness from training seeds


def choose_malicious(client_ids: Sequence[str], fraction: float, seed: int) -> list[str]:
    """The seeded choice of ``round(fraction * n)`` malicious clients (at least one if > 0)."""
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"attack.fraction must be in [0, 1), got {fraction}")
    if fraction == 0.0:
        return []
    count = max(1, round(fraction * len(client_ids)))
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_ATTACK_STREAM,)))
    chosen = rng.choice(len(client_ids), size=count, replace=False)
    return sorted(client_ids[i] for i in chosen)


def _rng(seed: int, round_: int, attempt: int, key: str) -> np.random.Generator:
    spawn = (round_, attempt, zlib.crc32(key.encode()), _ATTACK_STREAM)
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=spawn))


def poisoned_data(
    attack: Attack, client_id: str, x: np.ndarray, y: np.ndarray, num_classes: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """A malicious client's training data as its attack poisons it (keyed by seed and id).

    Every runtime poisons through this function, so a member trains on the same rows whether
    its data lives in this process or is materialised in a worker.
    """
    return attack.poison_data(x, y, num_classes, _rng(seed, 0, 0, client_id))


class Coalition:
    """The malicious clients of a simulation, crafting their updates together each round."""

    def __init__(
        self,
        attack: Attack,
        members: Collection[str],
        *,
        colluding: bool = True,
        omniscient: bool = True,
        start_round: int = 1,
        end_round: int | None = None,
        seed: int = 0,
    ) -> None:
        if start_round < 1:
            raise ConfigError(f"attack.start_round must be >= 1, got {start_round}")
        if end_round is not None and end_round < start_round:
            raise ConfigError(
                f"attack.end_round ({end_round}) is before attack.start_round ({start_round})"
            )
        self.attack = attack
        self.members = frozenset(members)
        self.colluding = colluding
        self.omniscient = omniscient
        self.start_round = start_round
        self.end_round = end_round
        self.seed = seed

    def active(self, round_: int) -> bool:
        return round_ >= self.start_round and (self.end_round is None or round_ <= self.end_round)

    def prepare(self, task: TrainTask) -> TrainTask:
        """The task a member actually trains on (the attack may change local training)."""
        if task.client_id in self.members and self.active(task.round):
            return self.attack.adjust_task(task)
        return task

    def craft(
        self, tasks: Sequence[TrainTask], received: Sequence[ClientUpdate]
    ) -> list[ClientUpdate]:
        """Replace the members' updates in ``received`` (answers to ``tasks``) by crafted ones."""
        mine = [i for i, u in enumerate(received) if u.client_id in self.members]
        if not mine or not tasks or not self.active(tasks[0].round):
            return list(received)
        model, attempt = tasks[0].weights, tasks[0].attempt
        honest = [u for u in received if u.client_id not in self.members]
        groups = [mine] if self.colluding else [[i] for i in mine]
        out = list(received)
        for group in groups:
            updates = [received[i] for i in group]
            own = np.stack([u.delta for u in updates])
            observed = own
            if self.omniscient and honest:
                observed = np.stack([u.delta for u in honest])
            first = updates[0]
            view_ids = [u.client_id for u in updates]
            view = AttackView(
                round=first.round,
                model=model,
                client_ids=tuple(u.client_id for u in updates),
                own=own,
                num_samples=np.array([u.num_samples for u in updates], dtype=np.float64),
                observed=observed,
                num_selected=len(tasks),
                num_malicious=len(mine),
                rng=_rng(self.seed, first.round, attempt, ",".join(view_ids)),
            )
            crafted = _checked(self.attack.craft(view), own.shape, self.attack.name)
            for row, i in enumerate(group):
                out[i] = dataclasses.replace(received[i], delta=crafted[row])
        return out

    def describe(self) -> dict[str, Any]:
        return {
            **self.attack.describe(),
            "malicious": sorted(self.members),
            "colluding": self.colluding,
            "omniscient": self.omniscient,
            "start_round": self.start_round,
            "end_round": self.end_round,
        }

    def state_dict(self) -> dict[str, Any]:
        return self.attack.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.attack.load_state_dict(state)


def _checked(crafted: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    if crafted.shape != shape:
        raise ConfigError(f"attack {name} crafted shape {crafted.shape}, expected {shape}")
    return np.ascontiguousarray(crafted, dtype=np.float32)


class AdversarialClient(FederatedClient):
    """A malicious client: honest training on poisoned data, then the attack's update.

    ``data`` is poisoned once, here, with a generator keyed by (seed, client id).
    """

    def __init__(
        self,
        honest: FederatedClient,
        attack: Attack,
        num_classes: int,
        *,
        coalition: Coalition | None = None,
        seed: int = 0,
    ) -> None:
        x, y = poisoned_data(
            attack,
            honest.client_id,
            honest.data.x.numpy(),
            honest.data.y.numpy(),
            num_classes,
            seed,
        )
        super().__init__(honest.client_id, ClientData.from_numpy(x, y), holdout=honest.holdout)
        self.control = honest.control
        self.attack = attack
        self.coalition = coalition
        self.seed = seed

    def training_task(self, task: TrainTask) -> TrainTask:
        """A malicious client trains as it pleases: no policy, the task's own seed (on the
        federation's feature transform, like everyone)."""
        self.receive_transform(task.transform)
        return task

    def finalize(self, task: TrainTask, update: ClientUpdate) -> ClientUpdate:
        """A malicious client sends what it crafts: it neither clips nor adds privacy noise."""
        return update

    def handle(self, task: TrainTask, trainer: LocalTrainer) -> ClientUpdate:
        self.receive_transform(task.transform)
        if self.coalition is not None:
            # the coalition crafts after the round's updates are in (see Coalition.craft)
            return trainer.fit(self.coalition.prepare(task), self.data, self.control)
        honest = trainer.fit(self.attack.adjust_task(task), self.data, self.control)
        view = AttackView(
            round=task.round,
            model=task.weights,
            client_ids=(self.client_id,),
            own=honest.delta[None, :],
            num_samples=np.array([honest.num_samples], dtype=np.float64),
            observed=honest.delta[None, :],
            num_selected=1,
            num_malicious=1,
            rng=_rng(self.seed, task.round, task.attempt, self.client_id),
        )
        crafted = _checked(self.attack.craft(view), view.own.shape, self.attack.name)
        return dataclasses.replace(honest, delta=crafted[0])
