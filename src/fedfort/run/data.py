"""The data a federation trains on, split exactly as every runtime splits it.

:func:`split_data` loads the run's embedded dataset and partitions its training split (and
carves FLTrust's root set out of it); a simulated client ``k`` and a networked client started
with ``--data partition:K`` get the same rows. With ``[data] source = "files"`` every client's
rows come from its own files instead (:mod:`fedfort.run.files`), and the server's validation
and FLTrust root data from ``[data] validation`` (none when it is not given); a served run's
server, which has none of those files, gets the schema and its own validation rows only
(:func:`server_data`). :func:`partition_records` and :func:`local_training_data` turn a
client's rows into what it trains on, through its ``[edge]`` data protection
(:mod:`fedfort.edge`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from fedfort.client.training import ClientData
from fedfort.config import RunConfig, numbered_ids, parse_config
from fedfort.data.datasets import Dataset, load_dataset
from fedfort.data.files import LabeledTable
from fedfort.data.objects import table_from_object, tables_digest
from fedfort.data.partition import Partition, natural_partition, partition_dataset
from fedfort.data.schema import DataSchema
from fedfort.edge.records import client_training_data, with_synthetic_identifiers
from fedfort.edge.schema import Records
from fedfort.errors import ConfigError
from fedfort.run.files import (
    ClientFiles,
    GivenTables,
    read_federation,
    read_validation,
    require_schema,
    table_spec,
)

__all__ = [
    "FederationData",
    "client_ids",
    "local_training_data",
    "partition_records",
    "run_schema",
    "server_data",
    "split_data",
    "with_data_schema",
    "with_given_data",
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
    """The run's data as the federation uses it: client partitions, the server's held-out
    split, FLTrust's root, the schema and each client's own hold-out: its ``test`` file
    (files, objects) or, with ``holdout > 0`` (``[evaluation] client_holdout``), that share of
    its partition (:meth:`client_test_arrays`; it trains on the rest, :meth:`client_arrays`),
    and (files) its record columns."""

    dataset: Dataset
    train_idx: np.ndarray
    root_idx: np.ndarray | None
    partition: Partition
    schema: DataSchema
    client_tests: tuple[tuple[np.ndarray, np.ndarray] | None, ...] = ()
    client_columns: tuple[dict[str, np.ndarray], ...] = ()
    root: tuple[np.ndarray, np.ndarray] | None = None
    holdout: float = 0.0
    seed: int = 0

    def root_arrays(self) -> tuple[np.ndarray, np.ndarray] | None:
        """FLTrust's root data on the server, or ``None`` when the rule needs none."""
        if self.root is not None:
            return self.root
        if self.root_idx is None:
            return None
        return self.dataset.x_train[self.root_idx], self.dataset.y_train[self.root_idx]

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
        if self.client_tests:
            return self.client_tests[k]
        _, held = self.client_rows(k)
        if held is None:
            return None
        return self.dataset.x_train[held], self.dataset.y_train[held]


def embedded_schema(dataset: Dataset) -> DataSchema:
    """The schema of an embedded dataset: its feature names (when it has them) and classes."""
    if dataset.feature_names:
        features = dataset.feature_names
    elif dataset.image_shape is not None:
        h, w = dataset.image_shape
        features = tuple(f"pixel_{r}_{c}" for r in range(h) for c in range(w))
    else:
        features = tuple(f"feature_{j}" for j in range(dataset.num_features))
    if dataset.task == "regression":
        return DataSchema(features, (), "regression", dataset.image_shape)
    classes = tuple(str(c) for c in range(dataset.num_classes))
    return DataSchema(features, classes, "classification", dataset.image_shape)


def run_schema(config: RunConfig) -> DataSchema:
    """The schema of a run from its config alone (no client's files needed): an embedded
    dataset's, or ``[data] features`` / ``classes`` as the stored config records them."""
    if config.data.source == "embedded":
        return split_data(config).schema
    return require_schema(config)


def with_data_schema(config: RunConfig, given: GivenTables | None = None) -> RunConfig:
    """``config`` with the files' schema written into ``[data] features`` / ``classes``.

    The schema is part of the run's identity; a simulation that infers it from the clients'
    files records it in the stored config, so a resume checks the files still agree.
    """
    data = config.data
    if data.source == "embedded":
        return config
    need_classes = data.task == "classification" and data.classes is None
    if data.features is not None and not need_classes:
        return config
    schema = read_federation(config, given)[0]
    overrides: dict[str, object] = {"data.features": list(schema.features)}
    if data.task == "classification":
        overrides["data.classes"] = list(schema.classes)
    return config.with_overrides(overrides)


def _files_data(config: RunConfig, given: GivenTables | None) -> FederationData:
    schema, clients, validation = read_federation(config, given)
    return _files_federation(config, schema, clients, validation)


def server_data(config: RunConfig) -> FederationData:
    """The data of a server that holds no client rows (``fedfort server``).

    With ``[data] source = "files"`` the clients' files stay on their machines: the schema is
    the one written in the config (:func:`~fedfort.run.files.require_schema`), the server's
    own validation (and FLTrust root) data is ``[data] validation`` when given, and there are
    no client rows. The embedded datasets are split as everywhere (:func:`split_data`), so a
    served run on them stays the simulation's.
    """
    if config.data.source == "embedded":
        return split_data(config)
    schema = require_schema(config)
    validation = read_validation(config, schema)
    return _files_federation(config, schema, [None] * config.clients.count, validation)


