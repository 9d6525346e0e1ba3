"""The data a networked client joins with (``fedfort client --data/--test``).

On the clients' own files (``[data] source = "files"``) a client reads its ``[data] train`` /
``test`` files (``{client}`` = its name) or the files ``--data`` / ``--test`` name, and checks
them against the schema written in the config before it connects; the model is sized from
that schema. On an embedded dataset ``--data`` is ``partition:K`` (client K's share, as in
simulation) or an ``.npz`` file.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from fedfort.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

    from fedfort.client.training import ClientData
    from fedfort.config import RunConfig
    from fedfort.data.schema import DataSchema
    from fedfort.edge.schema import Records

__all__ = ["client_records", "joining_data"]


def _client_data(spec: str, config: RunConfig) -> tuple[np.ndarray, np.ndarray]:
    import numpy as np

    from fedfort.run.federation import split_data

    if spec.startswith("partition:"):
        try:
            k = int(spec.split(":", 1)[1])
        except ValueError as exc:
            raise ConfigError(f"--data {spec!r}: expected partition:K with an integer K") from exc
        return split_data(config).client_arrays(k)
    path = Path(spec)
    try:
        with np.load(path, allow_pickle=False) as npz:
            x, y = np.asarray(npz["x"], dtype=np.float32), np.asarray(npz["y"], dtype=np.int64)
    except (OSError, KeyError, ValueError) as exc:
        raise ConfigError(f"--data {spec}: need an .npz file with arrays x and y ({exc})") from exc
    if x.ndim < 2 or y.shape != (x.shape[0],):
        raise ConfigError(f"--data {spec}: x must be (n, ...) and y (n,), got {x.shape}, {y.shape}")
    return x, y


def client_records(spec: str, config: RunConfig) -> Records:
    """The client's records: a partition (with synthetic identifiers when configured) or a
    file; with ``[edge]`` on, an .npz may carry one array per declared field besides x and y."""
    from fedfort.edge.records import load_records
    from fedfort.edge.schema import Records
    from fedfort.run.federation import partition_records, split_data

    if spec.startswith("partition:"):
        try:
            k = int(spec.split(":", 1)[1])
        except ValueError as exc:
            raise ConfigError(f"--data {spec!r}: expected partition:K with an integer K") from exc
        return partition_records(config, split_data(config), k)
    if config.edge.enabled:
        return load_records(spec)
    return Records(*_client_data(spec, config))


def client_holdout(spec: str, config: RunConfig) -> ClientData | None:
    """The client's evaluation hold-out on an embedded dataset: for ``partition:K``, the rows
    a simulated client K keeps (``[evaluation] client_holdout``); none for a file."""
    from fedfort.client.training import ClientData
    from fedfort.run.federation import split_data

    if not spec.startswith("partition:"):
        return None
    held = split_data(config).client_test_arrays(int(spec.split(":", 1)[1]))
    return None if held is None else ClientData.from_numpy(*held)


def joining_data(
    args: argparse.Namespace, config: RunConfig
) -> tuple[Records, DataSchema, DataSchema | None, ClientData | None]:
    """The client's records, the federation's schema (the model's sizes), the schema the
    client declares at enrollment (``None`` for an embedded dataset) and its own evaluation
    hold-out (its ``test`` file, or its share of a partition; ``None`` without one).

    On its own files the schema is the config's ``[data] features`` / ``classes``, never one
    inferred from an embedded set, and the files must agree with it (their differences named).
    """
    from fedfort.client.training import ClientData
    from fedfort.edge.schema import Records
    from fedfort.run.files import join_files, require_schema

    if config.data.source == "files":
        if args.data is not None and args.data.startswith("partition:"):
            raise ConfigError(
                "--data partition:K splits an embedded dataset; with [data] source = 'files' "
                "give this client's own file, or leave --data out to use [data] train"
            )
        schema = require_schema(config)
        files, declared = join_files(config, args.name, schema, train=args.data, test=args.test)
        held = "" if files.test is None else f", {files.test[0].shape[0]} hold-out rows"
        print(
            f"fedfort client {args.name}: {files.x.shape[0]} training rows{held} match the "
            f"federation's schema ({schema.num_features} features, {schema.num_classes} "
            "outputs)",
            flush=True,
        )
        records = Records(files.x, files.y, files.columns, feature_names=schema.features)
        holdout = None if files.test is None else ClientData.from_numpy(*files.test)
        return records, schema, declared, holdout
    if args.data is None:
        raise ConfigError("--data is required for an embedded dataset: partition:K or an .npz file")
    if args.test is not None:
        raise ConfigError("--test applies to [data] source = 'files' (a client's own hold-out)")
    from fedfort.run.federation import split_data

    data = split_data(config)
    records = client_records(args.data, config)
    if records.x.shape[1:] != data.dataset.x_train.shape[1:]:
        raise ConfigError(
            f"--data rows have shape {records.x.shape[1:]}, the model expects "
            f"{data.dataset.x_train.shape[1:]}"
        )
    return records, data.schema, None, client_holdout(args.data, config)
