"""A client's data from files it owns: CSV, Parquet, ``.npz``/``.npy`` and image folders.

:func:`read_table` turns one file (or image folder) into a :class:`LabeledTable`: the feature
matrix with its column names, the labels, and the record columns declared in ``[edge.fields]``
(kept beside the features, never model inputs). It fails with a one-line
:class:`~fedfort.errors.DatasetError` that names the file, the field and the row, and says what
to do: a missing file, a file of another format than its name says, a label column that does
not exist, text in a feature column without a declared encoding, a label missing.

- CSV (``.csv``, ``.tsv``, ``.txt``) and Parquet (``.parquet``, ``.pq``) through pandas (pyarrow).
- ``.npz``: either arrays ``x`` and ``y`` (optionally ``feature_names``, a unicode array, and one
  1-D array per record column), or one 1-D array per column. Read with ``allow_pickle=False``:
  fedfort never unpickles data.
- ``.npy``: one numeric 2-D array; its columns are named ``column_0``, ``column_1``... unless
  ``[data] columns`` names them.
- An image folder: one subfolder per class holding PNG or JPEG files, read with Pillow as
  grayscale, scaled to [0, 1] and flattened row by row (features ``pixel_<row>_<col>``); every
  image must have the same size, or ``[data] image_size`` resizes them.
"""

from __future__ import annotations

import difflib
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedfort.data.schema import DataSchema, Task, label_text
from fedfort.errors import DatasetError, InvalidRecord

__all__ = ["LabeledTable", "TableSpec", "class_order", "frame_table", "read_table"]

_CSV = (".csv", ".tsv", ".txt")
_PARQUET = (".parquet", ".pq")
_IMAGES = (".png", ".jpg", ".jpeg")
#: a client's file is its own, but a table larger than this is refused rather than read whole
MAX_ROWS = 10_000_000


@dataclass(frozen=True)
class TableSpec:
    """How a client's file becomes features and labels (the ``[data]`` keys that say so)."""

    label: str = "label"
    drop: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()
    categories: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    task: Task = "classification"
    columns: tuple[str, ...] | None = None
    image_size: tuple[int, int] | None = None


@dataclass(frozen=True)
class LabeledTable:
    """One file's rows: features (NaN where missing), labels and the declared record columns.

    ``labels`` are text for classification (see :func:`~fedfort.data.schema.label_text`) and
    float64 for regression.
    """

    source: str
    x: np.ndarray
    labels: np.ndarray
    features: tuple[str, ...]
    task: Task
    columns: Mapping[str, np.ndarray] = field(default_factory=dict)
    image_shape: tuple[int, int] | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def label_set(self) -> tuple[str, ...]:
        """The distinct labels of a classification table, in :func:`class_order`."""
        if self.task == "regression":
            return ()
        return class_order(np.unique(self.labels.astype(str)).tolist())

    def schema(self, classes: Sequence[str] | None = None) -> DataSchema:
        """The schema this table has (with ``classes``, or its own label set)."""
        own = self.label_set()
        listed = tuple(classes) if classes is not None else own
        if self.task == "classification" and classes is not None:
            # the table's own labels outside the agreed set show up as a difference
            listed = tuple(dict.fromkeys([*listed, *own]))
        return DataSchema(self.features, listed, self.task, self.image_shape)

    def in_order(self, features: Sequence[str]) -> LabeledTable:
        """The same rows with the feature columns in ``features``' order (same set only)."""
        if tuple(features) == self.features or set(features) != set(self.features):
            return self
        index = {name: i for i, name in enumerate(self.features)}
        order = [index[name] for name in features]
        return LabeledTable(
            self.source,
            self.x[:, order],
            self.labels,
            tuple(features),
            self.task,
            self.columns,
            self.image_shape,
        )

    def encoded(self, schema: DataSchema) -> np.ndarray:
        """The labels as ``schema``'s class indices (int64), or float32 for regression.

        Raises :class:`DatasetError` naming every difference when the table does not match
        ``schema``."""
        schema.check(self.schema(schema.classes), self.source)
        if schema.task == "regression":
            y = self.labels.astype(np.float32)
        else:
            index = {c: i for i, c in enumerate(schema.classes)}
            y = np.array([index[v] for v in self.labels.astype(str).tolist()], dtype=np.int64)
        return y


