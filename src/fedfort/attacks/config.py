"""The ``[attack]`` table of a run config: which attack, its strength and who runs it.

``name`` selects the attack and decides which other keys are allowed, so a key that belongs
to another attack is refused by name. Keys common to every attack:

- ``fraction``: share of the federation's clients that are malicious (seeded choice);
- ``colluding``: malicious clients craft together (default) or each alone;
- ``omniscient``: the coalition also sees the honest updates of the round (default);
- ``start_round``: the first round in which they attack;
- ``end_round``: the last one (unset: every round from ``start_round`` on).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from fedfort.attacks.base import Attack, AttackKind
from fedfort.attacks.data_poisoning import Backdoor, LabelFlip, Trigger
from fedfort.attacks.free_riding import FreeRider, StaleReplay
from fedfort.attacks.model_poisoning import ALIE, IPM, GaussianNoise, MinMax, MinSum, SignFlip

__all__ = [
    "ATTACK_CLASSES",
    "ATTACK_NAMES",
    "AttackConfig",
    "NoAttack",
    "attack_kind",
    "build_attack",
]


class _AttackBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    fraction: float = Field(0.2, ge=0, lt=1, description="share of clients that are malicious")
    colluding: bool = True
    omniscient: bool = True
    start_round: int = Field(1, ge=1)
    end_round: int | None = Field(None, ge=1, description="last round they attack (unset: all)")


class NoAttack(_AttackBase):
    name: Literal["none"] = "none"
    fraction: float = Field(0.0, ge=0, lt=1)


class LabelFlipConfig(_AttackBase):
    name: Literal["label_flip"]
    mode: Literal["targeted", "all_to_one", "reverse"] = "targeted"
    source: int = Field(1, ge=0)
    target: int = Field(7, ge=0)


class SignFlipConfig(_AttackBase):
    name: Literal["sign_flip"]
    scale: float = Field(10.0, gt=0)


class GaussianNoiseConfig(_AttackBase):
    name: Literal["gaussian_noise"]
    sigma: float = Field(1.0, gt=0)
    mode: Literal["replace", "add"] = "replace"
    relative: bool = Field(False, description="sigma times the RMS of the global model")


class AlieConfig(_AttackBase):
    name: Literal["alie"]
    z: float | None = Field(None, gt=0, description="unset: the paper's z_max formula")


class IpmConfig(_AttackBase):
    name: Literal["ipm"]
    epsilon: float = Field(0.5, gt=0)


class MinMaxConfig(_AttackBase):
    name: Literal["min_max"]
    perturbation: Literal["unit_vec", "std", "sign"] = "unit_vec"
    gamma_init: float = Field(10.0, gt=0)


class MinSumConfig(_AttackBase):
    name: Literal["min_sum"]
    perturbation: Literal["unit_vec", "std", "sign"] = "unit_vec"
    gamma_init: float = Field(10.0, gt=0)


class BackdoorConfig(_AttackBase):
    name: Literal["backdoor"]
    target: int = Field(0, ge=0)
    trigger_size: int = Field(3, ge=1)
    trigger_value: float = 1.0
    trigger_corner: Literal["top_left", "top_right", "bottom_left", "bottom_right"] = "top_left"
    poison_fraction: float = Field(0.5, gt=0, le=1)
    boost: float = Field(1.0, ge=1, description="model-replacement scale; 1 = no boosting")
    norm_bound: float | None = Field(None, gt=0, description="constrain-and-scale bound")
    proximal_mu: float = Field(0.0, ge=0, description="anomaly term keeping the model close")
    epochs: int | None = Field(None, ge=1, description="local epochs of the attacker")


class FreeRiderConfig(_AttackBase):
    name: Literal["free_rider"]
    mode: Literal["zero", "noise"] = "zero"
    sigma: float = Field(1e-3, gt=0)


class ReplayConfig(_AttackBase):
    name: Literal["replay"]


AttackConfig = Annotated[
    NoAttack
    | LabelFlipConfig
    | SignFlipConfig
    | GaussianNoiseConfig
    | AlieConfig
    | IpmConfig
    | MinMaxConfig
    | MinSumConfig
    | BackdoorConfig
    | FreeRiderConfig
    | ReplayConfig,
    Field(discriminator="name"),
]

ATTACK_CLASSES: dict[str, type[Attack]] = {
    "label_flip": LabelFlip,
    "sign_flip": SignFlip,
    "gaussian_noise": GaussianNoise,
    "alie": ALIE,
    "ipm": IPM,
    "min_max": MinMax,
    "min_sum": MinSum,
    "backdoor": Backdoor,
    "free_rider": FreeRider,
    "replay": StaleReplay,
}
ATTACK_NAMES = ("none", *ATTACK_CLASSES)


def attack_kind(cfg: AttackConfig) -> AttackKind:
    """What kind of damage the configured attack aims at (``"none"`` without an attack)."""
    cls = ATTACK_CLASSES.get(cfg.name)
    return "none" if cls is None else cls.kind


def build_attack(cfg: AttackConfig, image_shape: tuple[int, int] | None = None) -> Attack | None:
    """The attack object for ``cfg`` (``None`` for ``name = "none"``)."""
    if isinstance(cfg, NoAttack):
        return None
    if isinstance(cfg, LabelFlipConfig):
        return LabelFlip(cfg.mode, cfg.source, cfg.target)
    if isinstance(cfg, SignFlipConfig):
        return SignFlip(cfg.scale)
    if isinstance(cfg, GaussianNoiseConfig):
        return GaussianNoise(cfg.sigma, cfg.mode, cfg.relative)
    if isinstance(cfg, AlieConfig):
        return ALIE(cfg.z)
    if isinstance(cfg, IpmConfig):
        return IPM(cfg.epsilon)
    if isinstance(cfg, MinMaxConfig):
        return MinMax(cfg.perturbation, cfg.gamma_init)
    if isinstance(cfg, MinSumConfig):
        return MinSum(cfg.perturbation, cfg.gamma_init)
    if isinstance(cfg, BackdoorConfig):
        trigger = Trigger(cfg.trigger_size, cfg.trigger_value, image_shape, cfg.trigger_corner)
        return Backdoor(
            trigger,
            cfg.target,
            poison_fraction=cfg.poison_fraction,
            boost=cfg.boost,
            norm_bound=cfg.norm_bound,
            proximal_mu=cfg.proximal_mu,
            epochs=cfg.epochs,
        )
    if isinstance(cfg, FreeRiderConfig):
        return FreeRider(cfg.mode, cfg.sigma)
    return StaleReplay()
