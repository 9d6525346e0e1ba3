"""The federation's data when every client brings its own files (``[data] source = "files"``).

Each client's ``train`` (and optional ``test``) path is the config's template with ``{client}``
replaced by the client's name; :func:`read_table` reads it. The schema the federation agrees on
(:class:`~fedfort.data.schema.DataSchema`) is ``[data] features``/``classes`` when written
down, otherwise inferred: the first client's columns and the union of the clients' labels. A
client whose file differs from the schema is refused with the differences named.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedfort.config import DataConfig, RunConfig
from fedfort.data.files import LabeledTable, TableSpec, class_order, read_table
from fedfort.data.schema import DataSchema
from fedfort.errors import ConfigError, DatasetError, InvalidRecord

__all__ = [
    "ClientFiles",
    "GivenTables",
    "client_path",
    "declared_schema",
    "join_files",
    "read_client",
    "read_federation",
    "read_validation",
    "require_schema",
    "schema_of",
    "table_spec",
]


def table_spec(config: RunConfig) -> TableSpec:
    """How the run reads a client's file: ``[data]`` keys and the ``[edge.fields]`` columns."""
    data = config.data
    fields = tuple(config.edge.fields) if config.edge.enabled else ()
    return TableSpec(
        label=data.label,
        drop=tuple(data.drop),
        fields=fields,
        categories={k: tuple(v) for k, v in data.categories.items()},
        task=data.task,
        columns=None if data.columns is None else tuple(data.columns),
        image_size=data.image_size,
    )


def client_path(template: str, client: str, *, clients: int) -> Path:
    """``template`` with ``{client}`` replaced by the client's name."""
    if "{client}" not in template and clients > 1:
        raise ConfigError(
            f"data path {template!r} has no {{client}}: every client would read the same file; "
            "write e.g. 'data/{client}/train.csv'"
        )
    return Path(template.replace("{client}", client))


def schema_of(config: DataConfig, tables: list[LabeledTable]) -> DataSchema:
    """The federation's schema: written down in ``config``, or inferred from ``tables``."""
    first = tables[0]
    features = tuple(config.features) if config.features is not None else first.features
    classes: tuple[str, ...] = ()
    if config.task == "classification":
        if config.classes is not None:
            classes = tuple(config.classes)
        else:
            classes = class_order(sorted({c for t in tables for c in t.label_set()}))
    schema = DataSchema(features, classes, config.task, first.image_shape)
    schema.check_learnable()
    return schema


def _check_missing(config: RunConfig, table: LabeledTable) -> None:
    """Missing feature values need a policy: federated imputation or an ``[edge]`` one."""
    if config.data.impute != "none" or config.edge.enabled:
        return  # imputed later, or the [edge] policy decides (and names the field)
    missing = np.isnan(table.x)
    if missing.any():
        row, col = (int(v) for v in np.argwhere(missing)[0])
        raise InvalidRecord(
            table.features[col],
            row,
            f"value is missing ({table.source}); set [data] impute = 'mean' (federated) or "
            "an [edge.features] missing policy, or fix the file",
        )


@dataclass(frozen=True)
class ClientFiles:
    """One client's rows read from its files: features, encoded labels, record columns."""

    x: np.ndarray
    y: np.ndarray
    columns: dict[str, np.ndarray]
    test: tuple[np.ndarray, np.ndarray] | None


def read_client(
    config: RunConfig,
    name: str,
    schema: DataSchema | None,
    *,
    train: str | None = None,
    test: str | None = None,
) -> tuple[ClientFiles, LabeledTable]:
    """Read client ``name``'s files (``train``/``test`` override the config's templates) and
    check them against ``schema`` (when given); its rows and its own table."""
    table, test_table = _client_tables(config, name, train=train, test=test)
    own = schema or schema_of(config.data, [table])
    return _client_files(config, table, test_table, own), table


def join_files(
    config: RunConfig,
    name: str,
    schema: DataSchema,
    *,
    train: str | None = None,
    test: str | None = None,
) -> tuple[ClientFiles, DataSchema]:
    """What client ``name`` joins a served federation with: its rows, checked against the
    federation's ``schema`` before it connects, and the schema it declares at enrollment.

    Raises :class:`~fedfort.errors.DatasetError` naming every difference, e.g.
    ``hospital-b: missing column 'mean_perimeter' (data/hospital-b/train.csv)``.
    """
    table, test_table = _client_tables(config, name, train=train, test=test)
    declared = declared_schema(table, schema)
    for checked in (table, test_table):
        if checked is None:
            continue
        differences = schema.differences(declared_schema(checked, schema))
        if differences:
            raise DatasetError(
                f"{name}: {'; '.join(differences)} ({checked.source}); the federation's schema "
                "is [data] features / classes of the config: fix the file, or [data] drop / "
                "label / categories"
            )
    return _client_files(config, table, test_table, schema), declared