def class_order(labels: Sequence[str]) -> tuple[str, ...]:
    """Labels sorted as numbers when they all are numbers (``2`` before ``10``), else as text."""
    try:
        return tuple(sorted(labels, key=float))
    except ValueError:
        return tuple(sorted(labels))


def read_table(path: str | Path, spec: TableSpec) -> LabeledTable:
    """Read one client's file or image folder (see the module docstring)."""
    p = Path(path)
    if not p.exists():
        raise DatasetError(
            f"{p}: no such file or folder; check [data] train/test (relative paths start "
            f"in the working directory {Path.cwd()})"
        )
    if p.is_dir():
        return _read_images(p, spec)
    suffix = p.suffix.lower()
    if suffix in _CSV or suffix in _PARQUET:
        return frame_table(p, _read_frame(p, suffix), spec)
    if suffix == ".npz":
        return _read_npz(p, spec)
    if suffix == ".npy":
        return _read_npy(p, spec)
    raise DatasetError(
        f"{p}: unknown data format {suffix or '(no suffix)'!r}; use .csv, .parquet, .npz, .npy "
        "or a folder of images with one subfolder per class"
    )


def _looks_like_zip(p: Path) -> bool:
    return zipfile.is_zipfile(p)


def _read_frame(p: Path, suffix: str) -> Any:
    import pandas as pd

    try:
        if suffix in _PARQUET:
            return pd.read_parquet(p)
        if _looks_like_zip(p):
            raise DatasetError(
                f"{p}: this is a zip archive (an .npz?), not {suffix} text: rename it to .npz"
            )
        return pd.read_csv(p, sep="\t" if suffix == ".tsv" else ",", nrows=MAX_ROWS + 1)
    except DatasetError:
        raise
    except Exception as exc:  # pandas and pyarrow raise many kinds for a bad file
        raise DatasetError(f"{p}: cannot read it as {suffix[1:]}: {_brief(exc)}") from None


