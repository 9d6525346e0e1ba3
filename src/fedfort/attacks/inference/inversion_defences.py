"""Does a defence stop gradient inversion? Attack the update as the server would see it.

:func:`evaluate_inversion_defences` trains real clients (:class:`fedfort.client.LocalTrainer`,
one digits image each, ``local_steps`` SGD steps from the global model), passes their updates
through fedfort's own privacy and secure-aggregation code, and runs the gradient-inversion
attacks of :mod:`fedfort.attacks.inference.gradient_inversion` on whatever reaches the
honest-but-curious server:

- ``none``: the raw update;
- ``clipping``: the update clipped to L2 norm ``clip_norm`` by the client
  (:func:`fedfort.client.privacy.privatize` with a clip-only directive, i.e.
  :func:`fedfort.privacy.mechanisms.clip_l2`);
- ``local_dp``: clip and Gaussian noise on the client
  (:class:`fedfort.privacy.mechanisms.LocalGaussian` through ``privatize``) at each per-round
  epsilon of ``local_epsilons``; epsilon is re-derived by fedfort's PLD accountant;
- ``distributed_dp``: the client's share of DP-FedAvg's noise, sized for a sum of
  ``distributed_clients`` updates (the directive of
  :class:`fedfort.server.privacy.PrivateAggregate` for ``placement = "distributed"``, the
  noise multiplier calibrated by :func:`fedfort.privacy.accounting.calibrate_noise_multiplier`
  with the RDP accountant for the target epsilon; the row reports the tighter PLD epsilon of
  the result). Without secure aggregation the server reads one update and its
  share, which is far less noise than the sum's epsilon assumes: the row also gives the
  epsilon of one share on its own;
- ``secure_aggregation``: ``secure_clients`` clients, each with a different image, run
  fedfort's SecAgg protocol in process (:func:`fedfort.secagg.local.run_locally` over
  :class:`~fedfort.secagg.client.MaskingClient` and :class:`~fedfort.secagg.server.MaskingServer`);
  the server inverts the unmasked *sum* and is scored against the first client's image;
- ``secure_distributed_dp``: both: every client adds its distributed-DP share, then SecAgg;
- ``central_dp``: not applicable -- the server that adds central noise sees the update before
  it does, so central DP protects the released model, not the update, from that server.

Noise comes from seeded sources (:class:`fedfort.privacy.noise.SeededNoise`), so runs are
reproducible; a real run uses the OS CSPRNG, which the attacker cannot predict either way.
The SecAgg session's fixed-point rounding uses OS randomness (errors below 1e-7 per
coordinate), the only part of the evaluation that is not bit-for-bit repeatable.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from fedfort.attacks.inference.gradient_inversion import (
    DLG,
    IDLG,
    GradientInversion,
    InvertingGradients,
)
from fedfort.attacks.inference.image_quality import mse, psnr, ssim
from fedfort.attacks.inference.inversion_results import DefenceRow, InversionReport, TrialOutcome
from fedfort.attacks.inference.observed_update import target_from_update
from fedfort.client.privacy import privatize
from fedfort.client.training import ClientData, LocalTrainer
from fedfort.data.datasets import Dataset, load_dataset
from fedfort.errors import ConfigError
from fedfort.messages import ClientPrivacy, ClientUpdate, LocalTrainingConfig, TrainTask
from fedfort.models import ModelSpec
from fedfort.params import ParamSpec
from fedfort.privacy.accounting import PrivacyEvent, calibrate_noise_multiplier, make_accountant
from fedfort.privacy.dp_fedavg import DpFedAvgPlan
from fedfort.privacy.mechanisms import LocalGaussian
from fedfort.secagg.client import MaskingClient
from fedfort.secagg.crypto import SigningKey
from fedfort.secagg.local import run_locally
from fedfort.secagg.params import MaskingParams
from fedfort.secagg.server import MaskingServer
from fedfort.secagg.session import Session
from fedfort.server.privacy import PrivateAggregate
from fedfort.server.secure import coordinate_bound

__all__ = ["DEFENCES", "InversionExperiment", "evaluate_inversion_defences"]

Defence = Literal[
    "none",
    "clipping",
    "local_dp",
    "distributed_dp",
    "secure_aggregation",
    "secure_distributed_dp",
    "central_dp",
]
DEFENCES: tuple[Defence, ...] = (
    "none",
    "clipping",
    "local_dp",
    "distributed_dp",
    "secure_aggregation",
    "secure_distributed_dp",
    "central_dp",
)
ATTACKS = ("dlg", "idlg", "inverting_gradients")
_REFERENCE_IMAGES = 200
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
        if self.distributed_clients < 2 or self.secure_clients < 2:
            raise ConfigError("distributed DP and secure aggregation need at least 2 clients")
        unknown = [d for d in self.defences if d not in DEFENCES]
        if unknown or not self.defences:
            raise ConfigError(f"unknown defences {unknown}; choose from {list(DEFENCES)}")
        bad = [a for a in self.attacks if a not in ATTACKS]
        if bad or not self.attacks:
            raise ConfigError(f"unknown attacks {bad}; choose from {list(ATTACKS)}")

    def to_json(self) -> dict[str, Any]:
        raw = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in raw.items()}


def _build_attacks(exp: InversionExperiment, seed: int) -> list[GradientInversion]:
    table: dict[str, GradientInversion] = {
        "dlg": DLG(exp.lbfgs_iterations, seed=seed),
        "idlg": IDLG(exp.lbfgs_iterations, seed=seed),
        "inverting_gradients": InvertingGradients(
            exp.adam_iterations, restarts=exp.restarts, seed=seed
        ),
    }
    return [table[name] for name in exp.attacks]


class _Federation:
    """The global model of one trial and real clients training on single images."""

    def __init__(self, exp: InversionExperiment, data: Dataset, trial: int) -> None:
        options: dict[str, Any] = {"hidden": list(exp.hidden)} if exp.model == "mlp" else {}
        self.spec = ModelSpec(exp.model, data.num_features, data.num_classes, options)
        self.exp = exp
        self.data = data
        self.trial = trial
        self.trainer = LocalTrainer(self.spec.build(seed=exp.seed + trial))
        self.weights = self.trainer.spec.flatten(self.trainer.model)

    def train(self, index: int, client: int) -> ClientUpdate:
        config = LocalTrainingConfig(epochs=self.exp.local_steps, batch_size=1, lr=self.exp.lr)
        task = TrainTask(0, self.trial, f"client-{client:03d}", self.weights, config, seed=index)
        x = self.data.x_train[index : index + 1]
        y = self.data.y_train[index : index + 1]
        return self.trainer.fit(task, ClientData.from_numpy(x, y))

    def server_model(self) -> torch.nn.Module:
        """A fresh copy of the global model, as the server holds it."""
        model = self.spec.build()
        ParamSpec.from_module(model).load(model, self.weights)
        return model


def _secure_sum(updates: Sequence[np.ndarray], bound: float, session_id: int) -> np.ndarray:
    """The sum of ``updates`` as fedfort's SecAgg server computes it (unit weights)."""
    ids = [f"client-{i:03d}" for i in range(len(updates))]
    keys = {cid: SigningKey() for cid in ids}
    directory = {cid: key.public for cid, key in keys.items()}
    session = Session("gradient-inversion", 0, session_id, os.urandom(16))
    params = MaskingParams(
        roster=tuple(ids), variant="secagg", dim=updates[0].shape[0] + 1, bound=bound
    )
    clients = {
        cid: MaskingClient(cid, session, keys[cid], directory, update, 1.0)
        for cid, update in zip(ids, updates, strict=True)
    }
    result = run_locally(MaskingServer(session, params, directory), clients).result
    if len(result.included) != len(ids):
        raise ConfigError("a client dropped out of the in-process SecAgg session")
    out: np.ndarray = result.total.astype(np.float32)
    return out


