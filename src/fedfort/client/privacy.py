"""What a client does to its update before it leaves, when the server asks for privacy.

A task's :class:`~fedfort.messages.ClientPrivacy` directive says which of these apply:

- **distributed DP-FedAvg**: clip the delta to L2 norm ``C`` and add this client's share of
  the Gaussian noise, ``N(0, (z C)^2 / k)`` for ``k`` noise shares, so that the sum of ``k``
  or more updates carries at least the noise central DP-FedAvg would add (Kairouz, Liu and
  Steinke, ICML 2021, with continuous noise);
- **adaptive clipping**: report ``1[||delta|| <= C] - 1/2`` plus this client's share of the
  count's noise (Andrew et al., NeurIPS 2021);
- **local DP**: clip and noise the update so that it is private on its own -- Gaussian (L2
  clip, analytic calibration) or Laplace (L1 clip) with per-round epsilon.

Whenever a directive is present, the update also stops carrying anything else derived from
the data: the sample count is reported as 1 and local measurements such as the training loss
are withheld (they would leak outside the guarantee). Only the client's own DP-SGD epsilon,
a function of public parameters, is kept.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fedfort.errors import ConfigError
from fedfort.messages import ClientPrivacy, ClientUpdate
from fedfort.privacy.mechanisms import LocalGaussian, LocalLaplace, clip_l2
from fedfort.privacy.noise import NoiseSource, make_noise, snap, snapping_grid

__all__ = ["PUBLIC_METRICS", "noise_for", "privatize"]

# metrics a private update may carry: they depend on public parameters only
PUBLIC_METRICS = frozenset(
    {"dp_sgd_epsilon", "dp_sgd_noise_multiplier", "dp_sgd_sample_rate", "dp_sgd_steps"}
)
_NOISE_STREAM = 0x6E6F6973  # separates the client's noise stream from its training seed


def noise_for(directive: ClientPrivacy, seed: int) -> NoiseSource:
    """The client's noise source: the OS CSPRNG, or (experiments only) one seeded by the task."""
    if directive.secure_noise:
        return make_noise(True)
    stream = np.random.SeedSequence(seed, spawn_key=(_NOISE_STREAM,))
    return make_noise(False, int(stream.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)))


def privatize(
    update: ClientUpdate,
    directive: ClientPrivacy | None,
    seed: int,
    *,
    noise: NoiseSource | None = None,
) -> ClientUpdate:
    """``update`` as it may leave the client under ``directive`` (unchanged if ``None``).

    ``noise`` is the client's own noise source; without one the directive chooses
    (:func:`noise_for`), which only an experiment that trusts the server may do -- a
    :class:`~fedfort.client.FederatedClient` always passes the source of its own policy.
    """
    if directive is None:
        return update
    if noise is None:
        noise = noise_for(directive, seed)
    delta = update.delta
    indicator: float | None = None
    if directive.local == "gaussian":
        if directive.clip_norm is None:
            raise ConfigError("local DP needs a clip norm in the privacy directive")
        mech = LocalGaussian(directive.local_epsilon, directive.local_delta, directive.clip_norm)
        delta = mech.apply(delta, noise)
    elif directive.local == "laplace":
        if directive.clip_norm is None:
            raise ConfigError("local DP needs a clip norm in the privacy directive")
        delta = LocalLaplace(directive.local_epsilon, directive.clip_norm).apply(delta, noise)
    else:
        values = delta.astype(np.float64)
        norm = float(np.linalg.norm(values))
        if directive.clip_norm is not None:
            values, norm = clip_l2(values, directive.clip_norm)
            if directive.report_clipped:
                within = 0.5 if norm <= directive.clip_norm else -0.5
                indicator = within + float(noise.gaussian(1, directive.indicator_noise_std)[0])
        if directive.noise_std > 0:
            values = values + noise.gaussian(values.shape, directive.noise_std)
            values = snap(values, snapping_grid(directive.noise_std))
        delta = values.astype(np.float32)
    metrics = {k: v for k, v in update.metrics.items() if k in PUBLIC_METRICS}
    return dataclasses.replace(
        update, delta=delta, num_samples=1, metrics=metrics, clip_indicator=indicator
    )
