"""The ``[attack]`` table of a run config: which attack, its strength and who runs it.

``name`` selects the attack and decides which other keys are allowed, so a key that belongs
to another attack is refused by name. ``name`` is one of fedfort's attacks, an attack a user
registered with :func:`fedfort.attacks.register`, or an import path
(``"mypkg.attacks:MyAttack"``); the other keys of the table are then that attack's options,
validated by its own schema (its constructor's keyword arguments). Keys common to every
attack:

- ``fraction``: share of the federation's clients that are malicious (seeded choice);
- ``colluding``: malicious clients craft together (default) or each alone;
- ``omniscient``: the coalition also sees the honest updates of the round (default);
- ``start_round``: the first round in which they attack;
- ``end_round``: the last one (unset: every round from ``start_round`` on).
"""

from __future__ import annotations

import inspect
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from fedfort.attacks.base import ATTACK_REGISTRY, Attack, AttackKind, register
from fedfort.attacks.data_poisoning import Backdoor, LabelFlip, Trigger
from fedfort.attacks.free_riding import FreeRider, StaleReplay
from fedfort.attacks.model_poisoning import ALIE, IPM, GaussianNoise, MinMax, MinSum, SignFlip
from fedfort.errors import ConfigError

__all__ = [
    "ATTACK_CLASSES",
    "ATTACK_NAMES",
    "ATTACK_REGISTRY",
    "AttackConfig",
    "NoAttack",
    "PluginAttackConfig",
    "attack_kind",
    "attack_options",
    "attack_spec",
    "build_attack",
    "builtin_option_keys",
    "register",
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


class PluginAttackConfig(_AttackBase):
    """An attack named by a user's registered name or an import path; the table's other keys
    are its options, validated by the attack's own schema."""

    model_config = ConfigDict(extra="allow", frozen=True, validate_default=True)

    name: str

    @model_validator(mode="after")
    def _known_attack(self) -> PluginAttackConfig:
        entry = ATTACK_REGISTRY.resolve(self.name)
        shared = sorted(_COMMON & set(entry.schema.model_fields))
        if shared:
            # the [attack] table would give these keys to the run, never to the attack
            raise ValueError(
                f"attack {self.name!r} has the option {shared[0]!r}, a key every attack's "
                f"table uses for itself ({sorted(_COMMON)}): rename the attack's option"
            )
        ATTACK_REGISTRY.options(self.name, self.options(), where=f"attack {self.name!r}")
        return self

    def options(self) -> dict[str, Any]:
        """The attack's own options (the keys that are not common to every attack)."""
        return dict(self.model_extra or {})


_BUILT_IN_CONFIGS: dict[str, type[_AttackBase]] = {
    "none": NoAttack,
    "label_flip": LabelFlipConfig,
    "sign_flip": SignFlipConfig,
    "gaussian_noise": GaussianNoiseConfig,
    "alie": AlieConfig,
    "ipm": IpmConfig,
    "min_max": MinMaxConfig,
    "min_sum": MinSumConfig,
    "backdoor": BackdoorConfig,
    "free_rider": FreeRiderConfig,
    "replay": ReplayConfig,
}


def _attack_tag(value: Any) -> str | None:
    """fedfort's own attacks validate with their config class; any other name is a plugin."""
    name = value.get("name") if isinstance(value, dict) else getattr(value, "name", None)
    if name is None:
        return None  # pydantic reports the table's missing name
    return str(name) if name in _BUILT_IN_CONFIGS else "plugin"


AttackConfig = Annotated[
    Annotated[NoAttack, Tag("none")]
    | Annotated[LabelFlipConfig, Tag("label_flip")]
    | Annotated[SignFlipConfig, Tag("sign_flip")]
    | Annotated[GaussianNoiseConfig, Tag("gaussian_noise")]
    | Annotated[AlieConfig, Tag("alie")]
    | Annotated[IpmConfig, Tag("ipm")]
    | Annotated[MinMaxConfig, Tag("min_max")]
    | Annotated[MinSumConfig, Tag("min_sum")]
    | Annotated[BackdoorConfig, Tag("backdoor")]
    | Annotated[FreeRiderConfig, Tag("free_rider")]
    | Annotated[ReplayConfig, Tag("replay")]
    | Annotated[PluginAttackConfig, Tag("plugin")],
    Discriminator(_attack_tag),
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


def _backdoor(
    trigger_size: int = 3,
    trigger_value: float = 1.0,
    trigger_corner: Literal["top_left", "top_right", "bottom_left", "bottom_right"] = "top_left",
    target: int = 0,
    poison_fraction: float = 0.5,
    boost: float = 1.0,
    norm_bound: float | None = None,
    proximal_mu: float = 0.0,
    epochs: int | None = None,
    image_shape: tuple[int, int] | None = None,
) -> Backdoor:
    """The backdoor with its trigger (the trigger's options are the attack's own keys)."""
    trigger = Trigger(trigger_size, trigger_value, image_shape, trigger_corner)
    return Backdoor(
        trigger,
        target,
        poison_fraction=poison_fraction,
        boost=boost,
        norm_bound=norm_bound,
        proximal_mu=proximal_mu,
        epochs=epochs,
    )


# fedfort's own attacks, in the one registry a user's attacks join
for _name, _cls in ATTACK_CLASSES.items():
    if _name == "backdoor":
        ATTACK_REGISTRY.register(_name, context=("image_shape",))(_backdoor)
    else:
        ATTACK_REGISTRY.register(_name)(_cls)

_COMMON = frozenset(_AttackBase.model_fields) | {"name"}


def builtin_option_keys(name: str) -> frozenset[str] | None:
    """The option keys an ``[attack]`` table of fedfort's attack ``name`` takes (``None`` for
    any other attack, whose options are its constructor's)."""
    config = _BUILT_IN_CONFIGS.get(name)
    return None if config is None else frozenset(config.model_fields) - _COMMON


def attack_spec(attack: Attack) -> tuple[str, dict[str, Any]]:
    """The ``[attack]`` name and options that rebuild ``attack`` (an attack given as an object
    to the Python API): fedfort's own attacks by the keys their table takes, the backdoor with
    its trigger's options as its own, any other attack by its recorded constructor options."""
    if type(attack) is Backdoor:
        return "backdoor", backdoor_options(attack)
    spec = ATTACK_REGISTRY.spec_of(attack)
    keys = builtin_option_keys(spec.ref)
    if keys is None:
        return spec.ref, spec.options
    # fedfort's own attack: its table takes the options a config may set; a constructor
    # argument beyond them is recorded only at its default (the value a resume rebuilds)
    defaults = inspect.signature(type(attack)).parameters
    options = {}
    for key, value in spec.options.items():
        if key in keys:
            options[key] = value
        elif value != defaults[key].default:
            raise ConfigError(
                f"attack {spec.ref!r}: option {key!r} = {value!r} cannot be set in a run's "
                f"config (its [attack] table takes {sorted(keys)}), so a resume could not "
                f"rebuild it: leave it at its default {defaults[key].default!r}"
            )
    return spec.ref, options


def backdoor_options(attack: Backdoor) -> dict[str, Any]:
    """A backdoor as the ``[attack]`` table writes it: the trigger's options are its own."""
    args = dict(attack.component_args)
    trigger: Trigger = args.pop("trigger")
    if trigger.image_shape is not None or trigger.margin != 0:
        raise ConfigError(
            "a backdoor given as an object is named by its [attack] table, which takes the "
            "trigger's size, value and corner: leave Trigger's image_shape unset (the run "
            "takes it from the dataset) and margin at 0"
        )
    options = {
        "trigger_size": trigger.size,
        "trigger_value": trigger.value,
        "trigger_corner": trigger.corner,
        **args,
    }
    return options


def attack_options(cfg: AttackConfig) -> dict[str, Any]:
    """The attack's own options of an ``[attack]`` table (its common keys apart)."""
    if isinstance(cfg, PluginAttackConfig):
        return cfg.options()
    return {k: v for k, v in cfg.model_dump().items() if k not in _COMMON}


def attack_kind(cfg: AttackConfig) -> AttackKind:
    """What kind of damage the configured attack aims at (``"none"`` without an attack)."""
    if isinstance(cfg, NoAttack):
        return "none"
    cls = ATTACK_CLASSES.get(cfg.name)
    if cls is None:
        factory = ATTACK_REGISTRY.resolve(cfg.name).factory
        return getattr(factory, "kind", "untargeted")
    return cls.kind


def build_attack(cfg: AttackConfig, image_shape: tuple[int, int] | None = None) -> Attack | None:
    """The attack object for ``cfg`` (``None`` for ``name = "none"``)."""
    if isinstance(cfg, NoAttack):
        return None
    return ATTACK_REGISTRY.build(
        cfg.name, attack_options(cfg), context={"image_shape": image_shape}
    )