def _files_federation(
    config: RunConfig,
    schema: DataSchema,
    clients: Sequence[ClientFiles | None],
    validation: LabeledTable | None,
) -> FederationData:
    """The federation's data from the clients' files (``None``: a client's rows are not
    held here) and the server's own validation table."""
    d = schema.num_features
    y_dtype = np.float32 if schema.task == "regression" else np.int64
    xs = [np.zeros((0, d), np.float32) if c is None else c.x for c in clients]
    ys = [np.zeros((0,), y_dtype) if c is None else c.y for c in clients]
    sizes = [x.shape[0] for x in xs]
    bounds = np.cumsum([0, *sizes])
    partition = Partition(tuple(np.arange(bounds[k], bounds[k + 1]) for k in range(len(sizes))))
    if validation is not None:
        x_test, y_test = validation.x.astype(np.float32), validation.encoded(schema)
    else:
        x_test, y_test = np.zeros((0, d), np.float32), np.zeros((0,), y_dtype)
    dataset = Dataset(
        name="files",
        x_train=np.concatenate(xs).astype(np.float32),
        y_train=np.concatenate(ys).astype(y_dtype),
        x_test=x_test,
        y_test=y_test.astype(y_dtype),
        num_classes=schema.num_classes,
        image_shape=schema.image_shape,
        feature_names=schema.features,
    )
    root = None
    if config.defense.aggregator == "fltrust":
        if validation is None:
            raise ConfigError(
                "FLTrust needs the server's own root data: set [data] validation to a file "
                "the server holds (the clients' files never reach it)"
            )
        root = (dataset.x_test, dataset.y_test)
    return FederationData(
        dataset,
        np.arange(dataset.y_train.shape[0]),
        None,
        partition,
        schema,
        client_tests=tuple(None if c is None else c.test for c in clients),
        client_columns=tuple({} if c is None else c.columns for c in clients),
        root=root,
    )


def split_data(config: RunConfig, given: GivenTables | None = None) -> FederationData:
    """Load the run's dataset and split it exactly as every runtime does (seeded); with
    ``[data] source = "files"`` (or ``"objects"``, then ``given``) each client's own rows."""
    if config.data.source != "embedded":
        return _files_data(config, given)
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
        dataset,
        train_idx,
        root_idx,
        partition,
        embedded_schema(dataset),
        holdout=config.evaluation.client_holdout,
        seed=config.seed,
    )


def partition_records(config: RunConfig, data: FederationData, k: int) -> Records:
    """Client ``k``'s records: its partition, with synthetic identifiers when configured."""
    x, y = data.client_arrays(k)
    names = data.schema.features
    if data.client_columns:
        return Records(x, y, data.client_columns[k], feature_names=names)
    if config.edge.enabled and config.edge.synthetic_identifiers:
        return dataclasses.replace(
            with_synthetic_identifiers(x, y, config.seed, k), feature_names=names
        )
    return Records(x, y, feature_names=names)


def local_training_data(
    config: RunConfig,
    records: Records,
    client_id: str,
    num_classes: int,
    state_dir: str | Path | None = None,
) -> tuple[ClientData, dict[str, float]]:
    """What a client trains on, in every runtime: ``records`` through the ``[edge]`` pipeline
    (validate, mask, sanitise; see :mod:`fedfort.edge`) and its ``edge_*`` count metrics.

    The federated transform (``[data] standardize`` / ``impute``) is applied afterwards, to
    the protected rows, by the client when the task brings it
    (:meth:`fedfort.client.FederatedClient.receive_transform`)."""
    return client_training_data(
        config.edge,
        records,
        client_id=client_id,
        num_classes=num_classes,
        seed=config.seed,
        state_dir=state_dir,
    )


def client_ids(count: int) -> list[str]:
    """Numbered client ids ``client-000``, ``client-001``, ... (a run without
    ``[clients] names``; :meth:`fedfort.config.ClientsConfig.ids` gives a run's ids)."""
    return numbered_ids(count)


def with_given_data(
    config: RunConfig,
    data: Mapping[str, Any],
    test_data: Mapping[str, Any] | None = None,
    feature_names: Sequence[str] | None = None,
    options: Mapping[str, Any] | None = None,
) -> tuple[RunConfig, GivenTables]:
    """``config`` for clients whose data is given as objects (``Simulation(data=...)``),
    with ``options``: ``[data]`` keys for the clients' own rows (``standardize``, ``impute``...).

    ``data`` maps each client's name to its rows ((x, y) arrays, a DataFrame with the
    ``[data] label`` column, or a ``torch.utils.data.Dataset``); ``test_data`` to its own
    hold-out. The clients are named after the keys, and a digest of the data becomes part of
    the run's identity (:func:`fedfort.data.objects.tables_digest`).
    """
    if not data:
        raise ConfigError("data= names no clients")
    unknown = sorted(set(test_data or {}) - set(data))
    if unknown:
        raise ConfigError(f"test_data= names clients {unknown} that data= does not")
    spec = table_spec(config)
    tables: dict[str, tuple[LabeledTable, LabeledTable | None]] = {}
    for name, rows in data.items():
        held = (test_data or {}).get(name)
        tables[str(name)] = (
            table_from_object(rows, f"data[{name!r}]", spec, feature_names),
            None
            if held is None
            else table_from_object(held, f"test_data[{name!r}]", spec, feature_names),
        )
    body = config.to_dict()
    # ``test`` says that the clients hold hold-outs (given as test_data=), not where
    held = "test_data" if test_data else None
    body["data"].update(source="objects", digest=tables_digest(tables), train=None, test=held)
    body["data"].update(options or {})
    body["clients"].update(names=list(tables), count=len(tables))
    return parse_config(body), tables
