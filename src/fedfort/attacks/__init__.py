"""Adversarial clients: data poisoning, model poisoning, backdoors, free-riding and replay.

Each attack wraps an honest client (:class:`AdversarialClient`) so it runs wherever a client
runs; in simulation the malicious clients form a :class:`Coalition` that may collude and see
the honest updates of the round. ``docs/attacks.md`` describes every attack and its knobs.
"""

from fedfort.attacks.adversary import AdversarialClient, Coalition, choose_malicious
from fedfort.attacks.base import ATTACK_REGISTRY, Attack, AttackKind, AttackView, register
from fedfort.attacks.config import ATTACK_NAMES, AttackConfig, build_attack
from fedfort.attacks.data_poisoning import Backdoor, LabelFlip, Trigger
from fedfort.attacks.free_riding import FreeRider, StaleReplay
from fedfort.attacks.metrics import security_summary
from fedfort.attacks.model_poisoning import (
    ALIE,
    IPM,
    GaussianNoise,
    MinMax,
    MinSum,
    SignFlip,
    alie_z,
)

__all__ = [
    "ALIE",
    "ATTACK_NAMES",
    "ATTACK_REGISTRY",
    "IPM",
    "AdversarialClient",
    "Attack",
    "AttackConfig",
    "AttackKind",
    "AttackView",
    "Backdoor",
    "Coalition",
    "FreeRider",
    "GaussianNoise",
    "LabelFlip",
    "MinMax",
    "MinSum",
    "SignFlip",
    "StaleReplay",
    "Trigger",
    "alie_z",
    "build_attack",
    "choose_malicious",
    "register",
    "security_summary",
]
