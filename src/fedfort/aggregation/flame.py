"""FLAME: cluster updates by direction, clip to the median norm, add a little noise."""

from __future__ import annotations

import math

import numpy as np

from fedfort.aggregation.base import AggregationResult, Aggregator, UpdateBatch, register
from fedfort.aggregation.distances import cosine_similarities, row_norms
from fedfort.aggregation.norm_bound import clip_rows
from fedfort.errors import AggregationError, ConfigError

__all__ = ["FLAME"]


@register("flame", context=("seed",), legacy=lambda d: {"noise_multiplier": d["flame_noise"]})
class FLAME(Aggregator):
    """Admit the largest cosine cluster, clip it to the median norm, average, add noise.

    Defends against backdoor (targeted poisoning) attacks. Nguyen et al., "FLAME: Taming
    Backdoors in Federated Learning", USENIX Security 2022. Three layers, as in the paper:

    1. HDBSCAN on cosine distances ``1 - cos(x_i, x_j)`` (float64) with ``min_cluster_size``
       (default ``n // 2 + 1``, so only a majority can form a cluster), ``min_samples=1`` and
       ``allow_single_cluster=True``; the largest cluster is admitted (ties: lowest label), the
       rest rejected. If HDBSCAN labels every update noise, all are admitted and
       ``clustered`` is False. With ``allow_single_cluster`` HDBSCAN labels as members only
       the updates that remain when the cluster finally falls apart, so even with no attacker
       a part of the honest updates (the least central ones) is rejected.
    2. Admitted updates are clipped to ``S_t``, the median L2 norm of *all* updates.
    3. Their unweighted mean gets Gaussian noise with std ``noise_multiplier * S_t`` (the
       paper's ``lambda * S_t``) to smooth out what remains of a backdoor. This noise
       suppresses backdoors; it is **not** a differential-privacy guarantee.

    The noise generator is seeded from ``(seed, batch.round)`` so runs are reproducible and
    retries of a round draw the same noise; with ``seed=None`` it uses fresh OS entropy.
    Anyone who knows the seed can predict the noise. Diagnostics: ``admitted``,
    ``rejected`` (client ids), ``clip_norm`` (S_t), ``noise_std``, ``clustered``.
    """

    name = "flame"

    def __init__(
        self,
        noise_multiplier: float = 0.001,
        min_cluster_size: int | None = None,
        seed: int | None = None,
    ) -> None:
        if not (math.isfinite(noise_multiplier) and noise_multiplier >= 0):
            raise ConfigError(f"noise_multiplier must be finite and >= 0, got {noise_multiplier}")
        if min_cluster_size is not None and min_cluster_size < 2:
            raise ConfigError(f"min_cluster_size must be >= 2 or unset, got {min_cluster_size}")
        if seed is not None and seed < 0:
            raise ConfigError(f"seed must be >= 0 or unset, got {seed}")
        self.noise_multiplier = noise_multiplier
        self.min_cluster_size = min_cluster_size
        self.seed = seed

    def aggregate(self, batch: UpdateBatch) -> AggregationResult:
        n = batch.num_clients
        size = n // 2 + 1 if self.min_cluster_size is None else self.min_cluster_size
        if n < 2 or size > n:
            raise AggregationError(
                f"FLAME needs at least 2 updates and at least min_cluster_size={size}, got {n}"
            )
        if batch.round < 0:
            raise AggregationError(f"FLAME needs a round number >= 0, got {batch.round}")
        from sklearn.cluster import HDBSCAN  # scikit-learn loads only when FLAME aggregates

        dist = 1.0 - cosine_similarities(batch.updates)
        np.fill_diagonal(dist, 0.0)
        np.clip(dist, 0.0, 2.0, out=dist)
        labels = (
            HDBSCAN(
                metric="precomputed",
                min_cluster_size=size,
                min_samples=1,
                allow_single_cluster=True,
                copy=True,
            )
            .fit(dist)
            .labels_
        )
        clustered = bool((labels >= 0).any())
        if clustered:
            admitted = labels == np.argmax(np.bincount(labels[labels >= 0]))
        else:
            admitted = np.ones(n, dtype=bool)
        clip_norm = float(np.median(row_norms(batch.updates)))
        clipped, _ = clip_rows(batch.updates[admitted], clip_norm)
        noise_std = self.noise_multiplier * clip_norm
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(batch.round,)))
        update = (clipped.mean(axis=0) + rng.normal(0.0, noise_std, batch.dim)).astype(np.float32)
        ids = batch.client_ids
        diagnostics = {
            "admitted": [cid for cid, a in zip(ids, admitted, strict=True) if a],
            "rejected": [cid for cid, a in zip(ids, admitted, strict=True) if not a],
            "clip_norm": clip_norm,
            "noise_std": noise_std,
            "clustered": clustered,
        }
        return AggregationResult(update, diagnostics)