def _score(
    exp: InversionExperiment,
    fed: _Federation,
    observed: np.ndarray,
    index: int,
    reference: np.ndarray,
    in_sum: Sequence[int] = (),
) -> TrialOutcome:
    """Run every attack on ``observed``; the reconstruction closest to the image ``index``."""
    data = fed.data
    target = target_from_update(
        fed.server_model(),
        observed,
        lr=exp.lr,
        local_steps=exp.local_steps,
        input_shape=(data.num_features,),
        num_classes=data.num_classes,
        image_shape=data.image_shape,
    )
    shape = data.image_shape or (1, data.num_features)
    truth = data.x_train[index].reshape(shape)
    label = int(data.y_train[index])
    best: TrialOutcome | None = None
    per_attack: dict[str, dict[str, float]] = {}
    for attack in _build_attacks(exp, exp.seed + fed.trial):
        result = attack.invert(target)
        image = result.images[0].reshape(shape)
        score = float(ssim(truth, image)[0])
        per_attack[attack.name] = {
            "ssim": score,
            "psnr": float(psnr(truth, image)[0]),
            "label_correct": float(int(result.labels[0]) == label),
            "loss": result.loss,
            "iterations": float(result.iterations),
        }
        if best is not None and score <= best.ssim:
            continue
        others = data.x_train[list(in_sum)].reshape(-1, *shape) if in_sum else None
        best = TrialOutcome(
            image_index=index,
            true_image=truth,
            true_label=label,
            reconstruction=image,
            recovered_label=int(result.labels[0]),
            attack=attack.name,
            mse=float(mse(truth, image)[0]),
            psnr=float(psnr(truth, image)[0]),
            ssim=score,
            baseline_ssim=float(ssim(truth, result.initial[0].reshape(shape))[0]),
            reference_ssim=float(ssim(reference, np.broadcast_to(image, reference.shape)).max()),
            best_in_sum_ssim=(
                None
                if others is None
                else float(ssim(others, np.broadcast_to(image, others.shape)).max())
            ),
        )
    assert best is not None
    return dataclasses.replace(best, per_attack=per_attack)


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
class _RowPlan:
    """A row being filled: its description and how to turn clean updates into the view."""

    defence: Defence
    title: str
    parameters: dict[str, Any]
    epsilon: float | None = None
    note: str = ""
    directive: ClientPrivacy | None = None
    trials: list[TrialOutcome] = dataclasses.field(default_factory=list)


