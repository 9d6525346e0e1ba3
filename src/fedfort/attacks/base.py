"""What every adversarial client behaviour implements.

An :class:`Attack` describes how a malicious client deviates from the protocol, at the three
points where a client can deviate:

1. **its data** (:meth:`Attack.poison_data`), once, before any training: label flipping and
   backdoor triggers;
2. **how it trains** (:meth:`Attack.adjust_task`), every round: more local epochs, a proximal
   term that keeps a backdoored model close to the global one;
3. **what it sends** (:meth:`Attack.craft`), every round: the update it submits instead of
   the honest one, computed with vectorised operations over the coalition's ``(m, d)`` matrix
   and what the coalition can observe of the round (:class:`AttackView`).

Attacks are plain picklable objects, so the same instance works in-process, in worker
processes and, wrapped in :class:`~fedfort.attacks.adversary.AdversarialClient`, behind a
network client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from fedfort.messages import TrainTask
from fedfort.registry import Component, Registry

__all__ = ["ATTACK_REGISTRY", "Attack", "AttackKind", "AttackView", "register"]

AttackKind = Literal["none", "untargeted", "backdoor", "data_poisoning", "free_rider", "replay"]


@dataclass(frozen=True)
class AttackView:
    """What a group of colluding malicious clients knows when it crafts one round's updates.

    ``own`` holds the updates the group's members computed honestly on their (possibly
    poisoned) data. ``observed`` is the benign reference the group estimates statistics
    from: the honest clients' updates of the round for an omniscient coalition (the setting
    of the ALIE, IPM and Min-Max papers), otherwise ``own`` itself. ``num_selected`` is the
    number of clients taking part in the round and ``num_malicious`` the coalition's size in
    it (both enter ALIE's choice of ``z``).
    """

    round: int
    model: np.ndarray
    client_ids: tuple[str, ...]
    own: np.ndarray
    num_samples: np.ndarray
    observed: np.ndarray
    num_selected: int
    num_malicious: int
    rng: np.random.Generator

    @property
    def dim(self) -> int:
        return int(self.own.shape[1])


class Attack(Component):
    """A malicious client behaviour. Every hook defaults to honest behaviour.

    The extension contract is this class: override the hooks the attack needs, register it
    with :func:`register` (or name it in a config's ``[attack]`` by import path); its options
    are its constructor's keyword arguments.
    """

    name: str = "attack"
    kind: AttackKind = "untargeted"
    #: whether the crafted update depends on the statistics of other clients' updates
    uses_statistics: bool = False

    def poison_data(
        self, x: np.ndarray, y: np.ndarray, num_classes: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """The client's training data as the attacker uses it (default: unchanged)."""
        return x, y

    def adjust_task(self, task: TrainTask) -> TrainTask:
        """The local training the attacker actually runs for ``task`` (default: as asked)."""
        return task

    def craft(self, view: AttackView) -> np.ndarray:
        """The ``(m, d)`` updates the group submits (default: its honest updates)."""
        return view.own

    def describe(self) -> dict[str, Any]:
        """Parameters for reports."""
        return {"name": self.name, "kind": self.kind}

    def state_dict(self) -> dict[str, Any]:
        """State carried across rounds (checkpointed with the simulation)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


#: every attack, fedfort's own and the user's, by name
ATTACK_REGISTRY: Registry[Attack] = Registry("attack", Attack)
#: class decorator: ``@register("my_attack")`` (see :class:`fedfort.registry.Registry`)
register = ATTACK_REGISTRY.register
