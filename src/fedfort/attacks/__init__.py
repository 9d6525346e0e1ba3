"""Adversarial clients: data poisoning, model poisoning, backdoors, free-riding and replay.

Each attack wraps an honest client (:class:`AdversarialClient`) so it runs wherever a client
runs; in simulation the malicious clients form a :class:`Coalition` that may collude and see
the honest updates of the round. ``docs/attacks.md`` describes every attack and its knobs.
"""

from typing import TYPE_CHECKING

from fedfort._lazy import lazy_exports

if TYPE_CHECKING:
    from fedfort.attacks.adversary import AdversarialClient, Coalition, choose_malicious
    from fedfort.attacks.base import Attack, AttackKind, AttackView
    from fedfort.attacks.config import (
        ATTACK_NAMES,
        ATTACK_REGISTRY,
        AttackConfig,
        build_attack,
        register,
    )
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

if not TYPE_CHECKING:  # type checkers see the imports above; typos stay errors
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "AdversarialClient": "fedfort.attacks.adversary",
            "Coalition": "fedfort.attacks.adversary",
            "choose_malicious": "fedfort.attacks.adversary",
            "Attack": "fedfort.attacks.base",
            "AttackKind": "fedfort.attacks.base",
            "AttackView": "fedfort.attacks.base",
            "ATTACK_NAMES": "fedfort.attacks.config",
            "AttackConfig": "fedfort.attacks.config",
            "build_attack": "fedfort.attacks.config",
            # the config module registers every attack of fedfort's
            "ATTACK_REGISTRY": "fedfort.attacks.config",
            "register": "fedfort.attacks.config",
            "Backdoor": "fedfort.attacks.data_poisoning",
            "LabelFlip": "fedfort.attacks.data_poisoning",
            "Trigger": "fedfort.attacks.data_poisoning",
            "FreeRider": "fedfort.attacks.free_riding",
            "StaleReplay": "fedfort.attacks.free_riding",
            "security_summary": "fedfort.attacks.metrics",
            "ALIE": "fedfort.attacks.model_poisoning",
            "IPM": "fedfort.attacks.model_poisoning",
            "GaussianNoise": "fedfort.attacks.model_poisoning",
            "MinMax": "fedfort.attacks.model_poisoning",
            "MinSum": "fedfort.attacks.model_poisoning",
            "SignFlip": "fedfort.attacks.model_poisoning",
            "alie_z": "fedfort.attacks.model_poisoning",
        },
        globals(),
    )
