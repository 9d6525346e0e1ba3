"""Sample-level DP-SGD at a federated client, run through Opacus.

DP-SGD (Abadi et al., "Deep Learning with Differential Privacy", CCS 2016) trains on Poisson
samples of the client's data; every per-sample gradient is clipped to L2 norm ``C``
(``max_grad_norm``) and Gaussian noise of std ``noise_multiplier * C`` is added to each batch
sum before the SGD step. Per-sample gradients, clipping and noise come from Opacus
(Yousefpour et al., "Opacus: User-Friendly Differential Privacy Library in PyTorch", 2021):
:class:`opacus.GradSampleModule` and :class:`opacus.optimizers.DPOptimizer`.

What the reported epsilon means
-------------------------------
:class:`DpSgdLedger` is a client's own privacy ledger. Its epsilon is a **sample-level**
guarantee, **per client**: it bounds how much the sequence of models this client produced
(its updates, in every round it trained in) can reveal about any single one of *its own*
training samples, at the client's ``delta`` (:attr:`fedfort.messages.DpSgdSettings.delta`).
It composes, with the RDP accountant of the sampled Gaussian mechanism (Mironov 2017;
Mironov, Talwar and Zhang 2019), all DP-SGD steps of all rounds the client took part in.
Rounds it was not selected for cost it nothing; amplification by the server's client sampling
is not claimed. It is independent of fedfort's user-level (client-level) accounting of
DP-FedAvg, which protects a whole client's contribution and is computed at the server; the two
guarantees hold side by side, for different units of privacy.

Randomness
----------
The Poisson sampler is a ``torch.Generator`` seeded from the task seed (which a client replaces
with one from its own OS randomness, :meth:`fedfort.client.FederatedClient.training_task`).
The Gaussian noise comes from the OS CSPRNG when ``DpSgdSettings.secure_noise`` is set (the
client sets it unless its policy is ``reproducible``): :class:`fedfort.privacy.noise.SecureNoise`
(AES-256-CTR keyed from ``os.urandom``), drawn once per step for all parameters in float64
and added to the clipped sum in Opacus' noise hook (``DPOptimizer.add_noise``). A statistical
PRNG such as torch's Mersenne Twister can be reconstructed from its outputs, and its noise
then subtracted; Opacus' own ``secure_mode`` would need ``torchcsprng``, which has no build for
the torch fedfort uses. Without ``secure_noise`` (the reproducible experiment mode) the noise
comes from a second ``torch.Generator`` seeded from the task, so the same seed gives the same
model, bit for bit.

Budget
------
:func:`fedfort.privacy.dp_sgd.dp_sgd_schedule` fixes the rate and steps a client with ``n``
records takes, so a client can compute, before it trains, what the round will cost it
(:meth:`DpSgdLedger.epsilon` with ``extra``) and refuse a round that would take it past its
budget (:meth:`fedfort.client.FederatedClient.training_task`).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer
from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed
from opacus.utils.uniform_sampler import (
    UniformWithReplacementSampler,
)
from opacus.validators import ModuleValidator
from torch import nn

from fedfort.client.dp_sgd_ledger import DpSgdLedger, DpSgdStats
from fedfort.client.training import ClientData, _loss
from fedfort.errors import ConfigError
from fedfort.messages import DpSgdSettings, LocalTrainingConfig
from fedfort.privacy.dp_sgd import dp_sgd_schedule
from fedfort.privacy.noise import NoiseSource, SecureNoise

__all__ = ["DpSgdLedger", "DpSgdStats", "train_dp_sgd"]

# Attributes Opacus attaches to parameters and modules while it is active.
_PARAM_ATTRS = ("grad_sample", "_forward_counter", "_current_grad_sample", "_norm_sample")
_PARAM_ATTRS_OPTIMIZER = ("summed_grad",)
_MODULE_ATTRS = ("activations", "max_batch_len", "autograd_grad_sample_hooks")

# Opacus registers full backward hooks on the first layer, whose input needs no gradient;
# torch then warns on every backward pass although per-sample gradients are unaffected.
_HOOK_WARNING = "Full backward hook is firing when gradients are computed with respect to"


def train_dp_sgd(
    model: nn.Module, data: ClientData, config: LocalTrainingConfig, seed: int
) -> DpSgdStats:
    """Train ``model`` in place with DP-SGD (Abadi et al. 2016) through Opacus.

    Runs ``config.epochs`` epochs of ``round(1 / q)`` steps each, where ``q = batch_size / n``
    is the Poisson sampling rate (``batch_size <= 0`` or ``>= n`` means ``q = 1``). Every
    step draws a Poisson batch (each sample independently with probability ``q``; batches may
    be empty), computes per-sample gradients of ``config.loss``, clips each to
    ``config.dp_sgd.max_grad_norm``, adds Gaussian noise with std
    ``noise_multiplier * max_grad_norm`` to their sum, divides by the expected batch size
    ``q * n`` and takes one ``torch.optim.SGD`` step (``lr``, ``momentum``, ``weight_decay``).

    The sampler is seeded from ``seed``. The noise comes from the OS CSPRNG when
    ``config.dp_sgd.secure_noise`` is set, otherwise from a generator seeded from ``seed``, so
    the same seed gives the same weights (see the module docstring).

    Afterwards the model is a plain module again: Opacus' hooks and every attribute it attached
    to parameters and modules are removed, and parameter gradients are cleared, so the same
    object can be reused for the next task or for non-private training.

    Raises :class:`~fedfort.errors.ConfigError` if ``config.dp_sgd`` is ``None``, a setting is
    out of range, the client has no data, or the model has layers DP-SGD cannot train
    (BatchNorm mixes samples within a batch; use GroupNorm instead).
    """
    settings = config.dp_sgd
    if settings is None:
        raise ConfigError(
            "train_dp_sgd needs config.dp_sgd (DpSgdSettings); it is None - "
            "set noise_multiplier and max_grad_norm, or train without DP-SGD"
        )
    _check_settings(config, settings)
    n = len(data)
    if n == 0:
        raise ConfigError("DP-SGD needs at least one training sample, the client has none")
    sample_rate, steps_per_round = dp_sgd_schedule(n, config.batch_size, config.epochs)
    steps_per_epoch = steps_per_round // config.epochs
    batch = n if config.batch_size <= 0 else min(config.batch_size, n)

    was_training = model.training
    model.train()
    try:
        _check_supported(model)
    except ConfigError:
        model.train(was_training)
        raise
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        model.train(was_training)
        raise ConfigError("DP-SGD needs a model with trainable parameters")

    seeds = np.random.SeedSequence(seed % (1 << 64)).generate_state(2, dtype=np.uint64)
    sampler_gen = torch.Generator().manual_seed(int(seeds[0]))
    noise_gen = torch.Generator().manual_seed(int(seeds[1]))
    sampler = UniformWithReplacementSampler(
        num_samples=n, sample_rate=sample_rate, generator=sampler_gen, steps=steps_per_epoch
    )

    steps = 0
    loss_steps = 0
    loss_sum = torch.zeros((), dtype=torch.float64)
    gsm = GradSampleModule(model, batch_first=True, loss_reduction="mean", strict=False)
    try:
        sgd = torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
        optimizer: DPOptimizer
        if settings.secure_noise:
            optimizer = _SecureNoiseOptimizer(
                sgd,
                noise_multiplier=settings.noise_multiplier,
                max_grad_norm=settings.max_grad_norm,
                expected_batch_size=batch,
                loss_reduction="mean",
                source=SecureNoise(),
            )
        else:
            optimizer = DPOptimizer(
                sgd,
                noise_multiplier=settings.noise_multiplier,
                max_grad_norm=settings.max_grad_norm,
                expected_batch_size=batch,
                loss_reduction="mean",
                generator=noise_gen,
            )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_HOOK_WARNING, category=UserWarning)
            for _ in range(config.epochs):
                for indices in sampler:
                    idx = torch.as_tensor(indices, dtype=torch.long)
                    optimizer.zero_grad(set_to_none=True)
                    out: torch.Tensor = gsm(data.x[idx])
                    if idx.numel() > 0:
                        loss = _loss(config.loss, out, data.y[idx])
                        loss_sum += loss.detach()
                        loss_steps += 1
                    else:
                        # An empty Poisson batch: Opacus clips nothing and the step is pure
                        # noise. Backpropagate a zero loss (a mean over no samples would be
                        # NaN) so every parameter gets its empty per-sample gradient.
                        loss = out.sum() * 0.0
                    torch.autograd.backward(loss)
                    if any(getattr(p, "grad_sample", None) is None for p in params):
                        raise ConfigError(
                            "every trainable parameter must take part in the loss for DP-SGD"
                        )
                    optimizer.step()
                    steps += 1
    finally:
        _detach_opacus(model, gsm, params)
        model.train(was_training)

    train_loss = float(loss_sum) / loss_steps if loss_steps else math.nan
    return DpSgdStats(
        steps=steps,
        sample_rate=sample_rate,
        noise_multiplier=settings.noise_multiplier,
        train_loss=train_loss,
    )


class _SecureNoiseOptimizer(DPOptimizer):  # type: ignore[misc]
    """Opacus' DP optimizer with its noise hook drawing from a CSPRNG (``source``).

    Per step, one vector of ``N(0, (z C)^2)`` noise for all parameters is drawn in float64 from
    ``source`` (:class:`~fedfort.privacy.noise.SecureNoise`) and added to the clipped
    per-sample gradient sums, as :meth:`DPOptimizer.add_noise` does with torch's generator.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *, source: NoiseSource, **kw: Any) -> None:
        super().__init__(optimizer, **kw)
        self._source = source

    def add_noise(self) -> None:
        sums = [p.summed_grad for p in self.params]
        for s in sums:
            _check_processed_flag(s)
        std = self.noise_multiplier * self.max_grad_norm
        total = sum(int(s.numel()) for s in sums)
        noise = torch.from_numpy(self._source.gaussian(total, std)) if std > 0 else None
        offset = 0
        for p, s in zip(self.params, sums, strict=True):
            size = int(s.numel())
            grad = s.clone()
            if noise is not None:
                part = noise[offset : offset + size].reshape(s.shape)
                grad = (s.double() + part).to(s.dtype)
            offset += size
            p.grad = grad.view_as(p)
            _mark_as_processed(s)


