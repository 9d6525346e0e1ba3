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
import os
from collections.abc import Sequence
from typing import Any

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
from fedfort.crypto.primitives import SigningKey
from fedfort.data.datasets import Dataset, load_dataset
from fedfort.errors import ConfigError
from fedfort.messages import ClientUpdate, LocalTrainingConfig, TrainTask
from fedfort.models import ModelSpec
from fedfort.params import ParamSpec
from fedfort.redteam.inversion_experiment import (
    DEFENCES,
    InversionExperiment,
    plan_rows,
)
from fedfort.secagg.client import MaskingClient
from fedfort.secagg.local import run_locally
from fedfort.secagg.params import MaskingParams
from fedfort.secagg.server import MaskingServer
from fedfort.secagg.session import Session
from fedfort.server.secure import coordinate_bound

__all__ = ["DEFENCES", "InversionExperiment", "evaluate_inversion_defences"]

_REFERENCE_IMAGES = 200  # held-out digits a reconstruction is also compared with


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
    params = MaskingParams(  # nobody drops out here: any roster of 3 or more is live
        roster=tuple(ids),
        variant="secagg",
        dim=updates[0].shape[0] + 1,
        bound=bound,
        dropout_fraction=0.0,
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
    rows = plan_rows(exp)
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
