"""``fedfort data schema``: the ``[data] features`` / ``classes`` lines a served federation needs.

A server that holds no client data sizes the model from the schema written in its config
(:func:`fedfort.run.files.require_schema`). This command reads one or more clients' files the
way a client reads them (``[data] label``, ``drop``, ``categories``... of ``--config``) and
prints the lines to paste into the ``[data]`` table of the federation's config.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fedfort import jsonio
from fedfort.errors import ConfigError

if TYPE_CHECKING:
    from fedfort.config import RunConfig
    from fedfort.data.files import LabeledTable
    from fedfort.data.schema import DataSchema

__all__ = ["add_parsers", "run", "schema_lines"]


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``data`` and its subcommands to the ``fedfort`` sub-parsers."""
    data = sub.add_parser(
        "data",
        help="the clients' data: print the federation's schema",
        description="Work with the clients' own files ([data] source = 'files').",
    ).add_subparsers(dest="data_command", required=True)
    schema = data.add_parser(
        "schema",
        help="print the [data] features / classes lines a server needs",
        description="Read clients' training files as a client reads them ([data] label, drop, "
        "categories... of --config) and print the [data] features = [...] and classes = [...] "
        "lines of the federation's schema, to paste into the config the server and the clients "
        "share. With several files the classes are the union of their labels, and every file "
        "must have the same feature columns.",
    )
    schema.add_argument("--config", required=True, help="federation TOML")
    who = schema.add_mutually_exclusive_group(required=True)
    who.add_argument(
        "--client",
        action="append",
        metavar="NAME",
        help="a client whose [data] train file to read ({client} = NAME), repeatable",
    )
    who.add_argument("--file", action="append", metavar="PATH", help="a file to read, repeatable")


def run(args: argparse.Namespace) -> int:
    """``fedfort data schema``."""
    from fedfort.config import load_config

    config = load_config(args.config)
    if config.data.source != "files":
        raise ConfigError(
            f"{args.config} trains on the embedded dataset {config.data.dataset!r}: its schema "
            "is built in; fedfort data schema reads [data] source = 'files'"
        )
    tables = _tables(config, args.client, args.file)
    print("\n".join(schema_lines(_schema(tables), [t.source for t in tables])))
    return 0


def _tables(
    config: RunConfig, clients: Sequence[str] | None, files: Sequence[str] | None
) -> list[LabeledTable]:
    from fedfort.data.files import read_table
    from fedfort.run.files import client_path, table_spec

    spec = table_spec(config)
    if files:
        return [read_table(Path(f), spec) for f in files]
    template = config.data.train
    if template is None:  # the config's own validation already asks for it
        raise ConfigError("data.source = 'files' needs data.train")
    known = config.clients.ids()
    unknown = [c for c in clients or () if c not in known]
    if unknown:
        raise ConfigError(
            f"--client {unknown[0]!r} is not a client of the federation; its clients "
            f"([clients] names) are {', '.join(known[:8])}{' ...' if len(known) > 8 else ''}"
        )
    n = config.clients.count
    return [read_table(client_path(template, c, clients=n), spec) for c in clients or ()]


def _schema(tables: Sequence[LabeledTable]) -> DataSchema:
    """The first table's columns and every table's labels; the others must have the same
    columns (in any order)."""
    from fedfort.data.files import class_order
    from fedfort.data.schema import DataSchema
    from fedfort.errors import DatasetError
    from fedfort.run.files import declared_schema

    first = tables[0]
    labels = sorted({c for t in tables for c in t.label_set()})
    classes = class_order(labels) if first.task == "classification" else ()
    schema = DataSchema(first.features, classes, first.task, first.image_shape)
    for table in tables[1:]:
        differences = schema.differences(declared_schema(table, schema))
        if differences:
            raise DatasetError(
                f"{table.source} and {first.source} differ: {'; '.join(differences)}; every "
                "client's file needs the same columns"
            )
    return schema


def _toml_list(key: str, values: Sequence[str]) -> list[str]:
    """``key = [...]`` as TOML, one value a line when the list is long."""
    quoted = [jsonio.dumps(v, ensure_ascii=False) for v in values]
    one_line = f"{key} = [{', '.join(quoted)}]"
    if len(one_line) <= 100:
        return [one_line]
    return [f"{key} = [", *(f"    {q}," for q in quoted), "]"]


def schema_lines(schema: DataSchema, sources: Sequence[str]) -> list[str]:
    """The ``[data]`` lines of ``schema``, after a comment naming where it was read."""
    outputs = f"{len(schema.classes)} classes" if schema.classes else "regression"
    lines = [
        f"# the schema of {', '.join(sources)}: {schema.num_features} features, {outputs}",
        "# paste under [data] in the federation's config (the server's and the clients')",
        *_toml_list("features", schema.features),
    ]
    if schema.task == "classification":
        lines += _toml_list("classes", schema.classes)
    return lines
