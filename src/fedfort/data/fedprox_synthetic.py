"""Synthetic(alpha, beta): the heterogeneous federated data of the FedProx paper.

Li, Sahu, Zaheer, Sanjabi, Talwalkar and Smith, "Federated Optimization in Heterogeneous
Networks", MLSys 2020, section 5.1 and appendix C.1. Every client ``k`` has its own softmax
regression model and its own input distribution:

- model: ``W_k ~ N(u_k, 1)`` (60 x 10) and ``b_k ~ N(u_k, 1)`` (10), with ``u_k ~ N(0, alpha)``;
- inputs: ``x ~ N(v_k, Sigma)``, ``Sigma`` diagonal with ``Sigma_jj = j^-1.2``, and
  ``v_k ~ N(B_k, 1)`` elementwise with ``B_k ~ N(0, beta)``;
- label: ``y = argmax(softmax(W_k^T x + b_k))``.

``alpha`` controls how much the clients' models differ, ``beta`` how much their data differ;
Synthetic(0, 0) is the paper's mildest heterogeneous setting, Synthetic(1, 1) its hardest. As in
the paper's reference generator, ``alpha`` and ``beta`` are the standard deviations passed to
the normal draws (the paper writes ``N(0, alpha)``; the two readings agree at 0 and 1).

The number of samples per client follows the paper's power law: the reference generator draws
``lognormal(4, 2) + 50``; here the count is also capped at ``max_samples`` so that thousands of
clients stay small (the cap is the only departure). Each client's samples are split into its
training rows and held-out rows (``test_fraction``); the held-out rows of all clients form the
server's test set, and every training row remembers its client, which is the dataset's natural
federated split.

Generation is vectorised and seeded: normal draws for all clients at once, then the labels of
all samples by batched matrix products over clients bucketed by sample count (see
:func:`_labels`); no Python loop runs over samples or clients.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedfort.errors import DatasetError

__all__ = [
    "FEDPROX_CLASSES",
    "FEDPROX_FEATURES",
    "FedProxSynthetic",
    "generate_fedprox_synthetic",
]

FEDPROX_FEATURES = 60
FEDPROX_CLASSES = 10
_STREAM = 0x66707378  # distinguishes this generator's draws from other seeded streams
_CHUNK_ROWS = 16_384  # rows per logits chunk: bounds the gathered (rows, 60, 10) block


@dataclass(frozen=True)
class FedProxSynthetic:
    """Generated Synthetic(alpha, beta) data: training rows with their client, test rows."""

    x_train: np.ndarray
    y_train: np.ndarray
    train_clients: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _sample_counts(rng: np.random.Generator, clients: int, max_samples: int) -> np.ndarray:
    """Samples per client: the reference power law ``lognormal(4, 2) + 50``, capped."""
    counts = np.floor(rng.lognormal(4.0, 2.0, size=clients)).astype(np.int64) + 50
    return np.minimum(counts, max_samples)


def _labels(x: np.ndarray, counts: np.ndarray, weights: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """``argmax(x W_k + b_k)`` for every row, each row under its own client's model.

    Clients are bucketed by their sample count rounded up to a power of two; a bucket's
    clients are padded to that length and multiplied in one batched ``matmul`` with their
    ``W_k`` (at most twice the rows of work, in blocks of about ``_CHUNK_ROWS`` rows).
    """
    starts = np.cumsum(counts) - counts
    lengths = 1 << np.ceil(np.log2(np.maximum(counts, 1))).astype(np.int64)
    y = np.empty(x.shape[0], dtype=np.int64)
    for length in np.unique(lengths):
        members = np.flatnonzero(lengths == length)
        per_block = max(1, _CHUNK_ROWS // int(length))
        pos = np.arange(length, dtype=np.int64)
        for begin in range(0, members.size, per_block):
            ks = members[begin : begin + per_block]
            valid = pos[None, :] < counts[ks, None]
            rows = np.where(valid, starts[ks, None] + pos[None, :], starts[ks, None])
            logits = np.matmul(x[rows], weights[ks]) + bias[ks, None, :]
            y[rows[valid]] = logits.argmax(axis=2)[valid]
    return y


def generate_fedprox_synthetic(
    clients: int,
    *,
    alpha: float = 1.0,
    beta: float = 1.0,
    max_samples: int = 1000,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> FedProxSynthetic:
    """Generate Synthetic(``alpha``, ``beta``) for ``clients`` clients (seeded, vectorised)."""
    if clients < 1:
        raise DatasetError(f"fedprox_synthetic needs at least 1 client, got {clients}")
    if alpha < 0 or beta < 0:
        raise DatasetError(f"fedprox_synthetic alpha and beta must be >= 0, got {alpha}, {beta}")
    if not 0.0 < test_fraction < 1.0:
        raise DatasetError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if max_samples < 2 or int(max_samples * (1 - test_fraction)) < 1:
        raise DatasetError(
            f"fedprox_synthetic max_samples = {max_samples} leaves no training rows: raise it"
        )
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_STREAM,)))
    d, c = FEDPROX_FEATURES, FEDPROX_CLASSES
    counts = _sample_counts(rng, clients, max_samples)
    u = rng.normal(0.0, alpha, size=clients)
    big_b = rng.normal(0.0, beta, size=clients)
    weights = rng.normal(u[:, None, None], 1.0, size=(clients, d, c)).astype(np.float32)
    bias = rng.normal(u[:, None], 1.0, size=(clients, c)).astype(np.float32)
    means = rng.normal(big_b[:, None], 1.0, size=(clients, d)).astype(np.float32)
    # sqrt of Sigma_jj = j^-1.2
    scale = (np.arange(1, d + 1, dtype=np.float64) ** -0.6).astype(np.float32)

    owner = np.repeat(np.arange(clients, dtype=np.int64), counts)
    total = int(counts.sum())
    x = rng.standard_normal(size=(total, d), dtype=np.float32)
    x *= scale
    x += means[owner]
    y = _labels(x, counts, weights, bias)

    # the last floor(test_fraction * n_k) rows of every client are held out for the server
    n_test = np.floor(counts * test_fraction).astype(np.int64)
    starts = np.cumsum(counts) - counts
    position = np.arange(total, dtype=np.int64) - starts[owner]
    held_out = position >= (counts - n_test)[owner]
    train = ~held_out
    return FedProxSynthetic(
        x_train=np.ascontiguousarray(x[train]),
        y_train=np.ascontiguousarray(y[train]),
        train_clients=np.ascontiguousarray(owner[train]),
        x_test=np.ascontiguousarray(x[held_out]),
        y_test=np.ascontiguousarray(y[held_out]),
    )
