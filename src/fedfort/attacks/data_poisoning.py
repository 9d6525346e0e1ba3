"""Data poisoning: label flipping and backdoor triggers, applied to the attacker's own data.

- :class:`LabelFlip` (Tolpegin et al., "Data Poisoning Attacks Against Federated Learning
  Systems", ESORICS 2020): ``targeted`` relabels every sample of class ``source`` as
  ``target``; ``all_to_one`` relabels every sample as ``target``; ``reverse`` maps class ``c``
  to ``C - 1 - c``.
- :class:`Backdoor` (Bagdasaryan et al., "How To Backdoor Federated Learning", AISTATS 2020):
  a share of the attacker's samples gets a pixel-pattern :class:`Trigger` and the target
  label, so the trained model maps any triggered input to the target while clean accuracy
  stays intact. Three strengths:

  * plain data poisoning (``boost = 1``): the poisoned update is sent as trained;
  * boosting / model replacement: the update is scaled by ``boost`` (the paper's
    ``gamma = n / eta``) so it survives averaging with the honest updates;
  * constrain-and-scale: local training adds a proximal "anomaly" term ``mu/2 ||w - G||^2``
    that keeps the backdoored model near the global one, and the boosted update is scaled
    down to ``norm_bound`` so a server that bounds update norms sees nothing over its bound.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from fedfort.attacks.base import Attack, AttackKind, AttackView
from fedfort.errors import ConfigError
from fedfort.messages import TrainTask

__all__ = ["Backdoor", "LabelFlip", "Trigger"]

FlipMode = Literal["targeted", "all_to_one", "reverse"]


def _check_class(label: int, num_classes: int, what: str) -> None:
    if not 0 <= label < num_classes:
        raise ConfigError(f"{what} {label} is not a class of 0..{num_classes - 1}")


class LabelFlip(Attack):
    """Relabel the attacker's samples; the update is then trained honestly on them."""

    name = "label_flip"
    kind: AttackKind = "data_poisoning"

    def __init__(self, mode: FlipMode = "targeted", source: int = 1, target: int = 7) -> None:
        if mode not in ("targeted", "all_to_one", "reverse"):
            raise ConfigError(f"label_flip mode must be targeted, all_to_one or reverse: {mode}")
        if mode == "targeted" and source == target:
            raise ConfigError("a targeted label flip needs source != target")
        self.mode = mode
        self.source = source
        self.target = target

    def poison_data(
        self, x: np.ndarray, y: np.ndarray, num_classes: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        used = {"targeted": (self.source, self.target), "all_to_one": (self.target,)}
        for label in used.get(self.mode, ()):
            _check_class(label, num_classes, "label_flip label")
        if self.mode == "targeted":
            flipped = np.where(y == self.source, self.target, y)
        elif self.mode == "all_to_one":
            flipped = np.full_like(y, self.target)
        else:
            flipped = num_classes - 1 - y
        return x, flipped.astype(y.dtype)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "mode": self.mode,
            "source": self.source,
            "target": self.target,
        }


TriggerCorner = Literal["top_left", "top_right", "bottom_left", "bottom_right"]


@dataclass(frozen=True)
class Trigger:
    """A ``size x size`` square of value ``value`` in a corner of an image.

    For images (``image_shape``) the square sits ``margin`` pixels from ``corner`` (the
    top-left corner by default, where the pixel pattern of Bagdasaryan et al. sits); for
    tabular data it is the last ``size * size`` features.
    """

    size: int = 3
    value: float = 1.0
    image_shape: tuple[int, int] | None = None
    corner: TriggerCorner = "top_left"
    margin: int = 0

    def indices(self, num_features: int) -> np.ndarray:
        """Flat feature indices the trigger overwrites."""
        if self.size < 1:
            raise ConfigError(f"trigger size must be >= 1, got {self.size}")
        if self.image_shape is None:
            if self.size * self.size >= num_features:
                raise ConfigError(
                    f"a {self.size}x{self.size} trigger covers all {num_features} features"
                )
            return np.arange(num_features - self.size * self.size, num_features)
        h, w = self.image_shape
        if h * w != num_features:
            raise ConfigError(f"image shape {self.image_shape} does not match {num_features}")
        if self.size + self.margin > min(h, w):
            raise ConfigError(f"a {self.size}x{self.size} trigger does not fit in {h}x{w}")
        top = self.margin if self.corner.startswith("top") else h - self.margin - self.size
        left = self.margin if self.corner.endswith("left") else w - self.margin - self.size
        rows = np.arange(top, top + self.size)
        cols = np.arange(left, left + self.size)
        return (rows[:, None] * w + cols[None, :]).ravel()

    def apply(self, x: np.ndarray) -> np.ndarray:
        """A copy of the ``(n, features)`` inputs ``x`` with the trigger stamped in."""
        out = np.array(x, dtype=x.dtype, copy=True)
        out[:, self.indices(x.shape[1])] = self.value
        return out


class Backdoor(Attack):
    """Plant ``trigger -> target``; optionally boost and constrain the update."""

    name = "backdoor"
    kind: AttackKind = "backdoor"

    def __init__(
        self,
        trigger: Trigger,
        target: int = 0,
        *,
        poison_fraction: float = 0.5,
        boost: float = 1.0,
        norm_bound: float | None = None,
        proximal_mu: float = 0.0,
        epochs: int | None = None,
    ) -> None:
        if not 0.0 < poison_fraction <= 1.0:
            raise ConfigError(f"poison_fraction must be in (0, 1], got {poison_fraction}")
        if boost < 1.0:
            raise ConfigError(f"boost must be >= 1, got {boost}")
        if norm_bound is not None and not norm_bound > 0:
            raise ConfigError(f"norm_bound must be > 0, got {norm_bound}")
        if proximal_mu < 0 or (epochs is not None and epochs < 1):
            raise ConfigError("proximal_mu must be >= 0 and epochs >= 1")
        self.trigger = trigger
        self.target = target
        self.poison_fraction = poison_fraction
        self.boost = boost
        self.norm_bound = norm_bound
        self.proximal_mu = proximal_mu
        self.epochs = epochs

    def poison_data(
        self, x: np.ndarray, y: np.ndarray, num_classes: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        _check_class(self.target, num_classes, "backdoor target")
        n = y.shape[0]
        count = max(1, round(self.poison_fraction * n))
        chosen = rng.choice(n, size=count, replace=False)
        x_out = np.array(x, copy=True)
        y_out = np.array(y, copy=True)
        x_out[chosen] = self.trigger.apply(x[chosen])
        y_out[chosen] = self.target
        return x_out, y_out

    def adjust_task(self, task: TrainTask) -> TrainTask:
        cfg = task.config
        changes: dict[str, Any] = {}
        if self.epochs is not None:
            changes["epochs"] = self.epochs
        if self.proximal_mu > 0 and cfg.algorithm in ("fedavg", "fedprox"):
            changes.update(algorithm="fedprox", mu=self.proximal_mu)
        if not changes:
            return task
        return dataclasses.replace(task, config=dataclasses.replace(cfg, **changes))

    def craft(self, view: AttackView) -> np.ndarray:
        out = view.own * np.float32(self.boost)
        if self.norm_bound is not None:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out = out * np.minimum(1.0, self.norm_bound / np.maximum(norms, 1e-12))
        return out.astype(np.float32, copy=False)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "target": self.target,
            "trigger_size": self.trigger.size,
            "poison_fraction": self.poison_fraction,
            "boost": self.boost,
            "norm_bound": self.norm_bound,
            "proximal_mu": self.proximal_mu,
        }
