"""A run's trained model out of its directory: verified, and without touching the run.

:func:`load_model` rebuilds the run's ``nn.Module`` from its stored config (``[model]`` on the
dataset's features and classes, exactly as the run built it) and loads a committed version's
weights. Everything read is checked first, as a resume checks it
(:mod:`fedfort.run.resume`): the checkpoint file is opened read-only with the run's audit key,
so the stored config and the version's row must carry valid signatures and the model its
SHA-256, and the rebuilt module must have the parameter layout the run signed. A tampered
checkpoint is refused. Reading is not resuming: no audit entry, no checkpoint row, no key is
written. :mod:`fedfort.run.export` writes what this returns as a PyTorch, safetensors or ONNX
file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from fedfort import jsonio
from fedfort.config import RunConfig, parse_config
from fedfort.errors import CheckpointError, ConfigError
from fedfort.models import ModelFactory, ModelSpec, build_model
from fedfort.params import ParamSpec
from fedfort.run.data import run_schema
from fedfort.run.federation import STATISTICS_META, model_spec
from fedfort.run.resume import CHECKPOINT_FILE, resume_key
from fedfort.server.checkpoint import Checkpoint, CheckpointReader

__all__ = ["RunModel", "load_model", "read_preprocessing", "read_run_model", "read_version"]


@dataclass(frozen=True)
class RunModel:
    """A committed version of a run's model, rebuilt and verified.

    ``example_shape`` is the shape of one input row (without the batch dimension) as the run's
    test split holds it, so an exporter can trace the model on an input of the run's shape.
    """

    module: nn.Module
    version: int
    sha256: str
    spec: ModelSpec
    config: RunConfig
    example_shape: tuple[int, ...]


def load_model(
    run_dir: str | Path,
    version: int | str = "latest",
    *,
    model_factory: ModelFactory | None = None,
) -> nn.Module:
    """The run's model with the weights of ``version`` (a committed round, or ``"latest"``),
    in eval mode.

    The checkpoint's signature is verified with the run's audit key and the model's SHA-256
    checked; nothing in ``run_dir`` is written. ``model_factory`` is for a run whose model
    class cannot be imported here (defined in a script's ``__main__`` or inside a function):
    give the class again, as to :meth:`fedfort.Simulation.resume`.
    """
    return read_run_model(run_dir, version, model_factory=model_factory).module


def read_run_model(
    run_dir: str | Path,
    version: int | str = "latest",
    *,
    model_factory: ModelFactory | None = None,
) -> RunModel:
    """:func:`load_model` with what an exporter needs besides the module."""
    config, layout, checkpoint = read_version(run_dir, version)
    schema = run_schema(config)
    spec = model_spec(config, schema)
    module = build_model(spec, seed=config.seed, factory=model_factory)
    params = ParamSpec.from_module(module)
    if params.describe() != layout:
        raise ConfigError(
            f"model {spec.name!r} built here does not have the parameter layout the run "
            f"trained ({params.dim} values, the run {checkpoint.model.shape[0]}): give the "
            "run's own model class and options"
        )
    params.load(module, checkpoint.model)
    module.eval()
    shape = (schema.num_features,)
    return RunModel(module, checkpoint.round, checkpoint.model_sha256, spec, config, shape)


def read_version(
    run_dir: str | Path, version: int | str = "latest"
) -> tuple[RunConfig, list[dict[str, Any]], Checkpoint]:
    """The run's stored config, its parameter layout and committed ``version``, each verified
    with the run's audit key (the checkpoint file opened read-only)."""
    run = Path(run_dir)
    path = run / CHECKPOINT_FILE
    if not path.exists():
        raise CheckpointError(f"{run} is not a fedfort run: {CHECKPOINT_FILE} is missing")
    with CheckpointReader(path, resume_key(run), leave_no_files=True) as reader:
        config = parse_config(json.loads(reader.verified_meta("config")))
        if config.config_identity() != reader.verified_meta("config_identity"):
            raise CheckpointError(
                f"the stored configuration of {path} does not match its stored identity: the "
                "checkpoint is inconsistent; restore the run directory from a trusted copy"
            )
        layout = json.loads(reader.verified_meta("param_spec"))
        checkpoint = reader.load(_pick_version(version, reader.rounds()))
    return config, layout, checkpoint


def read_preprocessing(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's federated feature transform (``fill``, ``shift``, ``scale`` per feature) as
    its checkpoint signed it, or ``None`` for a run without ``[data] standardize`` / ``impute``.
    The model was trained on rows through it; new rows need it too."""
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.exists():
        raise CheckpointError(f"{run_dir} is not a fedfort run: {CHECKPOINT_FILE} is missing")
    with CheckpointReader(path, resume_key(Path(run_dir)), leave_no_files=True) as reader:
        statistics = reader.verified_meta(STATISTICS_META, required=False)
    if not statistics:
        return None
    transform: dict[str, Any] = json.loads(statistics)["transform"]
    return transform


def _pick_version(version: int | str, rounds: list[int]) -> int:
    """``version`` as a committed round of the run; ``"latest"`` is the last one."""
    if not rounds:
        raise CheckpointError("the run holds no committed model version yet")
    if isinstance(version, str):
        text = version.strip().lower()
        if text == "latest":
            return rounds[-1]
        if not text.isdigit():
            raise ConfigError(f"version {version!r} is not 'latest' or a round number")
        version = int(text)
    if version not in rounds:
        raise ConfigError(
            f"version {version} does not exist: the run has versions {_listed(rounds)} "
            "(version k is the model committed by round k, 0 the initial one)"
        )
    return version


def _listed(rounds: list[int]) -> str:
    """``0..12`` for consecutive versions, else every one."""
    if rounds == list(range(rounds[0], rounds[-1] + 1)) and len(rounds) > 2:
        return f"{rounds[0]}..{rounds[-1]}"
    return jsonio.dumps(rounds)
