"""Build the run's aggregation rule from its ``[defense]`` table, through the open registry.

A rule is named by its registered name (``fedavg``, ``median``, ``trimmed_mean``, ``krum``,
``multi_krum``, ``bulyan``, ``geometric_median``, ``centered_clipping``, ``fltrust``,
``flame``, ``foolsgold``, or a user's ``@register("my_rule")``) or by an import path
(``"mypkg.rules:MyRule"``); ``[defense.options]`` holds its options, validated by the rule's
own schema. fedfort's own rules also read their flat keys (``num_byzantine``, ``trim_ratio``...)
through their registration's ``legacy`` function. Any rule can be wrapped in norm bounding with
``norm_bound`` and in a robust learning rate with ``robust_lr_threshold`` (outermost: the sign
votes are counted on the unclipped updates); both wrappers are registered rules too
(``norm_bound``, ``robust_lr``), so a config or the Python API may nest them in any order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

# fedfort's own rules register themselves when their modules are imported
import fedfort.aggregation.bulyan
import fedfort.aggregation.centered_clipping
import fedfort.aggregation.flame
import fedfort.aggregation.foolsgold
import fedfort.aggregation.geometric_median
import fedfort.aggregation.krum
import fedfort.aggregation.mean
import fedfort.aggregation.median
import fedfort.aggregation.norm_bound
import fedfort.aggregation.robust_lr
import fedfort.aggregation.trimmed_mean  # noqa: F401
from fedfort.aggregation.base import AGGREGATOR_REGISTRY, Aggregator, register
from fedfort.aggregation.fltrust import FLTrust
from fedfort.errors import ConfigError
from fedfort.registry import REF

__all__ = [
    "AGGREGATORS",
    "AGGREGATOR_REGISTRY",
    "aggregator_spec",
    "build_aggregator",
    "make_aggregator",
    "register",
    "rules",
]


def rules() -> tuple[str, ...]:
    """Registered rules that stand alone (wrappers such as ``norm_bound`` apart)."""
    return tuple(
        name
        for name in AGGREGATOR_REGISTRY.names()
        if not getattr(AGGREGATOR_REGISTRY.resolve(name).factory, "wrapper", False)
    )


def aggregator_spec(defense: Mapping[str, Any]) -> dict[str, Any]:
    """The nested component spec (``{"ref": ..., "options": ...}``) of a ``[defense]`` table."""
    ref = str(defense.get("aggregator", "fedavg"))
    num_byzantine = defense.get("num_byzantine", 0)
    if num_byzantine < 0:
        raise ConfigError(f"num_byzantine must be >= 0, got {num_byzantine}")
    entry = AGGREGATOR_REGISTRY.resolve(ref)
    options = dict(entry.legacy(defense)) if entry.legacy is not None else {}
    options.update(defense.get("options") or {})
    spec: dict[str, Any] = {REF: ref, "options": options}
    norm_bound = defense.get("norm_bound")
    if norm_bound is not None:
        if not norm_bound > 0 or not math.isfinite(norm_bound):
            raise ConfigError(f"norm_bound must be a positive number, got {norm_bound}")
        spec = {REF: "norm_bound", "options": {"inner": spec, "max_norm": norm_bound}}
    threshold = defense.get("robust_lr_threshold")
    if threshold is not None:
        spec = {REF: "robust_lr", "options": {"inner": spec, "threshold": threshold}}
    return spec


def build_aggregator(
    defense: Mapping[str, Any],
    *,
    seed: int = 0,
    server_update: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Aggregator:
    """The rule a ``[defense]`` table (as a dict) names, built with the run's context."""
    spec = aggregator_spec(defense)
    context: dict[str, Any] = {"seed": seed}
    if server_update is not None:
        context["server_update"] = server_update
    rule = AGGREGATOR_REGISTRY.build(spec[REF], spec["options"], context=context)
    if isinstance(rule, FLTrust) and rule.server_update is None:
        raise ConfigError("FLTrust needs the server's root dataset (a server_update function)")
    return rule


def make_aggregator(
    name: str,
    *,
    num_byzantine: int = 0,
    trim_ratio: float = 0.1,
    norm_bound: float | None = None,
    robust_lr_threshold: int | None = None,
    centered_clipping_tau: float = 1.0,
    centered_clipping_iterations: int = 1,
    flame_noise: float = 0.001,
    server_update: Callable[[np.ndarray], np.ndarray] | None = None,
    seed: int = 0,
) -> Aggregator:
    """Build the rule ``name`` from fedfort's flat ``[defense]`` keys (optionally wrapped)."""
    defense = {
        "aggregator": name,
        "num_byzantine": num_byzantine,
        "trim_ratio": trim_ratio,
        "norm_bound": norm_bound,
        "robust_lr_threshold": robust_lr_threshold,
        "centered_clipping_tau": centered_clipping_tau,
        "centered_clipping_iterations": centered_clipping_iterations,
        "flame_noise": flame_noise,
    }
    return build_aggregator(defense, seed=seed, server_update=server_update)


#: fedfort's own rules (a user's registered rules are listed by :func:`rules`)
AGGREGATORS: tuple[str, ...] = rules()
