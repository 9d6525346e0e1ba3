"""A committed model version written as a file PyTorch, safetensors or ONNX tools read.

``fedfort model export RUN --format pt|safetensors|onnx`` calls :func:`export_model`. The
version is read through :func:`fedfort.run.model_io.read_run_model`, so its signature and
SHA-256 are verified before anything is written and a tampered checkpoint is refused; the
export writes only its output file (nothing to the audit log or the checkpoints).

- ``pt``: the module's ``state_dict`` of plain tensors (``torch.save``), which
  ``model.load_state_dict(torch.load(path))`` accepts for the run's model class, with
  ``torch.load``'s default ``weights_only=True``;
- ``safetensors``: the same tensors through the ``safetensors`` package;
- ``onnx``: the module traced by ``torch.onnx.export`` on an input of the run's shape, with a
  dynamic batch dimension (input ``input``, output ``logits``);
- ``npy``: the flat float32 parameter vector, as the run stores it.

A run with ``[data] standardize`` or ``impute`` trained on rows through its federated feature
transform; the model expects new rows through the same one. Beside the model the export then
writes ``model-vN.preprocessing.json``: the features in the model's input order, the classes
in its output order and per feature ``fill`` (``null``: no imputation), ``shift`` and
``scale``, applied as ``x = where(isnan(x), fill, x); x = (x - shift) / scale``.
"""

from __future__ import annotations

import importlib
import io
import logging
import warnings
from collections.abc import Callable
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch

from fedfort import jsonio
from fedfort.errors import ConfigError
from fedfort.models import ModelFactory
from fedfort.run.data import run_schema
from fedfort.run.model_io import RunModel, read_preprocessing, read_run_model, read_version

__all__ = ["EXPORT_FORMATS", "ExportFormat", "ExportedModel", "export_model", "format_of"]

ExportFormat = Literal["pt", "safetensors", "onnx", "npy"]
#: the formats :func:`export_model` writes, each also the default file suffix
EXPORT_FORMATS: tuple[str, ...] = get_args(ExportFormat)


@dataclass(frozen=True)
class ExportedModel:
    """What :func:`export_model` wrote: the file, the version and its verified SHA-256, and
    the feature transform new rows need (``None`` for a run without one)."""

    path: Path
    version: int
    format: str
    sha256: str
    preprocessing: Path | None = None


def format_of(fmt: str | None, out: str | Path | None) -> str:
    """The export format: ``fmt`` when given, else the suffix of ``out``, else ``pt``."""
    if fmt is None and out is not None:
        fmt = Path(out).suffix.lstrip(".").lower() or None
        if fmt not in EXPORT_FORMATS:
            fmt = None  # a suffix of the user's choosing: the default format
    fmt = fmt or "pt"
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"export format {fmt!r} is not one of {list(EXPORT_FORMATS)}")
    return fmt


def export_model(
    run_dir: str | Path,
    fmt: str = "pt",
    *,
    version: int | str = "latest",
    out: str | Path | None = None,
    model_factory: ModelFactory | None = None,
) -> ExportedModel:
    """Write ``version`` of the run's model as ``fmt``; say what was written.

    ``out`` defaults to ``RUN/export/model-vN.FMT``; a missing folder is created, and a path
    with a suffix of its own keeps it (``--out weights.bin``).
    """
    fmt = format_of(fmt, None)
    writer = _WRITERS[fmt]()  # a missing package is refused before anything is read or written
    payload: RunModel | np.ndarray
    if fmt == "npy":  # the stored vector itself: no model class needed
        config, _, checkpoint = read_version(run_dir, version)
        payload, number, digest = checkpoint.model, checkpoint.round, checkpoint.model_sha256
    else:
        payload = read_run_model(run_dir, version, model_factory=model_factory)
        config, number, digest = payload.config, payload.version, payload.sha256
    transform = read_preprocessing(run_dir)
    path = _path(run_dir, number, fmt, out)
    _atomic(path, lambda partial: writer(payload, partial))
    sidecar = None
    if transform is not None:
        schema = run_schema(config)
        body = {
            "features": list(schema.features),
            "classes": list(schema.classes),
            **{k: transform[k] for k in ("fill", "shift", "scale")},
            "apply": "x = where(isnan(x), fill, x); x = (x - shift) / scale",
        }
        sidecar = path.with_name(f"{path.stem}.preprocessing.json")
        _atomic(sidecar, lambda partial: partial.write_text(jsonio.dumps(body, indent=2) + "\n"))
    return ExportedModel(path, number, fmt, digest, sidecar)


def _atomic(path: Path, write: Callable[[Path], object]) -> None:
    """``write`` to a partial file moved into ``path``: a failed export leaves no half file."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        write(partial)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


Writer = Callable[[Any, Path], None]


def _npy() -> Writer:
    def write(vector: np.ndarray, path: Path) -> None:
        with path.open("wb") as f:
            np.save(f, vector, allow_pickle=False)

    return write


def _pt() -> Writer:
    def write(run: RunModel, path: Path) -> None:
        torch.save(_tensors(run), path)

    return write


def _safetensors() -> Writer:
    save_file = _needs("safetensors.torch", "safetensors").save_file

    def write(run: RunModel, path: Path) -> None:
        save_file(_tensors(run), str(path), metadata=_metadata(run))

    return write


def _onnx_writer() -> Writer:
    for module in ("onnx", "onnxscript"):  # what torch.onnx.export needs beyond torch
        _needs(module, "onnx")
    return _onnx


_WRITERS: dict[str, Callable[[], Writer]] = {
    "npy": _npy,
    "pt": _pt,
    "safetensors": _safetensors,
    "onnx": _onnx_writer,
}


def _needs(module: str, fmt: str) -> Any:
    """``module``, or a ConfigError saying which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            f"--format {fmt} needs the {module.split('.')[0]!r} package ({exc}): "
            "pip install 'fedfort[export]'"
        ) from None


def _path(run_dir: str | Path, version: int, fmt: str, out: str | Path | None) -> Path:
    path = Path(run_dir) / "export" / f"model-v{version}.{fmt}" if out is None else Path(out)
    if not path.suffix:
        path = path.with_suffix(f".{fmt}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _tensors(run: RunModel) -> dict[str, torch.Tensor]:
    """The state dict as independent contiguous tensors (safetensors refuses shared memory)."""
    return {k: v.detach().clone().contiguous() for k, v in run.module.state_dict().items()}


def _metadata(run: RunModel) -> dict[str, str]:
    return {
        "fedfort_model": run.spec.name,
        "in_features": str(run.spec.in_features),
        "num_classes": str(run.spec.num_classes),
        "version": str(run.version),
        "sha256": run.sha256,
    }


def _onnx(run: RunModel, path: Path) -> None:
    """``torch.onnx.export`` on a zero input of the run's shape, the batch dimension dynamic."""
    example = torch.zeros((2, *run.example_shape), dtype=torch.float32)
    batch = torch.export.Dim("batch")
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        # the exporter reports its progress on stdout and logs and warns about its internals
        with redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                run.module,
                (example,),
                str(path),
                input_names=["input"],
                output_names=["logits"],
                dynamic_shapes=({0: batch},),
                dynamo=True,
                external_data=False,
            )
    except Exception as exc:
        raise ConfigError(
            f"model {run.spec.name!r} cannot be exported to ONNX: {type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:300]}; export --format pt or safetensors instead"
        ) from exc
    finally:
        quiet.setLevel(level)
