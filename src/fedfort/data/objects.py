"""A client's data given as Python objects: arrays, a DataFrame or a PyTorch ``Dataset``.

``fedfort.Simulation(data={"hospital-a": frame_a, "hospital-b": (x_b, y_b), ...})`` takes each
client's rows as objects instead of files; :func:`table_from_object` turns each into the same
:class:`~fedfort.data.files.LabeledTable` a file becomes, so the schema, the checks and the
errors are those of the files source. The run records a digest of the data
(:func:`tables_digest`) in its identity; a resume must be given the same data again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedfort.data.files import LabeledTable, TableSpec, frame_table
from fedfort.errors import DatasetError

__all__ = ["table_from_object", "tables_digest"]


def table_from_object(
    obj: Any, source: str, spec: TableSpec, feature_names: Sequence[str] | None = None
) -> LabeledTable:
    """One client's rows from ``(x, y)`` arrays, a pandas DataFrame (with ``spec.label``
    among its columns), a ``torch.utils.data.Dataset`` of ``(x, y)`` items, or a table."""
    import pandas as pd

    if isinstance(obj, LabeledTable):
        return obj
    if isinstance(obj, pd.DataFrame):
        return frame_table(Path(source), obj.copy(), spec)
    if isinstance(obj, tuple) and len(obj) == 2:
        x, y = (np.asarray(a) for a in obj)
    elif hasattr(obj, "__getitem__") and hasattr(obj, "__len__"):
        x, y = _dataset_arrays(obj, source)
    else:
        raise DatasetError(
            f"{source}: give a client's data as (x, y) arrays, a pandas DataFrame or a "
            f"torch.utils.data.Dataset, not {type(obj).__name__}"
        )
    if x.ndim < 2 or y.shape != (x.shape[0],):
        raise DatasetError(
            f"{source}: x must be (rows, features...) and y (rows,), got {x.shape} and {y.shape}"
        )
    image_shape = (int(x.shape[-2]), int(x.shape[-1])) if x.ndim == 3 else None
    flat = x.reshape(x.shape[0], -1)
    names = list(feature_names) if feature_names is not None else None
    if names is None:
        names = (
            [f"pixel_{r}_{c}" for r in range(x.shape[1]) for c in range(x.shape[2])]
            if image_shape is not None
            else [f"feature_{j}" for j in range(flat.shape[1])]
        )
    if len(names) != flat.shape[1]:
        raise DatasetError(f"{source}: {len(names)} feature names for {flat.shape[1]} features")
    if spec.label in names:
        raise DatasetError(f"{source}: a feature is named like the label column {spec.label!r}")
    frame = pd.DataFrame(flat, columns=names)
    frame[spec.label] = y
    table = frame_table(Path(source), frame, spec)
    if image_shape is None:
        return table
    return LabeledTable(
        table.source, table.x, table.labels, table.features, table.task, {}, image_shape
    )


def _dataset_arrays(dataset: Any, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Stack a map-style dataset's ``(x, y)`` items (tensors or arrays) into two arrays."""
    n = len(dataset)
    if n == 0:
        raise DatasetError(f"{source}: the dataset is empty")
    xs: list[np.ndarray] = []
    ys: list[Any] = []
    for i in range(n):
        item = dataset[i]
        if not (isinstance(item, tuple | list) and len(item) == 2):
            raise DatasetError(f"{source}: item {i} is not an (x, y) pair")
        x, y = item
        xs.append(np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float32))
        ys.append(y.item() if hasattr(y, "item") else y)
    shapes = {a.shape for a in xs}
    if len(shapes) != 1:
        raise DatasetError(f"{source}: items have different shapes {sorted(shapes)[:3]}")
    x_all = np.stack(xs)
    if x_all.ndim == 4 and x_all.shape[1] == 1:  # (n, 1, h, w) single-channel images
        x_all = x_all[:, 0]
    return x_all, np.asarray(ys)


def tables_digest(tables: Mapping[str, tuple[LabeledTable, LabeledTable | None]]) -> str:
    """SHA-256 over every client's name, feature names, values and labels (train and test)."""
    h = hashlib.sha256(b"fedfort-data-objects\x00")
    for name in sorted(tables):
        h.update(name.encode() + b"\x00")
        for table in tables[name]:
            if table is None:
                h.update(b"\x00")
                continue
            h.update("\x1f".join(table.features).encode() + b"\x00")
            h.update(np.ascontiguousarray(table.x, dtype=np.float32).tobytes())
            h.update("\x1f".join(str(v) for v in table.labels.tolist()).encode() + b"\x00")
    return h.hexdigest()
