"""Shadow models for LiRA: the attacker retrains the federation on random halves of a pool.

LiRA (Carlini et al., IEEE S&P 2022) needs, for every candidate sample, models trained with
and without it. :func:`train_shadow_models` draws the IN sets so that every candidate is IN
for exactly half of the shadows (their "random halves" of the pool) and trains every shadow
the way the target was trained: the same architecture and initial model (the server chose
both), fedfort's :class:`~fedfort.client.LocalTrainer` with the target's local training
settings, and FedAvg over the same number of clients and rounds.

The approximation of federated training: a shadow's IN half is split IID and evenly across
``clients`` simulated clients, every client takes part in every round, and the server step is
the sample-weighted mean of the deltas times ``server_lr`` (FedAvg with a server learning
rate). Selection, dropouts, non-IID splits, robust aggregation and privacy noise of the target
run are not reproduced: the attacker models plain training, which is what a defence has to
beat. The returned statistics are :func:`~fedfort.attacks.inference.membership.logit_confidence`
of every candidate under every shadow.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fedfort.attacks.inference.membership import logit_confidence
from fedfort.client.training import ClientData, LocalTrainer
from fedfort.errors import ConfigError
from fedfort.messages import LocalTrainingConfig, TrainTask

__all__ = ["ShadowStatistics", "balanced_halves", "train_shadow_models"]


@dataclass(frozen=True)
class ShadowStatistics:
    """``phi`` (shadows, candidates) of every candidate under every shadow and ``in_mask``,
    True where the shadow trained on the candidate."""

    phi: np.ndarray
    in_mask: np.ndarray


def balanced_halves(num_shadows: int, num_candidates: int, seed: int) -> np.ndarray:
    """A (shadows, candidates) boolean mask with every candidate IN for exactly half of the
    shadows (``num_shadows`` must be even), drawn independently per candidate."""
    if num_shadows < 2 or num_shadows % 2:
        raise ConfigError(f"LiRA needs an even number of shadow models >= 2, got {num_shadows}")
    if num_candidates < 2:
        raise ConfigError("LiRA needs at least 2 candidate samples")
    rng = np.random.default_rng(seed)
    ranks = rng.random((num_shadows, num_candidates)).argsort(axis=0).argsort(axis=0)
    mask: np.ndarray = ranks < num_shadows // 2
    return mask


def _fedavg(
    trainer: LocalTrainer,
    initial: np.ndarray,
    parts: list[ClientData],
    local: LocalTrainingConfig,
    rounds: int,
    server_lr: float,
    rng: np.random.Generator,
) -> np.ndarray:
    model = initial.astype(np.float32, copy=True)
    weights = np.array([len(p) for p in parts], dtype=np.float64)
    weights /= weights.sum()
    for round_ in range(1, rounds + 1):
        step = np.zeros(model.shape, dtype=np.float64)
        for k, part in enumerate(parts):
            task = TrainTask(round_, 0, f"shadow-{k}", model, local, int(rng.integers(2**62)))
            step += weights[k] * trainer.fit(task, part).delta
        model = (model + server_lr * step).astype(np.float32)
    return model


def train_shadow_models(
    trainer: LocalTrainer,
    initial: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    *,
    num_shadows: int,
    clients: int,
    rounds: int,
    local: LocalTrainingConfig,
    server_lr: float = 1.0,
    seed: int = 0,
    threads: int = 1,
) -> ShadowStatistics:
    """Train ``num_shadows`` FedAvg shadows on balanced random halves of the pool ``(x, y)``.

    ``trainer`` wraps a model of the target's architecture (its weights are overwritten);
    ``initial`` is the target run's initial global model. Training runs on ``threads`` torch
    threads (small models train fastest on one), restored afterwards.
    """
    if threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    if x.shape[0] != y.shape[0]:
        raise ConfigError(f"pool has {x.shape[0]} samples but {y.shape[0]} labels")
    if clients < 1 or rounds < 1:
        raise ConfigError(
            f"shadow training needs clients >= 1 and rounds >= 1, got {clients}, {rounds}"
        )
    in_mask = balanced_halves(num_shadows, x.shape[0], seed)
    smallest = int(in_mask.sum(axis=1).min())
    if smallest < clients:
        raise ConfigError(
            f"a shadow's half of the pool ({smallest} samples) cannot fill {clients} clients: "
            "use a larger pool or fewer clients"
        )
    rng = np.random.default_rng([seed, 1])
    phi = np.empty(in_mask.shape, dtype=np.float64)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for s in range(num_shadows):
            idx = rng.permutation(np.flatnonzero(in_mask[s]))
            parts = [
                ClientData.from_numpy(x[chunk], y[chunk]) for chunk in np.array_split(idx, clients)
            ]
            model = _fedavg(trainer, initial, parts, local, rounds, server_lr, rng)
            phi[s] = logit_confidence(trainer, model, x, y)
    finally:
        torch.set_num_threads(previous)
    return ShadowStatistics(phi, in_mask)
