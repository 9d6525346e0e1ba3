"""The data a federation trains on, split exactly as every runtime splits it.

:func:`split_data` loads the run's embedded dataset and partitions its training split (and
carves FLTrust's root set out of it); a simulated client ``k`` and a networked client started
with ``--data partition:K`` get the same rows. :func:`partition_records` and
:func:`local_training_data` turn a client's rows into what it trains on, through its ``[edge]``
data protection (:mod:`fedfort.edge`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from fedfort.client.training import ClientData
from fedfort.config import RunConfig
from fedfort.data.datasets import Dataset, load_dataset
from fedfort.data.partition import Partition, natural_partition, partition_dataset
from fedfort.edge.records import client_training_data, with_synthetic_identifiers
from fedfort.edge.schema import Records
from fedfort.errors import ConfigError

__all__ = [
    "FederationData",
    "client_ids",
    "local_training_data",
    "partition_records",
    "split_data",
]


def _split_root(labels: np.ndarray, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Carve FLTrust's clean root dataset out of the training split (stratified, seeded)."""
    n = labels.shape[0]
    if size >= n // 2:
        raise ConfigError(
            f"defense.fltrust_root_samples = {size} would take half the {n} training samples: "
            "FLTrust needs only a small root dataset (e.g. 100)"
        )
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0x726F6F74,)))
    root = np.sort(rng.choice(n, size=size, replace=False))
    rest = np.setdiff1d(np.arange(n), root)
    return rest, root


_HOLDOUT_STREAM = 0x686F6C64  # distinguishes the hold-out draw from other seeded splits


def _holdout_split(labels: np.ndarray, share: float, seed: int, k: int) -> tuple[np.ndarray, ...]:
    """Positions (train, hold-out) of a client's rows: ``share`` of them held out, seeded by
    (run seed, client), stratified by class when every class has two rows to split."""
    n = labels.shape[0]
    if n < 2:
        raise ConfigError(
            f"client {k} has {n} row(s): it cannot keep a hold-out; lower "
            "evaluation.client_holdout or use fewer clients"
        )
    size = min(n - 1, max(1, round(share * n)))
    state = int(np.random.SeedSequence(seed, spawn_key=(_HOLDOUT_STREAM, k)).generate_state(1)[0])
    stratify = None
    if np.issubdtype(labels.dtype, np.integer):
        classes, counts = np.unique(labels, return_counts=True)
        if counts.min() >= 2 and classes.size <= min(size, n - size):
            stratify = labels
    train, held = train_test_split(
        np.arange(n), test_size=size, random_state=state, stratify=stratify
    )
    return np.sort(train), np.sort(held)


@dataclass(frozen=True)
class FederationData:
    """The embedded dataset split as a run uses it: client partitions and FLTrust's root.

    With ``holdout > 0`` (``[evaluation] client_holdout``) every client keeps that share of its
    partition as its own evaluation hold-out (:meth:`client_test_arrays`) and trains on the
    rest (:meth:`client_arrays`).
    """

    dataset: Dataset
    train_idx: np.ndarray
    root_idx: np.ndarray | None
    partition: Partition
    holdout: float = 0.0
    seed: int = 0

    def _rows(self, k: int) -> np.ndarray:
        if not 0 <= k < len(self.partition.indices):
            raise ConfigError(
                f"partition {k} does not exist: the run has {len(self.partition.indices)} clients"
            )
        idx: np.ndarray = self.train_idx[self.partition.indices[k]]
        return idx

    def client_rows(self, k: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Client ``k``'s training rows and its hold-out rows (``None`` when clients keep
        none), as indices into the dataset's training split."""
        idx = self._rows(k)
        if self.holdout <= 0:
            return idx, None
        train, held = _holdout_split(self.dataset.y_train[idx], self.holdout, self.seed, k)
        return idx[train], idx[held]

    def client_arrays(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The training rows of client ``k`` (its partition of the training split, without
        its hold-out)."""
        idx, _ = self.client_rows(k)
        return self.dataset.x_train[idx], self.dataset.y_train[idx]

    def client_test_arrays(self, k: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Client ``k``'s own evaluation hold-out, or ``None`` when clients keep none."""
        _, held = self.client_rows(k)
        if held is None:
            return None
        return self.dataset.x_train[held], self.dataset.y_train[held]


def split_data(config: RunConfig) -> FederationData:
    """Load the run's dataset and split it exactly as every runtime does (seeded)."""
    dataset = load_dataset(
        config.data.dataset,
        seed=config.seed,
        test_fraction=config.data.test_fraction,
        synthetic_samples=config.data.synthetic_samples,
        synthetic_features=config.data.synthetic_features,
        synthetic_classes=config.data.synthetic_classes,
        fedprox_alpha=config.data.fedprox_alpha,
        fedprox_beta=config.data.fedprox_beta,
        fedprox_clients=config.clients.count,
        fedprox_max_samples=config.data.fedprox_max_samples,
    )
    train_idx = np.arange(dataset.y_train.shape[0])
    root_idx: np.ndarray | None = None
    if config.defense.aggregator == "fltrust":
        train_idx, root_idx = _split_root(
            dataset.y_train, config.defense.fltrust_root_samples, config.seed
        )
    if config.data.partition == "natural":
        if dataset.train_clients is None:
            raise ConfigError(f"dataset {dataset.name!r} has no per-client split of its own")
        partition = natural_partition(
            dataset.train_clients[train_idx],
            config.clients.count,
            min_samples=config.data.min_samples_per_client,
        )
    else:
        partition = partition_dataset(
            dataset.y_train[train_idx],
            config.clients.count,
            config.data.partition,
            seed=config.seed,
            alpha=config.data.alpha,
            shards_per_client=config.data.shards_per_client,
            min_samples=config.data.min_samples_per_client,
        )
    if not config.evaluation.server:
        # the server keeps no validation set (a user without server-side data)
        dataset = dataclasses.replace(dataset, x_test=dataset.x_test[:0], y_test=dataset.y_test[:0])
    return FederationData(
        dataset, train_idx, root_idx, partition, config.evaluation.client_holdout, config.seed
    )


def partition_records(config: RunConfig, data: FederationData, k: int) -> Records:
    """Client ``k``'s records: its partition, with synthetic identifiers when configured."""
    x, y = data.client_arrays(k)
    if config.edge.enabled and config.edge.synthetic_identifiers:
        return with_synthetic_identifiers(x, y, config.seed, k)
    return Records(x, y)


def local_training_data(
    config: RunConfig,
    records: Records,
    client_id: str,
    num_classes: int,
    state_dir: str | Path | None = None,
) -> tuple[ClientData, dict[str, float]]:
    """What a client trains on, in every runtime: ``records`` through the ``[edge]`` pipeline
    (validate, mask, sanitise; see :mod:`fedfort.edge`) and its ``edge_*`` count metrics."""
    return client_training_data(
        config.edge,
        records,
        client_id=client_id,
        num_classes=num_classes,
        seed=config.seed,
        state_dir=state_dir,
    )


def client_ids(count: int) -> list[str]:
    """The federation's client ids: ``client-000``, ``client-001``, ..."""
    width = max(3, len(str(count - 1)))
    return [f"client-{i:0{width}d}" for i in range(count)]