def _plan_rows(exp: InversionExperiment) -> list[_RowPlan]:
    c = exp.clip_norm
    rows: list[_RowPlan] = []
    for defence in exp.defences:
        if defence == "none":
            rows.append(_RowPlan("none", "no defence", {}))
        elif defence == "clipping":
            rows.append(
                _RowPlan(
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
                    _RowPlan(
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
                    _RowPlan(defence, title, params, epsilon=spent, note=note, directive=directive)
                )
        elif defence == "secure_aggregation":
            n = exp.secure_clients
            rows.append(
                _RowPlan(
                    "secure_aggregation",
                    f"SecAgg only ({n} clients)",
                    {"clients": n, "value_range": exp.secure_value_range},
                    note="the server inverts the sum of the clients' updates (one image each)",
                )
            )
        else:
            rows.append(_RowPlan("central_dp", "central DP", {}, note=_CENTRAL_NOTE))
    return rows


def evaluate_inversion_defences(
    exp: InversionExperiment | None = None, data: Dataset | None = None
) -> InversionReport:
    """Attack ``exp.trials`` clients' updates under every defence of ``exp``.

    ``data`` defaults to the embedded digits dataset split with ``exp.seed``; it must hold
    images with pixels in [0, 1]. Returns an :class:`InversionReport` whose rows follow
    ``exp.defences`` (one row per epsilon for the DP defences).
    """
    exp = exp or InversionExperiment()
    data = data or load_dataset("digits", seed=exp.seed)
    if data.image_shape is None:
        raise ConfigError(f"gradient inversion is scored on images; {data.name!r} has none")
    needs_sum = any(d in ("secure_aggregation", "secure_distributed_dp") for d in exp.defences)
    per_trial = exp.secure_clients if needs_sum else 1
    if exp.trials * per_trial > len(data.y_train):
        raise ConfigError(
            f"{exp.trials} trials of {per_trial} images need more than the "
            f"{len(data.y_train)} training images; lower trials or secure_clients"
        )
    rng = np.random.default_rng(exp.seed)
    picks = rng.choice(len(data.y_train), size=(exp.trials, per_trial), replace=False)
    reference = data.x_test[:_REFERENCE_IMAGES].reshape(-1, *data.image_shape)
    rows = _plan_rows(exp)
    for trial in range(exp.trials):
        fed = _Federation(exp, data, trial)
        indices = [int(i) for i in picks[trial]]
        index = indices[0]
        clean = [fed.train(i, client) for client, i in enumerate(indices)]
        for row in rows:
            if row.defence == "central_dp":
                continue
            if row.defence in ("secure_aggregation", "secure_distributed_dp"):
                directive = row.directive
                seen = [
                    privatize(u, directive, seed=i).delta
                    for u, i in zip(clean, indices, strict=True)
                ]
                bound = coordinate_bound(directive, exp.secure_value_range)
                observed = _secure_sum(seen, bound, trial)
                row.trials.append(_score(exp, fed, observed, index, reference, indices))
                continue
            observed = privatize(clean[0], row.directive, seed=index).delta
            row.trials.append(_score(exp, fed, observed, index, reference))
    return InversionReport(
        settings=exp.to_json(),
        rows=tuple(
            DefenceRow(
                defence=r.defence,
                title=r.title,
                parameters=r.parameters,
                applicable=r.defence != "central_dp",
                note=r.note,
                epsilon=r.epsilon,
                delta=exp.delta if r.epsilon is not None else None,
                trials=tuple(r.trials),
            )
            for r in rows
        ),
    )