def declared_schema(table: LabeledTable, schema: DataSchema) -> DataSchema:
    """The schema ``table`` has, with its columns in ``schema``'s order when it holds the same
    ones (columns are read by name) and the federation's classes plus any label of its own."""
    return table.in_order(schema.features).schema(schema.classes)


def _client_tables(
    config: RunConfig, name: str, *, train: str | None, test: str | None
) -> tuple[LabeledTable, LabeledTable | None]:
    spec = table_spec(config)
    n = config.clients.count
    train_path = (
        Path(train) if train else client_path(_required(config.data.train), name, clients=n)
    )
    table = read_table(train_path, spec)
    test_template = test or config.data.test
    test_table: LabeledTable | None = None
    if test_template is not None:
        path = Path(test) if test else client_path(test_template, name, clients=n)
        test_table = read_table(path, spec)
    return table, test_table


def _client_files(
    config: RunConfig,
    table: LabeledTable,
    test_table: LabeledTable | None,
    schema: DataSchema,
) -> ClientFiles:
    out = _encode(config, table, schema)
    held = None
    if test_table is not None:
        x_test, y_test = _encode(config, test_table, schema)[:2]
        held = (x_test, y_test)
    return ClientFiles(out[0], out[1], out[2], held)


def _encode(
    config: RunConfig, table: LabeledTable, schema: DataSchema
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    ordered = table.in_order(schema.features)
    y = ordered.encoded(schema)
    _check_missing(config, ordered)
    return ordered.x, y, dict(ordered.columns)


def _required(path: str | None) -> str:
    if path is None:
        raise ConfigError("data.source = 'files' needs data.train")
    return path


#: client name -> its train table and its own hold-out (data given as Python objects)
GivenTables = Mapping[str, tuple[LabeledTable, LabeledTable | None]]


def _tables(
    config: RunConfig, given: GivenTables | None
) -> list[tuple[LabeledTable, LabeledTable | None]]:
    names = config.clients.ids()
    if config.data.source == "objects":
        if given is None:
            raise ConfigError(
                "this run's data was given in Python (data=...): give the same data again, "
                "e.g. Simulation.resume(out_dir, data=...)"
            )
        if sorted(given) != sorted(names):
            raise ConfigError(
                f"the data names clients {sorted(given)}, the run has {sorted(names)}"
            )
        return [given[c] for c in names]
    return [_client_tables(config, c, train=None, test=None) for c in names]


def read_federation(
    config: RunConfig, given: GivenTables | None = None
) -> tuple[DataSchema, list[ClientFiles], LabeledTable | None]:
    """Every client's data (a simulation holds them all: files, or ``given`` as objects),
    the schema, and the server's own validation table (``[data] validation``, or ``None``)."""
    tables = _tables(config, given)
    schema = schema_of(config.data, [t for t, _ in tables])
    clients = [_client_files(config, t, test, schema) for t, test in tables]
    return schema, clients, read_validation(config, schema)


def read_validation(config: RunConfig, schema: DataSchema) -> LabeledTable | None:
    """The server's own validation table (``[data] validation``) in ``schema``'s order and
    checked against it, or ``None`` when the config names none."""
    if config.data.validation is None:
        return None
    validation = read_table(Path(config.data.validation), table_spec(config))
    validation = validation.in_order(schema.features)
    validation.encoded(schema)
    _check_missing(config, validation)
    return validation


def require_schema(config: RunConfig) -> DataSchema:
    """The schema a server with no client data runs with: ``[data] features`` and
    ``classes`` written in the config (``fedfort data schema`` prints them from a file)."""
    data = config.data
    if data.features is None or (data.task == "classification" and data.classes is None):
        raise DatasetError(
            "a server that holds no client data needs the federation's schema: add [data] "
            "features = [...] and classes = [...] (print them from one client's file with "
            "'fedfort data schema --config RUN.toml --client NAME')"
        )
    return DataSchema(
        tuple(data.features),
        tuple(data.classes or ()),
        data.task,
        data.image_size,
    )
