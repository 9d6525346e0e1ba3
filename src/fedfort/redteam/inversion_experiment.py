"""The settings of a gradient-inversion defence evaluation and the rows it fills.

:class:`InversionExperiment` holds every knob of
:func:`fedfort.redteam.privacy_inversion.evaluate_inversion_defences`;
:func:`plan_rows` turns it into one row per defence setting, with the privacy directive the
clients apply (built by fedfort's own :class:`~fedfort.server.privacy.PrivateAggregate` for
distributed DP) and the epsilon fedfort's accountant gives it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

from fedfort.attacks.inference.inversion_results import TrialOutcome
from fedfort.errors import ConfigError
from fedfort.messages import ClientPrivacy
from fedfort.privacy.accounting import PrivacyEvent, calibrate_noise_multiplier, make_accountant
from fedfort.privacy.dp_fedavg import DpFedAvgPlan
from fedfort.privacy.mechanisms import LocalGaussian
from fedfort.server.privacy import PrivateAggregate

__all__ = ["ATTACKS", "DEFENCES", "Defence", "InversionExperiment", "RowPlan", "plan_rows"]

Defence = Literal[
    "none",
    "clipping",
    "local_dp",
    "distributed_dp",
    "secure_aggregation",
    "secure_distributed_dp",
    "central_dp",
]
DEFENCES: tuple[Defence, ...] = get_args(Defence)
ATTACKS = ("dlg", "idlg", "inverting_gradients")
_CENTRAL_NOTE = (
    "not applicable: the server sees the update before it adds noise; central DP protects "
    "the released model from everyone else, not the update from the server that noises it"
)


@dataclass(frozen=True)
class InversionExperiment:
    """Settings of one evaluation (every field has a default that runs in seconds).

    The global model is ``model`` (``mlp`` with ``hidden`` widths, or ``logreg``) at its seeded
    initialisation, one per trial; each trial attacks a different digits training image.
    Clients train ``local_steps`` SGD steps of batch 1 at ``lr``. ``clip_norm`` bounds the
    update for every clipping defence (the default 0.1 is below the 0.2-0.3 norm of a one-step
    update, so clipping is active). Attacks are named in ``attacks``; ``lbfgs_iterations``
    drive DLG and iDLG, ``adam_iterations`` and ``restarts`` Inverting Gradients.
    """

    model: Literal["mlp", "logreg"] = "mlp"
    hidden: tuple[int, ...] = (64,)
    trials: int = 10
    lr: float = 0.1
    local_steps: int = 1
    clip_norm: float = 0.1
    delta: float = 1e-5
    local_epsilons: tuple[float, ...] = (1.0, 8.0)
    distributed_epsilons: tuple[float, ...] = (1.0, 8.0)
    distributed_clients: int = 10
    secure_clients: int = 10
    secure_value_range: float = 1.0
    defences: tuple[Defence, ...] = DEFENCES
    attacks: tuple[str, ...] = ATTACKS
    lbfgs_iterations: int = 100
    adam_iterations: int = 200
    restarts: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.model not in ("mlp", "logreg"):
            raise ConfigError(f"model must be 'mlp' or 'logreg', got {self.model!r}")
        for name in ("trials", "local_steps", "lbfgs_iterations", "adam_iterations", "restarts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("lr", "clip_norm", "secure_value_range"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
        if not 0.0 < self.delta < 1.0:
            raise ConfigError(f"delta must be in (0, 1), got {self.delta!r}")
        for eps in (*self.local_epsilons, *self.distributed_epsilons):
            if not (math.isfinite(eps) and eps > 0):
                raise ConfigError(f"every epsilon must be a finite number > 0, got {eps!r}")
        if self.distributed_clients < 2:
            raise ConfigError("distributed DP needs at least 2 clients")
        if self.secure_clients < 3:
            raise ConfigError(
                "secure aggregation needs at least 3 clients (a client refuses smaller sessions)"
            )
        unknown = [d for d in self.defences if d not in DEFENCES]
        if unknown or not self.defences:
            raise ConfigError(f"unknown defences {unknown}; choose from {list(DEFENCES)}")
        bad = [a for a in self.attacks if a not in ATTACKS]
        if bad or not self.attacks:
            raise ConfigError(f"unknown attacks {bad}; choose from {list(ATTACKS)}")

    def to_json(self) -> dict[str, Any]:
        raw = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in raw.items()}


def _epsilon(event: PrivacyEvent, delta: float, accountant: Literal["rdp", "pld"]) -> float:
    ledger = make_accountant(accountant)
    ledger.compose(event)
    return ledger.epsilon(delta)


def _distributed_directive(
    exp: InversionExperiment, epsilon: float, clients: int
) -> tuple[ClientPrivacy, float, float]:
    """The clients' directive for a distributed round of ``clients`` at per-round ``epsilon``;
    also the accounted epsilon of the sum and the noise multiplier."""

    def plan_for(z: float) -> DpFedAvgPlan:
        return DpFedAvgPlan("distributed", z, clients, "fixed", sample_size=clients)

    z = calibrate_noise_multiplier(
        epsilon, exp.delta, 1, lambda m: plan_for(m).round_event(), accountant="rdp"
    )
    plan = plan_for(z)
    stage = PrivateAggregate(plan, exp.clip_norm, secure=False, seed=exp.seed)
    return stage.directive(), _epsilon(plan.round_event(), exp.delta, "pld"), z


@dataclass
class RowPlan:
    """A row being filled: its description and how to turn clean updates into the view."""

    defence: Defence
    title: str
    parameters: dict[str, Any]
    epsilon: float | None = None
    note: str = ""
    directive: ClientPrivacy | None = None
    trials: list[TrialOutcome] = dataclasses.field(default_factory=list)


def plan_rows(exp: InversionExperiment) -> list[RowPlan]:
    c = exp.clip_norm
    rows: list[RowPlan] = []
    for defence in exp.defences:
        if defence == "none":
            rows.append(RowPlan("none", "no defence", {}))
        elif defence == "clipping":
            rows.append(
                RowPlan(
                    "clipping",
                    f"clipping only (C={c:g})",
                    {"clip_norm": c},
                    directive=ClientPrivacy(clip_norm=c, secure_noise=False),
                    note="clipping rescales the update; it adds no noise and promises no DP",
                )
            )
        elif defence == "local_dp":
            for eps in exp.local_epsilons:
                mech = LocalGaussian(eps, exp.delta, c)
                event = PrivacyEvent("gaussian", mech.noise_multiplier)
                rows.append(
                    RowPlan(
                        "local_dp",
                        f"local DP (eps={eps:g})",
                        {"target_epsilon": eps, "clip_norm": c, "noise_std": mech.std},
                        epsilon=_epsilon(event, exp.delta, "pld"),
                        note="per-round epsilon of the single update (PLD accountant)",
                        directive=ClientPrivacy(
                            clip_norm=c,
                            local="gaussian",
                            local_epsilon=eps,
                            local_delta=exp.delta,
                            secure_noise=False,
                        ),
                    )
                )
        elif defence in ("distributed_dp", "secure_distributed_dp"):
            n = exp.distributed_clients if defence == "distributed_dp" else exp.secure_clients
            for eps in exp.distributed_epsilons:
                directive, spent, z = _distributed_directive(exp, eps, n)
                params: dict[str, Any] = {
                    "target_epsilon": eps,
                    "clip_norm": c,
                    "clients": n,
                    "noise_multiplier": z,
                    "share_noise_std": directive.noise_std,
                }
                if defence == "distributed_dp":
                    alone = PrivacyEvent("gaussian", directive.noise_std / (2.0 * c))
                    params["epsilon_of_one_share_alone"] = _epsilon(alone, exp.delta, "rdp")
                    title = f"distributed DP, no SecAgg (eps={eps:g}, {n} shares)"
                    note = (
                        f"epsilon is that of the sum of {n} shares (PLD); without secure "
                        "aggregation the server reads one update and its share, whose own "
                        "epsilon (RDP, sensitivity 2C) is epsilon_of_one_share_alone"
                    )
                else:
                    title = f"SecAgg + distributed DP (eps={eps:g}, {n} clients)"
                    note = f"per-round epsilon of the released sum of {n} updates (PLD)"
                rows.append(
                    RowPlan(defence, title, params, epsilon=spent, note=note, directive=directive)
                )
        elif defence == "secure_aggregation":
            n = exp.secure_clients
            rows.append(
                RowPlan(
                    "secure_aggregation",
                    f"SecAgg only ({n} clients)",
                    {"clients": n, "value_range": exp.secure_value_range},
                    note="the server inverts the sum of the clients' updates (one image each)",
                )
            )
        else:
            rows.append(RowPlan("central_dp", "central DP", {}, note=_CENTRAL_NOTE))
    return rows
