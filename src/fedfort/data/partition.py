"""Split a training set across clients: IID, Dirichlet label skew, or label shards.

- ``iid``: a seeded shuffle cut into near-equal parts.
- ``dirichlet``: for each class, client proportions drawn from Dirichlet(alpha) (Hsu et al.,
  2019, "Measuring the Effects of Non-Identical Data Distribution"); small alpha gives strong
  label skew. Draws are repeated (seeded) until every client holds ``min_samples``.
- ``shards``: samples sorted by label, cut into ``clients * shards_per_client`` shards, and
  each client receives that many random shards (McMahan et al., 2017, the pathological non-IID
  split of FedAvg).
- ``natural`` (:func:`natural_partition`): a federated dataset's own split, where every
  training row already names its client (e.g. ``fedprox_synthetic``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedfort.errors import DatasetError

__all__ = ["Partition", "available_partitions", "natural_partition", "partition_dataset"]

_MAX_DIRICHLET_DRAWS = 1000


@dataclass(frozen=True)
class Partition:
    """Index arrays into the training set, one per client; together they cover it exactly."""

    indices: tuple[np.ndarray, ...]

    @property
    def num_clients(self) -> int:
        return len(self.indices)

    def sizes(self) -> np.ndarray:
        return np.array([len(i) for i in self.indices], dtype=np.int64)


def natural_partition(owners: np.ndarray, num_clients: int, *, min_samples: int = 1) -> Partition:
    """The split a federated dataset carries: client ``k`` gets the rows whose owner is ``k``.

    ``owners[i]`` is the client of row ``i``. Rows keep their order within a client.
    """
    owners = np.asarray(owners, dtype=np.int64)
    if owners.size and (owners.min() < 0 or owners.max() >= num_clients):
        raise DatasetError(
            f"the dataset's own split names clients outside 0..{num_clients - 1}: it was "
            "generated for a different number of clients"
        )
    counts = np.bincount(owners, minlength=num_clients)
    if counts.min(initial=min_samples) < min_samples:
        short = int(np.flatnonzero(counts < min_samples)[0])
        raise DatasetError(
            f"client {short} of the dataset's own split has {int(counts[short])} training "
            f"samples, fewer than min_samples_per_client = {min_samples}"
        )
    order = np.argsort(owners, kind="stable")
    return Partition(tuple(np.split(order, np.cumsum(counts)[:-1])))


def available_partitions() -> list[str]:
    """Names accepted by :func:`partition_dataset`."""
    return ["dirichlet", "iid", "shards"]


def partition_dataset(
    labels: np.ndarray,
    num_clients: int,
    method: str = "iid",
    *,
    seed: int = 0,
    alpha: float = 0.5,
    shards_per_client: int = 2,
    min_samples: int = 2,
) -> Partition:
    """Split sample indices ``0..len(labels)-1`` across ``num_clients`` clients."""
    n = int(labels.shape[0])
    if num_clients < 1:
        raise DatasetError(f"need at least one client, got {num_clients}")
    if num_clients * min_samples > n:
        raise DatasetError(
            f"{num_clients} clients x {min_samples} samples each needs {num_clients * min_samples}"
            f" training samples but the dataset has {n}: use fewer clients"
        )
    if method in ("dirichlet", "shards") and np.issubdtype(labels.dtype, np.floating):
        raise DatasetError(
            f"partition {method!r} splits by class, which continuous (regression) targets "
            "have not: use partition 'iid'"
        )
    rng = np.random.default_rng(seed)
    if method == "iid":
        parts = np.array_split(rng.permutation(n), num_clients)
    elif method == "dirichlet":
        parts = _dirichlet(labels, num_clients, alpha, min_samples, rng)
    elif method == "shards":
        parts = _shards(labels, num_clients, shards_per_client, rng)
    else:
        raise DatasetError(f"unknown partition {method!r}; choose one of {available_partitions()}")
    return Partition(tuple(np.sort(p).astype(np.int64) for p in parts))


def _dirichlet(
    labels: np.ndarray,
    num_clients: int,
    alpha: float,
    min_samples: int,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    if alpha <= 0:
        raise DatasetError(f"dirichlet alpha must be > 0, got {alpha}")
    classes = np.unique(labels)
    by_class = [np.flatnonzero(labels == c) for c in classes]
    for _ in range(_MAX_DIRICHLET_DRAWS):
        owners = np.empty(labels.shape[0], dtype=np.int64)
        for idx in by_class:
            idx = rng.permutation(idx)
            props = rng.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(props)[:-1] * len(idx)).astype(np.int64)
            owners[idx] = np.repeat(np.arange(num_clients), np.diff(np.r_[0, cuts, len(idx)]))
        counts = np.bincount(owners, minlength=num_clients)
        if counts.min() >= min_samples:
            order = np.argsort(owners, kind="stable")
            return np.split(order, np.cumsum(counts)[:-1])
    raise DatasetError(
        f"could not give each of {num_clients} clients {min_samples} samples with "
        f"dirichlet alpha={alpha}: raise alpha or use fewer clients"
    )


def _shards(
    labels: np.ndarray, num_clients: int, shards_per_client: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Label-sorted shards, each client's ``shards_per_client`` shards summing to its fair share.

    Shard owners are a random permutation over the label-sorted order; a client's shards are
    sized so that its total is ``n // num_clients`` or one more, so every client meets the
    minimum that :func:`partition_dataset` checked up front.
    """
    if shards_per_client < 1:
        raise DatasetError(f"shards_per_client must be >= 1, got {shards_per_client}")
    n = labels.shape[0]
    num_shards = num_clients * shards_per_client
    if num_shards > n:
        raise DatasetError(
            f"{num_shards} shards need at least as many samples, got {n}: "
            "use fewer clients or fewer shards per client"
        )
    totals = np.full(num_clients, n // num_clients)
    totals[: n % num_clients] += 1
    owners = rng.permutation(np.repeat(np.arange(num_clients), shards_per_client))
    # the k-th shard of client c holds totals[c] // spc samples, plus one for k < totals[c] % spc
    rank = np.empty(num_shards, dtype=np.int64)
    rank[np.argsort(owners, kind="stable")] = np.tile(np.arange(shards_per_client), num_clients)
    sizes = totals[owners] // shards_per_client + (rank < totals[owners] % shards_per_client)
    order = np.argsort(labels, kind="stable")
    owner_of_sample = np.repeat(owners, sizes)
    by_owner = np.argsort(owner_of_sample, kind="stable")
    return np.split(order[by_owner], np.cumsum(totals)[:-1])