def _check_settings(config: LocalTrainingConfig, settings: DpSgdSettings) -> None:
    if config.algorithm != "fedavg":
        raise ConfigError(
            f"DP-SGD supports local algorithm 'fedavg' only, got {config.algorithm!r}"
        )
    if config.epochs < 1:
        raise ConfigError(f"local epochs must be >= 1, got {config.epochs}")
    if not config.lr > 0:
        raise ConfigError(f"local lr must be > 0, got {config.lr}")
    if not (math.isfinite(settings.noise_multiplier) and settings.noise_multiplier >= 0):
        raise ConfigError(
            f"dp_sgd.noise_multiplier must be finite and >= 0, got {settings.noise_multiplier}"
        )
    if not (math.isfinite(settings.max_grad_norm) and settings.max_grad_norm > 0):
        raise ConfigError(
            f"dp_sgd.max_grad_norm must be finite and > 0, got {settings.max_grad_norm}"
        )
    if not 0 < settings.delta < 1:
        raise ConfigError(f"dp_sgd.delta must be in (0, 1), got {settings.delta}")


def _check_supported(model: nn.Module) -> None:
    """Raise ConfigError naming the layers Opacus cannot give per-sample gradients for.

    Opacus' validator only looks at layers with trainable parameters; a BatchNorm without
    affine parameters mixes the samples of a batch just the same, so it is rejected too.
    """
    errors = ModuleValidator.validate(model, strict=False)
    offending: list[str] = []
    for name, module in model.named_modules():
        validator = ModuleValidator.VALIDATORS.get(type(module))
        trainable = any(p.requires_grad for p in module.parameters(recurse=False))
        if isinstance(module, nn.modules.batchnorm._BatchNorm) or (
            validator is not None and trainable and validator(module)
        ):
            offending.append(f"{name or '<root>'} ({type(module).__name__})")
    if not errors and not offending:
        return
    batch_norm = any("BatchNorm" in entry for entry in offending)
    hint = (
        "BatchNorm mixes the samples of a batch, so per-sample gradients and DP-SGD's "
        "guarantee do not exist for it; use a model without BatchNorm, e.g. with GroupNorm "
        "(opacus.validators.ModuleValidator.fix converts one)"
        if batch_norm
        else "replace them with layers Opacus supports (see opacus.validators.ModuleValidator)"
    )
    layers = ", ".join(offending) if offending else "; ".join(str(e) for e in errors)
    raise ConfigError(f"model is not supported by DP-SGD: {layers}; {hint}")


def _detach_opacus(model: nn.Module, gsm: Any, params: list[nn.Parameter]) -> None:
    """Remove every hook and attribute Opacus added, leaving a plain module."""
    gsm._close()  # removes the hooks and the per-parameter attributes
    for p in params:
        p.grad = None
        for attr in (*_PARAM_ATTRS, *_PARAM_ATTRS_OPTIMIZER):
            if hasattr(p, attr):
                delattr(p, attr)
    for module in model.modules():
        for attr in _MODULE_ATTRS:
            if attr in module.__dict__:
                delattr(module, attr)
        if not module._backward_hooks:
            # register_full_backward_hook pins this flag; reset it so the module accepts
            # either kind of backward hook again, as a fresh module does.
            module._is_full_backward_hook = None