def _brief(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def frame_table(p: Path, frame: Any, spec: TableSpec) -> LabeledTable:
    """A pandas DataFrame's rows as a table (``p`` names it in errors)."""
    if len(frame) > MAX_ROWS:
        raise DatasetError(f"{p}: more than {MAX_ROWS} rows; split the data into smaller files")
    names = [str(c) for c in frame.columns]
    if spec.label not in names:
        raise DatasetError(f"{p}: {_no_column(spec.label, names, 'label column')}")
    frame.columns = names
    for name in spec.fields:
        if name not in names:
            raise DatasetError(
                f"{p}: {_no_column(name, names, 'column declared in [edge.fields]')}"
            )
    labels = _labels(p, frame[spec.label].to_numpy(), spec)
    used = {spec.label, *spec.drop, *spec.fields}
    blocks: list[np.ndarray] = []
    features: list[str] = []
    for name in names:
        if name in used:
            continue
        column = frame[name].to_numpy()
        if name in spec.categories:
            block, block_names = _one_hot(p, name, column, spec.categories[name])
        else:
            block, block_names = _numeric(p, name, column, spec), (name,)
        blocks.append(block)
        features.extend(block_names)
    for name in spec.categories:
        if name not in names:
            raise DatasetError(f"{p}: {_no_column(name, names, 'column in [data.categories]')}")
    if not blocks:
        raise DatasetError(f"{p}: no feature columns are left after the label and drop")
    x = np.column_stack(blocks).astype(np.float32)
    columns = {name: frame[name].to_numpy() for name in spec.fields}
    return LabeledTable(str(p), x, labels, tuple(features), spec.task, columns)


def _no_column(name: str, names: Sequence[str], what: str) -> str:
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    shown = ", ".join(repr(n) for n in names[:12]) + (" ..." if len(names) > 12 else "")
    return f"{what} {name!r} is not in the file{hint}; its columns are {shown}"


def _labels(p: Path, raw: np.ndarray, spec: TableSpec) -> np.ndarray:
    missing = _missing(raw)
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise InvalidRecord(spec.label, row, f"label is missing ({p}); drop the row or fill it")
    if spec.task == "regression":
        values, bad = _to_float(raw)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise InvalidRecord(
                spec.label, row, f"{raw[row]!r} is not a number, but the task is regression ({p})"
            )
        if not np.all(np.isfinite(values)):
            row = int(np.flatnonzero(~np.isfinite(values))[0])
            raise InvalidRecord(spec.label, row, f"{values[row]} is not a finite number ({p})")
        return values
    return np.array([label_text(v) for v in raw.tolist()], dtype=object)


def _missing(column: np.ndarray) -> np.ndarray:
    if column.dtype.kind == "f":
        nan: np.ndarray = np.isnan(column)
        return nan
    if column.dtype.kind in "iub":
        return np.zeros(column.shape[0], dtype=bool)
    import pandas as pd

    text = pd.Series(column, dtype=object)
    return np.asarray(text.isna() | (text.astype(str).str.strip() == ""))


def _to_float(column: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The column as float64 (NaN where missing) and the rows that are not numbers."""
    if column.dtype.kind in "fiub":
        return column.astype(np.float64), np.zeros(column.shape[0], dtype=bool)
    import pandas as pd

    missing = _missing(column)
    values = np.asarray(pd.to_numeric(pd.Series(column, dtype=object), errors="coerce"), float)
    bad: np.ndarray = ~missing & np.isnan(values)
    return values, bad


def _numeric(p: Path, name: str, column: np.ndarray, spec: TableSpec) -> np.ndarray:
    values, bad = _to_float(column)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InvalidRecord(
            name,
            row,
            f"{column[row]!r} is not a number ({p}); declare the column's encoding with "
            f"[data.categories] {name} = [...], list it in [data] drop, or declare it in "
            "[edge.fields]",
        )
    infinite = np.isinf(values)
    if infinite.any():
        row = int(np.flatnonzero(infinite)[0])
        raise InvalidRecord(name, row, f"{values[row]} is not a finite number ({p})")
    return values


def _one_hot(
    p: Path, name: str, column: np.ndarray, categories: Sequence[str]
) -> tuple[np.ndarray, tuple[str, ...]]:
    """One column per declared category (NaN across the row where the value is missing)."""
    missing = _missing(column)
    text = np.array([label_text(v) for v in column.tolist()], dtype=object)
    known = np.isin(text, np.array(list(categories), dtype=object))
    bad = ~missing & ~known
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InvalidRecord(
            name, row, f"{text[row]!r} is not one of {list(categories)} ({p}); add it there"
        )
    block = (text[:, None] == np.array(list(categories), dtype=object)[None, :]).astype(float)
    block[missing] = np.nan
    return block, tuple(f"{name}={c}" for c in categories)


def _read_npz(p: Path, spec: TableSpec) -> LabeledTable:
    if not _looks_like_zip(p):
        raise DatasetError(f"{p}: this is not an .npz archive (is it CSV text? then name it .csv)")
    try:
        with np.load(p, allow_pickle=False) as npz:
            arrays = {k: np.asarray(npz[k]) for k in npz.files}
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise DatasetError(
                f"{p}: an array holds Python objects; fedfort never unpickles data. Save text "
                "as unicode arrays (np.array(values, dtype=str)) and numbers as numbers"
            ) from None
        raise DatasetError(f"{p}: cannot read the .npz archive: {_brief(exc)}") from None
    except (OSError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"{p}: cannot read the .npz archive: {_brief(exc)}") from None
    import pandas as pd

    if "x" in arrays and "y" in arrays:
        x = arrays.pop("x")
        if x.ndim != 2:
            raise DatasetError(f"{p}: x must be a 2-D (rows, features) array, got {x.shape}")
        names = arrays.pop("feature_names", None)
        columns = (
            [str(n) for n in names.tolist()]
            if names is not None
            else list(spec.columns or [f"column_{i}" for i in range(x.shape[1])])
        )
        if len(columns) != x.shape[1]:
            raise DatasetError(f"{p}: {len(columns)} feature names for {x.shape[1]} columns of x")
        frame = pd.DataFrame(x, columns=columns)
        frame[spec.label] = arrays.pop("y")
    else:
        frame = pd.DataFrame({})
    for key, value in arrays.items():
        if value.ndim != 1:
            raise DatasetError(
                f"{p}: array {key!r} must be 1-D (one value per row), got {value.shape}"
            )
        frame[key] = value
    return frame_table(p, frame, spec)


def _read_npy(p: Path, spec: TableSpec) -> LabeledTable:
    try:
        array = np.load(p, allow_pickle=False)
    except ValueError as exc:
        text = (
            "holds Python objects; fedfort never unpickles data"
            if "pickle" in str(exc)
            else _brief(exc)
        )
        raise DatasetError(f"{p}: cannot read the .npy array: {text}") from None
    except OSError as exc:
        raise DatasetError(f"{p}: cannot read the .npy array: {_brief(exc)}") from None
    if array.ndim != 2 or array.dtype.kind not in "fiub":
        raise DatasetError(
            f"{p}: an .npy file must hold a numeric 2-D array, got {array.dtype} {array.shape}"
        )
    import pandas as pd

    names = list(spec.columns or [f"column_{i}" for i in range(array.shape[1])])
    if len(names) != array.shape[1]:
        raise DatasetError(
            f"{p}: [data] columns names {len(names)} columns, the array has {array.shape[1]}"
        )
    return frame_table(p, pd.DataFrame(array, columns=names), spec)


def _read_images(p: Path, spec: TableSpec) -> LabeledTable:
    from PIL import Image, UnidentifiedImageError

    classes = sorted(d.name for d in p.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DatasetError(f"{p}: an image folder needs one subfolder per class, found none")
    if spec.task != "classification":
        raise DatasetError(f"{p}: an image folder is a classification task (one folder per class)")
    pixels: list[np.ndarray] = []
    labels: list[str] = []
    shape: tuple[int, int] | None = spec.image_size
    for name in classes:
        files = sorted(f for f in (p / name).iterdir() if f.suffix.lower() in _IMAGES)
        for file in files:
            try:
                with Image.open(file) as image:
                    gray = image.convert("L")
                    if spec.image_size is not None:
                        gray = gray.resize((spec.image_size[1], spec.image_size[0]))
                    array = np.asarray(gray, dtype=np.float32) / 255.0
            except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
                raise DatasetError(
                    f"{file}: not a readable PNG/JPEG image ({_brief(exc)})"
                ) from None
            if shape is None:
                shape = (int(array.shape[0]), int(array.shape[1]))
            if array.shape != shape:
                raise DatasetError(
                    f"{file}: image is {array.shape[1]}x{array.shape[0]} pixels, the others "
                    f"{shape[1]}x{shape[0]}; set [data] image_size = [height, width] to resize"
                )
            pixels.append(array.reshape(-1))
            labels.append(name)
    if not pixels or shape is None:
        raise DatasetError(f"{p}: no .png or .jpg images in its class subfolders {classes}")
    h, w = shape
    features = tuple(f"pixel_{r}_{c}" for r in range(h) for c in range(w))
    return LabeledTable(
        str(p),
        np.stack(pixels),
        np.array(labels, dtype=object),
        features,
        "classification",
        {},
        (h, w),
    )
